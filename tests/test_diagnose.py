"""Tests for weightreg.diagnose: hand-computed influence/ESS, slices, dropped metrics, determinism."""

import json

import numpy as np
import pandas as pd
import pytest
from surveys import random_survey

from weightreg.diagnose import (
    Diagnosis,
    MetricDroppedWarning,
    Slice,
    SurfaceData,
    age_band_codes,
    age_band_labels,
    diagnose,
    evaluate_surface,
    person_weighted_deciles,
    simulate_surface,
)
from weightreg.errors import ParameterError
from weightreg.survey import Survey


# ---- fixtures --------------------------------------------------------------------------------
def tiny_survey(households, drop_person=(), drop_household=()):
    """A Survey from ``[(weight, region, tenure, [(age, employment_income, is_head), ...]), ...]``;
    one benefit unit per household; household ids 11, 12, ..."""
    persons, benunits, hhs = [], [], []
    pid = 0
    for h, (weight, region, tenure, people) in enumerate(households):
        hid = 11 + h
        hhs.append(
            {"household_id": hid, "household_weight": float(weight), "region": region, "tenure_type": tenure,
             "rent": 6000.0 if tenure.startswith("RENT") else 0.0, "council_tax": 1500.0}
        )
        benunits.append({"benunit_id": 100 + hid, "is_married": sum(a >= 16 for a, _, _ in people) >= 2})
        for age, emp, head in people:
            pid += 1
            persons.append(
                {"person_id": pid, "person_benunit_id": 100 + hid, "person_household_id": hid, "age": float(age),
                 "employment_income": float(emp), "self_employment_income": 0.0,
                 "state_pension_reported": 9000.0 if age >= 66 else 0.0, "is_household_head": bool(head)}
            )
    person = pd.DataFrame(persons).drop(columns=list(drop_person))
    household = pd.DataFrame(hhs).drop(columns=list(drop_household))
    return Survey(person, pd.DataFrame(benunits), household).validate()


