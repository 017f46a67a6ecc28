"""Tests for weightreg.simulate, against hand-computed 2025-26 figures.

Every expected value below is written out as arithmetic from the published rates, independently
of the simulator's code.
"""

import numpy as np
import pandas as pd
import pytest

from weightreg.errors import ParameterError
from weightreg.parameters import load_parameters, random_reforms
from weightreg.simulate import (
    BENUNIT_COLUMNS,
    HOUSEHOLD_COLUMNS,
    PERSON_COLUMNS,
    SimulationInputs,
    SimulationResult,
    prepare_inputs,
    simulate,
)
from weightreg.survey import Survey

PERSON_DEFAULTS = {
    "age": 35,
    "gender": "MALE",
    "employment_income": 0.0,
    "self_employment_income": 0.0,
    "private_pension_income": 0.0,
    "savings_interest_income": 0.0,
    "dividend_income": 0.0,
    "property_income": 0.0,
    "state_pension_reported": 0.0,
    "is_disabled_for_benefits": False,
    "is_household_head": False,  # none flagged: the oldest member heads the household
}
BENUNIT_DEFAULTS = {
    "is_married": False,
    "would_claim_uc": True,
    "would_claim_pc": True,
    "would_claim_child_benefit": True,
}
HOUSEHOLD_DEFAULTS = {
    "household_weight": 1.0,
    "region": "LONDON",
    "tenure_type": "OWNED_OUTRIGHT",
    "rent": 0.0,
    "council_tax": 0.0,
}


def make_survey(households):
    """Build a Survey from nested dicts.

    ``households`` is a list of dicts of household columns plus ``benunits``: a list of dicts of
    benefit-unit columns plus ``people``: a list of dicts of person columns. Missing columns take
    the defaults above; ids are assigned 1, 2, 3... in order (household ids start at 101 and
    benefit unit ids at 201 so that a mix-up of id spaces would be caught).
    """
    persons, benunits, hhs = [], [], []
    pid, bid = 0, 200
    for h, hh in enumerate(households):
        hid = 101 + h
        row = {**HOUSEHOLD_DEFAULTS, **{k: v for k, v in hh.items() if k != "benunits"}}
        hhs.append({"household_id": hid, **row})
        for bu in hh["benunits"]:
            bid += 1
            brow = {**BENUNIT_DEFAULTS, **{k: v for k, v in bu.items() if k != "people"}}
            benunits.append({"benunit_id": bid, **brow})
            for person in bu["people"]:
                pid += 1
                persons.append(
                    {
                        "person_id": pid,
                        "person_benunit_id": bid,
                        "person_household_id": hid,
                        **PERSON_DEFAULTS,
                        **person,
                    }
                )
    return Survey(pd.DataFrame(persons), pd.DataFrame(benunits), pd.DataFrame(hhs)).validate()


def single(**person):
    """A one-person household (household columns may be passed with an ``hh_`` prefix)."""
    hh = {k[3:]: v for k, v in person.items() if k.startswith("hh_")}
    person = {k: v for k, v in person.items() if not k.startswith("hh_")}
    return {**hh, "benunits": [{"people": [person]}]}


def run_one(household, **kwargs):
    return simulate(make_survey([household]), **kwargs)


# ---- income tax and NI ------------------------------------------------------------------------
def test_30k_single_earner():
    res = run_one(single(age=35, employment_income=30_000))
    tax = (30_000 - 12_570) * 0.20  # = 3486.00
    ni = (30_000 - 12_570) * 0.08  # = 1394.40
    assert tax == pytest.approx(3486.00)
    hh = res.household.iloc[0]
    assert hh.income_tax == pytest.approx(tax)
    assert hh.national_insurance == pytest.approx(ni)
    assert res.person.income_tax.iloc[0] == pytest.approx(3486.00)
    assert res.person.national_insurance.iloc[0] == pytest.approx(1394.40)
    # UC: maximum 400.14 x 12 = 4801.68; no work allowance (no children, not disabled);
    # net earnings 30000 - 3486 - 1394.40 = 25119.60, x 0.55 = 13815.78 > 4801.68 -> nil.
    assert hh.universal_credit == 0
    assert hh.child_benefit == 0 and hh.pension_credit == 0 and hh.housing_benefit == 0
    assert hh.household_net_income == pytest.approx(30_000 - 3486.00 - 1394.40)
    assert hh.market_income == pytest.approx(30_000)
    assert hh.equivalisation_factor == 1.0
    assert hh.equivalised_household_net_income == pytest.approx(25_119.60)
    assert res.person.total_income.iloc[0] == 30_000
    assert res.person.adjusted_net_income.iloc[0] == 30_000


