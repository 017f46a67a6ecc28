"""Benchmark: ``diagnose`` with 32 random reforms on 20,000- and 53,508-household surveys.

Builds each survey by resampling households (with replacement, fresh ids) from
``weightreg.world.generate_world`` when that module exists, else from a quick random survey built
here. For each size it times the two halves of ``diagnose`` separately — ``simulate_surface``
(baseline + one simulation per reform) and ``evaluate_surface`` (influence scan + ESS), then the
scan with the weight-/value-driven split as stage ``diagnose`` runs it (a second pass at equal
weights; ``split_vs_one_pass`` is its time over the one-pass scan of the same run) — and then
measures peak Python-heap memory of each half with ``tracemalloc`` in a second, untimed run (numpy
reports its buffers to tracemalloc; tracing slows allocation, so timings come from the first
run). The process's peak resident size (``ru_maxrss``) is reported too. Goal: under 10 s and
under 2 GB for 53,508 households with 32 reforms on one core. Writes
``benchmarks/results/diagnose.json``.

Run single-threaded, from the repository root:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src \
        python benchmarks/bench_diagnose.py
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from weightreg.diagnose import DEFAULT_METRICS, evaluate_surface, simulate_surface
from weightreg.parameters import load_parameters, random_reforms
from weightreg.survey import REGIONS, TENURE_TYPES, Survey

RESULTS = Path(__file__).resolve().parent / "results" / "diagnose.json"
GOAL_SECONDS = 10.0
GOAL_BYTES = 2 * 1024**3


def random_survey(n_households: int, rng: np.random.Generator) -> Survey:
    """A quick random survey (1-2 benefit units and 1-5 persons per household), no Python loops."""
    n_h = n_households
    bu_per_h = 1 + (rng.random(n_h) < 0.15)
    n_b = int(bu_per_h.sum())
    bu_h = np.repeat(np.arange(n_h), bu_per_h)
    first_bu = np.r_[True, bu_h[1:] != bu_h[:-1]]
    pension = (rng.random(n_b) < 0.25) & first_bu
    n_adults = 1 + (rng.random(n_b) < 0.5)
    n_children = np.where(pension | ~first_bu, 0, rng.choice([0, 0, 1, 2, 3], size=n_b))
    size = n_adults + n_children
    n_p = int(size.sum())
    p_b = np.repeat(np.arange(n_b), size)
    rank = np.arange(n_p) - np.repeat(np.cumsum(size) - size, size)
    adult = rank < n_adults[p_b]
    p_pension = pension[p_b]
    age = np.where(adult, np.where(p_pension, rng.integers(66, 91, n_p), rng.integers(18, 66, n_p)),
                   rng.integers(0, 16, n_p))
    works = adult & ~p_pension & (rng.random(n_p) < 0.75)
    self_emp = works & (rng.random(n_p) < 0.12)
    person = pd.DataFrame(
        {
            "person_id": np.arange(1, n_p + 1),
            "person_benunit_id": p_b + 1,
            "person_household_id": bu_h[p_b] + 1,
            "age": age.astype(float),
            "is_household_head": adult & (rank == 0) & first_bu[p_b],
            "employment_income": np.where(works & ~self_emp, rng.lognormal(10.2, 0.7, n_p), 0.0),
            "self_employment_income": np.where(self_emp, rng.normal(20_000, 15_000, n_p), 0.0),
            "private_pension_income": np.where(adult & p_pension, rng.lognormal(8.5, 1.0, n_p), 0.0),
            "savings_interest_income": np.where(adult & (rng.random(n_p) < 0.4), rng.lognormal(5, 1.5, n_p), 0.0),
            "dividend_income": np.where(adult & (rng.random(n_p) < 0.1), rng.lognormal(7, 2, n_p), 0.0),
            "state_pension_reported": np.where(p_pension, rng.uniform(8_000, 12_500, n_p), 0.0),
            "is_disabled_for_benefits": adult & (rng.random(n_p) < 0.08),
        }
    )
    benunit = pd.DataFrame(
        {
            "benunit_id": np.arange(1, n_b + 1),
            "is_married": n_adults == 2,
            "would_claim_uc": rng.random(n_b) < 0.85,
            "would_claim_pc": rng.random(n_b) < 0.65,
        }
    )
    tenure = rng.choice(np.array(TENURE_TYPES), size=n_h)
    renting = np.isin(tenure, ["RENT_FROM_COUNCIL", "RENT_FROM_HA", "RENT_PRIVATELY"])
    household = pd.DataFrame(
        {
            "household_id": np.arange(1, n_h + 1),
            "household_weight": rng.lognormal(7.0, 0.6, n_h),
            "region": rng.choice(np.array(REGIONS), size=n_h),
            "tenure_type": tenure,
            "rent": np.where(renting, rng.uniform(4_000, 24_000, n_h), 0.0),
            "council_tax": rng.uniform(1_200, 3_500, n_h),
        }
    )
    return Survey(person, benunit, household)


def resample_households(survey: Survey, n: int, rng: np.random.Generator) -> Survey:
    """``n`` households drawn with replacement from ``survey`` with their persons and benefit
    units, fresh ids, and weights scaled so the weighted total of households is unchanged."""
    pick = rng.integers(0, survey.n_households, n)
    ph = survey.person_household_index()
    pb = survey.person_benunit_index()
    by_hh = np.argsort(ph, kind="stable")
    counts = np.bincount(ph, minlength=survey.n_households)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    sizes = counts[pick]
    new_h = np.repeat(np.arange(n), sizes)  # new household of each new person
    offset = np.arange(len(new_h)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    old_p = by_hh[np.repeat(starts[pick], sizes) + offset]
    person = survey.person.iloc[old_p].reset_index(drop=True)
    # A benefit unit copied into two new households becomes two units.
    bu_key, bu_first = np.unique(new_h.astype(np.int64) * len(survey.benunit) + pb[old_p], return_index=True)
    new_bu = np.searchsorted(bu_key, new_h.astype(np.int64) * len(survey.benunit) + pb[old_p])
    benunit = survey.benunit.iloc[pb[old_p][bu_first]].reset_index(drop=True)
    household = survey.household.iloc[pick].reset_index(drop=True)
    person["person_id"] = np.arange(1, len(person) + 1)
    person["person_household_id"] = new_h + 1
    person["person_benunit_id"] = new_bu + 1
    benunit["benunit_id"] = np.arange(1, len(benunit) + 1)
    household["household_id"] = np.arange(1, n + 1)
    household["household_weight"] = household["household_weight"].to_numpy() * survey.n_households / n
    return Survey(person, benunit, household, survey.time_period)


def source_survey(seed: int) -> tuple[Survey, str]:
    """The population to resample from: the project's world when it exists, else a random one."""
    rng = np.random.default_rng(seed)
    try:
        from weightreg.world import generate_world
    except ImportError:
        return random_survey(60_000, rng), "random_survey (weightreg.world not available)"
    # The world generator's signature is not fixed yet: pass what it accepts.
    accepted = inspect.signature(generate_world).parameters
    kwargs = {k: v for k, v in (("rng", rng), ("seed", seed)) if k in accepted}
    try:
        world = generate_world(**kwargs)
        world = getattr(world, "survey", world)
        if not isinstance(world, Survey):
            raise TypeError(f"generate_world returned {type(world).__name__}")
    except Exception as exc:  # fall back rather than fail the benchmark on an unfinished module
        print(f"generate_world failed ({type(exc).__name__}: {exc}); using a random survey", file=sys.stderr)
        return random_survey(60_000, rng), f"random_survey (generate_world failed: {type(exc).__name__})"
    return world, "weightreg.world.generate_world().survey"


