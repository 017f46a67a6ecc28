"""What the portable (AVX2-pinned) kernels cost against each CPU's native ones, measured in one run.

weightreg pins OpenBLAS, numpy, torch, MKL and oneDNN to their AVX2 paths on x86-64 (so results are the same
bytes on every such machine); WEIGHTREG_NATIVE_KERNELS=1 keeps the native (e.g. AVX-512) kernels. Each task
runs in a fresh interpreter (the pin must happen before numpy loads), alternating native and portable,
`--repeats` times; the figure is the median wall time of each and their ratio.

Tasks (the default world's data/survey.h5 and data/targets.csv): the world's draw and Adam calibration
(`world.draw_world_survey`, numpy/BLAS), the capped soft calibration of the survey (`calibrate`, scipy
sparse + LAPACK), and 3 TVAE epochs on the survey (torch).

    python benchmarks/bench_portable.py [--repeats 3]   # writes benchmarks/results/portable.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TASKS = {
    "world_draw_and_adam": """
import numpy as np, weightreg
from weightreg.policyengine_format import read_survey
from weightreg.world import draw_world_survey
pop = read_survey('data/population.h5')
import time; t = time.perf_counter()
s, c = np.random.default_rng(5).spawn(2)
draw_world_survey(pop, None, s, c)
print(time.perf_counter() - t)
""",
    "calibrate_capped_soft": """
import weightreg, time
from weightreg.policyengine_format import read_survey
from weightreg.targets import read_targets, build_target_matrix
from weightreg.calibrate import calibrate
s = read_survey('data/survey.h5'); tm = build_target_matrix(s, read_targets('data/targets.csv', s))
t = time.perf_counter()
calibrate(tm.matrix, tm.values, s.weights, cap=20000, penalty=0.01, max_iter=500)
print(time.perf_counter() - t)
""",
    "tvae_3_epochs": """
import weightreg, time
from weightreg.policyengine_format import read_survey
from weightreg.features import FeatureSpec, extract
from weightreg.generator import train_generator
s = read_survey('data/survey.h5'); spec = FeatureSpec(); ex = extract(s, spec); table = ex.features
t = time.perf_counter()
train_generator(table, spec, kind='tvae', hyperparameters={'epochs': 3, 'batch_size': 500}, weights=s.weights[ex.eligible], seed=1)
print(time.perf_counter() - t)
""",
}


def run(code: str, native: bool) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for var in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"):
        env.pop(var, None)
    env["WEIGHTREG_NATIVE_KERNELS"] = "1" if native else "0"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/portable.json"))
    args = parser.parse_args()
    results = {}
    for name, code in TASKS.items():
        times = {"native": [], "portable": []}
        for _ in range(args.repeats):
            for mode in ("native", "portable"):
                times[mode].append(run(code, mode == "native"))
        med = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
        results[name] = {"native_s": med["native"], "portable_s": med["portable"],
                         "portable_over_native": med["portable"] / med["native"], "runs": times}
        print(f"{name}: native {med['native']:.2f} s, portable {med['portable']:.2f} s, "
              f"ratio {med['portable'] / med['native']:.3f}")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    out = {"machine": platform.machine(), "cpu": cpu, "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
           "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
