"""The embedded world: pathology of its initial weights, determinism, validity, realism, targets."""

import math

import numpy as np
import pandas as pd
import pytest

from weightreg.errors import ParameterError
from weightreg.simulate import simulate
from weightreg.survey import REGIONS, TENURE_TYPES
from weightreg.targets import build_target_matrix, household_type
from weightreg.world import (
    DEFAULT_PARAMS,
    REGION_SHARES,
    adam_calibrate,
    draw_survey,
    generate_world,
    weight_metrics,
)

SMALL = {"population_households": 20_000, "sample_households": 3_000, "enhancement_households": 3_000}
BENEFITS = ("universal_credit", "child_benefit", "pension_credit", "housing_benefit")


@pytest.fixture(scope="module")
def default_world():
    """The world at its default sizes (200k population, 20k sample, 20k enhancement): ~10 s."""
    return generate_world({})


@pytest.fixture(scope="module")
def small_world():
    return generate_world({**SMALL, "seed": 7})


def market_income(survey):
    cols = ["employment_income", "self_employment_income", "private_pension_income",
            "savings_interest_income", "dividend_income", "property_income"]
    total = survey.person[cols].to_numpy().sum(axis=1)
    return np.bincount(survey.person_household_index(), weights=total, minlength=survey.n_households)


# ---- the pathology ------------------------------------------------------------------------------
def test_default_world_weights_are_pathological_like_the_enhanced_frs(default_world):
    m = default_world.metrics
    w = default_world.survey.weights
    # Recompute the figures from the weights themselves rather than trusting the metrics.
    ess_share = w.sum() ** 2 / (w @ w) / len(w)
    centred = w - w.mean()
    skew = np.mean(centred**3) / np.mean(centred**2) ** 1.5
    assert ess_share == pytest.approx(m["kish_ess_share"])
    assert w.max() / np.median(w) == pytest.approx(m["max_median_ratio"])
    assert skew == pytest.approx(m["weight_skewness"])
    assert ess_share < 0.05
    assert w.max() / np.median(w) > 1_000
    assert skew > 10
    # ... and it is a fit, not noise: the targets are met closely.
    assert m["target_median_rel_error"] < 0.01
    assert m["target_max_rel_error"] < 0.5
    assert m["loss_final"] < m["loss_initial"] / 100
    assert m["n_targets"] >= 300
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in m.values())


def test_calibration_is_what_makes_the_weights_extreme(default_world):
    # Starting weights: uniform design weights on the sample, tiny on the enhancement block.
    m = default_world.metrics
    n_s = m["n_sample_households"]
    assert m["design_weight"] == pytest.approx(DEFAULT_PARAMS["uk_households"] / n_s)
    assert m["n_enhancement_households"] == default_world.survey.n_households - n_s
    w = default_world.survey.weights
    assert np.all(w > 0)
    assert w.max() > 50 * m["design_weight"]


# ---- determinism, validity ----------------------------------------------------------------------------
def test_same_params_give_identical_worlds(small_world):
    again = generate_world({**SMALL, "seed": 7})
    for name in ("person", "benunit", "household"):
        pd.testing.assert_frame_equal(getattr(small_world.population, name), getattr(again.population, name))
        pd.testing.assert_frame_equal(getattr(small_world.survey, name), getattr(again.survey, name))
    pd.testing.assert_frame_equal(small_world.targets, again.targets)
    assert small_world.metrics == again.metrics
    other = generate_world({**SMALL, "seed": 8, "calibration_steps": 10})
    assert not other.population.person["age"].equals(small_world.population.person["age"])


def test_explicit_rng_matches_seed():
    a = generate_world({**SMALL, "calibration_steps": 5, "seed": 3})
    b = generate_world({**SMALL, "calibration_steps": 5, "seed": 999}, rng=np.random.default_rng(3))
    pd.testing.assert_frame_equal(a.survey.household, b.survey.household)


