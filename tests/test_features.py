"""Flat household features: the build/extract round trips, per-adult incomes, eligibility, validity."""

import json

import numpy as np
import pandas as pd
import pytest

from weightreg.errors import FeatureError
from weightreg.features import (
    ADULT_AMOUNTS,
    FeatureSpec,
    build,
    extract,
    feature_columns_by_slot,
    modelled_columns,
    normalise,
    person_slots,
    row_problems,
    valid_rows,
)
from weightreg.survey import COUNCIL_TAX_BANDS, GENDERS, REGIONS, RENTING_TENURES, TENURE_TYPES, Survey

# ---- a hand-made survey -----------------------------------------------------------------------
PERSON_DEFAULTS = {a: 0.0 for a in ADULT_AMOUNTS} | {
    "gender": "FEMALE",
    "is_disabled_for_benefits": False,
    "is_household_head": False,
    "is_benunit_head": False,
    "employment_status": "OTHER",  # a column the features do not model
}
BENUNIT_DEFAULTS = {"is_married": False, "would_claim_uc": False, "would_claim_pc": False, "would_claim_child_benefit": False}
HOUSEHOLD_DEFAULTS = {
    "region": "LONDON",
    "tenure_type": "OWNED_OUTRIGHT",
    "rent": 0.0,
    "council_tax": 1500.0,
    "council_tax_band": "C",
    "household_extra": 1.0,  # not modelled either
}


def make_survey(households) -> Survey:
    """households: list of (household_id, weight, household fields, {bu_id: bu fields}, [person dicts])."""
    persons, units, homes = [], [], []
    for hid, weight, fields, bus, people in households:
        homes.append(HOUSEHOLD_DEFAULTS | fields | {"household_id": hid, "household_weight": weight})
        for bu_id, bu_fields in bus.items():
            units.append(BENUNIT_DEFAULTS | bu_fields | {"benunit_id": bu_id})
        for p in people:
            persons.append(PERSON_DEFAULTS | p | {"person_household_id": hid})
    person = pd.DataFrame(persons)
    person["age"] = person["age"].astype(np.int64)
    return Survey(person, pd.DataFrame(units), pd.DataFrame(homes)).validate()


def P(pid, bu, age, **kw):
    return {"person_id": pid, "person_benunit_id": bu, "age": age} | kw


