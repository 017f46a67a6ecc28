"""Stage replicate@k of study/dvc.yaml: one replicate of the repeated-sampling study.

Draws replicate k from the population with the world's whole design, runs the whole recipe and the
baselines on it (weightreg.study.run_replicate) and writes study/replicates/<k>.parquet and <k>.json.
"""

import argparse
import sys

from weightreg.errors import WeightregError
from weightreg.params import load_params
from weightreg.study import run_replicate_stage


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--population", default="data/population.h5")
    parser.add_argument("--replicate", type=int, required=True, help="the replicate index k (from study.replicates)")
    parser.add_argument("--out", default="study/replicates", help="folder of <k>.parquet and <k>.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = run_replicate_stage(load_params(args.params), args.population, args.replicate, args.out,
                                     progress=not args.quiet)
    except WeightregError as exc:
        print(f"study_replicate: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
        print(f"replicate {args.replicate}: {sum(result.timings.values()):.1f}s ({steps})")
        for line in result.messages:
            print(f"replicate {args.replicate}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
