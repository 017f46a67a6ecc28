"""The embedded synthetic UK-like survey world (``weightreg world``, DVC stage ``synthesize``).

:func:`generate_world` builds, deterministically from its params:

1. **A population** of UK-like households (default 200,000): 12 regions at ONS shares; household
   types (single and couple pensioners, single adults, couples with and without children, lone
   parents, households with an adult child at home, sharers, and ~1% larger households with 4+
   adults or 5+ children); ages, gender, disability, employment and hours, employment income
   (log-normal body with a Pareto tail above GBP 100k), self-employment, private pensions, savings
   interest, dividends concentrated at the top, property income; tenure correlated with age and
   income; rent by region and tenure; council tax band and council tax; benefit take-up flags;
   state pension. Reported benefits come from running :func:`weightreg.simulate.simulate` on the
   population once: each benefit unit's simulated Universal Credit, Child Benefit (net of the
   high-income charge), Pension Credit and Housing Benefit (the simulator applies the take-up
   flags) is recorded on its head as ``*_reported``. Every population household has the same
   weight, ``uk_households / population_households``, so population totals (and the targets) are
   at UK scale (28.5M households by default).

2. **A survey**: a sample of exactly ``sample_households`` drawn with differential non-response
   (lower response in London, for young household heads, private renters and, much lower, top
   incomes), whose respondents *under-report benefits* (``misreporting``: a recipient reports with
   probability ``report_rate``, and then a share in ``[amount_share_min, amount_share_max]`` of
   the amount; only the four ``*_reported`` benefit columns change, which the simulator does not
   read, so every survey household simulates exactly as its population original); plus an
   **enhancement block** of ``enhancement_households`` copies (new ids) of households drawn from
   the population's top ``enhancement_top_share`` by market income, reported exactly, stacked on
   with a tiny starting weight - as the enhanced FRS stacks SPI-based records, with zero weight,
   onto the FRS.

3. **Initial weights** from an *unregularised* calibration of the stack to several hundred
   population totals (:func:`world_target_spec`): Adam on log-weights minimising the mean squared
   relative error for a fixed number of steps, from uniform design weights (enhancement records
   from ``enhancement_initial_weight``) - PolicyEngine UK's method. Nothing is hand-set; the
   pathology (Kish ESS, max/median weight, skewness) and the target fit are measured into
   :attr:`World.metrics`.

Why the weights come out pathological (measured while designing the defaults): with *consistent*
targets and a sample this size, the unregularised fit stays tame (Kish ESS ~70% of records,
max/median ~10), whatever the number of thin targets, the learning rate or dropout. Two
features of the enhanced FRS make it extreme, and the defaults reproduce both:

* benefit under-reporting makes each region's reported caseload and spend impossible to meet
  together from typical respondents, so the calibration piles a region's caseload onto the few
  respondents who report the largest amounts (the largest weights, 10^5 and more);
* the enhancement block is as large as the sample and mostly stays near its tiny starting
  weight (only the records that help the top-income targets grow), so the median weight
  collapses, as in the enhanced FRS whose imputed half starts at zero weight.

The default misreporting is harsher than the FRS's (every reporting recipient reports 40-85% of
their award - notably for Child Benefit, which the FRS records well) and the default learning
rate (0.02) is lower than PolicyEngine's 0.1 (which left the ESS at ~5%): both were tuned until
the default world shows the enhanced FRS's pathology (Kish ESS < 5% of records, max/median >
1,000, skewness > 10) with margin. Consequence, as with PolicyEngine's targets: with no
respondent reporting a full award, the reported caseloads and spend, together with the other
targets, admit no exact solution - *hard* calibration to ``targets.csv`` reports contradictory
targets (measured with :func:`weightreg.calibrate.calibrate`); use soft targets (``penalty``).
With ``amount_share_max: 1`` (some respondents report exactly) hard calibration is feasible
again, but the Kish ESS only falls to ~6-8% of records.

Ids follow PolicyEngine's scheme: population households are numbered 1..N; benefit unit
``household * 100 + k`` and person ``household * 1000 + p`` (k, p from 1). Survey households keep
their population ids; enhancement copies are numbered from the first power of ten above N.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import ndtri
from tqdm.auto import tqdm

from .errors import ParameterError
from .survey import COUNCIL_TAX_BANDS, REGIONS, TENURE_TYPES, Survey
from .targets import (
    AGE_BAND_LABELS,
    HOUSEHOLD_TYPES,
    TARGET_COLUMNS,
    build_target_matrix,
    household_type,
)

__all__ = [
    "World",
    "DEFAULT_PARAMS",
    "REGION_SHARES",
    "INCOME_BANDS",
    "generate_world",
    "generate_population",
    "add_reported_benefits",
    "response_propensity",
    "draw_sample",
    "misreport",
    "draw_enhancement",
    "copy_households",
    "draw_survey",
    "WorldSurvey",
    "draw_world_survey",
    "world_target_spec",
    "adam_calibrate",
    "weight_metrics",
    "concat_surveys",
]

#: Defaults of the ``world`` section of params.yaml.
DEFAULT_PARAMS: dict = {
    "seed": 20250101,
    "population_households": 200_000,
    "sample_households": 20_000,
    "enhancement_households": 20_000,
    "time_period": "2025",
    # Population totals are at UK scale: each population household weighs uk_households / N.
    "uk_households": 28_500_000,
    # Non-response: relative response propensities (1 = average household).
    "response_london": 0.6,
    "response_young": 0.65,  # household head under 30
    "response_private_renter": 0.75,
    "response_top_5pct": 0.6,  # household market income in the top 5%
    "response_top_1pct": 0.3,  # ... top 1% (multiplies the top-5% factor)
    "response_top_01pct": 0.2,  # ... top 0.1% (multiplies both)
    # Enhancement block: drawn from this top share of households by market income.
    "enhancement_top_share": 0.2,
    "enhancement_initial_weight": 1.0,  # "tiny": a design weight is ~1,400 at UK scale
    # Calibration (Adam on log-weights, as PolicyEngine UK's reweighting).
    "calibration_steps": 3_000,
    "learning_rate": 0.02,
    "dropout_rate": 0.0,  # PolicyEngine's weight dropout (a share of log-weights set to their mean)
    # Survey under-reporting of benefits: a recipient reports with probability report_rate, and
    # then a uniform share in [amount_share_min, amount_share_max] of the amount. Only the
    # sample's *_reported benefit columns change (the simulator does not read them). null = exact.
    "misreporting": {
        "universal_credit": {"report_rate": 0.85, "amount_share_min": 0.4, "amount_share_max": 0.85},
        "child_benefit": {"report_rate": 0.9, "amount_share_min": 0.4, "amount_share_max": 0.8},
        "pension_credit": {"report_rate": 0.65, "amount_share_min": 0.3, "amount_share_max": 0.85},
        "housing_benefit": {"report_rate": 0.75, "amount_share_min": 0.3, "amount_share_max": 0.85},
    },
}

#: Households by region (ONS household estimates, UK, rounded shares), in REGIONS order.
REGION_SHARES = np.array([4.2, 11.2, 8.3, 7.2, 8.6, 9.3, 12.1, 13.4, 8.6, 4.8, 8.9, 2.7])
REGION_SHARES = REGION_SHARES / REGION_SHARES.sum()

# Internal household kinds (the generator's composition templates). The targets' household
# types are derived from the members afterwards (targets.household_type), not from these.
_KINDS = ("SP", "CP", "SA", "CN", "CC", "LP", "AC", "SH", "LF", "LA")
_KIND_SHARES = np.array([0.145, 0.13, 0.15, 0.145, 0.18, 0.06, 0.11, 0.068, 0.006, 0.006])
# Region tilts of the kind shares (London: fewer pensioners, more sharers; coast/rural: older).
_KIND_TILT = {
    "LONDON": {"SP": 0.7, "CP": 0.6, "SH": 2.0, "SA": 1.1, "LF": 1.6, "LA": 1.6},
    "SOUTH_WEST": {"SP": 1.15, "CP": 1.25, "SH": 0.8},
    "WALES": {"SP": 1.1, "CP": 1.15},
    "NORTH_EAST": {"SP": 1.1, "LP": 1.2},
    "NORTHERN_IRELAND": {"CC": 1.2, "LP": 1.1, "SH": 0.6},
}

# Employment income: full-time median by region (relative), log-normal sigma; tail above 100k.
_REGION_PAY = {
    "LONDON": 1.32, "SOUTH_EAST": 1.1, "EAST_OF_ENGLAND": 1.04, "SCOTLAND": 0.99,
    "NORTH_EAST": 0.88, "WALES": 0.88, "NORTHERN_IRELAND": 0.87, "YORKSHIRE": 0.9,
    "EAST_MIDLANDS": 0.92, "WEST_MIDLANDS": 0.93, "NORTH_WEST": 0.93, "SOUTH_WEST": 0.95,
}
# Private rent, GBP per month, by region (ONS price index of private rents, rounded).
_PRIVATE_RENT = {
    "NORTH_EAST": 650, "NORTH_WEST": 850, "YORKSHIRE": 800, "EAST_MIDLANDS": 850,
    "WEST_MIDLANDS": 900, "EAST_OF_ENGLAND": 1150, "LONDON": 2150, "SOUTH_EAST": 1350,
    "SOUTH_WEST": 1100, "WALES": 780, "SCOTLAND": 950, "NORTHERN_IRELAND": 800,
}
# Social rent, GBP per week (housing association; councils ~5% lower).
_SOCIAL_RENT = {
    "NORTH_EAST": 92, "NORTH_WEST": 98, "YORKSHIRE": 92, "EAST_MIDLANDS": 95,
    "WEST_MIDLANDS": 100, "EAST_OF_ENGLAND": 118, "LONDON": 150, "SOUTH_EAST": 125,
    "SOUTH_WEST": 110, "WALES": 100, "SCOTLAND": 90, "NORTHERN_IRELAND": 85,
}
# Band D council tax, GBP per year (NI: average domestic rates, which stand in for it).
_BAND_D = {
    "NORTH_EAST": 2370, "NORTH_WEST": 2330, "YORKSHIRE": 2250, "EAST_MIDLANDS": 2330,
    "WEST_MIDLANDS": 2220, "EAST_OF_ENGLAND": 2270, "LONDON": 2000, "SOUTH_EAST": 2330,
    "SOUTH_WEST": 2400, "WALES": 2170, "SCOTLAND": 1540, "NORTHERN_IRELAND": 1100,
}
# Band values as ninths of band D; band I exists only in Wales.
_BAND_RATIO = np.array([6, 7, 8, 9, 11, 13, 15, 18, 21]) / 9
_BAND_SHARES = np.array([0.24, 0.195, 0.22, 0.155, 0.098, 0.046, 0.03, 0.006, 0.0])
_BAND_SHARES = _BAND_SHARES / _BAND_SHARES.sum()
_BAND_SHIFT = {"LONDON": 0.45, "SOUTH_EAST": 0.3, "EAST_OF_ENGLAND": 0.15, "SOUTH_WEST": 0.05,
               "NORTH_EAST": -0.35, "YORKSHIRE": -0.2, "WALES": -0.15, "NORTH_WEST": -0.2}

# Tenure logit intercepts (TENURE_TYPES order), set so the UK shares come out near the English
# Housing Survey's: council 7%, housing association 10%, private 19%, outright 35%, mortgage 29%.
_TENURE_INTERCEPTS = np.array([0.25, 0.7, -0.46, -0.54, -2.22])

#: Income bands of the income-band targets (lower bounds; the last band is open).
INCOME_BANDS = {
    "employment_income": (1, 12_570, 20_000, 30_000, 40_000, 50_270, 75_000, 100_000, 125_140,
                          200_000, 500_000, 1_000_000),
    "self_employment_income": (1, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000),
    "private_pension_income": (1, 5_000, 10_000, 20_000, 50_000, 100_000),
    "savings_interest_income": (1, 500, 2_000, 10_000, 50_000),
    "dividend_income": (1, 2_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000),
    "property_income": (1, 5_000, 20_000, 100_000),
}
_REPORTED_BENEFITS = {
    "universal_credit": "universal_credit_reported",
    "child_benefit": "child_benefit_reported",
    "pension_credit": "pension_credit_reported",
    "housing_benefit": "housing_benefit_reported",
}
_MARKET = ("employment_income", "self_employment_income", "private_pension_income",
           "savings_interest_income", "dividend_income", "property_income")
_PENSION_AGE = 66


@dataclass
class World:
    """The synthetic world.

    Attributes:
        population: the population (every household weighs ``uk_households / N``).
        survey: the sample plus the enhancement block, with calibrated (pathological) weights.
        targets: the calibration targets (``targets.csv`` columns), values from the population.
        metrics: numbers describing the world and its weights (Kish ESS, max/median, skewness,
            target fit, sizes).
    """

    population: Survey
    survey: Survey
    targets: pd.DataFrame
    metrics: dict = field(default_factory=dict)


# ---- params ----------------------------------------------------------------------------------
_POSITIVE_INTS = ("population_households", "sample_households", "calibration_steps")
_POSITIVE_FLOATS = ("uk_households", "enhancement_initial_weight", "learning_rate", "enhancement_top_share",
                    "response_london", "response_young", "response_private_renter", "response_top_5pct",
                    "response_top_1pct", "response_top_01pct")
_MISREPORTING_KEYS = ("report_rate", "amount_share_min", "amount_share_max")


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _params(params: Mapping | None) -> dict:
    """Defaults overlaid with ``params``, validated (a ParameterError names the param)."""
    params = dict(params or {})
    params.pop("_path", None)
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ParameterError(
            f"unknown world param(s) {unknown}; known: {sorted(DEFAULT_PARAMS)} (params.yaml section 'world')"
        )
    p = {**DEFAULT_PARAMS, **params}

    def bad(key, what):
        return ParameterError(f"world param '{key}' = {p[key]!r} must be {what}")

    for key in _POSITIVE_INTS + ("seed", "enhancement_households"):
        v = p[key]
        if not _is_number(v) or float(v) != int(v) or v < (1 if key in _POSITIVE_INTS else 0):
            raise bad(key, "a positive integer" if key in _POSITIVE_INTS else "a non-negative integer")
        p[key] = int(v)
    for key in _POSITIVE_FLOATS:
        if not _is_number(p[key]) or p[key] <= 0:
            raise bad(key, "a positive number")
        p[key] = float(p[key])
    if not _is_number(p["dropout_rate"]) or not 0 <= p["dropout_rate"] < 1:
        raise bad("dropout_rate", "a number in [0, 1)")
    p["dropout_rate"] = float(p["dropout_rate"])
    if p["enhancement_top_share"] > 1:
        raise bad("enhancement_top_share", "at most 1")
    if p["sample_households"] > p["population_households"]:
        raise ParameterError(
            f"world param 'sample_households' = {p['sample_households']} exceeds "
            f"'population_households' = {p['population_households']}; lower it or grow the population"
        )
    p["time_period"] = str(p["time_period"])
    p["misreporting"] = _misreporting(params.get("misreporting", DEFAULT_PARAMS["misreporting"]))
    return p


def _misreporting(spec) -> dict:
    """Per-benefit misreporting settings: ``None`` = everyone reports exactly; otherwise each
    benefit's given keys override its defaults."""
    if spec is None:
        return {b: {k: 1.0 for k in _MISREPORTING_KEYS} for b in _REPORTED_BENEFITS}
    if not isinstance(spec, Mapping):
        raise ParameterError(f"world param 'misreporting' must be a mapping benefit -> settings (or null), got {spec!r}")
    unknown = sorted(set(spec) - set(_REPORTED_BENEFITS))
    if unknown:
        raise ParameterError(
            f"world param 'misreporting' names unknown benefit(s) {unknown}; known: {sorted(_REPORTED_BENEFITS)}")
    out = {}
    for benefit in _REPORTED_BENEFITS:
        given = spec.get(benefit) or {}
        if not isinstance(given, Mapping) or set(given) - set(_MISREPORTING_KEYS):
            raise ParameterError(
                f"world param 'misreporting.{benefit}' = {given!r}: expected keys {list(_MISREPORTING_KEYS)}")
        settings = {**DEFAULT_PARAMS["misreporting"][benefit], **given}
        for key, v in settings.items():
            if not _is_number(v) or not 0 <= v <= 1:
                raise ParameterError(f"world param 'misreporting.{benefit}.{key}' = {v!r} must be in [0, 1]")
        if settings["amount_share_min"] > settings["amount_share_max"]:
            raise ParameterError(
                f"world param 'misreporting.{benefit}': amount_share_min {settings['amount_share_min']} exceeds "
                f"amount_share_max {settings['amount_share_max']}")
        out[benefit] = {k: float(v) for k, v in settings.items()}
    return out


