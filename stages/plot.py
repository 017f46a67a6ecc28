"""Stage plot: PNG charts (matplotlib, Agg) from the stages' plot CSVs, for reports and the README."""

import argparse

from weightreg.params import get, load_params
from weightreg.plots import render_all


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plots", default="plots")
    parser.add_argument("--out", default="plots/plot")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    written = render_all(args.plots, args.out, threshold=float(get(load_params(args.params), "threshold")))
    print("plot: wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
