"""The adversarial loop's wiring (weightreg.loop.regularise_loop), with a stand-in generator.

The generator itself is tested in test_generator.py; here a stand-in sampler returns each parent's
row with its council tax raised by 1, so what the loop conditioned every offspring on can
be read back exactly.
"""

import numpy as np
import pandas as pd
import pytest

import weightreg.generator as G
from weightreg import features as F
from weightreg.loop import regularise_loop
from weightreg.offspring import root_households
from weightreg.survey import PARENT_COLUMN
from weightreg.world import generate_world


@pytest.fixture(scope="module")
def world():
    return generate_world(
        {"seed": 3, "population_households": 4000, "sample_households": 800, "enhancement_households": 40},
        rng=np.random.default_rng(3),
    )


class _Model:
    def __init__(self, spec):
        self.spec = spec


def test_offspring_of_offspring_are_sampled_near_the_root_household(world, monkeypatch):
    survey = world.survey
    spec = F.FeatureSpec.from_survey(survey)
    start = F.extract(survey, spec).features
    calls = []

    def stand_in(model, parents, n, fractions, rng, *, always_hold=()):
        calls.append(parents.copy())
        counts = np.broadcast_to(np.asarray(n), (len(parents),))
        rows = parents.loc[parents.index.repeat(counts)].copy()
        rows["council_tax"] = rows["council_tax"] + 1.0  # every offspring differs from what it was sampled near
        return rows.reset_index().rename(columns={"household_id": "parent_id"})

    monkeypatch.setattr(G, "sample_offspring", stand_in)
    # One offspring per parent (max_offspring=1) halves an offender's weight, too little for the
    # heaviest, so offspring are themselves offenders in the next rounds.
    result = regularise_loop(survey, world.targets, _Model(spec), reforms=[], rng=np.random.default_rng(0),
                             threshold=0.05, records_per_round=50, max_rounds=3, max_offspring=1, penalty=0.01, log=None)
    assert len(calls) >= 2, result.message
    out = result.survey
    ids = out.household_ids
    original = set(survey.household_ids.tolist())
    second = [c for c in calls[1:] if (~c.index.isin(original)).any()]
    assert second, "no offspring became a parent: the test lost its teeth"
    for parents in calls:
        roots = root_households(out, parents.index.to_numpy())
        # Every parent, original or synthetic, is conditioned on its root's starting row exactly.
        pd.testing.assert_frame_equal(parents.reset_index(drop=True), start.loc[roots].reset_index(drop=True),
                                      check_dtype=False)
    # And so every offspring, whatever its generation, sits exactly one step (council tax + 1) from its root.
    offspring = out.household.loc[out.household[PARENT_COLUMN] != -1, "household_id"].to_numpy()
    deep = np.isin(out.household.set_index("household_id").loc[offspring, PARENT_COLUMN], offspring)
    assert deep.any()
    built = F.extract(out, spec).features
    roots = root_households(out, offspring)
    np.testing.assert_allclose(built.loc[offspring, "council_tax"].to_numpy(), start.loc[roots, "council_tax"].to_numpy() + 1.0)
    assert len(ids) == len(set(ids))
