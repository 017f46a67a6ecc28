"""A compact, vectorised UK tax-benefit simulator (2025-26 rules, simplified).

``simulate(survey)`` computes, for every person, benefit unit and household of a
:class:`~weightreg.survey.Survey`, income tax, National Insurance, child benefit, Universal
Credit, Pension Credit, Housing Benefit, and household net income, under the packaged 2025-26
parameters or any reform of them. All amounts are annual, in pounds. Every step is whole-array
numpy over index maps computed once per call; there is no Python loop over entities. To simulate
one survey under many reforms, read its inputs and build its index maps once with
``inputs = prepare_inputs(survey)`` and call ``simulate(inputs, parameters, reform)``.

The model is deliberately small. Its rules and simplifications:

Entities
    * Adults are persons aged 16 or over; children are under 16 (for child benefit, UC child
      elements and the adult counts below). Pension age is ``state_pension.pension_age`` (66).
    * A benefit unit is a couple if ``benunit.is_married`` is true; without that column, if it
      has two or more adults.
    * Housing costs (``household.rent``, annual) belong to the benefit unit containing the
      household head (``Survey.household_head_index``); other units in the household have none.
      A household is renting if ``tenure_type`` is one of ``RENT_*``; without ``tenure_type``,
      if its rent is positive.

Income tax (per person)
    * Total income = employment + self-employment + private pension + savings interest +
      dividends + property income + state pension. Adjusted net income is total income (no
      pension-contribution or Gift Aid deductions).
    * Personal allowance tapered by GBP 1 per GBP 2 of adjusted net income above GBP 100,000.
    * Simplification: savings and dividend income are taxed with the rest at the ordinary
      basic/higher/additional rates (no personal savings allowance, starting rate for savings,
      dividend allowance or dividend rates). Rest-of-UK rates apply in every region (no Scottish
      rates). No marriage allowance or other reliefs.

National Insurance (per person, below pension age only)
    * Class 1 employee on employment income, class 4 on self-employment profits, each on annual
      amounts between the lower threshold and the upper limit at the main rate and above it at
      the upper rate. No class 2; no NI at or above pension age.

Child benefit (per benefit unit)
    * Eldest-child rate for the first child, additional rate for the rest, if
      ``would_claim_child_benefit`` (default true). The high-income child benefit charge,
      a share ``(ANI - 60,000) / (80,000 - 60,000)`` clipped to [0, 1] of the benefit, is charged
      on the highest adjusted net income of the unit's adults and reported *net*: the
      ``child_benefit`` columns are after the charge; ``benunit.child_benefit_charge`` holds it.

Universal Credit (per benefit unit with at least one adult under pension age; a mixed-age
couple claims UC), if ``would_claim_uc`` (default true)
    * Maximum = standard allowance (single/couple; "under 25" rates only when no adult is 25+)
      + child elements (first child rate, then the subsequent rate, for at most
      ``universal_credit.child_limit`` children) + housing element (rent capped at
      ``housing_costs.monthly_cap``).
    * Work allowance (higher if there is no housing element) only for units with a child or an
      adult with ``is_disabled_for_benefits``.
    * Award = max(0, maximum - taper x max(0, net earnings - work allowance) - unearned income).
      Net earnings are the adults' employment and self-employment income less NI and less the
      earnings' pro-rata share of income tax; unearned income (pensions including state pension,
      savings interest, dividends, property) is taken net of its share of income tax and
      deducted pound for pound. Capital is ignored. No benefit cap, LCWRA, carer or childcare
      elements; no transitional protection.

Pension Credit (per benefit unit whose adults are all at pension age), if ``would_claim_pc``
(default true)
    * Guarantee credit only: max(0, standard minimum guarantee - income), where income is the
      adults' total income net of income tax and NI. No savings credit, no additional amounts.

Housing Benefit (pension-age benefit units that hold the household's rent; always claimed)
    * max(0, eligible rent - taper x max(0, income - applicable amount)), where eligible rent is
      rent capped at ``housing_costs.monthly_cap``, income is the adults' net income plus Pension
      Credit (so guarantee credit recipients get maximum HB), and the applicable amount is the
      pension-age personal allowance.

State pension and council tax
    * State pension = ``state_pension_reported`` x ``state_pension.uprating``; it is taxable
      and counts as unearned income in UC. Council tax is ``household.council_tax`` as given.

Household income
    * market income = employment + self-employment + private pension + savings interest +
      dividends + property income.
    * benefits = state pension + UC + child benefit (net of the charge) + Pension Credit + HB.
    * household net income = market income + benefits - income tax - NI - council tax.
    * Equivalisation: the modified OECD scale with the first person aged 14+ counting 1, each
      further person aged 14+ 0.5, and each child under 14 0.3 (a single adult = 1, a couple =
      1.5). HBAI's published figures rescale this so a couple = 1 (divide the factor by 1.5);
      relative measures (e.g. 60% of the median) are unaffected by that choice.

Missing inputs
    Any input column listed in :data:`INPUT_DEFAULTS` that is absent from the survey is treated
    as its default (0 for amounts, false for flags, true for take-up flags, age 30) and named in
    ``SimulationResult.missing_inputs``. NaN values in present numeric columns count as 0 (as the
    default age for ``age``); NaN flags take the flag's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .parameters import Parameters, load_parameters
from .survey import RENTING_TENURES, Survey

__all__ = [
    "simulate",
    "prepare_inputs",
    "SimulationInputs",
    "SimulationResult",
    "HOUSEHOLD_COLUMNS",
    "PERSON_COLUMNS",
    "BENUNIT_COLUMNS",
    "INPUT_DEFAULTS",
    "ADULT_AGE",
]

#: Persons this age or older are adults; younger persons are children.
ADULT_AGE = 16
#: Modified-OECD equivalisation: persons this age or older count as adults.
OECD_ADULT_AGE = 14
#: UC standard allowances use the "under 25" rate when no adult in the unit is this age or older.
UC_YOUNG_AGE = 25
#: The age assumed for everyone when the survey has no ``age`` column (a working-age adult).
DEFAULT_AGE = 30.0

WEEKS_PER_YEAR = 52
MONTHS_PER_YEAR = 12

#: Inputs the simulator reads: ``(table, column) -> default`` used when the column is absent.
INPUT_DEFAULTS: dict[tuple[str, str], float | bool] = {
    ("person", "age"): DEFAULT_AGE,
    ("person", "is_household_head"): False,
    ("person", "employment_income"): 0.0,
    ("person", "self_employment_income"): 0.0,
    ("person", "private_pension_income"): 0.0,
    ("person", "savings_interest_income"): 0.0,
    ("person", "dividend_income"): 0.0,
    ("person", "property_income"): 0.0,
    ("person", "state_pension_reported"): 0.0,
    ("person", "is_disabled_for_benefits"): False,
    ("benunit", "is_married"): False,  # absent: couple = two or more adults
    ("benunit", "would_claim_uc"): True,
    ("benunit", "would_claim_pc"): True,
    ("benunit", "would_claim_child_benefit"): True,
    ("household", "tenure_type"): False,  # absent: renting = rent > 0
    ("household", "rent"): 0.0,
    ("household", "council_tax"): 0.0,
}

HOUSEHOLD_COLUMNS = (
    "income_tax",
    "national_insurance",
    "child_benefit",
    "universal_credit",
    "pension_credit",
    "housing_benefit",
    "state_pension",
    "council_tax",
    "employment_income",
    "self_employment_income",
    "private_pension_income",
    "savings_interest_income",
    "dividend_income",
    "property_income",
    "market_income",
    "benefits",
    "household_net_income",
    "equivalisation_factor",
    "equivalised_household_net_income",
)
PERSON_COLUMNS = ("income_tax", "national_insurance", "adjusted_net_income", "total_income")
BENUNIT_COLUMNS = (
    "universal_credit",
    "child_benefit",
    "pension_credit",
    "housing_benefit",
    "child_benefit_charge",
)

_MARKET_INCOMES = (
    "employment_income",
    "self_employment_income",
    "private_pension_income",
    "savings_interest_income",
    "dividend_income",
    "property_income",
)


@dataclass
class SimulationResult:
    """What :func:`simulate` returns. Every frame has a fresh 0..n-1 index in the order of the
    survey's corresponding table, and float columns.

    Attributes:
        household: one row per household (``HOUSEHOLD_COLUMNS``).
        person: one row per person (``PERSON_COLUMNS``).
        benunit: one row per benefit unit (``BENUNIT_COLUMNS``); ``child_benefit`` is net of the
            high-income charge, which ``child_benefit_charge`` reports.
        missing_inputs: input columns absent from the survey, treated as their defaults.
    """

    household: pd.DataFrame
    person: pd.DataFrame
    benunit: pd.DataFrame
    missing_inputs: tuple[str, ...] = ()


# ---- input extraction ------------------------------------------------------------------------
def _numeric(df: pd.DataFrame, col: str, default: float, missing: list[str]) -> np.ndarray:
    if col not in df.columns:
        missing.append(col)
        return np.full(len(df), default, dtype=float)
    values = np.array(pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan))
    nan = np.isnan(values)
    if nan.any():
        values[nan] = default
    return values


def _flag(df: pd.DataFrame, col: str, default: bool, missing: list[str]) -> np.ndarray | None:
    if col not in df.columns:
        missing.append(col)
        return None
    return _as_bool(df[col], default)


def _as_bool(s: pd.Series, default: bool) -> np.ndarray:
    if s.dtype == bool:
        return s.to_numpy().copy()
    values = s.to_numpy(dtype=object)
    return np.where(pd.isna(values), default, values).astype(bool)


def _household_heads(survey: Survey, ph: np.ndarray, n_h: int, missing: list[str]) -> np.ndarray:
    """Row position of each household's head, as ``Survey.household_head_index`` defines it.

    Fast path: when ``is_household_head`` flags exactly one person in every household, that
    person is the head (the same answer ``household_head_index`` gives, without its sort).
    """
    person = survey.person
    if "is_household_head" not in person.columns:
        missing.append("is_household_head")
        return survey.household_head_index()
    flag = _as_bool(person["is_household_head"], False)
    flagged = np.flatnonzero(flag)
    if len(flagged) == n_h and (np.bincount(ph[flagged], minlength=n_h) == 1).all():
        head = np.empty(n_h, dtype=np.int64)
        head[ph[flagged]] = flagged
        return head
    return survey.household_head_index()


def _frame(columns: dict[str, np.ndarray], n: int) -> pd.DataFrame:
    """A float DataFrame over ``columns`` without copying them (each must be a fresh, writeable
    array owned by this result; pandas' consolidation copy would cost more than the rules)."""
    frame = pd.DataFrame(columns, copy=False)
    assert len(frame) == n
    return frame


@dataclass(frozen=True, eq=False)
class SimulationInputs:
    """A parameter-independent snapshot of a survey, ready to simulate under many parameter sets.

    Build it with :func:`prepare_inputs` and pass it to :func:`simulate` in place of the survey
    to skip re-reading the tables and rebuilding the index maps for each reform. It is a
    snapshot: later edits to the survey's tables do not reach it. Its arrays are read-only.
    """

    n_persons: int
    n_benunits: int
    n_households: int
    person_household: np.ndarray  # person -> household row
    person_benunit: np.ndarray  # person -> benunit row
    benunit_household: np.ndarray  # benunit -> household row
    head_benunit: np.ndarray  # household -> benunit row holding its housing costs (-1: none)
    age: np.ndarray
    adult: np.ndarray
    incomes: Mapping[str, np.ndarray]  # person market incomes, by column name
    earned: np.ndarray  # employment + self-employment income
    unearned_market: np.ndarray  # private pension + savings + dividends + property income
    state_pension_reported: np.ndarray
    n_adults: np.ndarray  # per benunit
    n_children: np.ndarray
    any_25_plus: np.ndarray
    any_disabled: np.ndarray
    couple: np.ndarray
    claim_uc: np.ndarray
    claim_pc: np.ndarray
    claim_cb: np.ndarray
    rent: np.ndarray  # per household: rent if renting, else 0
    council_tax: np.ndarray
    household_incomes: Mapping[str, np.ndarray]  # market incomes summed per household
    household_state_pension_reported: np.ndarray
    equivalisation_factor: np.ndarray
    missing_inputs: tuple[str, ...]


def prepare_inputs(survey: Survey) -> SimulationInputs:
    """Read ``survey``'s inputs and build its index maps once (see :class:`SimulationInputs`).

    Raises:
        SurveyValidationError: if a person's household or benefit unit id has no row.
    """
    if isinstance(survey, SimulationInputs):
        return survey
    if not isinstance(survey, Survey):
        raise TypeError(f"expected a Survey, got {type(survey).__name__}")
    person, benunit, household = survey.person, survey.benunit, survey.household
    missing: list[str] = []
    n_p, n_b, n_h = len(person), len(benunit), len(household)
    ph = survey.person_household_index()
    pb = survey.person_benunit_index()
    bh = np.full(n_b, -1, dtype=np.int64)
    bh[pb] = ph
    head = _household_heads(survey, ph, n_h, missing)
    head_bu = np.where(head >= 0, pb[np.maximum(head, 0)], -1)

    age = _numeric(person, "age", DEFAULT_AGE, missing)
    incomes = {c: _numeric(person, c, 0.0, missing) for c in _MARKET_INCOMES}
    sp = _numeric(person, "state_pension_reported", 0.0, missing)
    disabled = _flag(person, "is_disabled_for_benefits", False, missing)
    if disabled is None:
        disabled = np.zeros(n_p, dtype=bool)

    is_married = _flag(benunit, "is_married", False, missing)
    claims = []
    for col in ("would_claim_uc", "would_claim_pc", "would_claim_child_benefit"):
        f = _flag(benunit, col, True, missing)
        claims.append(np.ones(n_b, dtype=bool) if f is None else f)

    rent = _numeric(household, "rent", 0.0, missing)
    if "tenure_type" in household.columns:
        renting = household["tenure_type"].isin(RENTING_TENURES).to_numpy()
    else:
        missing.append("tenure_type")
        renting = rent > 0
    rent = np.where(renting, np.maximum(rent, 0.0), 0.0)
    council_tax = _numeric(household, "council_tax", 0.0, missing)

    def count_bu(mask):
        return np.bincount(pb, weights=mask.astype(float), minlength=n_b)

    def per_hh(values):
        return np.bincount(ph, weights=values, minlength=n_h)

    adult = age >= ADULT_AGE
    n_adults = count_bu(adult)
    n_children = count_bu(~adult)
    couple = is_married if is_married is not None else n_adults >= 2

    oecd_adult = age >= OECD_ADULT_AGE
    n_older = per_hh(oecd_adult.astype(float))
    n_younger = per_hh((~oecd_adult).astype(float))
    factor = np.where(
        n_older > 0,
        1.0 + 0.5 * np.maximum(n_older - 1, 0.0) + 0.3 * n_younger,
        1.0 + 0.3 * np.maximum(n_younger - 1, 0.0),
    )

    order = {col: i for i, (_, col) in enumerate(INPUT_DEFAULTS)}
    inputs = SimulationInputs(
        n_persons=n_p,
        n_benunits=n_b,
        n_households=n_h,
        person_household=ph,
        person_benunit=pb,
        benunit_household=bh,
        head_benunit=head_bu,
        age=age,
        adult=adult,
        incomes=incomes,
        earned=incomes["employment_income"] + incomes["self_employment_income"],
        unearned_market=(
            incomes["private_pension_income"]
            + incomes["savings_interest_income"]
            + incomes["dividend_income"]
            + incomes["property_income"]
        ),
        state_pension_reported=sp,
        n_adults=n_adults,
        n_children=n_children,
        any_25_plus=count_bu(adult & (age >= UC_YOUNG_AGE)) > 0,
        any_disabled=count_bu(adult & disabled) > 0,
        couple=np.asarray(couple, dtype=bool),
        claim_uc=claims[0],
        claim_pc=claims[1],
        claim_cb=claims[2],
        rent=rent,
        council_tax=council_tax,
        household_incomes={c: per_hh(v) for c, v in incomes.items()},
        household_state_pension_reported=per_hh(sp),
        equivalisation_factor=factor,
        missing_inputs=tuple(sorted(missing, key=order.__getitem__)),
    )
    for value in vars(inputs).values():
        for arr in value.values() if isinstance(value, dict) else (value,):
            if isinstance(arr, np.ndarray):
                arr.flags.writeable = False
    return inputs


# ---- rules ----------------------------------------------------------------------------------
def _banded(amount: np.ndarray, lower: float, upper: float, main: float, high: float) -> np.ndarray:
    """``main`` on the part of ``amount`` in [lower, upper], ``high`` on the part above ``upper``."""
    width = max(upper - lower, 0.0)
    top = lower + width
    return main * np.clip(amount - lower, 0.0, width) + high * np.maximum(amount - top, 0.0)


def _run(inp: SimulationInputs, p: Parameters) -> SimulationResult:
    g = p.get
    n_b, n_h = inp.n_benunits, inp.n_households
    pb, ph, bh = inp.person_benunit, inp.person_household, inp.benunit_household
    age, adult = inp.age, inp.adult
    inc = inp.incomes
    pension_age = g("state_pension.pension_age")

    def per_bu(values):
        return np.bincount(pb, weights=values, minlength=n_b)

    def per_hh(values):
        return np.bincount(ph, weights=values, minlength=n_h)

    def bu_to_hh(values):
        return np.bincount(bh, weights=values, minlength=n_h)

    # ---- person: incomes, income tax, NI ----
    uprating = g("state_pension.uprating")
    state_pension = inp.state_pension_reported * uprating
    unearned = inp.unearned_market + state_pension
    total_income = inp.earned + unearned
    ani = total_income

    pa = np.maximum(
        g("income_tax.personal_allowance")
        - g("income_tax.allowance_taper_rate")
        * np.maximum(ani - g("income_tax.allowance_taper_threshold"), 0.0),
        0.0,
    )
    taxable = np.maximum(total_income - pa, 0.0)
    b_higher = g("income_tax.thresholds.higher")
    b_additional = max(g("income_tax.thresholds.additional"), b_higher)
    income_tax = (
        g("income_tax.rates.basic") * np.minimum(taxable, b_higher)
        + g("income_tax.rates.higher") * np.clip(taxable - b_higher, 0.0, b_additional - b_higher)
        + g("income_tax.rates.additional") * np.maximum(taxable - b_additional, 0.0)
    )

    below_pension_age = age < pension_age
    c1 = "national_insurance.class_1."
    c4 = "national_insurance.class_4."
    ni = _banded(
        inc["employment_income"],
        g(c1 + "primary_threshold"),
        g(c1 + "upper_earnings_limit"),
        g(c1 + "main_rate"),
        g(c1 + "upper_rate"),
    ) + _banded(
        inc["self_employment_income"],
        g(c4 + "lower_profits_limit"),
        g(c4 + "upper_profits_limit"),
        g(c4 + "main_rate"),
        g(c4 + "upper_rate"),
    )
    ni = np.where(below_pension_age, ni, 0.0)

    # Net incomes of adults for means tests; income tax is shared pro rata between earned and
    # unearned income.
    earned_pos = np.maximum(inp.earned, 0.0)
    unearned_pos = np.maximum(unearned, 0.0)
    gross_pos = earned_pos + unearned_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        earned_share = np.where(gross_pos > 0, earned_pos / gross_pos, 0.0)
    tax_on_earned = income_tax * earned_share
    net_earned = np.where(adult, np.maximum(earned_pos - tax_on_earned - ni, 0.0), 0.0)
    net_unearned = np.where(adult, np.maximum(unearned_pos - (income_tax - tax_on_earned), 0.0), 0.0)
    net_income = np.where(adult, np.maximum(total_income - income_tax - ni, 0.0), 0.0)

    # ---- benefit units ----
    n_adults, n_children, couple = inp.n_adults, inp.n_children, inp.couple
    n_pension_adults = per_bu((adult & ~below_pension_age).astype(float))
    has_adult = n_adults > 0
    pension_unit = has_adult & (n_pension_adults == n_adults)
    working_age_unit = has_adult & (n_pension_adults < n_adults)

    bu_net_earned = per_bu(net_earned)
    bu_net_unearned = per_bu(net_unearned)
    bu_net_income = per_bu(net_income)
    max_ani = np.zeros(n_b)
    np.maximum.at(max_ani, pb, np.where(adult, ani, 0.0))  # only ANI above 0 matters below

    rent_bu = np.zeros(n_b)
    has_head = inp.head_benunit >= 0
    rent_bu[inp.head_benunit[has_head]] = inp.rent[has_head]  # one head per household
    eligible_rent = np.minimum(rent_bu, g("housing_costs.monthly_cap") * MONTHS_PER_YEAR)

    # ---- child benefit ----
    cb = np.where(
        (n_children > 0) & inp.claim_cb,
        WEEKS_PER_YEAR
        * (
            g("child_benefit.eldest_weekly")
            + g("child_benefit.additional_weekly") * np.maximum(n_children - 1, 0.0)
        ),
        0.0,
    )
    hicbc_start = g("child_benefit.high_income_charge.threshold")
    hicbc_end = g("child_benefit.high_income_charge.taper_end")
    if hicbc_end > hicbc_start:
        charge_share = np.clip((max_ani - hicbc_start) / (hicbc_end - hicbc_start), 0.0, 1.0)
    else:
        charge_share = (max_ani > hicbc_start).astype(float)
    cb_charge = cb * charge_share
    cb_net = cb - cb_charge

    # ---- Universal Credit ----
    sa = "universal_credit.standard_allowance_monthly."
    standard = np.where(
        couple,
        np.where(inp.any_25_plus, g(sa + "couple_one_25_plus"), g(sa + "couple_both_under_25")),
        np.where(inp.any_25_plus, g(sa + "single_25_plus"), g(sa + "single_under_25")),
    )
    n_child_elements = np.minimum(n_children, np.floor(g("universal_credit.child_limit")))
    child_elements = g("universal_credit.child_element_monthly.first") * (
        n_child_elements >= 1
    ) + g("universal_credit.child_element_monthly.subsequent") * np.maximum(n_child_elements - 1, 0.0)
    uc_max = MONTHS_PER_YEAR * (standard + child_elements) + eligible_rent
    wa = "universal_credit.work_allowance_monthly."
    work_allowance = np.where(
        (n_children > 0) | inp.any_disabled,
        MONTHS_PER_YEAR * np.where(eligible_rent > 0, g(wa + "with_housing"), g(wa + "without_housing")),
        0.0,
    )
    uc = np.maximum(
        uc_max
        - g("universal_credit.taper") * np.maximum(bu_net_earned - work_allowance, 0.0)
        - bu_net_unearned,
        0.0,
    )
    uc = np.where(working_age_unit & inp.claim_uc, uc, 0.0)

    # ---- Pension Credit (guarantee credit) ----
    smg = "pension_credit.standard_minimum_guarantee_weekly."
    guarantee = WEEKS_PER_YEAR * np.where(couple, g(smg + "couple"), g(smg + "single"))
    pc = np.where(pension_unit & inp.claim_pc, np.maximum(guarantee - bu_net_income, 0.0), 0.0)

    # ---- Housing Benefit (pension age) ----
    aa = "housing_benefit.applicable_amount_weekly."
    applicable = WEEKS_PER_YEAR * np.where(couple, g(aa + "couple"), g(aa + "single"))
    excess = np.maximum(bu_net_income + pc - applicable, 0.0)
    hb = np.where(
        pension_unit & (eligible_rent > 0),
        np.maximum(eligible_rent - g("housing_benefit.taper") * excess, 0.0),
        0.0,
    )

    # ---- households ----
    hh = {
        "income_tax": per_hh(income_tax),
        "national_insurance": per_hh(ni),
        "child_benefit": bu_to_hh(cb_net),
        "universal_credit": bu_to_hh(uc),
        "pension_credit": bu_to_hh(pc),
        "housing_benefit": bu_to_hh(hb),
        "state_pension": inp.household_state_pension_reported * uprating,
        "council_tax": inp.council_tax.copy(),
        **{c: v.copy() for c, v in inp.household_incomes.items()},
    }
    hh["market_income"] = sum(hh[c] for c in _MARKET_INCOMES)
    hh["benefits"] = (
        hh["state_pension"]
        + hh["universal_credit"]
        + hh["child_benefit"]
        + hh["pension_credit"]
        + hh["housing_benefit"]
    )
    hh["household_net_income"] = (
        hh["market_income"]
        + hh["benefits"]
        - hh["income_tax"]
        - hh["national_insurance"]
        - hh["council_tax"]
    )
    hh["equivalisation_factor"] = inp.equivalisation_factor.copy()
    hh["equivalised_household_net_income"] = hh["household_net_income"] / inp.equivalisation_factor

    return SimulationResult(
        household=_frame({c: hh[c] for c in HOUSEHOLD_COLUMNS}, n_h),
        person=_frame(
            {
                "income_tax": income_tax,
                "national_insurance": ni,
                "adjusted_net_income": ani.copy(),
                "total_income": total_income,
            },
            inp.n_persons,
        ),
        benunit=_frame(
            {
                "universal_credit": uc,
                "child_benefit": cb_net,
                "pension_credit": pc,
                "housing_benefit": hb,
                "child_benefit_charge": cb_charge,
            },
            n_b,
        ),
        missing_inputs=inp.missing_inputs,
    )


def simulate(
    survey: Survey | SimulationInputs,
    parameters: Parameters | None = None,
    reform: Mapping | None = None,
) -> SimulationResult:
    """Simulate taxes, benefits and net incomes for every person, benefit unit and household.

    Args:
        survey: the survey (its index maps must resolve; see ``Survey.validate``), or its
            :class:`SimulationInputs` from :func:`prepare_inputs` when simulating the same survey
            under many reforms.
        parameters: the baseline parameters; the packaged 2025-26 rates when ``None``.
        reform: an optional reform applied on top of ``parameters`` (see
            :meth:`Parameters.apply_reform`).

    Returns:
        A :class:`SimulationResult` whose frames follow the survey's table orders.

    Raises:
        ParameterError: for a reform naming an unknown path or giving a bad value.
        SurveyValidationError: if a person's household or benefit unit id has no row.
    """
    params = load_parameters() if parameters is None else parameters
    if not isinstance(params, Parameters):
        raise TypeError(f"parameters must be a Parameters object, got {type(params).__name__}")
    if reform:
        params = params.apply_reform(reform)
    return _run(prepare_inputs(survey), params)
