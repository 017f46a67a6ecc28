"""Benchmark the household generator: fit cost, sampling quality per kind, offspring time.

Data: flat feature rows of the embedded world's population (``weightreg.world``), ``--rows``
households drawn uniformly (default 20,000; 70 columns with the default spec).

Measured, written to ``benchmarks/results/generator.json``:

* fit time per kind at two epoch counts -> seconds per epoch and the fixed cost (the intercept:
  SDV preprocessing + ctgan's data transformer), with ``fast_preprocessing`` on; and the fixed
  cost of the libraries' own preprocessing (``fast_preprocessing=False``, TVAE, 1 epoch);
* for each model (TVAE with ``decoding="sample"`` and ``"argmax"`` at each quality epoch count,
  the same TVAE fitted without slot imputation (``tvae_raw_space``), CTGAN, Gaussian copula): :func:`weightreg.generator.quality_report` of ``--sample`` valid rows
  against the training rows: TV distance per categorical/boolean column, the number of levels
  used per household categorical, column-shape and pair-trend scores, and the share of valid
  rows the model produces;
* :func:`sample_offspring` time for 100 parents x 20 offspring (default pool), with its stats.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_generator.py`` (``--quick`` for a
reduced run: 5,000 rows, fewer epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from weightreg import features as F
from weightreg import generator as G
from weightreg.atomic import write_json
from weightreg.world import add_reported_benefits, generate_population

HOUSEHOLD_CATEGORICALS = ("region", "tenure_type", "council_tax_band", "layout")


def world_features(rows: int, seed: int):
    """``rows`` feature rows of a world population (about 1.1 x rows households generated)."""
    rng = np.random.default_rng(seed)
    n = int(rows * 1.1) + 100
    params = {"population_households": n, "sample_households": min(n, 20_000), "enhancement_households": 0}
    population = add_reported_benefits(generate_population(params, rng))
    extraction = F.extract(population)
    feats = extraction.features
    pick = np.sort(rng.choice(len(feats), size=min(rows, len(feats)), replace=False))
    return feats.iloc[pick], extraction.spec


def fit(features, spec, kind, epochs, seed, **kwargs):
    hp = {} if kind == "gaussian_copula" else {"epochs": epochs}
    t = time.perf_counter()
    gen = G.train_generator(features, spec, kind=kind, hyperparameters=hp, training_rows="unweighted", seed=seed,
                            **kwargs)
    wall = time.perf_counter() - t
    return gen, wall


def quality(gen, features, n_sample, seed):
    t = time.perf_counter()
    rows = gen.sample(n_sample, np.random.default_rng(seed))
    sample_seconds = time.perf_counter() - t
    rep = G.quality_report(gen, features, rows)
    levels = {c: {"training": int(features[c].nunique()), "sampled": int(rows[c].nunique()),
                  "sampled_modal_share": float(rows[c].value_counts(normalize=True).iloc[0]),
                  "training_modal_share": float(features[c].value_counts(normalize=True).iloc[0])}
              for c in HOUSEHOLD_CATEGORICALS}
    return {
        "valid_share": gen.valid_share,
        "sample_seconds": sample_seconds,
        "overall": rep["overall"],
        "column_shapes": rep["column_shapes"],
        "column_pair_trends": rep["column_pair_trends"],
        "max_tv_distance": rep["max_tv_distance"],
        "mean_tv_distance": rep["mean_tv_distance"],
        "tv_distance": {k: round(v, 4) for k, v in rep["tv_distance"].items()},
        "household_levels": levels,
        "numeric_ks_mean": float(np.mean([1 - v for c, v in rep["column_shape"].items()
                                          if c not in rep["tv_distance"]])),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--sample", type=int, default=5_000)
    ap.add_argument("--tvae-epochs", type=int, nargs="+", default=[1, 10, 40])
    ap.add_argument("--ctgan-epochs", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--no-library-preprocessing", action="store_true", help="skip the slow fast_preprocessing=False fit")
    ap.add_argument("--quick", action="store_true", help="5,000 rows, TVAE 1/5 epochs, CTGAN 1/3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generator.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.sample, args.tvae_epochs, args.ctgan_epochs = 5_000, 2_000, [1, 5], [1, 3]

    t0 = time.perf_counter()
    features, spec = world_features(args.rows, args.seed)
    data_seconds = time.perf_counter() - t0
    print(f"data: {len(features)} rows x {features.shape[1]} columns ({data_seconds:.1f} s)", flush=True)
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "threads": os.environ.get("OMP_NUM_THREADS")},
        "data": {"source": "weightreg.world population features", "rows": len(features),
                 "columns": features.shape[1], "seconds": data_seconds},
        "fit": {},
        "quality": {},
    }

    # Warm-up: the first fit in a process pays for importing SDV and torch; keep that out of timings.
    fit(features.iloc[:300], spec, "tvae", 1, args.seed)

    models = {}
    for kind, epochs in (("tvae", args.tvae_epochs), ("ctgan", args.ctgan_epochs), ("gaussian_copula", [None])):
        runs = []
        for e in epochs:
            gen, wall = fit(features, spec, kind, e, args.seed)
            runs.append({"epochs": e, "wall_seconds": wall, "preprocess_seconds": gen.info.preprocess_seconds,
                         "fit_seconds": gen.info.fit_seconds, "final_loss": gen.info.final_loss})
            print(f"{kind} epochs={e}: {wall:.1f} s, final loss {gen.info.final_loss}", flush=True)
            models[(kind, e)] = gen
        entry = {"runs": runs}
        if len(runs) >= 2:
            a, b = runs[0], runs[-1]
            per_epoch = (b["wall_seconds"] - a["wall_seconds"]) / (b["epochs"] - a["epochs"])
            entry["seconds_per_epoch"] = per_epoch
            entry["fixed_seconds"] = a["wall_seconds"] - a["epochs"] * per_epoch
        else:
            entry["fixed_seconds"] = runs[0]["wall_seconds"]
        result["fit"][kind] = entry

    if not args.no_library_preprocessing:
        gen, wall = fit(features, spec, "tvae", 1, args.seed, fast_preprocessing=False)
        per_epoch = result["fit"]["tvae"].get("seconds_per_epoch", 0.0)
        result["fit"]["tvae_library_preprocessing"] = {
            "epochs": 1, "wall_seconds": wall, "fixed_seconds": wall - per_epoch,
            "note": "fast_preprocessing=False: ctgan's mixtures on every row, per-row component loop, process pool",
        }
        print(f"tvae library preprocessing, 1 epoch: {wall:.1f} s", flush=True)

    # The same TVAE fitted on canonical rows as they are (no slot imputation), for comparison.
    e_max = max(args.tvae_epochs)
    gen, wall = fit(features, spec, "tvae", e_max, args.seed, slot_imputation=False)
    result["fit"]["tvae_raw_space"] = {"epochs": e_max, "wall_seconds": wall}
    models[("tvae_raw_space", e_max)] = gen

    for (kind, e), gen in models.items():
        if kind != "gaussian_copula" and e == min(args.tvae_epochs if kind == "tvae" else args.ctgan_epochs):
            continue  # the 1-epoch fits are for timing only
        decodings = ("sample", "argmax") if kind.startswith("tvae") else ("sample",)
        for dec in decodings:
            gen.decoding = dec
            label = kind if kind == "gaussian_copula" else f"{kind}_e{e}" + (f"_{dec}" if kind.startswith("tvae") else "")
            try:
                result["quality"][label] = quality(gen, features, args.sample, args.seed + 1)
            except G.GeneratorError as exc:  # e.g. too few valid rows
                result["quality"][label] = {"error": str(exc)}
            q = result["quality"][label]
            print(f"{label}: valid {q.get('valid_share')}, max TV {q.get('max_tv_distance')}, "
                  f"shapes {q.get('column_shapes')}", flush=True)
        gen.decoding = "sample"

    # Offspring: 100 parents x 20 with the longest-trained TVAE.
    best = models[("tvae", max(args.tvae_epochs))]
    parents = features.iloc[np.random.default_rng(args.seed + 2).choice(len(features), 100, replace=False)]
    t = time.perf_counter()
    off = G.sample_offspring(best, parents, 20, (0.2, 0.8), np.random.default_rng(args.seed + 3))
    result["offspring"] = {
        "parents": 100, "per_parent": 20, "seconds": time.perf_counter() - t,
        "model": f"tvae_e{max(args.tvae_epochs)}", "stats": off.attrs["offspring_stats"],
        "quality_vs_training": {k: v for k, v in G.quality_report(best, features, off).items()
                                if not isinstance(v, dict)},
    }
    print(f"offspring 100 x 20: {result['offspring']['seconds']:.1f} s {off.attrs['offspring_stats']}", flush=True)
    result["total_seconds"] = time.perf_counter() - t0
    write_json(json.loads(json.dumps(result, default=float)), args.out)
    print(f"wrote {args.out} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
