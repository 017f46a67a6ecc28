"""Run the repeated-sampling study with the replicates in parallel on Dask, then its summary.

1. Asks `dvc status study/dvc.yaml` which replicate@k stages are missing or outdated.
2. Runs those replicates as independent Dask tasks (weightreg.study.replicate_task) on a local cluster of
   study.workers processes, one thread each (or on the running scheduler study.scheduler), the population
   scattered to the workers once; the driver writes each replicate's outputs exactly as the stage
   `python stages/study_replicate.py --replicate k` would (same function, same bytes) and records them with
   `dvc commit -f study/dvc.yaml:replicate@k`, so DVC caches them as if `dvc repro` had run them.
3. Runs `dvc repro study/dvc.yaml` (summarise and plot; the replicates are up to date by then) and checks
   that `dvc status study/dvc.yaml` reports nothing to do.

Run it from the project root: python stages/study_run.py [--workers N] [--scheduler ADDR] [--quiet].

Another world seed (outside DVC): python stages/study_run.py --world-seed S [--workers N]. The study's claims
must hold on more than one world, and the pipeline's DVC study has one (data/population.h5). This mode makes
the population of world.seed = S (the world section's other params unchanged) in study/worlds/<S>/, runs every
replicate of study.replicates on it with the same params and code, and writes study/worlds/<S>/study.json and
study_ratios.csv (small, git-tracked; the population, replicates and statistics.parquet are git-ignored). It
reruns every replicate each time (nothing there is cached).
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads; Dask's workers inherit it

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from tqdm.auto import tqdm  # noqa: E402

from weightreg.errors import ParameterError, WeightregError  # noqa: E402
from weightreg.params import load_params  # noqa: E402

PIPELINE = "study/dvc.yaml"
DVC = [sys.executable, "-m", "dvc"]


def _dvc(args, quiet: bool, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(DVC + list(args), capture_output=True, text=True)
    if not quiet and proc.stdout.strip():
        print(proc.stdout.rstrip())
    if check and proc.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def outdated_replicates(replicates) -> list[int]:
    """The replicates whose stage `dvc status` reports as changed (missing outputs, changed deps or params)."""
    proc = subprocess.run(DVC + ["status", PIPELINE, "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc status {PIPELINE}` failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    status = json.loads(proc.stdout.strip() or "{}")
    changed = set()
    for name in status:
        match = re.fullmatch(re.escape(PIPELINE) + r":replicate@(\d+)", name)
        if match:
            changed.add(int(match.group(1)))
    return [k for k in replicates if k in changed]


def _digest(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def run_replicates(params, settings, todo, population_path, out_dir, params_path, quiet: bool,
                   commit: bool = True) -> list[tuple[int, str]]:
    """Run ``todo`` on Dask; write and (``commit``) `dvc commit` each as it finishes. Returns the failures (k, message)."""
    from dask.distributed import as_completed

    from weightreg.study import read_population, replicate_task, write_replicate
    from weightreg.sweep import SweepSettings, dask_client

    start_digest = _digest(params_path)
    failures = []
    population = read_population(population_path)
    cluster = SweepSettings(enabled=True, scheduler=settings.scheduler, workers=settings.workers, threads_per_worker=1)
    with dask_client(cluster) as client:
        shared = client.scatter(population, broadcast=True)
        del population
        futures = {client.submit(replicate_task, shared, params, k, key=f"study-replicate-{k}-{time.time_ns()}",
                                 pure=False): k for k in todo}
        bar = tqdm(total=len(futures), desc="replicates", disable=quiet)
        for future in as_completed(futures):
            k = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # report every failed replicate, keep the others
                message = exc.args[0] if isinstance(exc, WeightregError) and exc.args else f"{type(exc).__name__}: {exc}"
                failures.append((k, str(message)))
                bar.update()
                continue
            write_replicate(result, out_dir)
            if _digest(params_path) != start_digest:
                failures.append((k, f"{params_path} changed while the study ran; its outputs were written but not "
                                    "committed to DVC (rerun the driver)"))
            elif commit:
                _dvc(["commit", "-f", "-q", f"{PIPELINE}:replicate@{k}"], quiet=True)
            if not quiet:
                steps = ", ".join(f"{s} {v:.0f}s" for s, v in result.timings.items())
                tqdm.write(f"replicate {k}: {sum(result.timings.values()):.0f}s ({steps})")
            bar.update()
        bar.close()
    return failures


def run_other_world(params, settings, world_seed: int, args) -> int:
    """The ``--world-seed`` mode: population of world seed ``world_seed``, every replicate, the summary."""
    from weightreg.policyengine_format import write_survey
    from weightreg.study import run_summarise
    from weightreg.world import world_population

    out = Path("study/worlds") / str(world_seed)
    population_path = out / "population.h5"
    if not args.quiet:
        print(f"study: world seed {world_seed}: the population in {population_path}")
    population = world_population({**(params.get("world") or {}), "seed": int(world_seed)})
    out.mkdir(parents=True, exist_ok=True)
    write_survey(population, population_path)
    del population
    failures = run_replicates(params, settings, list(settings.replicates), population_path, out / "replicates",
                              args.params, args.quiet, commit=False)
    for k, message in failures:
        print(f"study_run: replicate {k} failed: {message}", file=sys.stderr)
    if failures:
        return 1
    result = run_summarise(params, population_path, out / "replicates", metrics_path=out / "study.json",
                           plots_dir=out, statistics_path=out / "statistics.parquet", progress=not args.quiet)
    if not args.quiet:
        print(result.summary_text())
        print(f"study: world seed {world_seed}: {out / 'study.json'}, {out / 'study_ratios.csv'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--population", default="data/population.h5")
    parser.add_argument("--out", default="study/replicates")
    parser.add_argument("--workers", type=int, help="local Dask worker processes (default: study.workers)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: study.scheduler)")
    parser.add_argument("--skip-summary", action="store_true", help="run the replicates only, not `dvc repro`")
    parser.add_argument("--world-seed", type=int,
                        help="run the whole study on the population of this world seed instead, outside DVC "
                             "(outputs in study/worlds/<seed>/)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        from weightreg.study import check_params, study_settings

        params = load_params(args.params)
        section = dict(params.get("study") or {})
        if args.workers is not None:
            section["workers"] = args.workers
        if args.scheduler is not None:
            section["scheduler"] = args.scheduler
        settings = study_settings({**params, "study": section})
        check_params(params)  # the params the replicates run with (the file's), before any work
        if not Path(PIPELINE).exists():
            raise ParameterError(f"{PIPELINE} not found: run stages/study_run.py from the project root")
        if args.world_seed is not None:
            if args.world_seed < 0:
                raise ParameterError(f"--world-seed {args.world_seed} must be a non-negative integer")
            if args.world_seed == (params.get("world") or {}).get("seed"):
                raise ParameterError(f"--world-seed {args.world_seed} is world.seed itself: that world's study is "
                                     "the DVC one (run without --world-seed)")
            return run_other_world(params, settings, args.world_seed, args)
        if not Path(args.population).exists():
            raise ParameterError(f"{args.population}: no such file (the world's population); run "
                                 "`dvc repro synthesize` first")
        todo = outdated_replicates(settings.replicates)
        if not args.quiet:
            print(f"study: {len(todo)} of {len(settings.replicates)} replicate(s) to run {todo} on "
                  f"{settings.scheduler or f'a local cluster of {settings.workers} worker(s)'}")
        failures = run_replicates(params, settings, todo, args.population, args.out, args.params, args.quiet) if todo else []
    except WeightregError as exc:
        print(f"study_run: error: {exc}", file=sys.stderr)
        return 2
    for k, message in failures:
        print(f"study_run: replicate {k} failed: {message}", file=sys.stderr)
    if failures:
        return 1
    if args.skip_summary:
        return 0
    try:
        # A replicate outdated now had its code or params edited while the study ran: `dvc repro` would delete
        # its outputs and rerun it (and any like it) one after another. Stop and say so instead.
        stale = outdated_replicates(settings.replicates)
        if stale:
            print(f"study_run: error: replicate(s) {stale} are outdated again (code or params edited while the "
                  f"study ran); their outputs are kept. Rerun stages/study_run.py to recompute them, then it "
                  f"summarises", file=sys.stderr)
            return 1
        _dvc(["repro", PIPELINE], quiet=args.quiet)
        left = outdated_replicates(settings.replicates)
        status = _dvc(["status", PIPELINE, "--json"], quiet=True)
    except RuntimeError as exc:
        print(f"study_run: error: {exc}", file=sys.stderr)
        return 1
    if left or json.loads(status.stdout.strip() or "{}"):
        print(f"study_run: error: `dvc status {PIPELINE}` still reports changes:\n{status.stdout}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"study: {PIPELINE} is up to date; metrics/study.json, plots/study/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
