"""Stage summarise of study/dvc.yaml: bias, SD, RMSE and ratios to the original weights across replicates.

Reads every replicate listed in study.replicates (study/replicates/<k>.parquet, <k>.json), computes the
truth on the population and writes metrics/study.json, plots/study/study_ratios.csv and
study/statistics.parquet (weightreg.study.run_summarise).
"""

import argparse
import sys

from weightreg.errors import WeightregError
from weightreg.params import load_params
from weightreg.study import run_summarise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--population", default="data/population.h5")
    parser.add_argument("--replicates", default="study/replicates")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = run_summarise(load_params(args.params), args.population, args.replicates,
                               metrics_path="metrics/study.json", plots_dir="plots/study",
                               statistics_path="study/statistics.parquet", progress=not args.quiet)
    except WeightregError as exc:
        print(f"study_summarise: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(result.summary_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
