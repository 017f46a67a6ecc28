"""Stage diagnose: reporting surface, per-record influence under random reforms, Kish ESS."""

import argparse

from weightreg.runners import run_diagnose
from weightreg.params import load_params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--survey", default="data/survey.h5")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    diagnosis = run_diagnose(
        args.survey,
        params,
        metrics_path="metrics/diagnose.json",
        plots_dir="plots/diagnose",
        records_path="data/diagnose/records.parquet",
        progress=not args.quiet,
    )
    if not args.quiet:
        print(diagnosis.summary_text(top=10))


if __name__ == "__main__":
    main()