# ---- small helpers -----------------------------------------------------------------------------
def _by_region(table: Mapping[str, float], region_codes: np.ndarray, default: float = 1.0) -> np.ndarray:
    lookup = np.array([table.get(r, default) for r in REGIONS], dtype=float)
    return lookup[region_codes]


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of ``probs`` (rows need not be normalised): inverse CDF, vectorised."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _pareto_tail(x: np.ndarray, mu: np.ndarray, sigma: float, threshold: float, alpha: float) -> np.ndarray:
    """Replace a log-normal's values above ``threshold`` by a Pareto(alpha) tail, rank-preserving.

    A value's conditional survival ``P(X > x | X > threshold)`` under the log-normal becomes its
    survival under the Pareto, so the share of values above the threshold is kept and the tail
    gets the heavy, power-law shape of UK top incomes.
    """
    from scipy.special import ndtr

    out = x.copy()
    top = x > threshold
    if top.any():
        mu_t = mu[top] if np.ndim(mu) else mu
        s_x = ndtr(-(np.log(x[top]) - mu_t) / sigma)
        s_t = ndtr(-(np.log(threshold) - mu_t) / sigma)
        u = np.clip(s_x / s_t, 1e-12, 1.0)
        out[top] = np.minimum(threshold * u ** (-1.0 / alpha), 2e7)
    return out


