"""Stage plot of study/dvc.yaml: the SD and RMSE ratio chart (plots/study/study_ratios.png)."""

import argparse
import sys

import pandas as pd

from weightreg.errors import WeightregError
from weightreg.study import plot_ratios


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ratios", default="plots/study/study_ratios.csv")
    parser.add_argument("--out", default="plots/study/study_ratios.png")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        plot_ratios(pd.read_csv(args.ratios), args.out)
    except (WeightregError, FileNotFoundError) as exc:
        print(f"study_plot: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
