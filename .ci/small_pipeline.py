"""Run the DVC pipeline on a small world, in a throw-away copy of the working tree (or in place).

Checks what a user relies on: `dvc repro` runs every stage; a second `dvc repro` runs nothing;
`dvc exp run -S cap=...` reruns only the stages that read `cap` and what follows from them.
Used by tests/test_pipeline.py and by the CML workflow (`--in-place`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["synthesize", "diagnose", "train_generator", "adversarial_loop", "recalibrate", "evaluate", "plot"]


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def apply_small_params(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    small = yaml.safe_load((ROOT / ".ci/params-small.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(params, small), sort_keys=False))


def run(cmd, cwd, env) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{out[-6000:]}")
    return out


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file() and not name.startswith(("data/", "models/", "metrics/", "plots/", "dvc.lock")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--in-place", action="store_true", help="apply the small params here and run dvc repro")
    parser.add_argument("--keep", help="run in this folder and keep it")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@localhost",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@localhost"}
    if args.in_place:
        apply_small_params(ROOT)
        print(run([sys.executable, "-m", "dvc", "repro"], ROOT, env))
        return 0
    repo = Path(args.keep or tempfile.mkdtemp(prefix="weightreg-pipeline-"))
    repo.mkdir(parents=True, exist_ok=True)
    copy_tree(repo)
    apply_small_params(repo)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    run(["git", "init", "-q"], repo, env)
    run(git + ["add", "-A"], repo, env)
    run(git + ["commit", "-qm", "small world"], repo, env)

    first = run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert ran(first) == STAGES, f"dvc repro ran {ran(first)}, expected {STAGES}\n{first[-4000:]}"
    second = run([sys.executable, "-m", "dvc", "repro"], repo, env)
    assert ran(second) == [], f"a second dvc repro reran {ran(second)}"
    run(git + ["add", "-A"], repo, env)
    run(git + ["commit", "-qm", "outputs"], repo, env)
    exp = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "cap=200000"], repo, env)
    expected = ["recalibrate", "evaluate", "plot"]
    assert ran(exp) == expected, f"dvc exp run -S cap=... ran {ran(exp)}, expected {expected}"
    shown = run([sys.executable, "-m", "dvc", "exp", "show", "--no-pager"], repo, env)
    diff = run([sys.executable, "-m", "dvc", "metrics", "diff", "--md"], repo, env)
    print(f"small pipeline OK in {repo}\n{shown[-2000:]}\n{diff[-2000:]}")
    if not args.keep:
        shutil.rmtree(repo, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
