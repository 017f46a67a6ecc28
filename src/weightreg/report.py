"""A markdown report of a pipeline run: params and metrics against a base revision, tables, figures.

It shells out to ``dvc`` (the same Python's ``python -m dvc``) and ``git`` only, so it runs
anywhere: locally, or in CI before ``cml comment update report.md`` posts it on a pull request::

    python -m weightreg.report --base origin/main -o report.md

The base revision's metrics are read from git by DVC: metrics must be git-tracked outputs
(``cache: false``), and the base must be fetched (``git fetch origin main``); a base that does not
exist is an error, not an empty diff.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from .atomic import atomic_path
from .errors import WeightregError

__all__ = ["ReportError", "write_report", "main"]

logger = logging.getLogger(__name__)

# Captions of the plot stage's figures (weightreg.plots.FIGURES), in report order.
CAPTIONS = {
    "weight_distribution.png": "Weight distribution before and after",
    "ess_by_slice.png": "Kish ESS by slice cell",
    "influence_heatmap.png": "Influence of the top households on the top statistics",
    "influence_scatter.png": "Weight vs influence",
    "loop_convergence.png": "Adversarial loop convergence",
    "truth_error.png": "Error against the truth",
    "generator_loss.png": "Generator training loss",
    "top_multipliers.png": "Largest recalibration multipliers",
}


class ReportError(WeightregError, RuntimeError):
    """The report cannot be built at all (e.g. the base revision does not exist)."""


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_IGNORE_UPDATES": "1", "GIT_TERMINAL_PROMPT": "0"}
    try:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    except FileNotFoundError as exc:  # git not installed
        return subprocess.CompletedProcess(args, 127, "", str(exc))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"timed out after {timeout:g} s")


def _dvc(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    # The running interpreter's dvc: the one installed with weightreg, whatever is on PATH.
    return _run([sys.executable, "-m", "dvc", *args], cwd, timeout)


def _git_commit(rev: str, cwd: Path) -> str | None:
    res = _run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd, 60)
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None


def _md_cell(value) -> str:
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else value
    if isinstance(text, float):
        text = f"{text:.4g}"
    # "|" ends a cell in markdown tables; worst_statistic names contain it ("metric|dim=cell|baseline").
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub markdown table (floats to 4 significant digits, ``|`` escaped)."""
    head = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _has_rows(markdown: str) -> bool:
    # dvc prints a header-only table (header + rule) when there is nothing to show.
    return sum(1 for line in markdown.splitlines() if line.startswith("|")) > 2


def _dvc_section(title: str, args: list[str], empty: str, cwd: Path, timeout: float) -> list[str]:
    res = _dvc(args, cwd, timeout)
    command = f"dvc {' '.join(args)}"
    lines = [f"## {title}", ""]
    if res.returncode != 0:
        err = (res.stderr or res.stdout).strip().splitlines()
        message = err[-1] if err else f"exit status {res.returncode}"
        logger.warning("%s failed: %s", command, message)
        return lines + [f"> **`{command}` failed:** {_md_cell(message)}", ""]
    lines.append(res.stdout.strip() if _has_rows(res.stdout) else empty)
    # dvc exits 0 when it cannot read a revision's metrics (e.g. a corrupt dvc.yaml on the base):
    # its warnings say the table is incomplete, so they belong next to it.
    warnings = [line.strip() for line in res.stderr.splitlines()
                if line.strip().startswith(("WARNING", "ERROR")) or "failed to" in line]
    for warning in warnings:
        logger.warning("%s: %s", command, warning)
    if warnings:
        lines += ["", f"> **`{command}` warned:** " + " ".join(_md_cell(w) for w in warnings)]
    return lines + [""]


def _truth_table(frame: pd.DataFrame) -> pd.DataFrame:
    from .plots import WEIGHT_KINDS, _ordered

    kinds = _ordered(frame["weights"], WEIGHT_KINDS)
    groups = _ordered(frame["statistic_kind"], ("baseline", "reform"))
    table = pd.DataFrame({"weights": kinds})
    for value, label in (("rmse", "RMSE"), ("median_abs_rel_error", "median abs rel error")):
        for group in groups:
            sub = frame[frame["statistic_kind"] == group].drop_duplicates("weights").set_index("weights")[value]
            table[f"{group} {label}"] = sub.reindex(kinds).to_numpy()
    return table


