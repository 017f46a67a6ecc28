"""Stage recalibrate: entropy-regularised calibration of the augmented survey, with cap, bounds and pruning."""

import argparse

from weightreg.runners import run_recalibrate
from weightreg.params import load_params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--survey", default="data/augmented.h5")
    parser.add_argument("--targets", default="data/targets.csv")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    fit, metrics = run_recalibrate(
        args.survey,
        args.targets,
        load_params(args.params),
        out_path="data/regularised.h5",
        metrics_path="metrics/recalibrate.json",
        plots_dir="plots/recalibrate",
        progress=not args.quiet,
    )
    print(f"recalibrate: {fit.message}; ESS {metrics['ess_before']:,.0f} -> {metrics['ess_after']:,.0f}, "
          f"pruned {metrics['records_pruned']} households")


if __name__ == "__main__":
    main()
