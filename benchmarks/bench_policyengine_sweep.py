"""The PolicyEngine UK reform sweep on the embedded world: in process and on 1 and 2 Dask workers.

Needs the extra (``pip install "weightreg[policyengine]"``). Run by hand:

    OMP_NUM_THREADS=1 python benchmarks/bench_policyengine_sweep.py [data/survey.h5] [reforms]

Four ways of computing the same surface (the 10 default metrics, baseline plus ``reforms`` random
reforms over ``policyengine.reform_paths``' defaults), each timed from the survey in memory to the
finished surface:

* ``fresh_per_reform``: the named baseline, one ``Microsimulation`` per reform (how the backend ran
  before reforms were applied in place);
* ``in_process``: one simulation, baseline then each reform in place (the default);
* ``dask_1_worker`` / ``dask_2_workers``: the reforms as batches on a local cluster of worker
  processes (its start-up included), the baseline in this process.

Every way must give bit-identical baselines and deltas. Figures go to
``benchmarks/results/policyengine_sweep.json``.
"""

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path


import weightreg.policyengine_backend as peb
from weightreg.diagnose import DEFAULT_METRICS
from weightreg.policyengine_format import read_survey
from weightreg.sweep import SweepSettings

OUT = Path(__file__).parent / "results" / "policyengine_sweep.json"


def fresh_per_reform(survey, reforms):
    """The surface's reform deltas with one fresh Microsimulation per reform (the named baseline)."""
    from policyengine_uk import CountryTaxBenefitSystem

    root = CountryTaxBenefitSystem().parameters
    variables = tuple(m for m in DEFAULT_METRICS if m in CountryTaxBenefitSystem().variables)
    shared = (survey.person, survey.benunit, survey.household, str(survey.time_period), variables)
    base = peb.calculate_metrics(shared, None)
    return [{k: v - base[k] for k, v in peb.calculate_metrics(shared, peb.to_policyengine_reform(r, "2025", root)).items()}
            for r in reforms]


if __name__ == "__main__":  # Dask's local cluster spawns processes that re-import this file
    path = sys.argv[1] if len(sys.argv) > 1 else "data/survey.h5"
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    survey = read_survey(path)
    reforms = peb.reforms_from_params({"reforms": {"count": k, "seed": 7}})
    out = {
        "what": f"PolicyEngine UK reform sweep on {path}: baseline plus {k} reforms, 10 default metrics; seconds from "
                "the survey in memory to the surface, Dask runs include the local cluster's start-up",
        "machine": f"{os.cpu_count()} cores, {platform.python_version()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "policyengine_uk": __import__("importlib.metadata").metadata.version("policyengine-uk"),
        "households": survey.n_households,
        "reforms": k,
    }
    reference = None
    for label, sweep in (("in_process", None), ("dask_1_worker", SweepSettings(enabled=True, workers=1)),
                         ("dask_2_workers", SweepSettings(workers=2))):
        start = time.perf_counter()
        data = peb.simulate_surface_policyengine(survey, reforms=reforms, sweep=sweep)
        out[f"{label}_s"] = round(time.perf_counter() - start, 1)
        reference = data if reference is None else reference
        out[f"{label}_identical"] = (data.deltas.tobytes() == reference.deltas.tobytes()
                                     and data.baseline.tobytes() == reference.baseline.tobytes())
        print(label, out[f"{label}_s"], flush=True)
    out["in_process_peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    start = time.perf_counter()
    fresh = fresh_per_reform(survey, reforms)
    out["fresh_per_reform_s"] = round(time.perf_counter() - start, 1)
    out["fresh_per_reform_identical"] = all(
        fresh[j][name].tobytes() == reference.deltas[j, reference.metrics.index(name)].tobytes()
        for j in range(k) for name in fresh[j] if name in reference.metrics
    )
    for label in ("in_process", "dask_1_worker", "dask_2_workers"):
        out[f"speedup_{label}_vs_fresh_per_reform"] = round(out["fresh_per_reform_s"] / out[f"{label}_s"], 2)
    out["speedup_2_workers_vs_1"] = round(out["dask_1_worker_s"] / out["dask_2_workers_s"], 2)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