def _lognormal(rng, n, median, sigma):
    mu = np.log(median)
    return np.exp(mu + sigma * rng.standard_normal(n)), mu


# ---- population ----------------------------------------------------------------------------------
def generate_population(params: Mapping, rng: np.random.Generator) -> Survey:
    """Generate the population's households (inputs only; reported benefits not yet added).

    Vectorised: whole arrays per attribute; Python loops run over the few person *slots* of a
    household (head, spouse, children, other adults), never over households.
    """
    p = _params(params)
    n = p["population_households"]
    k = {name: i for i, name in enumerate(_KINDS)}

    # -- households: region and composition --
    region = rng.choice(len(REGIONS), size=n, p=REGION_SHARES)
    tilt = np.ones((len(REGIONS), len(_KINDS)))
    for r, kinds in _KIND_TILT.items():
        for kind, f in kinds.items():
            tilt[REGIONS.index(r), k[kind]] = f
    kind = _categorical(rng, _KIND_SHARES[None, :] * tilt[region])

    def draw_counts(probs, offset):
        return offset + _categorical(rng, np.broadcast_to(np.asarray(probs, float), (n, len(probs))))

    u_sp = rng.random(n)
    has_spouse = np.isin(kind, [k["CP"], k["CN"], k["CC"], k["LF"]]) | (
        (kind == k["AC"]) & (u_sp < 0.7)) | ((kind == k["LA"]) & (u_sp < 0.6))
    n_children = np.zeros(n, dtype=np.int64)
    n_children = np.where(kind == k["CC"], draw_counts([0.46, 0.39, 0.11, 0.04], 1), n_children)
    n_children = np.where(kind == k["LP"], draw_counts([0.55, 0.31, 0.10, 0.04], 1), n_children)
    n_children = np.where(kind == k["LF"], draw_counts([0.7, 0.3], 5), n_children)
    n_children = np.where(kind == k["LA"], draw_counts([0.6, 0.25, 0.15], 0), n_children)
    n_extra = np.zeros(n, dtype=np.int64)
    n_extra = np.where(kind == k["AC"], np.where(has_spouse, 1, draw_counts([0.7, 0.3], 1)), n_extra)
    n_extra = np.where(kind == k["SH"], draw_counts([0.75, 0.25], 1), n_extra)
    n_extra = np.where(kind == k["LA"], np.where(has_spouse, draw_counts([0.6, 0.4], 2),
                                                 draw_counts([0.6, 0.4], 3)), n_extra)

    # -- head age by kind --
    def clip_int(x, lo, hi):
        return np.clip(np.floor(x), lo, hi).astype(np.int64)

    z = rng.standard_normal(n)
    g1, g2 = rng.gamma(2.0, 6.0, n), rng.gamma(1.6, 5.0, n)
    g3 = rng.gamma(2.0, 5.0, n)
    b = rng.beta(1.4, 1.2, n)
    young_couple = rng.random(n) < 0.45
    la_sharers = (kind == k["LA"]) & ~has_spouse & (rng.random(n) < 0.5)
    head_age = np.select(
        [kind == k["SP"], kind == k["CP"], kind == k["SA"], kind == k["CN"], kind == k["CC"],
         kind == k["LP"], kind == k["AC"], kind == k["SH"], kind == k["LF"], la_sharers],
        [clip_int(66 + g1, 66, 100), clip_int(66 + g2, 66, 96), clip_int(18 + 48 * b, 18, 65),
         np.where(young_couple, clip_int(30 + 5 * z, 20, 44), clip_int(56 + 5 * z, 40, 65)),
         clip_int(39 + 7 * z, 21, 60), clip_int(36 + 8 * z, 18, 60), clip_int(54 + 7 * z, 38, 80),
         clip_int(19 + g3, 18, 60), clip_int(38 + 6 * z, 25, 55), clip_int(20 + g3, 18, 50)],
        default=clip_int(52 + 7 * z, 38, 75),  # LA with adult children
    )
    # Households with an adult child at home sometimes also have younger children.
    ac_kids = (kind == k["AC"]) & (head_age <= 55) & (rng.random(n) < 0.25)
    n_children = np.where(ac_kids, draw_counts([0.7, 0.3], 1), n_children)
    fem_head = rng.random(n) < np.select(
        [kind == k["SP"], kind == k["LP"], kind == k["AC"]], [0.65, 0.9, 0.55], 0.45)

    # -- person slots: head, spouse, children, other adults --
    slots = []  # (household positions, order within household, role, benefit unit k)
    hh_all = np.arange(n)
    slots.append((hh_all, 0, "head", 1))
    slots.append((hh_all[has_spouse], 1, "spouse", 1))
    for c in range(int(n_children.max(initial=0))):
        slots.append((hh_all[n_children > c], 2 + c, "child", 1))
    for e in range(int(n_extra.max(initial=0))):
        slots.append((hh_all[n_extra > e], 20 + e, "extra", 2 + e))
    ph = np.concatenate([s[0] for s in slots])
    order = np.concatenate([np.full(len(s[0]), s[1]) for s in slots])
    role = np.concatenate([np.full(len(s[0]), s[2], dtype=object) for s in slots])
    bu_k = np.concatenate([np.full(len(s[0]), s[3]) for s in slots])
    srt = np.lexsort((order, ph))
    ph, order, role, bu_k = ph[srt], order[srt], role[srt], bu_k[srt]
    m = len(ph)
    first = np.searchsorted(ph, np.arange(n))
    pnum = np.arange(m) - first[ph] + 1
    is_head, is_spouse = role == "head", role == "spouse"
    is_child, is_extra = role == "child", role == "extra"

    # -- ages --
    h_age = head_age[ph]
    pkind = kind[ph]
    zp = rng.standard_normal(m)
    up = rng.random(m)
    age = h_age.copy()
    spouse_age = np.clip(np.round(h_age - 1.5 + 3.5 * zp), 18, 100)
    spouse_age = np.where(pkind == k["CP"], np.maximum(spouse_age, 58), spouse_age)
    spouse_age = np.where(np.isin(pkind, [k["CN"], k["CC"], k["LF"]]) & (h_age < _PENSION_AGE),
                          np.minimum(spouse_age, 70), spouse_age)
    age = np.where(is_spouse, spouse_age, age)
    child_hi = np.clip(h_age - 17, 1, 16)
    age = np.where(is_child, np.floor(up * child_hi), age)
    sharer_hh = (pkind == k["SH"]) | la_sharers[ph]
    extra_child_hi = np.clip(np.minimum(34, h_age - 18), 18, None)
    extra_child_age = np.floor(18 + up * (extra_child_hi - 18 + 1))
    sharer_age = np.clip(np.round(h_age + 5 * zp), 18, 70)
    age = np.where(is_extra, np.where(sharer_hh, sharer_age, extra_child_age), age).astype(np.int64)
    adult = age >= 16

    female = np.where(is_head, fem_head[ph], rng.random(m) < 0.5)
    same_sex = rng.random(m) < 0.03
    female = np.where(is_spouse, np.where(same_sex, fem_head[ph], ~fem_head[ph]), female)

    # -- disability, employment, hours --
    disabled = rng.random(m) < np.select(
        [age < 16, age < 45, age < _PENSION_AGE], [0.04, 0.07, 0.13], 0.22)
    p_emp = np.select([age < 18, age < 25, age < 50, age < _PENSION_AGE, age < 75],
                      [0.0, 0.6, 0.84, 0.72, 0.11], 0.02)
    p_emp = p_emp * np.where(disabled, 0.5, 1.0) * np.where(is_head & (pkind == k["LP"]), 0.85, 1.0)
    employed = rng.random(m) < p_emp
    self_emp = employed & (rng.random(m) < np.where(female, 0.10, 0.17))
    part_time = employed & (rng.random(m) < np.where(age >= _PENSION_AGE, 0.6, np.where(female, 0.37, 0.13)))
    hours = np.where(part_time, np.round(np.clip(19 + 6 * rng.standard_normal(m), 5, 30)),
                     np.round(np.clip(39 + 5 * rng.standard_normal(m), 31, 70)))
    hours = np.where(employed, hours, 0.0)

    # -- incomes --
    region_p = region[ph]
    age_pay = np.select([age < 25, age < 35, age < 50, age < _PENSION_AGE], [0.62, 0.93, 1.1, 1.02], 0.8)
    pay_sigma = 0.52
    median_pay = 35_000 * age_pay * _by_region(_REGION_PAY, region_p) * np.where(female, 0.9, 1.0)
    median_pay = median_pay * np.where(part_time, 0.45, 1.0)
    mu = np.log(median_pay)
    pay = np.exp(mu + pay_sigma * rng.standard_normal(m))
    pay = _pareto_tail(pay, mu, pay_sigma, 100_000.0, 1.65)
    only_self = self_emp & (rng.random(m) < 0.75)  # most self-employed have no wage as well
    employment_income = np.where(employed & ~only_self, pay, 0.0)
    se, se_mu = _lognormal(rng, m, 16_000.0, 0.95)
    se = _pareto_tail(se, se_mu, 0.95, 100_000.0, 1.45)
    self_employment_income = np.where(self_emp, se, 0.0)
    earnings = employment_income + self_employment_income

    # A latent "wealth" score, correlated with earnings rank and age, drives capital incomes.
    rank = (pd.Series(earnings).rank(method="first").to_numpy() - 0.5) / m
    wealth = 0.55 * ndtri(rank) + 0.25 * (age >= 50) + 0.8 * rng.standard_normal(m)
    wealth = np.where(adult, wealth, -5.0)

    pens_p = np.where(age >= _PENSION_AGE, 0.72, np.where((age >= 55) & ~employed, 0.3, 0.0))
    has_pension = rng.random(m) < pens_p
    pen, pen_mu = _lognormal(rng, m, 6_500.0, 0.85)
    pen = pen * np.exp(0.35 * wealth)
    pen = _pareto_tail(pen, pen_mu + 0.35 * wealth, 0.85, 60_000.0, 2.2)
    private_pension_income = np.where(has_pension, pen, 0.0)

    has_sav = adult & (rng.random(m) < 1 / (1 + np.exp(-(0.3 + 0.9 * wealth))))
    sav, sav_mu = _lognormal(rng, m, 180.0, 1.4)
    sav = sav * np.exp(0.8 * wealth)
    sav = _pareto_tail(sav, sav_mu + 0.8 * wealth, 1.4, 20_000.0, 1.6)
    savings_interest_income = np.where(has_sav, sav, 0.0)

    has_div = adult & (rng.random(m) < 1 / (1 + np.exp(-(-2.6 + 1.3 * wealth))))
    div, div_mu = _lognormal(rng, m, 700.0, 1.3)
    div = div * np.exp(1.1 * wealth)
    div = _pareto_tail(div, div_mu + 1.1 * wealth, 1.3, 100_000.0, 1.35)
    dividend_income = np.where(has_div, div, 0.0)

    has_prop = adult & (rng.random(m) < 1 / (1 + np.exp(-(-3.2 + 0.8 * wealth))))
    prop, prop_mu = _lognormal(rng, m, 7_000.0, 1.0)
    prop = _pareto_tail(prop, prop_mu, 1.0, 100_000.0, 1.8)
    property_income = np.where(has_prop, prop, 0.0)

    state_pension = np.where(age >= _PENSION_AGE, np.round(9_000 + 3_000 * rng.beta(1.5, 2.0, m), 2), 0.0)

    incomes = {
        "employment_income": employment_income,
        "self_employment_income": self_employment_income,
        "private_pension_income": private_pension_income,
        "savings_interest_income": savings_interest_income,
        "dividend_income": dividend_income,
        "property_income": property_income,
    }
    incomes = {key: np.round(v, 2) for key, v in incomes.items()}
    person_income = sum(incomes.values())
    hh_income = np.bincount(ph, weights=person_income, minlength=n)
    hh_rank = (pd.Series(hh_income).rank(method="first").to_numpy() - 0.5) / n
    n_persons = np.bincount(ph, minlength=n)

    # -- tenure: multinomial logit on head age, household income rank, kind and region --
    is_london = region == REGIONS.index("LONDON")
    is_scot = region == REGIONS.index("SCOTLAND")
    young = head_age < 35
    mid = (head_age >= 30) & (head_age < 58)
    old = head_age >= _PENSION_AGE
    lone = kind == k["LP"]
    sharers = (kind == k["SH"]) | la_sharers
    scores = _TENURE_INTERCEPTS + np.column_stack([
        -3.0 * hh_rank + 1.0 * lone + 0.5 * is_scot + 0.3 * is_london,  # council
        -3.0 * hh_rank + 0.9 * lone + 0.3 * is_london,  # housing association
        1.6 * young - 1.0 * hh_rank + 0.8 * is_london + 1.8 * sharers - 1.0 * old,  # private
        2.6 * old + 0.9 * (head_age >= 55) + 0.8 * hh_rank - 2.0 * young - 0.4 * is_london,  # outright
        1.5 * mid + 2.8 * hh_rank - 1.6 * old - 0.6 * sharers - 0.3 * is_london,  # mortgage
    ])
    tenure_code = _categorical(rng, np.exp(scores))
    tenure = np.array(TENURE_TYPES, dtype=object)[tenure_code]

    # -- rent (annual) --
    size_f = 1 + 0.08 * (n_persons - 1)
    private = np.exp(np.log(_by_region(_PRIVATE_RENT, region) * size_f) + 0.28 * rng.standard_normal(n)) * 12
    social = np.exp(np.log(_by_region(_SOCIAL_RENT, region) * size_f) + 0.12 * rng.standard_normal(n)) * 52
    rent = np.select([tenure == "RENT_PRIVATELY", tenure == "RENT_FROM_HA", tenure == "RENT_FROM_COUNCIL"],
                     [private, social, 0.95 * social], 0.0)
    rent = np.round(rent, 2)

    # -- council tax band and amount --
    band_score = ndtri(hh_rank) * 0.55 + 0.3 * (tenure_code >= 3) + _by_region(_BAND_SHIFT, region, 0.0)
    band_score = band_score + 0.75 * rng.standard_normal(n)
    band_score = (pd.Series(band_score).rank(method="first").to_numpy() - 0.5) / n
    band = np.searchsorted(np.cumsum(_BAND_SHARES)[:-2], band_score, side="right")  # A..H
    wales = region == REGIONS.index("WALES")
    band = np.where(wales & (band == 7) & (rng.random(n) < 0.5), 8, band)  # Wales: band I at the top
    n_adults = np.bincount(ph, weights=adult, minlength=n)
    council_tax = _by_region(_BAND_D, region) * _BAND_RATIO[band] * np.where(n_adults <= 1, 0.75, 1.0)
    council_tax = np.round(council_tax, 2)

    # -- benefit units: couple flag and take-up --
    n_bu = 1 + n_extra
    bu_hh = np.repeat(np.arange(n), n_bu)
    bu_num = np.arange(len(bu_hh)) - np.repeat(np.cumsum(n_bu) - n_bu, n_bu) + 1
    hh_id = np.arange(1, n + 1, dtype=np.int64)
    benunit_id = hh_id[bu_hh] * 100 + bu_num
    person_bu_id = hh_id[ph] * 100 + bu_k
    bu_pos = np.searchsorted(benunit_id, person_bu_id)
    bu_adults = np.bincount(bu_pos, weights=adult, minlength=len(benunit_id))
    bu_max_income = np.zeros(len(benunit_id))
    np.maximum.at(bu_max_income, bu_pos, person_income + state_pension)
    nb = len(benunit_id)
    claim_cb_p = np.select([bu_max_income > 80_000, bu_max_income > 60_000], [0.35, 0.75], 0.93)

    person = pd.DataFrame({
        "person_id": hh_id[ph] * 1000 + pnum,
        "person_benunit_id": person_bu_id,
        "person_household_id": hh_id[ph],
        "age": age,
        "gender": np.where(female, "FEMALE", "MALE").astype(object),
        "is_household_head": is_head,
        "is_benunit_head": is_head | is_extra,
        **incomes,
        "hours_worked": hours.astype(float),
        "is_disabled_for_benefits": disabled,
        "state_pension_reported": state_pension,
        **{col: np.zeros(m) for col in _REPORTED_BENEFITS.values()},
    })
    benunit = pd.DataFrame({
        "benunit_id": benunit_id,
        "is_married": bu_adults >= 2,  # the simulator's couple flag: every two-adult unit
        "would_claim_uc": rng.random(nb) < 0.8,
        "would_claim_pc": rng.random(nb) < 0.63,
        "would_claim_child_benefit": rng.random(nb) < claim_cb_p,
    })
    household = pd.DataFrame({
        "household_id": hh_id,
        "household_weight": np.full(n, p["uk_households"] / n),
        "region": np.array(REGIONS, dtype=object)[region],
        "tenure_type": tenure,
        "rent": rent,
        "council_tax": council_tax,
        "council_tax_band": np.array(COUNCIL_TAX_BANDS, dtype=object)[band],
    })
    return Survey(person, benunit, household, p["time_period"])