def test_110k_earner_tapered_allowance():
    res = run_one(single(employment_income=110_000))
    allowance = 12_570 - (110_000 - 100_000) / 2  # = 7570
    taxable = 110_000 - allowance  # = 102430
    tax = 37_700 * 0.20 + (taxable - 37_700) * 0.40  # = 7540 + 25892 = 33432
    assert tax == pytest.approx(33_432)
    ni = (50_270 - 12_570) * 0.08 + (110_000 - 50_270) * 0.02  # = 3016 + 1194.60
    assert res.household.income_tax.iloc[0] == pytest.approx(33_432)
    assert res.household.national_insurance.iloc[0] == pytest.approx(ni)


def test_150k_earner_additional_rate_no_allowance():
    res = run_one(single(employment_income=150_000))
    # allowance fully withdrawn (150k > 125,140); taxable = 150,000
    tax = 37_700 * 0.20 + (125_140 - 37_700) * 0.40 + (150_000 - 125_140) * 0.45
    assert tax == pytest.approx(7_540 + 34_976 + 11_187)  # = 53,703
    assert res.person.income_tax.iloc[0] == pytest.approx(53_703)
    assert res.person.national_insurance.iloc[0] == pytest.approx(3_016 + 99_730 * 0.02)


def test_self_employment_class_4_and_other_income_taxed():
    res = run_one(single(self_employment_income=20_000, savings_interest_income=1_000, dividend_income=2_000))
    # all income taxed at ordinary rates (simplification): (23000 - 12570) x 0.2
    assert res.person.income_tax.iloc[0] == pytest.approx((23_000 - 12_570) * 0.20)
    # class 4 on profits only: (20000 - 12570) x 0.06
    assert res.person.national_insurance.iloc[0] == pytest.approx((20_000 - 12_570) * 0.06)


def test_no_ni_at_pension_age():
    res = run_one(single(age=67, employment_income=30_000))
    assert res.person.national_insurance.iloc[0] == 0
    assert res.person.income_tax.iloc[0] == pytest.approx(3486.00)


# ---- Universal Credit --------------------------------------------------------------------------
def uc_family(**overrides):
    return {
        "tenure_type": "RENT_PRIVATELY",
        "rent": 9_000.0,
        "benunits": [
            {
                "is_married": True,
                "people": [
                    {"age": 30, "employment_income": 15_000},
                    {"age": 30, "gender": "FEMALE"},
                    {"age": 8},
                    {"age": 5, "gender": "FEMALE"},
                ],
                **overrides,
            }
        ],
    }


def test_couple_two_children_uc_with_rent():
    res = run_one(uc_family())
    tax = (15_000 - 12_570) * 0.20  # = 486
    ni = (15_000 - 12_570) * 0.08  # = 194.40
    net_earnings_month = (15_000 - tax - ni) / 12  # = 14319.60 / 12 = 1193.30
    max_uc_month = 628.10 + 339.00 + 292.81 + 9_000 / 12  # couple 25+, 2 child elements, rent 750
    assert max_uc_month == pytest.approx(2009.91)
    work_allowance = 411  # with housing, has children
    uc_month = max_uc_month - 0.55 * (net_earnings_month - work_allowance)  # 2009.91 - 430.265
    assert uc_month == pytest.approx(1579.645)
    hh = res.household.iloc[0]
    assert hh.universal_credit == pytest.approx(uc_month * 12)  # 18955.74
    assert res.benunit.universal_credit.iloc[0] == pytest.approx(18_955.74)
    cb = (26.05 + 17.25) * 52  # = 2251.60
    assert hh.child_benefit == pytest.approx(cb)
    assert hh.benefits == pytest.approx(18_955.74 + 2_251.60)
    assert hh.household_net_income == pytest.approx(15_000 - 486 - 194.40 + 18_955.74 + 2_251.60)
    # modified OECD: 1 + 0.5 (second adult) + 0.3 x 2 (children under 14) = 2.1
    assert hh.equivalisation_factor == pytest.approx(2.1)
    assert hh.equivalised_household_net_income == pytest.approx(hh.household_net_income / 2.1)