HH = {
    # 1: single pensioner.
    1: (1, 150.0, {"region": "WALES", "council_tax_band": "B"}, {101: {"would_claim_pc": True}}, [
        P(1001, 101, 72, is_household_head=True, is_benunit_head=True, private_pension_income=8000.0,
          state_pension_reported=11500.0, savings_interest_income=310.5, is_disabled_for_benefits=True),
    ]),
    # 2: married couple, both earning, two children; persons listed out of slot order on purpose.
    2: (2, 300.0, {"tenure_type": "RENT_PRIVATELY", "rent": 12000.0},
        {201: {"is_married": True, "would_claim_uc": True, "would_claim_child_benefit": True}}, [
        P(2001, 201, 8, gender="MALE"),
        P(2002, 201, 38, employment_income=22000.0, hours_worked=25.0, child_benefit_reported=2200.0),
        P(2003, 201, 5),
        P(2004, 201, 40, gender="MALE", is_household_head=True, is_benunit_head=True, employment_income=30000.0,
          self_employment_income=-500.0, hours_worked=40.0, employment_status="FT_EMPLOYED"),
    ]),
    # 3: married couple and their adult son in his own benefit unit, all with income.
    3: (3, 200.0, {"region": "NORTH_WEST"}, {301: {"is_married": True}, 302: {"would_claim_uc": True}}, [
        P(3001, 301, 55, gender="MALE", is_household_head=True, is_benunit_head=True, employment_income=40000.0),
        P(3002, 301, 53, property_income=3000.0, dividend_income=120.0),
        P(3003, 302, 20, gender="MALE", is_benunit_head=True, employment_income=9000.0, hours_worked=20.0),
    ]),
    # 4: four single adults: more than max_adults=3, ineligible (never truncated to three).
    4: (4, 50.0, {"tenure_type": "RENT_FROM_HA", "rent": 9000.0}, {401: {}, 402: {}, 403: {}, 404: {}}, [
        P(4000 + k, 400 + k, 25 + k, is_household_head=(k == 1), is_benunit_head=True, employment_income=1000.0 * k)
        for k in range(1, 5)
    ]),
    # 5: cohabiting (unmarried) couple.
    5: (5, 120.0, {}, {501: {"is_married": False}}, [
        P(5001, 501, 30, gender="MALE", is_household_head=True, is_benunit_head=True, employment_income=25000.0),
        P(5002, 501, 29, employment_income=26000.0),
    ]),
    # 6: the head lives alone in her unit; a couple lodges, listed first, its flagged head second.
    6: (6, 80.0, {"tenure_type": "RENT_FROM_COUNCIL", "rent": 5000.0},
        {601: {}, 602: {"is_married": True, "would_claim_uc": True}}, [
        P(6001, 602, 30, gender="MALE", employment_income=15000.0),
        P(6002, 602, 32, is_benunit_head=True, employment_income=18000.0),
        P(6003, 601, 60, is_household_head=True, is_benunit_head=True, private_pension_income=4000.0),
    ]),
    # 7: a child in the second adult's benefit unit: ineligible.
    7: (7, 60.0, {}, {701: {}, 702: {}}, [
        P(7001, 701, 45, is_household_head=True, is_benunit_head=True),
        P(7002, 702, 22, is_benunit_head=True),
        P(7003, 702, 1),
    ]),
    # 8: a child with earnings: ineligible (children carry no amounts).
    8: (8, 40.0, {}, {801: {}}, [
        P(8001, 801, 41, is_household_head=True, is_benunit_head=True),
        P(8002, 801, 15, employment_income=500.0),
    ]),
    # 9: a 17-year-old living alone: ineligible (the head must be 18+).
    9: (9, 10.0, {}, {901: {}}, [P(9001, 901, 17, is_household_head=True, is_benunit_head=True)]),
    # 10: owner-occupiers with rent: ineligible.
    10: (10, 30.0, {"rent": 100.0}, {1001: {}}, [P(10001, 1001, 50, is_household_head=True, is_benunit_head=True)]),
    # 11: a lone parent with a disabled child: eligible (children carry their own disability flag).
    11: (11, 25.0, {}, {1101: {}}, [
        P(11001, 1101, 34, is_household_head=True, is_benunit_head=True),
        P(11002, 1101, 9, is_disabled_for_benefits=True),
    ]),
}
ELIGIBLE = (1, 2, 3, 5, 6, 11)
EXPECTED_REASONS = {
    4: "too_many_adults",
    7: "child_outside_head_benunit",
    8: "child_has_employment_income",
    9: "head_under_18",
    10: "rent_without_renting",
}


@pytest.fixture(scope="module")
def survey():
    return make_survey(HH.values())


@pytest.fixture(scope="module")
def spec(survey):
    return FeatureSpec.from_survey(survey)


@pytest.fixture(scope="module")
def extraction(survey, spec):
    return extract(survey, spec)


# ---- comparison helpers ------------------------------------------------------------------------
def _plain(series: pd.Series) -> list:
    if series.dtype == bool:
        return series.astype(bool).tolist()
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(float).tolist()
    return series.astype(str).tolist()


def canonical(survey: Survey, spec: FeatureSpec):
    """Everything build() models, free of ids and row order: households, persons (with their
    household) and benefit units (with their household and the multiset of their members)."""
    cols = modelled_columns(spec)
    p, b, h = survey.person, survey.benunit, survey.household
    p_cols = sorted(cols["person"] - {"person_id", "person_benunit_id", "person_household_id"})
    p_vals = list(zip(p["person_household_id"].tolist(), *(_plain(p[c]) for c in p_cols)))
    members: dict = {}
    for bu_id, vals in zip(p["person_benunit_id"].tolist(), p_vals):
        members.setdefault(bu_id, []).append(vals)
    b_cols = sorted(cols["benunit"] - {"benunit_id"})
    b_vals = sorted(
        (tuple(sorted(members.get(bu, []))), *vals) for bu, *vals in zip(b["benunit_id"].tolist(), *(_plain(b[c]) for c in b_cols))
    )
    h_cols = sorted(cols["household"])
    h_vals = sorted(zip(*(_plain(h[c]) for c in h_cols)))
    return h_vals, sorted(p_vals), b_vals