def add_reported_benefits(survey: Survey) -> Survey:
    """Record each benefit unit's simulated benefits on its head as ``*_reported`` (a copy).

    The simulator applies the take-up flags, so a unit that would not claim reports zero.
    """
    from .simulate import simulate

    result = simulate(survey)
    person = survey.person.copy()
    pb = survey.person_benunit_index()
    head = person["is_benunit_head"].to_numpy(dtype=bool)
    for sim_col, col in _REPORTED_BENEFITS.items():
        amount = result.benunit[sim_col].to_numpy(dtype=float)
        person[col] = np.where(head, np.round(amount[pb], 2), 0.0)
    return Survey(person, survey.benunit, survey.household, survey.time_period, survey.source)


def _market_income(survey: Survey) -> np.ndarray:
    cols = [c for c in _MARKET if c in survey.person.columns]
    total = survey.person[cols].to_numpy(dtype=float).sum(axis=1)
    return np.bincount(survey.person_household_index(), weights=total, minlength=survey.n_households)


# ---- the sample and the enhancement block --------------------------------------------------------
def response_propensity(population: Survey, params: Mapping) -> np.ndarray:
    """Each population household's relative propensity to respond (differential non-response)."""
    p = _params(params)
    h = population.household
    head = population.household_head_index()
    head_age = population.person["age"].to_numpy()[head]
    income = _market_income(population)
    q95, q99, q999 = np.quantile(income, [0.95, 0.99, 0.999])
    r = np.ones(population.n_households)
    r *= np.where(h["region"].to_numpy() == "LONDON", p["response_london"], 1.0)
    r *= np.where(head_age < 30, p["response_young"], 1.0)
    r *= np.where(h["tenure_type"].to_numpy() == "RENT_PRIVATELY", p["response_private_renter"], 1.0)
    r *= np.where(income >= q95, p["response_top_5pct"], 1.0)
    r *= np.where(income >= q99, p["response_top_1pct"], 1.0)
    r *= np.where(income >= q999, p["response_top_01pct"], 1.0)
    return r


