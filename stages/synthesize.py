"""Stage synthesize: generate the embedded UK-like survey world (population, survey, targets)."""

import argparse

from weightreg.runners import run_world
from weightreg.params import load_params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    run_world(load_params(args.params), args.out, "metrics/synthesize.json", progress=not args.quiet)


if __name__ == "__main__":
    main()