# ---- the spec ---------------------------------------------------------------------------------
def test_spec_layouts_and_columns(spec):
    # The survey carries is_married, so couples split into married and cohabiting.
    assert set(spec.layouts) == {
        "single", "couple", "cohabiting", "two_singles", "couple_plus_single", "cohabiting_plus_single",
        "single_plus_couple", "single_plus_cohabiting", "three_singles",
    }
    assert spec.layout_adults()["single_plus_couple"] == 3
    assert spec.layout_units()["couple_plus_single"] == ("couple", "single")
    cols = spec.columns()
    assert len(cols) == len(set(cols))
    # 5 household + 3 structure + 3 * 15 adult + 3 * 3 unit + 4 * 3 child columns (age, gender, disability).
    assert len(cols) == 5 + 3 + 45 + 9 + 12
    kinds = spec.column_kinds()
    assert list(kinds) == cols
    assert kinds["adult2_age"] == "integer" and kinds["n_children"] == "integer"
    assert kinds["adult3_employment_income"] == "numerical"
    assert kinds["bu2_would_claim_uc"] == "boolean" and kinds["adult1_is_disabled_for_benefits"] == "boolean"
    cats = spec.categories()
    assert set(cats) == {c for c, k in kinds.items() if k == "categorical"}
    assert cats["adult3_gender"] == ("MALE", "FEMALE", "NONE")
    assert cats["region"] == REGIONS and cats["layout"] == spec.layouts
    assert spec.dropped == ()


def test_spec_without_is_married_has_the_contract_layouts():
    spec = FeatureSpec(benunit_columns=("would_claim_uc", "would_claim_pc", "would_claim_child_benefit"))
    assert set(spec.layouts) == {
        "single", "couple", "two_singles", "couple_plus_single", "single_plus_couple", "three_singles"
    }
    assert spec.dropped == ("is_married",)


def test_spec_dict_round_trip_through_json(spec):
    d = json.loads(json.dumps(spec.to_dict()))
    assert FeatureSpec.from_dict(d) == spec
    small = FeatureSpec(max_adults=2, max_children=1, person_columns=("age", "employment_income"))
    assert FeatureSpec.from_dict(json.loads(json.dumps(small.to_dict()))) == small
    with pytest.raises(FeatureError, match="layouts"):
        FeatureSpec.from_dict(dict(d, layouts=["single"]))
    with pytest.raises(FeatureError, match="lacks"):
        FeatureSpec.from_dict({"max_adults": 3})


def test_spec_rejects_bad_parameters():
    with pytest.raises(FeatureError, match="max_adults"):
        FeatureSpec(max_adults=0)
    with pytest.raises(FeatureError, match="unknown column"):
        FeatureSpec(person_columns=("age", "shoe_size"))
    with pytest.raises(FeatureError, match="age"):
        FeatureSpec(person_columns=("gender",))


# ---- extraction -------------------------------------------------------------------------------
def test_eligibility_and_reasons(survey, extraction):
    ids = survey.household_ids
    assert extraction.eligible.tolist() == [h in ELIGIBLE for h in ids]
    assert extraction.features.index.tolist() == list(ELIGIBLE)
    inel = extraction.ineligible.set_index("household_id")
    assert sorted(inel.index) == sorted(EXPECTED_REASONS)
    for hid, reason in EXPECTED_REASONS.items():
        assert reason in inel.loc[hid, "reason"].split("; ")
    total = sum(h[1] for h in HH.values())
    assert inel.loc[4, "weight_share"] == pytest.approx(50.0 / total)
    summary = extraction.summary
    assert summary["n_households"] == 11 and summary["n_eligible"] == 6 and summary["n_ineligible"] == 5
    assert summary["ineligible_weight_share"] == pytest.approx((50 + 60 + 40 + 10 + 30) / total)
    assert summary["by_reason"]["too_many_adults"] == {"households": 1, "weight_share": pytest.approx(50 / total)}
    assert "6 of 11 households eligible" in extraction.describe()