def test_uc_rent_cap_and_two_child_limit():
    survey_hh = uc_family()
    survey_hh["rent"] = 24_000.0  # 2000 / month, above the 1500 cap
    survey_hh["benunits"][0]["people"].append({"age": 2})  # third child: no element
    res = run_one(survey_hh)
    max_month = 628.10 + 339.00 + 292.81 + 1_500
    uc_month = max_month - 0.55 * ((15_000 - 486 - 194.40) / 12 - 411)
    assert res.benunit.universal_credit.iloc[0] == pytest.approx(uc_month * 12)
    # child benefit has no two-child limit: eldest + 2 additional
    assert res.benunit.child_benefit.iloc[0] == pytest.approx((26.05 + 2 * 17.25) * 52)


def test_uc_without_housing_unearned_income_and_young_single():
    # single aged 22, disabled, no rent: work allowance without housing (684) applies;
    # earnings 10,000 (below thresholds: no tax, no NI), private pension 1,200 deducted in full.
    res = run_one(
        single(age=22, employment_income=10_000, private_pension_income=1_200, is_disabled_for_benefits=True)
    )
    # income tax on 11,200 total is nil (below the allowance)
    uc_month = 316.98 - 0.55 * (10_000 / 12 - 684) - 1_200 / 12
    assert res.benunit.universal_credit.iloc[0] == pytest.approx(uc_month * 12)
    # not disabled: no work allowance at all -> 316.98 - 0.55 x 833.33 - 100 < 0 -> nil
    res = run_one(single(age=22, employment_income=10_000, private_pension_income=1_200))
    assert res.benunit.universal_credit.iloc[0] == 0


def test_uc_take_up_flag_and_mixed_age_couple():
    res = run_one(uc_family(would_claim_uc=False))
    assert res.household.universal_credit.iloc[0] == 0
    assert res.household.child_benefit.iloc[0] > 0
    # a mixed-age couple (70 and 60), no income, renting: UC (not PC, not HB)
    res = run_one(
        {
            "tenure_type": "RENT_FROM_COUNCIL",
            "rent": 6_000.0,
            "benunits": [{"is_married": True, "people": [{"age": 70}, {"age": 60}]}],
        }
    )
    b = res.benunit.iloc[0]
    assert b.universal_credit == pytest.approx(628.10 * 12 + 6_000)
    assert b.pension_credit == 0 and b.housing_benefit == 0


def test_housing_costs_go_to_head_benunit_only():
    hh = {
        "tenure_type": "RENT_FROM_HA",
        "rent": 6_000.0,
        "benunits": [
            {"people": [{"age": 45}]},  # oldest: the household head
            {"people": [{"age": 20}]},  # a grown-up child, own benefit unit
        ],
    }
    res = run_one(hh)
    uc = res.benunit.universal_credit.to_numpy()
    assert uc[0] == pytest.approx(400.14 * 12 + 6_000)
    assert uc[1] == pytest.approx(316.98 * 12)  # no housing element
    assert res.household.universal_credit.iloc[0] == pytest.approx(uc.sum())
    # flagging the younger person as head moves the rent to their unit
    hh["benunits"][1]["people"][0]["is_household_head"] = True
    hh["benunits"][0]["people"][0]["is_household_head"] = False
    uc = run_one(hh).benunit.universal_credit.to_numpy()
    assert uc[0] == pytest.approx(400.14 * 12)
    assert uc[1] == pytest.approx(316.98 * 12 + 6_000)


