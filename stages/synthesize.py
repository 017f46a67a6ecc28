"""Stage synthesize: generate the embedded UK-like survey world (population, survey, targets)."""

import argparse

import numpy as np

from weightreg.atomic import write_json
from weightreg.params import get, load_params
from weightreg.policyengine_format import write_survey
from weightreg.targets import write_targets
from weightreg.world import generate_world


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    world_params = get(load_params(args.params), "world")
    world = generate_world(world_params, rng=np.random.default_rng(get(world_params, "seed")), progress=not args.quiet)
    write_survey(world.population, f"{args.out}/population.h5")
    write_survey(world.survey, f"{args.out}/survey.h5")
    write_targets(world.targets, f"{args.out}/targets.csv")
    write_json(world.metrics, "metrics/synthesize.json")


if __name__ == "__main__":
    main()