def test_extracted_slots_are_per_adult(extraction):
    f = extraction.features
    # Couple with two earners: each adult's income in its own slot, nothing summed onto the head.
    assert f.loc[2, "layout"] == "couple"
    assert (f.loc[2, "adult1_employment_income"], f.loc[2, "adult2_employment_income"]) == (30000.0, 22000.0)
    assert f.loc[2, "adult1_self_employment_income"] == -500.0
    assert f.loc[2, "adult2_child_benefit_reported"] == 2200.0
    assert (f.loc[2, "n_adults"], f.loc[2, "n_children"]) == (2, 2)
    # Children keep person order.
    assert (f.loc[2, "child1_age"], f.loc[2, "child2_age"], f.loc[2, "child3_age"]) == (8, 5, 0)
    assert (f.loc[2, "child1_gender"], f.loc[2, "child3_gender"]) == ("MALE", "NONE")
    assert f.loc[2, "adult3_gender"] == "NONE" and f.loc[2, "adult3_employment_income"] == 0.0
    assert not f.loc[2, "bu2_would_claim_uc"]
    # Head, partner, then the adult son in unit 2.
    assert f.loc[3, "layout"] == "couple_plus_single"
    assert f.loc[3, ["adult1_age", "adult2_age", "adult3_age"]].tolist() == [55, 53, 20]
    assert f.loc[3, "adult3_employment_income"] == 9000.0 and f.loc[3, "bu2_would_claim_uc"]
    assert f.loc[5, "layout"] == "cohabiting"
    # Head first although listed last; then the lodging couple, its flagged head first.
    assert f.loc[6, "layout"] == "single_plus_couple"
    assert f.loc[6, ["adult1_age", "adult2_age", "adult3_age"]].tolist() == [60, 32, 30]
    assert f.loc[6, "bu2_would_claim_uc"] and not f.loc[6, "bu1_would_claim_uc"]
    assert f.loc[1, "adult1_is_disabled_for_benefits"] and f.loc[1, "bu1_would_claim_pc"]


def test_extracted_rows_are_canonical_and_valid(extraction, spec):
    f = extraction.features
    pd.testing.assert_frame_equal(normalise(f, spec), f)
    assert valid_rows(f, spec).all()
    assert (row_problems(f, spec) == "").all()
    kinds = spec.column_kinds()
    assert all(f[c].dtype == np.int64 for c, k in kinds.items() if k == "integer")
    assert all(f[c].dtype == bool for c, k in kinds.items() if k == "boolean")


def test_build_of_extract_reproduces_covered_households(survey, spec, extraction):
    covered = survey.select_households(extraction.eligible)
    built = build(
        extraction.features, spec, household_ids=extraction.features.index, weights=covered.weights,
        time_period=survey.time_period,
    )
    built.validate()
    assert canonical(built, spec) == canonical(covered, spec)
    # Columns not modelled do not survive.
    assert "employment_status" not in built.person and "household_extra" not in built.household


def test_disabled_child_is_a_feature_and_survives_the_round_trip(extraction, spec):
    row = extraction.features.loc[[11]]
    assert bool(row["child1_is_disabled_for_benefits"].iloc[0]) is True
    assert bool(row["adult1_is_disabled_for_benefits"].iloc[0]) is False
    built = build(row, spec, household_ids=[11])
    child = built.person[built.person["age"] < 16]
    assert child["is_disabled_for_benefits"].tolist() == [True]
    pd.testing.assert_frame_equal(extract(built, spec).features, row, check_dtype=False)


def test_multi_earner_household_carries_exactly_the_row_incomes(extraction, spec):
    row = extraction.features.loc[[2, 3]]
    built = build(row, spec, household_ids=[2, 3])
    p = built.person
    for hid in (2, 3):
        mine = p[p["person_household_id"] == hid]
        n = int(row.loc[hid, "n_adults"])
        slots = [row.loc[hid, f"adult{i}_employment_income"] for i in range(1, n + 1)]
        adults = mine[mine["age"] >= 16]
        # Each adult (in slot order) holds its own slot; children hold nothing.
        assert adults["employment_income"].tolist() == slots
        assert mine["employment_income"].sum() == sum(slots)
        assert (mine.loc[mine["age"] < 16, ADULT_AMOUNTS] == 0).all().all()
    head2 = p[(p["person_household_id"] == 2) & p["is_household_head"]]
    assert head2["employment_income"].tolist() == [30000.0]
    assert p.loc[p["person_household_id"] == 2, "employment_income"].tolist() == [30000.0, 22000.0, 0.0, 0.0]