def test_owner_occupiers_get_no_housing_element():
    hh = single(age=40, hh_tenure_type="OWNED_WITH_MORTGAGE", hh_rent=9_000.0)
    assert run_one(hh).benunit.universal_credit.iloc[0] == pytest.approx(400.14 * 12)


# ---- child benefit ------------------------------------------------------------------------------
def test_child_benefit_high_income_charge_half_at_70k():
    hh = {"benunits": [{"people": [{"age": 40, "employment_income": 70_000}, {"age": 6}]}]}
    res = run_one(hh)
    cb = 26.05 * 52  # = 1354.60
    charge = cb * (70_000 - 60_000) / (80_000 - 60_000)  # half: 677.30
    assert res.benunit.child_benefit.iloc[0] == pytest.approx(cb - charge)
    assert res.benunit.child_benefit.iloc[0] == pytest.approx(677.30)
    assert res.benunit.child_benefit_charge.iloc[0] == pytest.approx(677.30)
    assert res.household.child_benefit.iloc[0] == pytest.approx(677.30)


def test_child_benefit_charge_uses_highest_adult_and_take_up():
    people = [
        {"age": 40, "employment_income": 50_000},
        {"age": 38, "employment_income": 85_000},
        {"age": 3},
        {"age": 15},
        {"age": 16},  # an adult for this model: not a child
    ]
    res = run_one({"benunits": [{"is_married": True, "people": people}]})
    assert res.benunit.child_benefit.iloc[0] == 0  # 85k > 80k: fully charged
    assert res.benunit.child_benefit_charge.iloc[0] == pytest.approx((26.05 + 17.25) * 52)
    people[1]["employment_income"] = 0
    res = run_one({"benunits": [{"is_married": True, "people": people}]})
    assert res.benunit.child_benefit.iloc[0] == pytest.approx((26.05 + 17.25) * 52)
    res = run_one({"benunits": [{"would_claim_child_benefit": False, "people": people}]})
    assert res.benunit.child_benefit.iloc[0] == 0


# ---- pension age ------------------------------------------------------------------------------
def test_pension_credit_single_pensioner():
    res = run_one(single(age=70, state_pension_reported=11_500))
    pc = max(0, 227.10 * 52 - 11_500)  # = 11809.20 - 11500 = 309.20
    assert pc == pytest.approx(309.20)
    b = res.benunit.iloc[0]
    assert b.pension_credit == pytest.approx(309.20)
    assert b.universal_credit == 0 and b.housing_benefit == 0  # owner: no HB
    hh = res.household.iloc[0]
    assert hh.state_pension == 11_500
    assert hh.income_tax == 0  # 11,500 is below the allowance
    assert hh.household_net_income == pytest.approx(11_500 + 309.20)
    assert res.person.total_income.iloc[0] == 11_500
    res = run_one({"benunits": [{"would_claim_pc": False, "people": [{"age": 70, "state_pension_reported": 11_500}]}]})
    assert res.benunit.pension_credit.iloc[0] == 0


def test_pension_credit_couple():
    hh = {
        "benunits": [
            {"is_married": True, "people": [{"age": 70, "state_pension_reported": 9_000}, {"age": 68}]}
        ]
    }
    res = run_one(hh)
    assert res.benunit.pension_credit.iloc[0] == pytest.approx(346.60 * 52 - 9_000)  # 18023.20 - 9000
    assert res.household.equivalisation_factor.iloc[0] == pytest.approx(1.5)