def hand_surface():
    """Four households, metrics x and y, slice g with cells a, b (zero mass), c (empty); household
    4 is in no cell of g. Reform 0 moves only x of household 3; reform 1 only y."""
    baseline = np.array([[100.0, -49.5, 0.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    deltas = np.zeros((2, 2, 4))
    deltas[0, 0] = [0.0, 0.0, 5.0, 0.0]
    deltas[1, 1] = [1.0, -0.5, 0.0, 0.0]
    return SurfaceData(
        household_id=np.array([1, 2, 3, 4]),
        weights=np.array([1.0, 2.0, 1.0, 4.0]),
        metrics=("x", "y"),
        baseline=baseline,
        deltas=deltas,
        reforms=({"r": 0}, {"r": 1}),
        slices=(Slice("g", np.array([0, 0, 1, -1]), ("a", "b", "c")),),
    )


# ---- hand-computed influence and ESS ----------------------------------------------------------
def test_evaluate_surface_hand_computed():
    d = evaluate_surface(hand_surface(), threshold=0.05)
    # Baseline x, absolute weighted mass |w x| = 100, 99, 0, 40.
    #   all: 100/239, 99/239, 0, 40/239;  g=a: 100/199, 99/199 (net total 1: the naive share is 100).
    #   g=b: household 3 has zero mass -> 0; g=c is empty; household 4 is in no cell of g.
    # Reform 0, delta x = 5 for household 3 only: share 1 in all and in g=b.
    # Reform 1, delta y, mass 1, 1 (w=2 x -0.5): all 1/2, 1/2; g=a 1/2, 1/2.
    # Household 2's largest share is reform 1's 1/2 (above its baseline 99/199).
    expected_max = [100 / 199, 0.5, 1.0, 40 / 239]
    np.testing.assert_allclose(d.records["max_influence"], expected_max)
    assert d.records["worst_statistic"].tolist() == [
        "x|g=a|baseline",
        "y|all|reform 1",  # ties with y|g=a|reform 1: the first scanned (whole population) wins
        "x|all|reform 0",  # likewise ties with x|g=b|reform 0
        "x|all|baseline",
    ]
    # Above 0.05: household 1: x all, x g, y all, y g; 2 likewise; 3: two in reform 0; 4: x all.
    assert d.records["violations"].tolist() == [4, 4, 2, 1]
    assert d.records["household_id"].tolist() == [1, 2, 3, 4]
    assert d.max_influence == 1.0 and d.worst_household_id == 3 and d.worst_statistic == "x|all|reform 0"
    assert d.n_above == 4
    # 3 surfaces (baseline + 2 reforms) x 2 metrics x (1 + 3) cells.
    assert d.n_statistics == 3 * 2 * 4

    e = d.ess_by_slice.set_index(["dimension", "cell"])
    assert e.loc[("all", "all"), "ess"] == pytest.approx(64 / 22)  # (1+2+1+4)^2 / (1+4+1+16)
    assert e.loc[("g", "a"), "ess"] == pytest.approx(9 / 5)
    assert e.loc[("g", "b"), "ess"] == pytest.approx(1.0)
    assert (e.loc[("g", "c"), "ess"], e.loc[("g", "c"), "n_records"]) == (0.0, 0)
    assert e.loc[("g", "(none)"), "n_records"] == 1 and e.loc[("g", "(none)"), "weight_total"] == 4.0
    assert e.loc[("g", "a"), "weight_total"] == 3.0


def test_evaluate_surface_threshold_and_weight_override():
    d = evaluate_surface(hand_surface(), threshold=0.45)
    # Above 0.45: 100/199 and 99/199 (x, g=a), both halves of reform 1 (y, all and g=a), reform 0.
    assert d.records["violations"].tolist() == [3, 3, 2, 0]
    assert d.n_above == 3
    # Doubling every weight changes no share; a zero weight removes a record's influence.
    d2 = evaluate_surface(hand_surface(), weights=[2.0, 4.0, 2.0, 8.0], threshold=0.45)
    np.testing.assert_allclose(d2.records["max_influence"], d.records["max_influence"])
    d3 = evaluate_surface(hand_surface(), weights=[0.0, 2.0, 1.0, 4.0], threshold=0.45)
    assert d3.records["max_influence"].iloc[0] == 0.0 and d3.records["worst_statistic"].iloc[0] == ""
    assert d3.records["max_influence"].iloc[1] == 1.0  # alone in g=a now


def test_evaluate_surface_rejects_bad_weights():
    with pytest.raises(ValueError, match="household_id \\[2\\]"):
        evaluate_surface(hand_surface(), weights=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        evaluate_surface(hand_surface(), weights=[1.0, 1.0])


def test_evaluate_surface_equals_dense_brute_force():
    rng = np.random.default_rng(11)
    n, m, k = 80, 3, 4
    baseline = rng.normal(0, 1, (m, n)) * (rng.random((m, n)) < 0.7)
    deltas = rng.normal(0, 1, (k, m, n)) * (rng.random((k, m, n)) < 0.3)
    deltas[2, 1] = 0.0  # an untouched metric: skipped, must change nothing
    slices = (
        Slice("p", rng.integers(-1, 4, n), ("p0", "p1", "p2", "p3")),
        Slice("q", rng.integers(0, 6, n), tuple(f"q{i}" for i in range(6))),
    )
    w = rng.lognormal(0, 1, n)
    data = SurfaceData(np.arange(n), w, ("m0", "m1", "m2"), baseline, deltas, tuple({} for _ in range(k)), slices)
    d = evaluate_surface(data, threshold=0.1)

    # Dense: one column per statistic (surface, metric, dimension, cell), records x statistics.
    columns, names = [], []
    dims = [("all", np.zeros(n, int), ("all",))] + [(s.name, s.codes, s.labels) for s in slices]
    for surface in range(1 + k):
        vals = baseline if surface == 0 else deltas[surface - 1]
        when = "baseline" if surface == 0 else f"reform {surface - 1}"
        for i in range(m):
            for dname, codes, labels in dims:
                for c, label in enumerate(labels):
                    inside = codes == c
                    mass = np.abs(w * vals[i]) * inside
                    columns.append(mass / mass.sum() if mass.sum() > 0 else mass)
                    names.append(f"m{i}|all|{when}" if dname == "all" else f"m{i}|{dname}={label}|{when}")
    dense = np.column_stack(columns)
    np.testing.assert_allclose(d.records["max_influence"], dense.max(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(d.records["violations"], (dense > 0.1).sum(axis=1))
    # Each record lies in one cell per dimension, so its first maximal column is its worst statistic.
    expected = [names[j] if dense[r, j] > 0 else "" for r, j in enumerate(dense.argmax(axis=1))]
    assert d.records["worst_statistic"].tolist() == expected
    assert d.n_statistics == dense.shape[1]
    # Thin statistics: fewer than 1 / 0.1 = 10 contributing records (non-zero mass).
    contributors = (dense > 0).sum(axis=0)
    thin = (contributors > 0) & (contributors < 10)
    assert d.n_thin_statistics == int(thin.sum()) > 0
    np.testing.assert_allclose(d.records["max_influence_not_thin"], (dense * ~thin).max(axis=1), rtol=1e-12)
    above = dense.max(axis=1) > 0.1
    assert d.n_above_thin_only == int((above & ((dense * ~thin).max(axis=1) <= 0.1)).sum())


def test_thin_statistics_hand_case():
    # Cell a: 3 contributors (and a zero): thin at threshold 0.05 (needs 20). Cell b: 25 equal masses.
    n = 29
    codes = np.array([0] * 4 + [1] * 25)
    x = np.array([1.0, 2.0, 3.0, 0.0] + [1.0] * 25)
    data = SurfaceData(np.arange(n), np.ones(n), ("x",), x[None, :], np.zeros((0, 1, n)), (),
                       (Slice("g", codes, ("a", "b")),))
    d = evaluate_surface(data, threshold=0.05)
    assert d.n_thin_statistics == 1  # cell a; the whole population (28 contributors) and b are not thin
    # Shares 1/6, 2/6, 3/6 in a (all above); of the whole population's mass 31: 1/31, 2/31, 3/31,
    # so the records with 2 and 3 are also above (0.065, 0.097) on a statistic that is not thin.
    assert d.n_above == 3 and d.n_above_thin_only == 1
    np.testing.assert_allclose(d.records["max_influence_not_thin"].to_numpy()[:4], [1 / 31, 2 / 31, 3 / 31, 0.0])
    assert d.to_metrics()["records_above_threshold_thin_only"] == 1


def test_weight_driven_and_value_driven_offenders_hand_case():
    # One cell of 25 contributors (not thin at 0.05) and a zero-weight record. Record 0 has a large
    # value, record 1 a large weight: masses 10, 5, 23 x 1 (total 38); at equal weights 10, 1, 23 x 1 (34).
    n = 26
    x = np.array([10.0] + [1.0] * 25)
    w = np.array([1.0, 5.0] + [1.0] * 23 + [0.0])
    data = SurfaceData(np.arange(n), w, ("x",), x[None, :], np.zeros((0, 1, n)), (),
                       (Slice("g", np.zeros(n, dtype=int), ("a",)),))
    d = evaluate_surface(data, threshold=0.05, equal_weights=True)
    np.testing.assert_allclose(d.records["max_influence"].to_numpy()[:3], [10 / 38, 5 / 38, 1 / 38])
    np.testing.assert_allclose(d.records["max_influence_equal_weights"].to_numpy(),
                               [10 / 34] + [1 / 34] * 24 + [0.0])
    assert d.n_above == 2 and d.n_above_thin_only == 0
    assert d.n_above_value_driven == 1 and d.n_above_weight_driven == 1
    metrics = d.to_metrics()
    assert metrics["records_above_threshold_value_driven"] == 1
    assert metrics["records_above_threshold_weight_driven"] == 1
    assert "1 are weight-driven" in d.summary_text() and "1 value-driven" in d.summary_text()
    # Without the second pass nothing is claimed, and the first pass is unchanged.
    plain = evaluate_surface(data, threshold=0.05)
    assert plain.n_above_value_driven is None and plain.n_above_weight_driven is None
    assert "records_above_threshold_value_driven" not in plain.to_metrics()
    assert "max_influence_equal_weights" not in plain.records
    pd.testing.assert_frame_equal(plain.records, d.records.drop(columns="max_influence_equal_weights"))


# ---- slices ------------------------------------------------------------------------------------
def test_person_weighted_deciles_hand_case():
    income = np.array([10.0, 20.0, 30.0, 40.0])
    weights = np.ones(4)
    # The 5-person household at the bottom holds 5/8 of the people: it alone is the bottom half.
    assert person_weighted_deciles(income, weights, [5, 1, 1, 1], 2).tolist() == [0, 1, 1, 1]
    # Counting households instead (all size 1) splits 2/2.
    assert person_weighted_deciles(income, weights, [1, 1, 1, 1], 2).tolist() == [0, 0, 1, 1]
    # Quartiles, person weights 1, 1, 2, 4 (cumulative 1, 2, 4, 8 of 8): cuts at 20 (2/8 >= 1/4),
    # 30 (4/8 >= 2/4), 40 (8/8 >= 3/4).
    got = person_weighted_deciles(income, [1.0, 1.0, 1.0, 2.0], [1, 1, 2, 2], 4)
    assert got.tolist() == [0, 0, 1, 2]
    # Unordered input, ties share a group, NaN is in none.
    got = person_weighted_deciles([30.0, 10.0, np.nan, 10.0, 20.0], np.ones(5), np.ones(5), 2)
    assert got.tolist() == [1, 0, -1, 0, 1]


def test_deciles_exact_tenths_with_equal_people():
    rng = np.random.default_rng(0)
    income = rng.permutation(np.arange(100.0))
    codes = person_weighted_deciles(income, np.full(100, 0.1), np.ones(100), 10)
    np.testing.assert_array_equal(codes, (income // 10).astype(int))


def test_age_bands():
    assert age_band_labels((16, 25, 35, 45, 55, 65, 75)) == (
        "16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+",
    )
    got = age_band_codes([15, 16, 24.9, 25, 74, 75, 101, np.nan], (16, 25, 35, 45, 55, 65, 75))
    assert got.tolist() == [-1, 0, 0, 1, 5, 6, 6, -1]


def test_age_band_is_the_heads_own_age_not_a_sum():
    survey = tiny_survey(
        [
            (100, "LONDON", "OWNED_OUTRIGHT", [(30, 20000, True), (30, 10000, False), (20, 0, False)]),
            # The flagged head is 40 although an older member lives there.
            (100, "WALES", "RENT_PRIVATELY", [(40, 30000, True), (70, 0, False)]),
            (100, "WALES", "RENT_FROM_HA", [(80, 0, True)]),
        ]
    )
    data = simulate_surface(survey, ["household_net_income"], [], dimensions=["age_band"])
    (age,) = data.slices
    assert age.name == "age_band"
    assert [age.labels[c] for c in age.codes] == ["25-34", "35-44", "75+"]  # a sum would give 75+, 75+


def test_income_decile_slice_follows_evaluated_weights():
    survey = tiny_survey([(1, "LONDON", "OWNED_OUTRIGHT", [(40, 10000 * (i + 1), True)]) for i in range(4)])
    data = simulate_surface(survey, ["income_tax"], [], dimensions=["income_decile"], n_deciles=2)
    e = evaluate_surface(data).ess_by_slice.set_index(["dimension", "cell"])
    assert e.loc[("income_decile", "1"), "n_records"] == 2
    # Give the poorest household 3/6 of the weight: it alone makes the bottom half.
    e = evaluate_surface(data, weights=[3.0, 1.0, 1.0, 1.0]).ess_by_slice.set_index(["dimension", "cell"])
    assert e.loc[("income_decile", "1"), "n_records"] == 1


# ---- the whole diagnosis on simulated data -----------------------------------------------------
def test_absent_column_drops_metric_with_warning():
    rows = [(100, "LONDON", "OWNED_OUTRIGHT", [(40, 20000, True)]), (50, "WALES", "RENT_PRIVATELY", [(70, 0, True)])]
    survey = tiny_survey(rows, drop_person=["employment_income", "state_pension_reported"])
    metrics = ["household_net_income", "employment_income", "state_pension", "no_such_metric", "rent"]
    with pytest.warns(MetricDroppedWarning) as caught:
        d = diagnose(survey, metrics=metrics, n_reforms=2, rng=np.random.default_rng(0))
    text = " ".join(str(w.message) for w in caught)
    for name in ("employment_income", "state_pension", "no_such_metric"):
        assert name in text
    assert set(d.dropped_metrics) == {"employment_income", "state_pension", "no_such_metric"}
    assert "person.employment_income" in d.dropped_metrics["employment_income"]
    assert "state_pension_reported" in d.dropped_metrics["state_pension"]
    assert d.metrics_used == ("household_net_income", "rent")  # rent: a household column, kept
    assert d.to_metrics()["n_dropped_metrics"] == 3
    assert "Dropped metric employment_income" in d.summary_text()


def test_absent_dimension_column_is_dropped_with_warning():
    survey = tiny_survey([(1, "LONDON", "OWNED_OUTRIGHT", [(40, 20000, True)])], drop_household=["region"])
    with pytest.warns(MetricDroppedWarning, match="region"):
        d = diagnose(survey, metrics=["income_tax"], n_reforms=1, rng=np.random.default_rng(0))
    assert "region" in d.dropped_dimensions
    assert "region" not in set(d.ess_by_slice["dimension"])


def test_errors_unknown_dimension_bad_reform_bad_rng():
    survey = tiny_survey([(1, "LONDON", "OWNED_OUTRIGHT", [(40, 20000, True)])])
    with pytest.raises(ParameterError, match="unknown slice dimension 'shoe_size'"):
        simulate_surface(survey, ["income_tax"], [], dimensions=["shoe_size"])
    with pytest.raises(ParameterError, match="reform 1 .* failed to apply"):
        simulate_surface(survey, ["income_tax"], [{}, {"income_tax.rates.nope": {"multiply": 1.1}}])
    with pytest.raises(ParameterError, match="age_bands"):
        simulate_surface(survey, ["income_tax"], [], age_bands=(30, 20))
    with pytest.raises(TypeError, match="Generator"):
        diagnose(survey, rng=0)


@pytest.fixture(scope="module")
def small_random_survey():
    return random_survey(400, np.random.default_rng(7))


def test_diagnose_is_deterministic(small_random_survey):
    a = diagnose(small_random_survey, n_reforms=4, rng=np.random.default_rng(42))
    b = diagnose(small_random_survey, n_reforms=4, rng=np.random.default_rng(42))
    assert a.to_metrics() == b.to_metrics()
    pd.testing.assert_frame_equal(a.records, b.records)
    assert a.reforms == b.reforms
    c = diagnose(small_random_survey, n_reforms=4, rng=np.random.default_rng(43))
    assert c.reforms != a.reforms


def test_diagnose_report_shapes_and_metrics_json(small_random_survey):
    s = small_random_survey
    d = diagnose(s, n_reforms=3, rng=np.random.default_rng(1), threshold=0.05)
    assert isinstance(d, Diagnosis)
    assert list(d.records.columns) == [
        "household_id", "source_id", "weight", "max_influence", "max_influence_not_thin", "source_max_influence",
        "worst_statistic", "violations", "max_influence_equal_weights",
    ]
    # No offspring: every household is its own source and the source figures are the row figures.
    assert (d.records["source_id"] == d.records["household_id"]).all()
    assert d.n_above_sources == d.n_above and d.source_kish.kish_ess == pytest.approx(d.kish.kish_ess)
    assert d.n_above_value_driven_sources == d.n_above_value_driven
    assert d.records["household_id"].tolist() == s.household_ids.tolist()
    assert d.records["max_influence"].between(0, 1).all()
    assert d.n_above == int((d.records["max_influence"] > 0.05).sum())
    assert set(d.ess_by_slice["dimension"]) == {"all", "income_decile", "region", "age_band", "tenure_type"}
    # Every scanned cell partitions the records: per dimension the counts add to N.
    assert (d.ess_by_slice.groupby("dimension")["n_records"].sum() == s.n_households).all()
    assert d.ess_by_slice.query("dimension == 'all'")["ess"].item() == pytest.approx(d.kish.kish_ess)
    metrics = d.to_metrics()
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
    json.dumps(metrics, allow_nan=False)
    assert metrics["records"] == s.n_households and metrics["n_reforms"] == 3
    text = d.summary_text(top=5)
    top_id = d.records.sort_values("max_influence", ascending=False, kind="stable")["household_id"].iloc[0]
    assert str(top_id) in text and d.worst_statistic in text and "Thinnest 5 slices" in text


def test_weights_override_matches_evaluating_the_surface(small_random_survey):
    s = small_random_survey
    w = s.weights * np.random.default_rng(3).uniform(0.5, 1.5, s.n_households)
    d = diagnose(s, n_reforms=2, rng=np.random.default_rng(9), weights=w)
    data = simulate_surface(s, reforms=random_reforms_for(9, 2))
    e = evaluate_surface(data, w, equal_weights=True)
    pd.testing.assert_frame_equal(d.records, e.records)
    np.testing.assert_allclose(d.records["weight"], w)


def random_reforms_for(seed, k):
    from weightreg.parameters import random_reforms

    return random_reforms(k, np.random.default_rng(seed))
