"""Stage train_generator: an SDV synthesizer over flat, complete households."""

import argparse

from weightreg.runners import run_train
from weightreg.params import load_params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--survey", default="data/survey.h5")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    model, metrics = run_train(
        args.survey,
        load_params(args.params),
        model_path="models/generator.pkl",
        metrics_path="metrics/train_generator.json",
        loss_path="plots/train_generator/loss.csv",
        progress=not args.quiet,
    )
    print(f"train_generator: {model!r}; fit {model.info.fit_seconds:.1f} s, valid share {metrics['valid_share']:.3f}")


if __name__ == "__main__":
    main()
