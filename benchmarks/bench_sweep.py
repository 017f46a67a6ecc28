"""The builtin reform sweep in process and on a local Dask cluster of 1 and 2 worker processes.

python benchmarks/bench_sweep.py [data/survey.h5] [reforms]; prints JSON (seconds include starting
the local cluster) and checks that every run gives bit-identical deltas.
"""

import json
import sys
import time

import numpy as np

from weightreg.diagnose import simulate_surface
from weightreg.parameters import random_reforms
from weightreg.policyengine_format import read_survey
from weightreg.sweep import SweepSettings

if __name__ == "__main__":  # Dask's local cluster spawns processes that re-import this file
    path = sys.argv[1] if len(sys.argv) > 1 else "data/survey.h5"
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    survey = read_survey(path)
    reforms = random_reforms(k, np.random.default_rng(7))
    out = {"households": survey.n_households, "reforms": k}
    reference = None
    for label, sweep in (("in_process", None), ("dask_1_worker", SweepSettings(enabled=True, workers=1)),
                         ("dask_2_workers", SweepSettings(workers=2))):
        start = time.perf_counter()
        data = simulate_surface(survey, reforms=reforms, sweep=sweep)
        out[f"{label}_s"] = round(time.perf_counter() - start, 2)
        reference = data.deltas if reference is None else reference
        out[f"{label}_identical"] = data.deltas.tobytes() == reference.tobytes()
    print(json.dumps(out, indent=1))