def test_housing_benefit_pension_age_renter():
    # on guarantee credit: income (11,500 + 309.20 PC) is below the applicable amount
    # 235.20 x 52 = 12,230.40, so HB = the full eligible rent
    res = run_one(single(age=70, state_pension_reported=11_500, hh_tenure_type="RENT_FROM_COUNCIL", hh_rent=6_000.0))
    b = res.benunit.iloc[0]
    assert b.pension_credit == pytest.approx(309.20)
    assert b.housing_benefit == pytest.approx(6_000)
    assert res.household.household_net_income.iloc[0] == pytest.approx(11_500 + 309.20 + 6_000)

    # with a private pension: income 16,500, tax (16500 - 12570) x 0.2 = 786, net 15,714;
    # no PC; excess over 12,230.40 = 3,483.60; HB = 6000 - 0.65 x 3483.60 = 3735.66
    res = run_one(
        single(
            age=70,
            state_pension_reported=11_500,
            private_pension_income=5_000,
            hh_tenure_type="RENT_PRIVATELY",
            hh_rent=6_000.0,
            hh_council_tax=1_500.0,
        )
    )
    b = res.benunit.iloc[0]
    assert b.pension_credit == 0
    assert b.housing_benefit == pytest.approx(6_000 - 0.65 * (15_714 - 235.20 * 52))
    assert b.housing_benefit == pytest.approx(3_735.66)
    hh = res.household.iloc[0]
    assert hh.income_tax == pytest.approx(786)
    assert hh.council_tax == 1_500
    assert hh.household_net_income == pytest.approx(16_500 + 3_735.66 - 786 - 1_500)


# ---- reforms ---------------------------------------------------------------------------------
def test_reform_basic_rate_multiply():
    survey = make_survey([single(employment_income=30_000)])
    base = simulate(survey)
    reformed = simulate(survey, reform={"income_tax.rates.basic": {"multiply": 1.1}})
    assert reformed.household.income_tax.iloc[0] == pytest.approx(3486.00 * 1.1)
    assert reformed.household.national_insurance.iloc[0] == pytest.approx(1394.40)
    assert base.household.income_tax.iloc[0] == pytest.approx(3486.00)
    assert reformed.household.household_net_income.iloc[0] == pytest.approx(30_000 - 3834.60 - 1394.40)
    # the same through explicit parameters
    params = load_parameters().apply_reform({"income_tax.rates.basic": 0.22})
    assert simulate(survey, params).household.income_tax.iloc[0] == pytest.approx(3834.60)


def test_reform_state_pension_uprating_and_benefit_amounts():
    survey = make_survey([single(age=70, state_pension_reported=11_500)])
    res = simulate(survey, reform={"state_pension.uprating": 1.04})
    assert res.household.state_pension.iloc[0] == pytest.approx(11_960)
    assert res.benunit.pension_credit.iloc[0] == 0  # 11,960 > 227.10 x 52 = 11,809.20
    res = simulate(survey, reform={"state_pension.uprating": 1.01})
    assert res.benunit.pension_credit.iloc[0] == pytest.approx(227.10 * 52 - 11_615)
    res = simulate(survey, reform={"pension_credit.standard_minimum_guarantee_weekly.single": 250})
    assert res.benunit.pension_credit.iloc[0] == pytest.approx(250 * 52 - 11_500)


def test_reform_unknown_path_lists_close_matches():
    survey = make_survey([single(employment_income=30_000)])
    with pytest.raises(ParameterError) as info:
        simulate(survey, reform={"income_tax.rate.basic": {"multiply": 1.1}})
    assert "income_tax.rates.basic" in str(info.value)


def test_random_reforms_simulate():
    survey = make_survey([uc_family(), single(age=70, state_pension_reported=11_500)])
    base = simulate(survey).household
    for reform in random_reforms(10, np.random.default_rng(0)):
        out = simulate(survey, reform=reform).household
        assert out.shape == base.shape
        assert np.isfinite(out.to_numpy()).all()