#: (label, metrics file, source key, row key) of the households table: every figure that counts households,
#: over source households (a parent and its offspring are one sampled household) and over rows.
HOUSEHOLD_FIGURES = (
    ("households", "diagnose", "sources", "records"),
    ("Kish ESS before the loop", "diagnose", "source_ess", "ess"),
    ("above the threshold before the loop", "diagnose", "sources_above_threshold", "records_above_threshold"),
    ("... on statistics that are not thin", "diagnose", "sources_above_threshold_not_thin",
     "records_above_threshold_not_thin"),
    ("Kish ESS after the loop", "adversarial_loop", "source_ess_after", "ess_after"),
    ("above the threshold after the loop", "adversarial_loop", "sources_above_threshold_after",
     "records_above_threshold_after"),
    ("... on statistics that are not thin", "adversarial_loop", "sources_above_threshold_not_thin_after",
     "records_above_threshold_not_thin_after"),
    ("households after recalibrate", "recalibrate", "sources_after", "records_after"),
    ("Kish ESS after recalibrate", "recalibrate", "source_ess_after", "ess_after"),
    ("largest weight after recalibrate", "recalibrate", "max_source_weight_after", "max_weight_after"),
)


def _households_section(repo: Path) -> list[str]:
    """The headline: figures that count households, source households first, from ``metrics/*.json``."""
    import json

    loaded: dict[str, dict] = {}
    for stage in dict.fromkeys(f[1] for f in HOUSEHOLD_FIGURES):
        path = repo / "metrics" / f"{stage}.json"
        try:
            loaded[stage] = json.loads(path.read_text(encoding="utf8")) if path.is_file() else {}
        except (OSError, ValueError) as exc:
            logger.warning("%s: not readable (%s)", path, exc)
            loaded[stage] = {}
    rows = [(label, loaded[stage].get(src), loaded[stage].get(row))
            for label, stage, src, row in HOUSEHOLD_FIGURES if src in loaded[stage] or row in loaded[stage]]
    if not rows:
        return []
    table = pd.DataFrame(rows, columns=["figure", "source households", "rows"])
    return ["## Households: sampled (source) households and rows", "",
            "A parent and its offspring are one source household: splitting a record raises the row figures "
            "without making any statistic rest on more sampled households.", "", markdown_table(table), ""]


def _csv_section(title: str, path: Path, relative: str, shape, repo: Path) -> list[str]:
    from .plots import PlotInputError, read_input

    if not path.is_file():
        return []
    try:
        table = shape(read_input(path, relative))
    except PlotInputError as exc:
        logger.warning("%s", exc)
        return [f"## {title}", "", f"> **Could not read it:** {_md_cell(exc)}", ""]
    source = path.relative_to(repo) if path.is_relative_to(repo) else path
    return [f"## {title}", "", f"From `{source.as_posix()}`.", "", markdown_table(table), ""]


