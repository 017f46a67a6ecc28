"""Print the README's results tables (markdown) from metrics/*.json of the last `dvc repro`."""

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(stage):
    return json.loads((ROOT / "metrics" / f"{stage}.json").read_text())


def main():
    loop, recal, ev = load("adversarial_loop"), load("recalibrate"), load("evaluate")
    with open(ROOT / "plots" / "adversarial_loop" / "trace.csv", newline="") as fh:
        first = next(csv.DictReader(fh))
    print("| | before the loop | after the loop | after recalibrate (cap) |")
    print("|---|---:|---:|---:|")
    rows = [
        ("source households (sampled)", loop["households_before"], loop["sources"], recal["sources_after"]),
        ("rows (households in the file)", loop["households_before"], loop["households_after"], recal["records_after"]),
        ("Kish ESS over source households", round(loop["source_ess_before"]), round(loop["source_ess_after"]),
         round(recal["source_ess_after"])),
        ("Kish ESS over rows", round(loop["ess_before"]), round(loop["ess_after"]), round(recal["ess_after"])),
        ("source households above threshold, baseline + reforms", loop["sources_above_threshold_before"],
         loop["sources_above_threshold_after"], ""),
        ("... on statistics that are not thin", loop["sources_above_threshold_not_thin_before"],
         loop["sources_above_threshold_not_thin_after"], ""),
        ("source households above threshold, baseline surface", loop["baseline_sources_above_threshold_before"],
         loop["baseline_sources_above_threshold_after"], ""),
        ("records above threshold, baseline surface", loop["baseline_records_above_threshold_before"],
         loop["baseline_records_above_threshold_after"], ""),
        ("... of which on statistics that are not thin", int(first["baseline_records_above_not_thin"]),
         loop["baseline_records_above_threshold_not_thin_after"], ""),
        ("records above threshold, baseline + reforms", loop["records_above_threshold_before"],
         loop["records_above_threshold_after"], ""),
        ("... on statistics that are not thin", loop["records_above_threshold_not_thin_before"],
         loop["records_above_threshold_not_thin_after"], ""),
        ("max relative target error", f"{float(first['max_rel_target_error']):.1e}",
         f"{loop['max_rel_target_error']:.1e}",
         f"{recal['max_rel_target_error']:.1e}"),
        ("max weight of a source household", f"{ev['original']['max_source_weight']:,.0f}",
         f"{recal['max_source_weight_before']:,.0f}", f"{recal['max_source_weight_after']:,.0f}"),
        ("max weight of a row", f"{ev['original']['max_weight']:,.0f}", f"{recal['max_weight_before']:,.0f}",
         f"{recal['max_weight_after']:,.0f}"),
    ]
    for r in rows:
        print("| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in r) + " |")
    print()
    print("| weights | source ESS | row ESS | max weight (source / row) | max target error | median abs rel error (baseline / reforms) "
          "| mean abs error / metric total (baseline / reforms) | RMSE of rel error (baseline / reforms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("original", "trimmed", "raked", "augmented", "regularised"):
        s = ev[name]
        print(f"| {name} | {s['source_kish_ess']:,.0f} | {s['kish_ess']:,.0f} | {s['max_source_weight']:,.0f} / "
              f"{s['max_weight']:,.0f} | {s['max_rel_target_error']:.3f} "
              f"| {s['median_abs_rel_error_baseline']:.3f} / {s['median_abs_rel_error_reform']:.3f} "
              f"| {s['mean_scaled_error_baseline']:.4f} / {s['mean_scaled_error_reform']:.6f} "
              f"| {s['rmse_baseline']:.2f} / {s['rmse_reform']:.2f} |")


if __name__ == "__main__":
    main()