def test_dropped_columns_recorded_and_not_built(survey):
    lacking = Survey(
        survey.person.drop(columns=["universal_credit_reported", "gender"]),
        survey.benunit.drop(columns=["is_married"]),
        survey.household.drop(columns=["council_tax_band"]),
    )
    spec = FeatureSpec.from_survey(lacking)
    assert set(spec.dropped) == {"universal_credit_reported", "gender", "is_married", "council_tax_band"}
    cols = spec.columns()
    assert not any("universal_credit_reported" in c or "gender" in c for c in cols)
    assert "council_tax_band" not in cols and "cohabiting" not in spec.layouts
    mc = modelled_columns(spec)
    assert "universal_credit_reported" not in mc["person"] and "employment_status" not in mc["person"]
    assert {"is_household_head", "is_benunit_head", "age"} <= mc["person"] and "is_married" in mc["benunit"]
    e = extract(lacking, spec)
    # Without is_married the cohabiting couple is a plain couple (and its is_married false no
    # longer contradicts anything); the other verdicts are unchanged.
    assert e.features.index.tolist() == list(ELIGIBLE)
    assert e.features.loc[5, "layout"] == "couple"
    built = build(e.features, spec, household_ids=e.features.index)
    assert "universal_credit_reported" not in built.person and "gender" not in built.person
    extract(built, spec)  # still extractable with the same spec
    # A spec that reads a column the survey lacks is refused, naming it.
    with pytest.raises(FeatureError, match="universal_credit_reported"):
        extract(lacking, FeatureSpec())


def test_without_head_flags_the_oldest_heads_and_person_order_decides(survey, spec):
    bare = Survey(survey.person.drop(columns=["is_household_head", "is_benunit_head"]), survey.benunit, survey.household)
    e = extract(bare, spec)
    assert e.features.index.tolist() == list(ELIGIBLE)
    # Household 6: the 60-year-old is oldest, so head; the lodgers then come in person order.
    assert e.features.loc[6, ["adult1_age", "adult2_age", "adult3_age"]].tolist() == [60, 30, 32]
    built = build(e.features, spec, household_ids=e.features.index)
    assert built.person.loc[built.person["person_household_id"] == 6, "is_benunit_head"].tolist() == [True, True, False]


def test_missing_age_is_refused(survey):
    no_age = Survey(survey.person.drop(columns=["age"]), survey.benunit, survey.household)
    with pytest.raises(FeatureError, match="age"):
        FeatureSpec.from_survey(no_age)


def test_flag_mismatches_make_households_ineligible(survey, spec):
    person = survey.person.copy()
    person.loc[person["person_id"] == 2002, "is_benunit_head"] = True  # two heads in unit 201
    person.loc[person["person_id"] == 3002, "is_household_head"] = True  # two household heads
    benunit = survey.benunit.copy()
    benunit.loc[benunit["benunit_id"] == 101, "is_married"] = True  # married single
    e = extract(Survey(person, benunit, survey.household), spec)
    inel = e.ineligible.set_index("household_id")["reason"]
    assert "benunit_head_flag_mismatch" in inel[2]
    assert "household_head_flag_mismatch" in inel[3]
    assert "married_single_benunit" in inel[1]


def test_non_canonical_survey_values_make_households_ineligible(survey, spec):
    person = survey.person.copy()
    person["age"] = person["age"].astype(float)
    person.loc[person["person_id"] == 2004, "age"] = 40.5
    person.loc[person["person_id"] == 3002, "property_income"] = -100.0
    person.loc[person["person_id"] == 5002, "hours_worked"] = np.nan
    household = survey.household.copy()
    household.loc[household["household_id"] == 6, "council_tax"] = -1.0
    e = extract(Survey(person, survey.benunit, household), spec)
    inel = e.ineligible.set_index("household_id")["reason"]
    assert inel[2] == "non_integer" and inel[3] == "negative_amount" and inel[5] == "non_finite_value"
    assert inel[6] == "negative_amount"
    assert e.features.index.tolist() == [1, 11]