def misreport(survey: Survey, params: Mapping, rng: np.random.Generator) -> Survey:
    """A copy of ``survey`` whose reported benefits are under-reported as the survey's
    respondents do (see ``misreporting`` in :data:`DEFAULT_PARAMS`): each recipient reports
    with probability ``report_rate``, and then a share uniform in ``[amount_share_min, 1]``."""
    p = _params(params)
    person = survey.person.copy()
    for benefit, col in _REPORTED_BENEFITS.items():
        if col not in person.columns:
            continue
        cfg = p["misreporting"][benefit]
        x = person[col].to_numpy(dtype=float)
        reports = rng.random(len(x)) < cfg["report_rate"]
        lo, hi = cfg["amount_share_min"], cfg["amount_share_max"]
        share = lo + (hi - lo) * rng.random(len(x))
        person[col] = np.where(reports, np.round(x * share, 2), 0.0)
    return Survey(person, survey.benunit, survey.household, survey.time_period, survey.source)


def draw_sample(population: Survey, params: Mapping, rng: np.random.Generator) -> np.ndarray:
    """Bool mask (household order) of the responding sample: exactly ``sample_households``,
    drawn without replacement with probability proportional to the response propensity
    (Efraimidis-Spirakis keys ``log(U) / r``: the largest keys win)."""
    p = _params(params)
    r = response_propensity(population, p)
    keys = np.log(rng.random(population.n_households)) / r
    chosen = np.argsort(-keys, kind="stable")[: p["sample_households"]]
    mask = np.zeros(population.n_households, dtype=bool)
    mask[chosen] = True
    return mask