def test_surveys_are_valid_with_policyengine_ids(small_world):
    for survey in (small_world.population, small_world.survey):
        survey.validate()
        p, b = survey.person, survey.benunit
        assert (p["person_id"] // 1000 == p["person_household_id"]).all()
        assert (p["person_benunit_id"] // 100 == p["person_household_id"]).all()
        assert (b["benunit_id"] % 100 >= 1).all() and (p["person_id"] % 1000 >= 1).all()
        # One household head per household, one benefit-unit head per benefit unit.
        assert p.groupby("person_household_id")["is_household_head"].sum().eq(1).all()
        assert p.groupby("person_benunit_id")["is_benunit_head"].sum().eq(1).all()
        # Children (under 16) are in the head's benefit unit.
        kids = p[p["age"] < 16]
        assert (kids["person_benunit_id"] % 100 == 1).all()
        # Couples (is_married) are exactly the two-adult units, as the simulator expects.
        adults = p[p["age"] >= 16].groupby("person_benunit_id").size().reindex(b["benunit_id"], fill_value=0)
        np.testing.assert_array_equal(b["is_married"].to_numpy(), adults.to_numpy() == 2)
    n_s = small_world.metrics["n_sample_households"]
    ids = small_world.survey.household_ids
    assert set(ids[:n_s]) <= set(small_world.population.household_ids)
    assert ids[n_s:].min() >= 10 ** len(str(SMALL["population_households"]))


# ---- the population: realistic marginals -----------------------------------------------------------
def test_population_marginals_are_uk_like(default_world):
    pop = default_world.population
    h, p = pop.household, pop.person
    shares = h["region"].value_counts(normalize=True).reindex(REGIONS).to_numpy()
    np.testing.assert_allclose(shares, REGION_SHARES, atol=0.006)
    assert 0.14 < (p["age"] >= 66).mean() < 0.22  # pensioners (UK ~ 18%)
    assert 0.16 < (p["age"] < 16).mean() < 0.24  # children (UK ~ 19%)
    assert 2.1 < pop.n_persons / pop.n_households < 2.5  # UK 2.36
    tenure = h["tenure_type"].value_counts(normalize=True).reindex(TENURE_TYPES).to_numpy()
    np.testing.assert_allclose(tenure, [0.07, 0.10, 0.19, 0.35, 0.29], atol=0.03)
    types = pd.Series(household_type(pop)).value_counts(normalize=True)
    assert 0.10 < types["single_pensioner"] < 0.18 and 0.12 < types["couple_with_children"] < 0.25
    # Almost all households within 3 adults and 4 children, but ~1% larger ones.
    ph = pop.person_household_index()
    adults = np.bincount(ph, weights=p["age"] >= 16)
    kids = np.bincount(ph, weights=p["age"] < 16)
    large = (adults >= 4) | (kids >= 5)
    assert 0.005 < large.mean() < 0.03
    # Renters pay rent, owners none; London private rents above the North East's.
    renting = h["tenure_type"].str.startswith("RENT").to_numpy()
    assert (h["rent"].to_numpy()[renting] > 0).all() and (h["rent"].to_numpy()[~renting] == 0).all()
    private = h["tenure_type"] == "RENT_PRIVATELY"
    rent = h.loc[private].groupby("region")["rent"].median()
    assert rent["LONDON"] > 2 * rent["NORTH_EAST"]
    assert (h["council_tax"] > 0).all()


def test_incomes_have_heavy_top_tails(default_world):
    p = default_world.population.person
    emp = p["employment_income"].to_numpy()
    workers = emp[emp > 0]
    assert 20_000 < np.median(workers) < 40_000
    assert 0.01 < (workers > 100_000).mean() < 0.08
    assert workers.max() > 1_000_000  # Pareto tail
    div = p["dividend_income"].to_numpy()
    top = np.sort(div)[::-1]
    assert top[: len(div) // 1000].sum() > 0.3 * div.sum()  # dividends concentrated at the top
    pension_age = p["age"] >= 66
    sp = p["state_pension_reported"]
    assert sp[pension_age].between(9_000, 12_000).all() and (sp[~pension_age] == 0).all()


def test_reported_benefits_are_the_simulated_entitlements(small_world):
    pop = small_world.population
    sim = simulate(pop)
    pb = pop.person_benunit_index()
    heads = pop.person["is_benunit_head"].to_numpy()
    for benefit in BENEFITS:
        reported = pop.person[f"{benefit}_reported"].to_numpy()
        expected = np.where(heads, sim.benunit[benefit].to_numpy()[pb], 0.0)
        np.testing.assert_allclose(reported, expected, atol=0.006)
        assert reported.sum() > 0
    # Take-up is applied: a unit that would not claim UC reports none.
    no_claim = ~pop.benunit["would_claim_uc"].to_numpy()[pb]
    assert (pop.person["universal_credit_reported"].to_numpy()[no_claim] == 0).all()


# ---- the survey: non-response, misreporting, enhancement ---------------------------------------------
def test_sample_has_differential_nonresponse(default_world):
    pop, survey = default_world.population, default_world.survey
    n_s = default_world.metrics["n_sample_households"]
    sample = survey.select_households(np.arange(survey.n_households) < n_s)
    assert sample.n_households == DEFAULT_PARAMS["sample_households"]

    def share(s, mask):
        return mask(s).mean()

    london = lambda s: s.household["region"].to_numpy() == "LONDON"  # noqa: E731
    renters = lambda s: s.household["tenure_type"].to_numpy() == "RENT_PRIVATELY"  # noqa: E731
    assert share(sample, london) < 0.8 * share(pop, london)
    assert share(sample, renters) < 0.9 * share(pop, renters)
    top = np.quantile(market_income(pop), 0.99)
    assert (market_income(sample) >= top).mean() < 0.5 * 0.01


def test_survey_households_are_population_copies_except_reported_benefits(small_world):
    pop, survey = small_world.population, small_world.survey
    n_s = small_world.metrics["n_sample_households"]
    sample = survey.select_households(np.arange(survey.n_households) < n_s)
    original = pop.select_households(pop.household["household_id"].isin(sample.household_ids).to_numpy())
    reported = [f"{b}_reported" for b in BENEFITS]
    same = [c for c in pop.person.columns if c not in reported]
    pd.testing.assert_frame_equal(sample.person[same], original.person[same])
    pd.testing.assert_frame_equal(sample.benunit, original.benunit)
    pd.testing.assert_frame_equal(sample.household.drop(columns="household_weight"),
                                  original.household.drop(columns="household_weight"))
    # Misreporting only lowers: never more than the truth, nothing where there is nothing.
    for col in reported:
        truth, said = original.person[col].to_numpy(), sample.person[col].to_numpy()
        assert (said <= truth + 1e-9).all() and (said[truth == 0] == 0).all()
        assert said.sum() < truth.sum()
    # So the simulator sees the same households: same simulated incomes.
    np.testing.assert_allclose(simulate(sample).household["household_net_income"],
                               simulate(original).household["household_net_income"])


def test_misreporting_can_be_switched_off():
    world = generate_world({**SMALL, "misreporting": None, "enhancement_households": 0, "calibration_steps": 5})
    for benefit in BENEFITS:
        assert world.metrics[f"reported_capture_{benefit}"] > 0.5  # sampling noise only
    pop, s = world.population, world.survey
    original = pop.select_households(pop.household["household_id"].isin(s.household_ids).to_numpy())
    pd.testing.assert_frame_equal(s.person, original.person)


def test_enhancement_block_copies_top_incomes_from_a_tiny_weight(small_world):
    pop = small_world.population
    survey = draw_survey(pop, {**SMALL, "seed": 7}, np.random.default_rng(1))
    n_s = SMALL["sample_households"]
    assert survey.n_households == n_s + SMALL["enhancement_households"]
    w = survey.weights
    np.testing.assert_allclose(w[:n_s], DEFAULT_PARAMS["uk_households"] / n_s)
    np.testing.assert_allclose(w[n_s:], DEFAULT_PARAMS["enhancement_initial_weight"])
    enh = survey.select_households(np.arange(survey.n_households) >= n_s)
    threshold = np.quantile(market_income(pop), 1 - DEFAULT_PARAMS["enhancement_top_share"])
    assert (market_income(enh) >= threshold - 1e-6).all()
    # Copies: same members as their originals (found by market income and size), new ids.
    assert enh.validate().n_households == SMALL["enhancement_households"]
    assert len(set(enh.household_ids) & set(pop.household_ids)) == 0


# ---- targets ---------------------------------------------------------------------------------------
def test_target_values_are_population_totals(small_world):
    pop, targets = small_world.population, small_world.targets
    tm = build_target_matrix(pop, targets)
    np.testing.assert_allclose(tm.estimates(pop.weights), targets["value"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(pop.weights, DEFAULT_PARAMS["uk_households"] / SMALL["population_households"])
    assert targets["name"].is_unique and (targets["value"] > 0).all()
    kinds = targets["name"].str.split("/").str[0].unique()
    assert {"households", "persons", "employment_income", "universal_credit_reported"} <= set(kinds)


def test_survey_estimates_match_metrics(small_world):
    tm = build_target_matrix(small_world.survey, small_world.targets)
    rel = np.abs(tm.relative_errors(small_world.survey.weights))
    assert rel.max() == pytest.approx(small_world.metrics["target_max_rel_error"])
    assert np.median(rel) == pytest.approx(small_world.metrics["target_median_rel_error"])


# ---- pieces ------------------------------------------------------------------------------------------
def test_weight_metrics_hand_computed():
    m = weight_metrics([1.0, 1.0, 1.0, 5.0])
    assert m["kish_ess"] == pytest.approx(64 / 28)
    assert m["kish_ess_share"] == pytest.approx(64 / 28 / 4)
    assert m["max_median_ratio"] == pytest.approx(5.0)
    # centred: -1, -1, -1, 3 -> m2 = 3, m3 = 6 -> skew 6 / 3^1.5
    assert m["weight_skewness"] == pytest.approx(6 / 3**1.5)
    assert weight_metrics([2.0] * 10)["weight_skewness"] == 0.0


def test_adam_calibrate_fits_a_feasible_toy_problem():
    # Two records, targets: total count 30 and total of x = 40 with x = (1, 2): w = (20, 10).
    A = np.array([[1.0, 1.0], [1.0, 2.0]])
    w, hist = adam_calibrate(A, np.array([30.0, 40.0]), np.array([15.0, 15.0]), steps=3000, learning_rate=0.02)
    np.testing.assert_allclose(w, [20.0, 10.0], rtol=1e-3)
    assert len(hist) == 3001 and hist[-1] < 1e-8 < hist[0]
    again, _ = adam_calibrate(A, np.array([30.0, 40.0]), np.array([15.0, 15.0]), steps=3000, learning_rate=0.02)
    np.testing.assert_array_equal(w, again)


def test_adam_dropout_is_seeded():
    A = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 0.0]])
    args = (A, np.array([30.0, 40.0]), np.array([10.0, 10.0, 10.0]))
    a, _ = adam_calibrate(*args, steps=50, dropout_rate=0.3, rng=np.random.default_rng(1))
    b, _ = adam_calibrate(*args, steps=50, dropout_rate=0.3, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("params, fragment", [
    ({"populaton_households": 10}, "populaton_households"),
    ({"sample_households": 0}, "sample_households"),
    ({"sample_households": 300_000}, "exceeds"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"misreporting": {"jobseekers_allowance": {}}}, "jobseekers_allowance"),
    ({"misreporting": {"child_benefit": {"report_rate": 2}}}, "misreporting.child_benefit.report_rate"),
])
def test_bad_params_are_named(params, fragment):
    with pytest.raises(ParameterError, match=fragment):
        generate_world(params)
