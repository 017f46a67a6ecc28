"""Benchmark: the cost of counting source households in ``evaluate_surface``.

A survey of 40,000 households plus 36,000 "offspring" rows (the default world's loop output has
about that many) is scored on the same surface (32 reforms) three ways, in one run:

* ``rows only``: ``source_id=None`` (every row its own source: the one row pass serves both);
* ``with sources``: offspring rows grouped under 4,000 sources (one extra ``bincount`` over
  (source, cell) pairs per batch);
* each with and without the equal-weights split (stage ``diagnose`` runs it; the loop does not).

Reports seconds (best of ``--repeat``) and the ratio of each to ``rows only`` on the same pass.
The surface arrays are random (the cost depends on their shape, not their values). Writes
``benchmarks/results/sources.json``.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/bench_sources.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from weightreg.diagnose import Slice, SurfaceData, evaluate_surface

RESULTS = Path(__file__).resolve().parent / "results" / "sources.json"


def surface(n_original: int, n_offspring: int, n_sources_split: int, n_reforms: int, metrics: int,
            rng: np.random.Generator) -> tuple[SurfaceData, np.ndarray]:
    n = n_original + n_offspring
    ids = np.arange(1, n + 1)
    # Offspring descend from the first n_sources_split originals.
    source = np.r_[ids[:n_original], rng.integers(1, n_sources_split + 1, n_offspring)]
    w = rng.lognormal(5, 1.5, n)
    baseline = rng.lognormal(8, 1, (metrics, n)) * (rng.random((metrics, n)) < 0.6)
    deltas = rng.normal(0, 100, (n_reforms, metrics, n)) * (rng.random((n_reforms, metrics, n)) < 0.3)
    slices = (
        Slice("region", rng.integers(0, 12, n), tuple(f"r{k}" for k in range(12))),
        Slice("age_band", rng.integers(0, 7, n), tuple(f"a{k}" for k in range(7))),
        Slice("tenure_type", rng.integers(0, 5, n), tuple(f"t{k}" for k in range(5))),
        Slice("income_decile", rng.integers(0, 10, n), tuple(str(k + 1) for k in range(10))),
    )
    data = SurfaceData(ids, w, tuple(f"m{k}" for k in range(metrics)), baseline, deltas, tuple({} for _ in range(n_reforms)),
                       slices)
    return data, source


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    data, source = surface(40_000, 36_000, 4_000, 32, 10, rng)
    with_src = SurfaceData(**{**data.__dict__, "source_id": source})
    results = {"n_rows": int(data.n_records), "n_sources": int(len(np.unique(source))), "n_reforms": 32,
               "metrics": 10, "repeat": args.repeat, "python": platform.python_version(), "seconds": {}}
    for split in (False, True):
        label = "equal_weights" if split else "one_pass"
        rows = best_of(args.repeat, lambda: evaluate_surface(data, equal_weights=split))
        srcs = best_of(args.repeat, lambda: evaluate_surface(with_src, equal_weights=split))
        results["seconds"][label] = {"rows_only": rows, "with_sources": srcs, "ratio": srcs / rows}
        print(f"{label}: rows only {rows:.2f} s, with sources {srcs:.2f} s ({srcs / rows:.2f}x)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