# ---- structure, ordering, missing inputs ----------------------------------------------------------
def test_result_shapes_columns_and_order():
    households = [
        single(employment_income=30_000),
        uc_family(),
        single(age=70, state_pension_reported=11_500),
    ]
    survey = make_survey(households)
    res = simulate(survey)
    assert isinstance(res, SimulationResult)
    assert list(res.household.columns) == list(HOUSEHOLD_COLUMNS)
    assert list(res.person.columns) == list(PERSON_COLUMNS)
    assert list(res.benunit.columns) == list(BENUNIT_COLUMNS)
    for frame, n in ((res.household, 3), (res.person, 6), (res.benunit, 3)):
        assert len(frame) == n
        assert list(frame.index) == list(range(n))
        assert all(dt == np.float64 for dt in frame.dtypes)
    assert res.missing_inputs == ()

    # shuffling the tables' rows permutes the results the same way
    rng = np.random.default_rng(3)
    hperm, pperm, bperm = (rng.permutation(n) for n in (3, 6, 3))
    shuffled = Survey(
        survey.person.iloc[pperm].reset_index(drop=True),
        survey.benunit.iloc[bperm].reset_index(drop=True),
        survey.household.iloc[hperm].reset_index(drop=True),
    )
    res2 = simulate(shuffled)
    np.testing.assert_allclose(res2.household.to_numpy(), res.household.to_numpy()[hperm])
    np.testing.assert_allclose(res2.person.to_numpy(), res.person.to_numpy()[pperm])
    np.testing.assert_allclose(res2.benunit.to_numpy(), res.benunit.to_numpy()[bperm])


def test_net_income_identity_and_whole_equals_parts():
    rng = np.random.default_rng(11)
    households = []
    for _ in range(40):
        n_bu = int(rng.integers(1, 3))
        bus = []
        for _ in range(n_bu):
            n_adults = int(rng.integers(1, 3))
            people = []
            pension = rng.random() < 0.3
            for _ in range(n_adults):
                age = int(rng.integers(66, 90) if pension else rng.integers(18, 65))
                people.append(
                    {
                        "age": age,
                        "employment_income": float(rng.choice([0, rng.lognormal(10, 1)])),
                        "self_employment_income": float(rng.choice([0, 0, rng.normal(15_000, 10_000)])),
                        "private_pension_income": float(rng.choice([0, rng.lognormal(8, 1)])),
                        "dividend_income": float(rng.choice([0, 0, rng.lognormal(8, 2)])),
                        "state_pension_reported": 11_500.0 if pension else 0.0,
                        "is_disabled_for_benefits": bool(rng.random() < 0.1),
                    }
                )
            people += [{"age": int(rng.integers(0, 16))} for _ in range(int(rng.integers(0, 4)))]
            bus.append({"is_married": n_adults == 2, "would_claim_uc": bool(rng.random() < 0.8), "people": people})
        tenure = str(rng.choice(["RENT_PRIVATELY", "RENT_FROM_COUNCIL", "OWNED_OUTRIGHT"]))
        households.append(
            {"tenure_type": tenure, "rent": float(rng.uniform(3_000, 20_000)), "council_tax": 1_800.0, "benunits": bus}
        )
    survey = make_survey(households)
    res = simulate(survey)
    h = res.household
    np.testing.assert_allclose(
        h.household_net_income,
        h.market_income + h.benefits - h.income_tax - h.national_insurance - h.council_tax,
    )
    np.testing.assert_allclose(
        h.benefits, h.state_pension + h.universal_credit + h.child_benefit + h.pension_credit + h.housing_benefit
    )
    assert (res.benunit[["universal_credit", "child_benefit", "pension_credit", "housing_benefit"]] >= 0).all().all()
    assert np.isclose(res.person.income_tax.sum(), h.income_tax.sum())
    assert np.isclose(res.benunit.universal_credit.sum(), h.universal_credit.sum())
    # simulating each household on its own gives the same answers (index maps are right)
    for i in range(0, survey.n_households, 7):
        keep = np.zeros(survey.n_households, dtype=bool)
        keep[i] = True
        one = simulate(survey.select_households(keep)).household
        np.testing.assert_allclose(one.to_numpy()[0], h.to_numpy()[i])


def test_missing_inputs_default_and_are_listed():
    full = make_survey([single(employment_income=30_000, dividend_income=0.0)])
    lean = full.copy()
    lean.person = lean.person.drop(columns=["dividend_income", "is_disabled_for_benefits"])
    lean.benunit = lean.benunit.drop(columns=["would_claim_uc"])
    res = simulate(lean)
    assert res.missing_inputs == ("dividend_income", "is_disabled_for_benefits", "would_claim_uc")
    pd.testing.assert_frame_equal(res.household, simulate(full).household)