def run_one(survey: Survey, reforms: list[dict], params, threshold: float) -> dict:
    t0 = time.perf_counter()
    data = simulate_surface(survey, DEFAULT_METRICS, reforms, params)
    t1 = time.perf_counter()
    diag = evaluate_surface(data, threshold=threshold)
    t2 = time.perf_counter()
    split = evaluate_surface(data, threshold=threshold, equal_weights=True)  # what stage diagnose runs
    t3 = time.perf_counter()
    del data, diag

    tracemalloc.start()
    data = simulate_surface(survey, DEFAULT_METRICS, reforms, params)
    _, peak_sim = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()  # the surface arrays, held while evaluating
    diag = evaluate_surface(data, threshold=threshold)
    _, peak_eval = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "n_households": survey.n_households,
        "n_persons": survey.n_persons,
        "n_metrics": len(data.metrics),
        "dropped_metrics": sorted(data.dropped_metrics),
        "n_statistics": diag.n_statistics,
        "seconds_simulate": round(t1 - t0, 3),
        "seconds_influence": round(t2 - t1, 3),
        "seconds_total": round(t2 - t0, 3),
        # The weight-/value-driven split (a second pass at equal weights), against one pass.
        "seconds_influence_with_split": round(t3 - t2, 3),
        "split_vs_one_pass": round((t3 - t2) / (t2 - t1), 2),
        "records_above_threshold_value_driven": split.n_above_value_driven,
        "peak_mib_simulate": round(peak_sim / 2**20, 1),
        "peak_mib_influence": round(peak_eval / 2**20, 1),
        "mib_surface_arrays": round(base / 2**20, 1),
        "records_above_threshold": diag.n_above,
        "max_influence": round(diag.max_influence, 6),
        "ess_share": round(diag.kish.kish_share, 6),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 53_508])
    parser.add_argument("--reforms", type=int, default=32)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    source, source_name = source_survey(args.seed)
    params = load_parameters()
    reforms = random_reforms(args.reforms, np.random.default_rng(args.seed + 1))
    runs = []
    for n in args.sizes:
        survey = resample_households(source, n, np.random.default_rng(args.seed + 2)).validate()
        run = run_one(survey, reforms, params, args.threshold)
        run["meets_goal"] = bool(run["seconds_total"] < GOAL_SECONDS and
                                 max(run["peak_mib_simulate"], run["peak_mib_influence"]) * 2**20 < GOAL_BYTES)
        runs.append(run)
        print(
            f"diagnose: {n:,} households, {args.reforms} reforms: simulate {run['seconds_simulate']:.2f}s "
            f"(peak {run['peak_mib_simulate']:.0f} MiB), influence {run['seconds_influence']:.2f}s "
            f"(peak {run['peak_mib_influence']:.0f} MiB), total {run['seconds_total']:.2f}s"
        )
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = {
        "benchmark": "diagnose",
        "source": source_name,
        "n_reforms": args.reforms,
        "threshold": args.threshold,
        "goal": {"seconds": GOAL_SECONDS, "bytes": GOAL_BYTES, "households": 53_508, "reforms": 32},
        "runs": runs,
        "process_max_rss_mib": round(maxrss_kib / 1024, 1),
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "machine": platform.machine(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"process max RSS {result['process_max_rss_mib']:.0f} MiB; wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