def copy_households(survey: Survey, positions, new_ids) -> Survey:
    """Copies of the households at ``positions`` (repeats allowed) with ids ``new_ids``.

    Benefit unit and person ids are renumbered in PolicyEngine's scheme, keeping each
    member's and unit's number within the household (``id - household_id * 1000``).
    """
    positions = np.asarray(positions, dtype=np.int64)
    new_ids = np.asarray(new_ids, dtype=np.int64)
    old_ids = survey.household_ids[positions]

    def rows_of(owner_index):
        order = np.argsort(owner_index, kind="stable")
        counts = np.bincount(owner_index, minlength=survey.n_households)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        c = counts[positions]
        offsets = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        return order[np.repeat(starts[positions], c) + offsets], np.repeat(np.arange(len(positions)), c)

    prow, pcopy = rows_of(survey.person_household_index())
    brow, bcopy = rows_of(survey.benunit_household_index())
    person = survey.person.iloc[prow].reset_index(drop=True)
    old_h, new_h = old_ids[pcopy], new_ids[pcopy]
    person["person_id"] = new_h * 1000 + (person["person_id"].to_numpy() - old_h * 1000)
    person["person_benunit_id"] = new_h * 100 + (person["person_benunit_id"].to_numpy() - old_h * 100)
    person["person_household_id"] = new_h
    benunit = survey.benunit.iloc[brow].reset_index(drop=True)
    benunit["benunit_id"] = new_ids[bcopy] * 100 + (benunit["benunit_id"].to_numpy() - old_ids[bcopy] * 100)
    household = survey.household.iloc[positions].reset_index(drop=True)
    household["household_id"] = new_ids
    return Survey(person, benunit, household, survey.time_period)


def draw_enhancement(population: Survey, params: Mapping, rng: np.random.Generator) -> np.ndarray:
    """Positions of the population households copied into the enhancement block: drawn
    uniformly from the top ``enhancement_top_share`` by market income, without replacement
    while there are enough of them."""
    p = _params(params)
    n_enh = p["enhancement_households"]
    if n_enh == 0:
        return np.zeros(0, dtype=np.int64)
    income = _market_income(population)
    n_top = max(1, int(round(p["enhancement_top_share"] * population.n_households)))
    top = np.argsort(-income, kind="stable")[:n_top]
    chosen = rng.choice(top, size=n_enh, replace=n_enh > n_top)
    return np.sort(chosen)


def concat_surveys(*surveys: Survey) -> Survey:
    """Stack surveys' tables (ids must not collide; not checked here, see ``Survey.validate``)."""
    return Survey(
        pd.concat([s.person for s in surveys], ignore_index=True),
        pd.concat([s.benunit for s in surveys], ignore_index=True),
        pd.concat([s.household for s in surveys], ignore_index=True),
        surveys[0].time_period,
    )


def draw_survey(population: Survey, params: Mapping | None, rng: np.random.Generator) -> Survey:
    """Draw a survey from ``population`` with the world's whole design, weighted by its
    *starting* weights: the responding sample (:func:`draw_sample`) with misreported benefits
    (:func:`misreport`), each at the design weight ``population total / sample size``, then the
    enhancement block (:func:`draw_enhancement`, copies numbered from the first power of ten above
    the population's largest id) at ``enhancement_initial_weight``.

    ``rng`` is split into sample, misreporting and enhancement streams; :func:`generate_world`
    calls this, so a bootstrap replicate drawn with it follows the same design.
    """
    p = _params(params)
    sample_rng, report_rng, enh_rng = rng.spawn(3)
    sample = population.select_households(draw_sample(population, p, sample_rng))
    sample = misreport(sample, p, report_rng)
    design = float(population.weights.sum()) / sample.n_households
    prior = np.full(sample.n_households, design)
    enh_pos = draw_enhancement(population, p, enh_rng)
    if len(enh_pos):
        first_id = 10 ** len(str(int(population.household_ids.max())))
        enhancement = copy_households(population, enh_pos, first_id + np.arange(len(enh_pos), dtype=np.int64))
        sample = concat_surveys(sample, enhancement)
        prior = np.concatenate([prior, np.full(len(enh_pos), p["enhancement_initial_weight"])])
    return sample.with_weights(prior)