def test_larger_limits_cover_more(survey):
    spec = FeatureSpec.from_survey(survey, max_adults=4, max_children=2)
    e = extract(survey, spec)
    assert e.features.loc[4, "layout"] == "four_singles"
    assert e.features.loc[4, "adult4_employment_income"] == 4000.0
    built = build(e.features, spec, household_ids=e.features.index, weights=survey.weights[e.eligible])
    assert canonical(built, spec) == canonical(survey.select_households(e.eligible), spec)


# ---- random rows: the property round trip -----------------------------------------------------
def random_rows(spec: FeatureSpec, rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Rows that are valid once normalised, with noise normalise must remove: garbage in unused
    slots, negative amounts, fractional ages."""
    A, C = spec.max_adults, spec.max_children
    layouts = np.array(spec.layouts, dtype=object)
    layout = layouts[np.arange(n) % len(layouts)]  # every layout, many times
    rng.shuffle(layout)
    n_adults_of = spec.layout_adults()
    cols: dict[str, np.ndarray] = {
        "region": rng.choice(np.array(REGIONS, dtype=object), n),
        "tenure_type": rng.choice(np.array(TENURE_TYPES, dtype=object), n),
        "council_tax": rng.gamma(2.0, 800.0, n) - 100.0,
        "council_tax_band": rng.choice(np.array(COUNCIL_TAX_BANDS, dtype=object), n),
        "n_adults": np.array([n_adults_of[x] for x in layout]) + rng.uniform(-0.4, 0.4, n),
        "n_children": rng.integers(0, C + 1, n),
        "layout": layout,
    }
    renting = np.isin(cols["tenure_type"], RENTING_TENURES)
    cols["rent"] = np.where(renting, rng.gamma(2.0, 4000.0, n) * (rng.random(n) < 0.9), 0.0)
    for i in range(1, A + 1):
        lo = 18 if i == 1 else 16
        cols[f"adult{i}_age"] = rng.uniform(lo - 0.4, 95.4, n)
        cols[f"adult{i}_gender"] = rng.choice(np.array(GENDERS + ("NONE",), dtype=object), n)
        for a in ADULT_AMOUNTS:
            on = rng.random(n) < 0.4
            cols[f"adult{i}_{a}"] = np.where(on, rng.lognormal(9.0, 1.2, n), 0.0) - 50.0 * (rng.random(n) < 0.05)
        cols[f"adult{i}_is_disabled_for_benefits"] = rng.random(n) < 0.2
        for f in ("would_claim_uc", "would_claim_pc", "would_claim_child_benefit"):
            cols[f"bu{i}_{f}"] = rng.random(n)  # probabilities, thresholded by normalise
    for j in range(1, C + 1):
        cols[f"child{j}_age"] = rng.integers(0, 16, n).astype(float)
        cols[f"child{j}_gender"] = rng.choice(np.array(GENDERS, dtype=object), n)
        cols[f"child{j}_is_disabled_for_benefits"] = rng.random(n) < 0.1
    rows = pd.DataFrame(cols)
    # Used slots must carry a real gender; unused ones may carry anything (normalise clears them).
    for i in range(1, A + 1):
        used = i <= np.round(rows["n_adults"])
        rows.loc[used, f"adult{i}_gender"] = rng.choice(np.array(GENDERS, dtype=object), int(used.sum()))
    return rows[spec.columns()]


SPECS = {
    "default": FeatureSpec(),
    "no_married_gender_uc": FeatureSpec(
        person_columns=tuple(c for c in FeatureSpec().person_columns if c not in ("gender", "universal_credit_reported")),
        benunit_columns=("would_claim_uc", "would_claim_child_benefit"),
    ),
    "wide": FeatureSpec(max_adults=5, max_children=2),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_extract_of_build_is_normalise(name):
    spec = SPECS[name]
    rng = np.random.default_rng(20250)
    rows = random_rows(spec, rng, 500)
    canon = normalise(rows, spec)
    pd.testing.assert_frame_equal(normalise(canon, spec), canon)  # idempotent
    assert valid_rows(rows, spec).all(), row_problems(canon, spec).value_counts()
    assert set(canon["layout"]) == set(spec.layouts)
    ids = rng.permutation(np.arange(10, 10 + 3 * len(rows)))[: len(rows)]
    built = build(rows, spec, household_ids=ids, weights=rng.uniform(1, 100, len(rows)))
    built.validate()
    e = extract(built, spec)
    assert e.eligible.all(), e.ineligible.head()
    assert e.features.index.tolist() == ids.tolist()
    pd.testing.assert_frame_equal(e.features.reset_index(drop=True), canon.reset_index(drop=True))
    # And back again: build(extract(built)) is built, up to ids and order.
    again = build(e.features, spec, household_ids=e.features.index, weights=built.weights)
    assert canonical(again, spec) == canonical(built, spec)


def test_normalise_clears_unused_slots_and_clips():
    spec = FeatureSpec()
    rows = random_rows(spec, np.random.default_rng(3), 200)
    canon = normalise(rows, spec)
    one = canon["n_adults"] == 1
    assert (canon.loc[one, "adult2_gender"] == "NONE").all() and (canon.loc[one, "adult3_age"] == 0).all()
    assert (canon.loc[one, [f"adult2_{a}" for a in ADULT_AMOUNTS]] == 0).all().all()
    single_unit = canon["layout"].isin(["single", "couple", "cohabiting"])
    assert not canon.loc[single_unit, ["bu2_would_claim_uc", "bu3_would_claim_pc"]].any().any()
    none = canon["n_children"] == 0
    assert (canon.loc[none, "child1_gender"] == "NONE").all()
    clipped = [c for c in spec.columns() if c.endswith(ADULT_AMOUNTS) and "self_employment" not in c]
    assert (canon[clipped + ["rent", "council_tax"]] >= 0).all().all()
    assert (canon["adult1_self_employment_income"] < 0).any()  # losses kept
    assert canon["adult1_age"].dtype == np.int64 and canon["bu1_would_claim_uc"].dtype == bool
    assert np.array_equal(canon["adult1_age"], np.round(rows["adult1_age"]).astype(np.int64))


# ---- validity -----------------------------------------------------------------------------------
@pytest.fixture
def good_row(extraction):
    return extraction.features.loc[[2]].reset_index(drop=True)  # couple with two children


@pytest.mark.parametrize(
    "change, code",
    [
        ({"layout": "couple", "n_adults": 1}, "layout_mismatch"),
        ({"layout": "couple_plus_single"}, "layout_mismatch"),
        ({"layout": "quadruple"}, "unknown_layout"),
        ({"child1_age": 17}, "child_age_out_of_range"),
        ({"child2_age": -1}, "child_age_out_of_range"),
        ({"adult1_age": 17}, "head_under_18"),
        ({"adult2_age": 15}, "adult_under_16"),
        ({"adult2_age": 130}, "age_over_120"),
        ({"n_children": 5}, "n_children_out_of_range"),
        ({"n_adults": 0, "layout": "single"}, "n_adults_out_of_range"),
        ({"region": "ATLANTIS"}, "unknown_region"),
        ({"tenure_type": "OWNED_OUTRIGHT"}, "rent_without_renting"),
        ({"adult2_gender": "NONE"}, "unknown_gender"),
        ({"child1_gender": "NONE"}, "unknown_gender"),
        ({"adult1_employment_income": np.nan}, "non_finite_value"),
        ({"n_adults": np.nan}, "n_adults_out_of_range"),
    ],
)
def test_valid_rows_rejects_inconsistent_rows(good_row, spec, change, code):
    assert valid_rows(good_row, spec).tolist() == [True]
    bad = good_row.copy()
    for col, value in change.items():
        bad[col] = pd.Series([value], dtype=object if isinstance(value, str) else None)
    assert valid_rows(bad, spec).tolist() == [False]
    assert code in row_problems(normalise(bad, spec), spec).iloc[0].split("; ")
    with pytest.raises(FeatureError, match="cannot be built"):
        build(bad, spec, household_ids=[1])


def test_row_problems_on_raw_rows_and_normalise_fixes(good_row, spec):
    raw = good_row.copy()
    raw["adult3_employment_income"] = 5.0  # unused slot
    raw["adult1_age"] = 40.5
    raw["adult2_property_income"] = -3.0
    problems = row_problems(raw, spec).iloc[0].split("; ")
    assert set(problems) == {"unused_slot_not_empty", "non_integer", "negative_amount"}
    assert valid_rows(raw, spec).tolist() == [True]  # normalise repairs all three
    assert row_problems(good_row, spec).iloc[0] == ""


def test_missing_columns_refused(good_row, spec):
    with pytest.raises(FeatureError, match="adult1_age"):
        normalise(good_row.drop(columns=["adult1_age"]), spec)


# ---- build: ids and flags -----------------------------------------------------------------------
def test_build_ids_and_flags(extraction, spec):
    rows = extraction.features.loc[[3, 2]]  # couple_plus_single, then couple with 2 children
    built = build(rows, spec, household_ids=[7, 12], weights=[2.5, 4.0], time_period="2026")
    p, b, h = built.person, built.benunit, built.household
    assert p["person_id"].tolist() == [7001, 7002, 7003, 12001, 12002, 12003, 12004]
    assert p["person_benunit_id"].tolist() == [701, 701, 702, 1201, 1201, 1201, 1201]
    assert p["person_household_id"].tolist() == [7, 7, 7, 12, 12, 12, 12]
    assert p["is_household_head"].tolist() == [True, False, False, True, False, False, False]
    assert p["is_benunit_head"].tolist() == [True, False, True, True, False, False, False]
    assert p["age"].tolist() == [55, 53, 20, 40, 38, 8, 5]
    assert b["benunit_id"].tolist() == [701, 702, 1201]
    assert b["is_married"].tolist() == [True, False, True]
    assert b["would_claim_uc"].tolist() == [False, True, True]
    assert h["household_id"].tolist() == [7, 12] and h["household_weight"].tolist() == [2.5, 4.0]
    assert built.time_period == "2026"
    for entity, cols in modelled_columns(spec).items():
        assert set(getattr(built, entity).columns) == cols
    default_weight = build(rows, spec, household_ids=[1, 2])
    assert default_weight.household["household_weight"].tolist() == [1.0, 1.0]


def test_build_rejects_bad_ids(good_row, spec):
    two = pd.concat([good_row, good_row], ignore_index=True)
    with pytest.raises(FeatureError, match="duplicate"):
        build(two, spec, household_ids=[5, 5])
    with pytest.raises(FeatureError, match="outside"):
        build(good_row, spec, household_ids=[-1])
    with pytest.raises(FeatureError, match="one id per row"):
        build(two, spec, household_ids=[1])
    with pytest.raises(FeatureError, match="weights"):
        build(good_row, spec, household_ids=[1], weights=[-2.0])


# ---- slots --------------------------------------------------------------------------------------
def test_person_slots_follow_the_extraction_order(survey, spec, extraction):
    slots = pd.Series(person_slots(survey), index=survey.person["person_id"])
    # Household 2 is listed child, partner, child, head; household 6 lodger, lodger (unit head), head.
    assert slots.loc[[2001, 2002, 2003, 2004]].tolist() == ["child1", "adult2", "child2", "adult1"]
    assert slots.loc[[6001, 6002, 6003]].tolist() == ["adult3", "adult2", "adult1"]
    assert slots.loc[[4001, 4004]].tolist() == ["adult1", "adult4"]  # beyond max_adults, still named
    # For a built survey, slot names match the slot each person was built from.
    built = build(extraction.features, spec, household_ids=extraction.features.index)
    b_slots = person_slots(built, spec)
    p = built.person
    cols = feature_columns_by_slot(spec)
    row_of = extraction.features.loc[p["person_household_id"]]
    for col in ("age", "employment_income"):
        expected = [
            row_of.iloc[n][f"{slot}_{col}"] if f"{slot}_{col}" in cols[slot] else 0.0
            for n, slot in enumerate(b_slots)
        ]
        assert p[col].astype(float).tolist() == [float(x) for x in expected]
    assert cols["adult1"][0] == "adult1_age" and cols["bu2"] == [f"bu2_{f}" for f in spec.benunit_features]
    assert sorted(c for v in cols.values() for c in v) == sorted(c for c in spec.columns() if c[:2] in ("ad", "bu", "ch"))
