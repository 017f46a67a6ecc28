"""Stage evaluate: score the original, augmented, regularised, trimmed and raked weights against the
embedded world's truth (out-of-sample reforms), with Kish ESS, target fit and a bootstrap."""

import argparse

from weightreg.evaluate import run_evaluate
from weightreg.params import load_params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    result = run_evaluate(
        "data/population.h5",
        "data/survey.h5",
        "data/augmented.h5",
        "data/regularised.h5",
        "data/targets.csv",
        load_params(args.params),
        metrics_path="metrics/evaluate.json",
        plots_dir="plots/evaluate",
        progress=not args.quiet,
    )
    print(result.summary_text())


if __name__ == "__main__":
    main()