# ---- targets -------------------------------------------------------------------------------------------
def _band_filter(col: str, lo: float, hi: float) -> str:
    hi_s = "inf" if math.isinf(hi) else f"{hi:g}" if hi < 1e6 else str(int(hi))
    return f"{col} in [{int(lo)},{hi_s})"


def world_target_spec() -> pd.DataFrame:
    """The calibration targets' definitions (``value`` still 0): several hundred population
    totals of the kinds the enhanced FRS is calibrated to.

    * households by region; persons by region x age band; households by region x tenure and by
      region x household type; households by council tax band;
    * per income type (:data:`INCOME_BANDS`): persons and amounts in each income band;
    * per reported benefit (UC, child benefit, Pension Credit, Housing Benefit) and the state
      pension, by region: recipients (count of persons with a positive amount) and spend.
    """
    rows = []

    def add(name, variable, entity, aggregation, filt):
        rows.append((name, 0.0, variable, entity, aggregation, filt))

    for r in REGIONS:
        add(f"households/region={r}", "", "household", "count", f"region={r}")
    for r in REGIONS:
        for a in AGE_BAND_LABELS:
            add(f"persons/region={r}/age_band={a}", "", "person", "count", f"region={r};age_band={a}")
    for r in REGIONS:
        for t in TENURE_TYPES:
            add(f"households/region={r}/tenure_type={t}", "", "household", "count", f"region={r};tenure_type={t}")
    for r in REGIONS:
        for t in HOUSEHOLD_TYPES:
            add(f"households/region={r}/household_type={t}", "", "household", "count",
                f"region={r};household_type={t}")
    for b in COUNCIL_TAX_BANDS:
        add(f"households/council_tax_band={b}", "", "household", "count", f"council_tax_band={b}")
    for col, lows in INCOME_BANDS.items():
        bounds = list(lows) + [math.inf]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            f = _band_filter(col, lo, hi)
            add(f"persons/{f}", "", "person", "count", f)
            add(f"{col}/{f}", col, "person", "sum", f)
    for col in list(_REPORTED_BENEFITS.values()) + ["state_pension_reported"]:
        for r in REGIONS:
            f = f"region={r};{col} in [0.01,inf)"
            add(f"persons/region={r}/{col} in [0.01,inf)", "", "person", "count", f)
            add(f"{col}/region={r}", col, "person", "sum", f"region={r}")
    return pd.DataFrame(rows, columns=list(TARGET_COLUMNS))


