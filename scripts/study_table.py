"""Markdown tables of a repeated-sampling study's summary (metrics/study.json, or a --world-seed run's study.json).

    python scripts/study_table.py [metrics/study.json] [--methods original,raked,...]

Per method and kind of statistic: the median over statistics of SD / SD(original) and of RMSE / RMSE(original)
with their bootstrap intervals over replicates, the mean ratios, the median relative RMSE and the release jump;
then per method the means over replicates of the source and row Kish ESS, the largest relative target error,
the source households above the threshold on statistics that are not thin and the largest source weight.
"""

import argparse
import json
import sys
from pathlib import Path

ORDER = ("original", "trimmed", "raked", "bounded_ratio", "augmented", "regularised")


def _methods(metrics: dict, wanted) -> list[str]:
    present = [k for k, v in metrics.items() if isinstance(v, dict) and isinstance(v.get("baseline"), dict)]
    if wanted:
        missing = [m for m in wanted if m not in present]
        if missing:
            raise SystemExit(f"study_table: error: method(s) {missing} not in the study; it has {present}")
        return list(wanted)
    return [m for m in ORDER if m in present] + [m for m in present if m not in ORDER]


def tables(metrics: dict, methods) -> str:
    lines = [f"{metrics['replicates']} replicates; {metrics['statistics']['baseline']} baseline and "
             f"{metrics['statistics']['reform']} reform statistics; ratios to `original`, median over statistics "
             f"[{100 * metrics['interval_level']:g}% bootstrap interval over replicates] and mean.", ""]
    lines.append("| weights | SD ratio, baseline | SD ratio, reforms | RMSE ratio, baseline | RMSE ratio, reforms | "
                 "mean RMSE ratio (baseline / reforms) | median rel. RMSE (baseline / reforms) | release jump (baseline / reforms) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in methods:
        b, r = metrics[m]["baseline"], metrics[m]["reform"]

        def cell(k, q):
            return f"{k[q + '_ratio_median']:.3f} [{k[q + '_ratio_median_lo']:.3f}, {k[q + '_ratio_median_hi']:.3f}]"

        lines.append(f"| {m} | {cell(b, 'sd')} | {cell(r, 'sd')} | {cell(b, 'rmse')} | {cell(r, 'rmse')} | "
                     f"{b['rmse_ratio_mean']:.3g} / {r['rmse_ratio_mean']:.3g} | "
                     f"{b['rel_rmse_median']:.3f} / {r['rel_rmse_median']:.3f} | "
                     f"{b['release_jump_median']:.3f} / {r['release_jump_median']:.3f} |")
    lines += ["", "| weights | source ESS | row ESS | max rel. target error | source households above threshold "
                  "(not thin) | max source weight | converged |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m in methods:
        k = metrics[m]
        conv = f"{k['converged_mean']:.2f}" if "converged_mean" in k else ""
        lines.append(f"| {m} | {k['source_kish_ess_mean']:,.0f} | {k['kish_ess_mean']:,.0f} | "
                     f"{k['max_rel_target_error_mean']:.2g} | {k['sources_above_threshold_not_thin_mean']:,.0f} | "
                     f"{k.get('max_source_weight_mean', float('nan')):,.0f} | {conv} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", default="metrics/study.json")
    parser.add_argument("--methods", help="comma-separated methods, in order (default: all)")
    args = parser.parse_args(argv)
    path = Path(args.path)
    if not path.is_file():
        print(f"study_table: error: {path}: no such file; run the study first (python stages/study_run.py)",
              file=sys.stderr)
        return 2
    metrics = json.loads(path.read_text())
    print(tables(metrics, _methods(metrics, args.methods.split(",") if args.methods else None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
