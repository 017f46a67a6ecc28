"""Stage adversarial_loop: detect offenders, spawn consistent offspring, split weight, recalibrate, repeat."""

import argparse

from weightreg.runners import run_loop
from weightreg.params import load_params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--survey", default="data/survey.h5")
    parser.add_argument("--targets", default="data/targets.csv")
    parser.add_argument("--model", default="models/generator.pkl")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    run_loop(
        args.survey,
        args.targets,
        args.model,
        load_params(args.params),
        out_path="data/augmented.h5",
        metrics_path="metrics/adversarial_loop.json",
        trace_path="plots/adversarial_loop/trace.csv",
        progress=not args.quiet,
    )


if __name__ == "__main__":
    main()