# ---- calibration ----------------------------------------------------------------------------------------
def adam_calibrate(matrix, targets, initial_weights, *, steps: int = 1000, learning_rate: float = 0.1,
                   dropout_rate: float = 0.0, rng: np.random.Generator | None = None,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Unregularised calibration as PolicyEngine UK does it: Adam on log-weights.

    Minimises the mean over targets of ``((A^T w - t) / t)^2`` with ``w = exp(u)``, starting
    from ``u = log(initial_weights)``, for a fixed number of Adam steps (beta1 0.9, beta2
    0.999, eps 1e-8, no weight decay), optionally with PolicyEngine's dropout (each step a
    random ``dropout_rate`` share of log-weights is replaced by the mean of the others).
    Nothing keeps the weights near their start: where the targets cannot all be met (as with
    under-reported benefits) the least-squares optimum puts the weight on few records, and
    records that start tiny and do not help stay tiny.

    Args:
        matrix: (N, M) target matrix (sparse or dense).
        targets: (M,) positive target values.
        initial_weights: (N,) positive starting weights.
        steps: Adam steps.
        learning_rate: Adam's step size (on log-weights).
        dropout_rate: share of log-weights dropped per step (0 = none); needs ``rng``.
        rng: the generator for dropout.
        progress: show a progress bar.

    Returns:
        ``(weights, loss_history)``; the history has ``steps + 1`` entries (before each step
        and after the last).

    Raises:
        ValueError: non-positive targets or starting weights, or dropout without ``rng``.
    """
    if np.any(np.asarray(targets, dtype=float) <= 0) or np.any(np.asarray(initial_weights, dtype=float) <= 0):
        raise ValueError("adam_calibrate needs positive targets (relative errors) and positive starting "
                         "weights (log-weights); drop zero targets and give zero-weight records a tiny weight")
    if dropout_rate > 0 and rng is None:
        raise ValueError("adam_calibrate: dropout_rate > 0 needs rng (a numpy Generator)")
    A = sp.csr_matrix(matrix, dtype=float)
    At = A.T.tocsr()
    t = np.asarray(targets, dtype=float)
    u = np.log(np.asarray(initial_weights, dtype=float))
    m_t, v_t = np.zeros_like(u), np.zeros_like(u)
    b1, b2, eps = 0.9, 0.999, 1e-8
    n_t = len(t)
    history = np.empty(steps + 1)
    for step in tqdm(range(1, steps + 2), desc="calibrating", disable=not progress, leave=False):
        w = np.exp(u)
        rel = (At @ w - t) / t
        history[step - 1] = float(rel @ rel) / n_t
        if step == steps + 1:
            break
        if dropout_rate > 0:
            # PolicyEngine's dropout: a random share of log-weights is replaced by the mean of
            # the others for this step's loss; gradients flow to the others through the mean.
            drop = rng.random(len(u)) < dropout_rate
            if drop.all():  # nothing left to take the mean of: skip dropout this step
                drop[:] = False
            kept = ~drop
            u_d = np.where(drop, u[kept].mean(), u)
            w_d = np.exp(u_d)
            rel_d = (At @ w_d - t) / t
            g = w_d * (A @ (2.0 * rel_d / (t * n_t)))
            grad = np.where(kept, g + g[drop].sum() / max(kept.sum(), 1), 0.0)
        else:
            grad = w * (A @ (2.0 * rel / (t * n_t)))
        m_t = b1 * m_t + (1 - b1) * grad
        v_t = b2 * v_t + (1 - b2) * grad * grad
        m_hat = m_t / (1 - b1**step)
        v_hat = v_t / (1 - b2**step)
        u = u - learning_rate * m_hat / (np.sqrt(v_hat) + eps)
    return np.exp(u), history


def weight_metrics(weights) -> dict:
    """Kish ESS (absolute and as a share of records), max/median ratio, skewness and spread."""
    w = np.asarray(weights, dtype=float)
    n = len(w)
    ess = float(w.sum() ** 2 / (w @ w)) if (w @ w) > 0 else 0.0
    med = float(np.median(w))
    centred = w - w.mean()
    m2 = float(np.mean(centred**2))
    skew = float(np.mean(centred**3) / m2**1.5) if m2 > 0 else 0.0
    top = np.sort(w)[::-1]
    return {
        "kish_ess": ess,
        "kish_ess_share": ess / n if n else 0.0,
        "max_weight": float(w.max()) if n else 0.0,
        "median_weight": med,
        "min_weight": float(w.min()) if n else 0.0,
        "max_median_ratio": float(w.max() / med) if med > 0 else math.inf,
        "weight_skewness": skew,
        "top_1pct_weight_share": float(top[: max(1, n // 100)].sum() / w.sum()) if w.sum() > 0 else 0.0,
    }


# ---- one survey of the world -------------------------------------------------------------------
@dataclass
class WorldSurvey:
    """A survey drawn from a population with the world's whole design and Adam-calibrated
    (:func:`draw_world_survey`).

    Attributes:
        survey: the sample then the enhancement block, ``household_weight`` the calibrated weight.
        initial_weights: shape (N,) the starting weights the calibration began from (the sample's
            design weight ``population total / sample size``, the enhancement block's
            ``enhancement_initial_weight``).
        targets: the calibration targets kept (``targets.csv`` columns, values from the population).
        kept: shape (M_spec,) which of :func:`world_target_spec`'s targets were kept (a zero
            population total or no surveyed record in the target's cell leaves one out).
        matrix: (N, M) sparse target matrix of ``survey`` for ``targets``.
        loss_history: Adam's loss before each step and after the last (``calibration_steps + 1``).
        n_sample: records of the responding sample (the first ``n_sample`` households).
    """

    survey: Survey
    initial_weights: np.ndarray
    targets: pd.DataFrame
    kept: np.ndarray
    matrix: object
    loss_history: np.ndarray
    n_sample: int


def draw_world_survey(population: Survey, params: Mapping | None, survey_rng: np.random.Generator,
                      cal_rng: np.random.Generator, *, progress: bool = False) -> WorldSurvey:
    """Draw one survey from ``population`` and calibrate it, exactly as :func:`generate_world` does
    after making the population.

    :func:`draw_survey` (non-response, misreported benefits, the enhancement block, at starting
    weights) with ``survey_rng``; the targets of :func:`world_target_spec` valued on the population
    at its own weights, less those with a zero total or no surveyed record in their cell; then
    :func:`adam_calibrate` from the starting weights (``calibration_steps``, ``learning_rate``,
    ``dropout_rate``; the dropout draws from ``cal_rng``). A repeated-sampling study
    (:mod:`weightreg.study`) draws each replicate with this, so every replicate has the world's
    pathology.

    Args:
        population: the world's population (its weights give the target values).
        params: the ``world`` section of params.yaml (missing keys take the defaults).
        survey_rng: the sample, misreporting and enhancement streams are spawned from it.
        cal_rng: the calibration's generator (dropout).
        progress: show the calibration's progress bar.

    Raises:
        ParameterError: an unknown or invalid world param (named).
    """
    p = _params(params)
    stacked = draw_survey(population, p, survey_rng)
    initial = stacked.weights
    # Targets: population totals with each population household at its uniform weight.
    spec = world_target_spec()
    pop_matrix = build_target_matrix(population, spec)
    spec["value"] = pop_matrix.estimates(population.weights)
    survey_matrix = build_target_matrix(stacked, spec)
    support = np.asarray((survey_matrix.matrix != 0).sum(axis=0)).ravel()
    # A target with a zero population total, or that no surveyed record can reach, would only
    # add a constant to the loss: leave it out.
    keep = (spec["value"].to_numpy() > 0) & (support > 0)
    targets = spec.loc[keep].reset_index(drop=True)
    A = survey_matrix.matrix[:, np.flatnonzero(keep)]
    t = targets["value"].to_numpy()
    weights, history = adam_calibrate(A, t, initial, steps=p["calibration_steps"],
                                      learning_rate=p["learning_rate"], dropout_rate=p["dropout_rate"],
                                      rng=cal_rng, progress=progress)
    return WorldSurvey(survey=stacked.with_weights(weights), initial_weights=initial, targets=targets,
                       kept=keep, matrix=A, loss_history=history, n_sample=p["sample_households"])


# ---- the world ----------------------------------------------------------------------------------
def world_population(params: Mapping | None = None) -> Survey:
    """The population :func:`generate_world` makes from ``params`` with its default generator
    (``default_rng(seed).spawn(3)[0]``, the population's stream), without drawing the survey: the
    study's other world seeds (``stages/study_run.py --world-seed``)."""
    p = _params(params)
    pop_rng = np.random.default_rng(p["seed"]).spawn(3)[0]
    return add_reported_benefits(generate_population(p, pop_rng))


def generate_world(params: Mapping | None = None, rng: np.random.Generator | None = None,
                   progress: bool = False) -> World:
    """Generate the synthetic world: population, calibrated survey, targets and metrics.

    Args:
        params: the ``world`` section of params.yaml (see :data:`DEFAULT_PARAMS`; missing keys
            take the defaults, unknown keys are an error).
        rng: the random generator; by default ``numpy.random.default_rng(params["seed"])``
            (``seed`` is then ignored). Population, sample, misreporting, enhancement and
            calibration use independent child streams, so e.g. changing the sample size leaves
            the population unchanged.
        progress: show progress bars.

    Returns:
        A :class:`World`. ``survey`` holds the sample (population ids, household order) then the
        enhancement block; its ``household_weight`` is the calibrated weight.

    Raises:
        ParameterError: an unknown or invalid param (named).
    """
    p = _params(params)
    rng = np.random.default_rng(p["seed"]) if rng is None else rng
    pop_rng, survey_rng, cal_rng = rng.spawn(3)
    bar = tqdm(total=3, desc="world", disable=not progress, leave=False)

    population = add_reported_benefits(generate_population(p, pop_rng))
    bar.update()
    drawn = draw_world_survey(population, p, survey_rng, cal_rng, progress=progress)
    survey, targets, initial, history = drawn.survey, drawn.targets, drawn.initial_weights, drawn.loss_history
    weights, A, t, keep = survey.weights, drawn.matrix, targets["value"].to_numpy(), drawn.kept
    n_s = drawn.n_sample
    n_pop = population.n_households
    design = float(initial[0])
    bar.update()
    # How much of each benefit's spend the sample reports, at design weights (the FRS's
    # "capture" of administrative totals).
    capture = {}
    person_weight = population.weights[population.person_household_index()]
    in_sample = survey.person_household_index() < n_s
    for benefit, col in _REPORTED_BENEFITS.items():
        pop_total = float(population.person[col].to_numpy() @ person_weight)
        reported = float(survey.person.loc[in_sample, col].sum()) * design
        capture[f"reported_capture_{benefit}"] = reported / pop_total if pop_total > 0 else 0.0
    rel = np.abs(A.T @ weights - t) / t
    rel_design = np.abs(A.T @ initial - t) / t
    metrics = {
        "n_population_households": n_pop,
        "n_population_persons": population.n_persons,
        "population_weight": float(population.weights[0]),
        "n_sample_households": n_s,
        "n_enhancement_households": survey.n_households - n_s,
        "n_records": survey.n_households,
        "n_targets": int(len(targets)),
        "n_targets_dropped": int((~keep).sum()),
        "design_weight": float(design),
        "calibration_steps": p["calibration_steps"],
        "loss_initial": float(history[0]),
        "loss_final": float(history[-1]),
        "target_max_rel_error": float(rel.max()),
        "target_median_rel_error": float(np.median(rel)),
        "target_mean_rel_error": float(rel.mean()),
        "design_max_rel_error": float(rel_design.max()),
        "design_median_rel_error": float(np.median(rel_design)),
        "enhancement_weight_share": float(weights[n_s:].sum() / weights.sum()),
        "kish_ess_sample_share": weight_metrics(weights[:n_s])["kish_ess_share"],
        **capture,
        **weight_metrics(weights),
    }
    bar.update()
    bar.close()
    return World(population=population, survey=survey, targets=targets, metrics=metrics)
