"""Benchmark: simulator throughput on a synthetic survey of about 500k persons.

Builds its own random survey (vectorised; independent of the project's world generator), times
``simulate`` for the baseline and for one reform (best of ``--repeats``), and writes
``benchmarks/results/simulate.json``. Throughput counts persons simulated per second over the
baseline and the reform together (``2 * n_persons / (t_baseline + t_reform)``), each a full
``simulate(survey, ...)`` call; it also reports the rate per reform when the survey's inputs are
prepared once with ``prepare_inputs``.

Run single-threaded, from the repository root:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src \
        python benchmarks/bench_simulate.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from weightreg.parameters import load_parameters
from weightreg.simulate import prepare_inputs, simulate
from weightreg.survey import REGIONS, TENURE_TYPES, Survey

RESULTS = Path(__file__).resolve().parent / "results" / "simulate.json"
REFORM = {
    "income_tax.rates.basic": {"multiply": 1.05},
    "universal_credit.taper": 0.5,
    "child_benefit.eldest_weekly": {"multiply": 1.1},
}


def synthetic_survey(n_persons: int, seed: int = 0) -> Survey:
    """A random survey of roughly ``n_persons`` persons, built without Python loops."""
    rng = np.random.default_rng(seed)
    n_h = max(1, round(n_persons / 2.626))  # about 2.63 persons per household below
    bu_per_h = 1 + (rng.random(n_h) < 0.15)
    n_b = int(bu_per_h.sum())
    bu_h = np.repeat(np.arange(n_h), bu_per_h)
    first_bu = np.ones(n_b, dtype=bool)
    first_bu[1:] = bu_h[1:] != bu_h[:-1]
    pension = (rng.random(n_b) < 0.25) & first_bu
    n_adults = 1 + (rng.random(n_b) < 0.5)
    n_children = np.where(pension | ~first_bu, 0, rng.choice([0, 0, 1, 2, 3], size=n_b))
    size = n_adults + n_children
    n_p = int(size.sum())

    p_b = np.repeat(np.arange(n_b), size)
    rank = np.arange(n_p) - np.repeat(np.cumsum(size) - size, size)  # position within the unit
    is_adult = rank < n_adults[p_b]
    p_pension = pension[p_b]
    age = np.where(
        is_adult,
        np.where(p_pension, rng.integers(66, 91, n_p), rng.integers(18, 66, n_p)),
        rng.integers(0, 16, n_p),
    )
    works = is_adult & ~p_pension & (rng.random(n_p) < 0.75)
    self_emp = works & (rng.random(n_p) < 0.12)
    emp = np.where(works & ~self_emp, rng.lognormal(10.2, 0.7, n_p), 0.0)
    se = np.where(self_emp, rng.normal(20_000, 15_000, n_p), 0.0)
    pp = np.where(is_adult & (p_pension | (rng.random(n_p) < 0.05)), rng.lognormal(8.5, 1.0, n_p), 0.0)
    savings = np.where(is_adult & (rng.random(n_p) < 0.4), rng.lognormal(5.0, 1.5, n_p), 0.0)
    dividends = np.where(is_adult & (rng.random(n_p) < 0.1), rng.lognormal(7.0, 2.0, n_p), 0.0)
    prop = np.where(is_adult & (rng.random(n_p) < 0.03), rng.lognormal(8.5, 1.0, n_p), 0.0)
    sp = np.where(p_pension, rng.uniform(8_000, 12_500, n_p), 0.0)

    person = pd.DataFrame(
        {
            "person_id": np.arange(1, n_p + 1),
            "person_benunit_id": p_b + 1,
            "person_household_id": bu_h[p_b] + 1,
            "age": age.astype(float),
            "gender": np.where(rng.random(n_p) < 0.5, "MALE", "FEMALE"),
            "is_household_head": is_adult & (rank == 0) & first_bu[p_b],
            "employment_income": emp,
            "self_employment_income": se,
            "private_pension_income": pp,
            "savings_interest_income": savings,
            "dividend_income": dividends,
            "property_income": prop,
            "state_pension_reported": sp,
            "is_disabled_for_benefits": is_adult & (rng.random(n_p) < 0.08),
        }
    )
    benunit = pd.DataFrame(
        {
            "benunit_id": np.arange(1, n_b + 1),
            "is_married": n_adults == 2,
            "would_claim_uc": rng.random(n_b) < 0.85,
            "would_claim_pc": rng.random(n_b) < 0.65,
            "would_claim_child_benefit": rng.random(n_b) < 0.95,
        }
    )
    tenure = rng.choice(np.array(TENURE_TYPES), size=n_h)
    renting = np.isin(tenure, ["RENT_FROM_COUNCIL", "RENT_FROM_HA", "RENT_PRIVATELY"])
    household = pd.DataFrame(
        {
            "household_id": np.arange(1, n_h + 1),
            "household_weight": rng.uniform(500, 3_000, n_h),
            "region": rng.choice(np.array(REGIONS), size=n_h),
            "tenure_type": tenure,
            "rent": np.where(renting, rng.uniform(4_000, 24_000, n_h), 0.0),
            "council_tax": rng.uniform(1_200, 3_500, n_h),
        }
    )
    return Survey(person, benunit, household)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    t0 = time.perf_counter()
    survey = synthetic_survey(args.persons, args.seed)
    t_build = time.perf_counter() - t0
    params = load_parameters()
    simulate(survey, params)  # warm-up (imports, caches)

    t_base = best_time(lambda: simulate(survey, params), args.repeats)
    t_reform = best_time(lambda: simulate(survey, params, REFORM), args.repeats)
    n_p = survey.n_persons
    rate = 2 * n_p / (t_base + t_reform)
    # The same with the survey's inputs and index maps prepared once (prepare_inputs), as a
    # caller simulating many reforms would: time per extra reform.
    t_prepare = best_time(lambda: prepare_inputs(survey), args.repeats)
    inputs = prepare_inputs(survey)
    t_prepared_reform = best_time(lambda: simulate(inputs, params, REFORM), args.repeats)
    result = {
        "benchmark": "simulate",
        "n_persons": n_p,
        "n_benunits": len(survey.benunit),
        "n_households": survey.n_households,
        "repeats": args.repeats,
        "seconds_build_survey": round(t_build, 4),
        "seconds_baseline": round(t_base, 4),
        "seconds_reform": round(t_reform, 4),
        "persons_per_second": round(rate),
        "seconds_prepare_inputs": round(t_prepare, 4),
        "seconds_reform_prepared": round(t_prepared_reform, 4),
        "persons_per_second_prepared_reform": round(n_p / t_prepared_reform),
        "reform": REFORM,
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "machine": platform.machine(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"simulate: {n_p:,} persons, baseline {t_base:.3f}s, reform {t_reform:.3f}s "
        f"-> {rate:,.0f} persons/s (baseline + reform); with prepare_inputs once "
        f"({t_prepare:.3f}s), {n_p / t_prepared_reform:,.0f} persons/s per further reform; "
        f"wrote {args.output}"
    )
    return result


if __name__ == "__main__":
    main()