def write_report(out="report.md", base_rev: str | None = "main", repo_dir=".", *, plots_out="plots/plot",
                 plots_dir="plots", note: str | None = None, top_offenders: int = 10, timeout: float = 600) -> Path:
    """Write the markdown report of the workspace against ``base_rev``.

    Sections: params diff (``dvc params diff BASE --md``), metrics diff (``dvc metrics diff BASE
    --md``; ``dvc metrics show --md`` without a base), the truth-error table
    (``plots/evaluate/truth_error.csv``), the top offenders (``plots/diagnose/top_offenders.csv``),
    and links to every PNG in ``plots_out``, relative to the report's folder. A dvc command that
    fails is reported in its section (and logged), so the rest of the report still appears.

    Args:
        out: the markdown file (relative paths are relative to the current directory).
        base_rev: the git revision to compare with (e.g. ``main``, ``origin/main``); None for no
            comparison.
        repo_dir: the DVC repository root; ``plots_out`` and ``plots_dir`` are relative to it.
        plots_out: the folder of the plot stage's PNGs.
        plots_dir: the folder of the stages' plot CSVs.
        note: a line printed under the title (e.g. which params the run used).
        top_offenders: rows of the offenders table (0 leaves it out).
        timeout: seconds allowed to each dvc command.

    Returns:
        The path written.

    Raises:
        ReportError: ``base_rev`` is not a commit of the repository (fetch it first).
    """
    repo = Path(repo_dir).resolve()
    out = Path(out).resolve()
    lines = ["# weightreg pipeline report", ""]
    head = _git_commit("HEAD", repo)
    if base_rev is not None:
        base = _git_commit(base_rev, repo)
        if base is None:
            raise ReportError(
                f"base revision {base_rev!r} is not a commit of {repo}; fetch it first "
                f"(e.g. git fetch origin main) or pass base_rev=None (--base none) for no comparison"
            )
        lines.append(f"Workspace (HEAD `{(head or '?')[:9]}` plus uncommitted changes) compared with "
                     f"`{base_rev}` (`{base[:9]}`).")
        if base == head:
            lines += ["", f"> **Note:** `{base_rev}` is the checked-out commit, so the diffs below show only "
                          "uncommitted changes in the workspace."]
    else:
        lines.append(f"Workspace (HEAD `{head[:9]}` plus uncommitted changes)." if head else "Workspace.")
    if note:
        lines += ["", note]
    lines.append("")
    lines += _households_section(repo)

    if base_rev is not None:
        lines += _dvc_section("Params", ["params", "diff", base_rev, "--md"],
                              f"No param changes against `{base_rev}`.", repo, timeout)
        lines += _dvc_section("Metrics", ["metrics", "diff", base_rev, "--md"],
                              f"No metric changes against `{base_rev}`.", repo, timeout)
    else:
        if head:
            lines += _dvc_section("Params (HEAD vs workspace)", ["params", "diff", "--all", "--md"],
                                  "No params.", repo, timeout)
        lines += _dvc_section("Metrics", ["metrics", "show", "--md"], "No metrics.", repo, timeout)

    plots_root = repo / plots_dir
    lines += _csv_section("Error against the truth", plots_root / "evaluate/truth_error.csv",
                          "evaluate/truth_error.csv", _truth_table, repo)
    if top_offenders > 0:
        columns = ["household_id", "weight", "max_influence", "violations", "worst_statistic"]
        lines += _csv_section(f"Most influential households (top {top_offenders})",
                              plots_root / "diagnose/top_offenders.csv", "diagnose/top_offenders.csv",
                              lambda f: f[columns].head(top_offenders), repo)

    figures_dir = repo / plots_out
    pngs = sorted(figures_dir.glob("*.png")) if figures_dir.is_dir() else []
    order = {name: i for i, name in enumerate(CAPTIONS)}
    pngs.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    lines += ["## Figures", ""]
    if not pngs:
        lines += [f"No figures in `{plots_out}` (run `dvc repro plot`).", ""]
    for png in pngs:
        caption = CAPTIONS.get(png.name, png.stem.replace("_", " "))
        link = Path(os.path.relpath(png, out.parent)).as_posix()
        lines += [f"### {caption}", "", f"![{caption}]({link})", ""]

    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n", encoding="utf8")
    return out


def main(argv=None) -> int:
    """``python -m weightreg.report [--base REV|none] [-o report.md] [--repo-dir .] [--note TEXT]``."""
    parser = argparse.ArgumentParser(prog="python -m weightreg.report",
                                     description="Write a markdown report of params, metrics and figures.")
    parser.add_argument("--base", default="main", help="git revision to compare with; 'none' for no comparison "
                                                       "(default: main)")
    parser.add_argument("-o", "--out", default="report.md", help="markdown file to write (default: report.md)")
    parser.add_argument("--repo-dir", default=".", help="DVC repository root (default: .)")
    parser.add_argument("--plots-out", default="plots/plot", help="folder of the PNGs (default: plots/plot)")
    parser.add_argument("--plots-dir", default="plots", help="folder of the plot CSVs (default: plots)")
    parser.add_argument("--note", default=None, help="a line shown under the title")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    base = None if args.base.strip().lower() in ("", "none") else args.base
    try:
        path = write_report(args.out, base, args.repo_dir, plots_out=args.plots_out, plots_dir=args.plots_dir,
                            note=args.note)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