def test_minimal_survey_ids_and_weights_only():
    person = pd.DataFrame({"person_id": [1, 2, 3], "person_benunit_id": [1, 1, 2], "person_household_id": [1, 1, 2]})
    benunit = pd.DataFrame({"benunit_id": [1, 2]})
    household = pd.DataFrame({"household_id": [1, 2], "household_weight": [1.0, 2.0]})
    res = simulate(Survey(person, benunit, household))
    assert "age" in res.missing_inputs and "tenure_type" in res.missing_inputs
    assert "is_married" in res.missing_inputs and "employment_income" in res.missing_inputs
    # everyone defaults to a 30-year-old with no income: the 2-adult unit is a couple
    np.testing.assert_allclose(res.benunit.universal_credit, [628.10 * 12, 400.14 * 12])
    np.testing.assert_allclose(res.household.equivalisation_factor, [1.5, 1.0])


def test_without_tenure_type_positive_rent_means_renting():
    survey = make_survey([single(age=40, hh_rent=6_000.0, hh_tenure_type="RENT_PRIVATELY")])
    survey.household = survey.household.drop(columns=["tenure_type"])
    res = simulate(survey)
    assert "tenure_type" in res.missing_inputs
    assert res.benunit.universal_credit.iloc[0] == pytest.approx(400.14 * 12 + 6_000)


def test_nan_inputs_and_object_flags():
    survey = make_survey([single(employment_income=30_000), uc_family()])
    survey.person.loc[0, "dividend_income"] = np.nan
    survey.benunit["would_claim_uc"] = pd.Series([None, False], dtype=object)
    res = simulate(survey)
    assert res.household.income_tax.iloc[0] == pytest.approx(3486.00)
    assert res.benunit.universal_credit.iloc[1] == 0  # explicit False honoured; None -> default


def test_equivalisation_teenager_counts_as_adult():
    hh = {"benunits": [{"people": [{"age": 40}, {"age": 14}, {"age": 13}]}]}
    assert run_one(hh).household.equivalisation_factor.iloc[0] == pytest.approx(1 + 0.5 + 0.3)


def test_bad_parameters_type():
    with pytest.raises(TypeError):
        simulate(make_survey([single()]), parameters={"income_tax": {}})


def test_prepared_inputs_match_and_are_a_snapshot():
    survey = make_survey([single(employment_income=30_000), uc_family()])
    reform = {"universal_credit.taper": 0.5}
    inputs = prepare_inputs(survey)
    assert isinstance(inputs, SimulationInputs)
    assert prepare_inputs(inputs) is inputs
    for direct, prepared in (
        (simulate(survey), simulate(inputs)),
        (simulate(survey, reform=reform), simulate(inputs, reform=reform)),
    ):
        pd.testing.assert_frame_equal(direct.household, prepared.household)
        pd.testing.assert_frame_equal(direct.person, prepared.person)
        pd.testing.assert_frame_equal(direct.benunit, prepared.benunit)
    assert not inputs.age.flags.writeable
    # later edits to the survey do not reach the snapshot
    survey.person.loc[0, "employment_income"] = 60_000.0
    assert simulate(inputs).household.income_tax.iloc[0] == pytest.approx(3486.00)
    assert simulate(survey).household.income_tax.iloc[0] > 3486.00
    with pytest.raises(TypeError):
        prepare_inputs(survey.person)


def test_result_frames_are_independent_and_writeable():
    inputs = prepare_inputs(make_survey([single(employment_income=30_000, hh_council_tax=1_000.0)]))
    first = simulate(inputs)
    first.household.loc[0, "council_tax"] = 5.0
    first.household.loc[0, "employment_income"] = 5.0
    first.person.loc[0, "adjusted_net_income"] = 5.0
    second = simulate(inputs)
    assert second.household.council_tax.iloc[0] == 1_000
    assert second.household.employment_income.iloc[0] == 30_000
    assert first.person.total_income.iloc[0] == 30_000
