"""Evidence for ``generator.training_rows``: weighted resampling or the unweighted rows?

The embedded world's survey (``data/survey.h5``) was drawn from a known population
(``data/population.h5``), so the population is the truth the generator should reproduce. The
generator is trained twice on the survey's eligible households, with the same seed and the
hyperparameters of ``params.yaml``'s ``generator`` section: once on rows resampled in proportion
to the calibrated weights (``weighted``) and once on the rows as they are (``unweighted``).

Each model is compared with the population's eligible households (households beyond the slot
layout have no feature row; their count is reported):

* **unconditional**: ``--sample-replicates`` draws of ``--sample`` valid rows;
* **offspring**: ``--parents`` eligible survey households as parents, ``--per-parent`` offspring
  each from :func:`weightreg.generator.sample_offspring` (default conditioning fractions), in
  ``--replicates`` independent draws of parents, under two parent schemes: drawn in proportion to
  weight (the parents then represent the population, so their offspring should too: the most
  direct test) and drawn uniformly (the survey's unweighted rows are not the population, so every
  distance is larger there, but the free columns still show which model fills them better). Both models get the same parents and
  the same offspring random stream.

Distances (0 = identical), each against the population:

* ``tv_mean`` / ``tv_max``: total-variation distance of every categorical and boolean feature;
* ``ks_features``: mean Kolmogorov-Smirnov statistic over the numeric feature columns;
* on household aggregates (total employment income, self-employment, pensions, investment
  income, hours, each reported benefit, rent, council tax, head's age, adults, children, gross
  income): ``ks_aggregates``, ``quantile_distance`` (mean over the 5%, 10%, ..., 95%, 99%
  quantiles of |difference| on the signed-log1p scale, i.e. roughly relative error) and
  ``zero_share_diff`` (|difference in the share of zeros|);
* ``spearman_aggregates`` / ``spearman_features``: mean |difference| of Spearman correlations
  over pairs of the aggregates / of the numeric feature columns (pairs constant on either side
  skipped).

Weighted rows (the survey baselines) use weighted ECDFs, quantiles and ranks. Baselines: a
uniform sample of the population of the same size (sampling noise floor), the survey weighted
and unweighted, and the parents themselves (offspring = copies of their parents).

The ``verdict`` is computed from the headline numbers: per comparison (unconditional, offspring of
weight-proportional parents, offspring of uniform parents), the geometric mean over the headline
metrics of the ratio unweighted / weighted (a tie within ``--tie``, default 2%), per metric which
mode is closer and by how many standard errors of the replicate means (sampling noise only: each
mode is fitted once, with the same seed); overall, the mode that no comparison disfavours.

It also times one training run as ``dvc repro train_generator`` does it (read, extract, fit,
save, sample 5,000 rows, quality report), plus the imports.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_training_rows.py`` (``--epochs 5`` for a quick
check); writes ``benchmarks/results/training_rows.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

_T_IMPORT = time.perf_counter()
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from weightreg import features as F
from weightreg import generator as G
from weightreg.atomic import write_json
from weightreg.influence import kish_ess
from weightreg.params import load_params
from weightreg.policyengine_format import read_survey

G._sdv()  # SDV and torch: the stage pays for these imports too
import torch  # noqa: F401

IMPORT_SECONDS = time.perf_counter() - _T_IMPORT

MODES = ("weighted", "unweighted")
QUANTILES = np.r_[np.arange(0.05, 0.951, 0.05), 0.99]
HOUSEHOLD_CATEGORICALS = ("region", "tenure_type", "council_tax_band", "layout")
#: Household aggregates: name -> adult amount summed over the slots.
SUMMED = {
    "employment_income": ("employment_income",),
    "self_employment_income": ("self_employment_income",),
    "private_pension_income": ("private_pension_income",),
    "investment_income": ("savings_interest_income", "dividend_income", "property_income"),
    "hours_worked": ("hours_worked",),
    "state_pension": ("state_pension_reported",),
    "universal_credit": ("universal_credit_reported",),
    "housing_benefit": ("housing_benefit_reported",),
    "child_benefit": ("child_benefit_reported",),
    "pension_credit": ("pension_credit_reported",),
}
INCOME_PARTS = ("employment_income", "self_employment_income", "private_pension_income", "investment_income",
                "state_pension", "universal_credit", "housing_benefit", "child_benefit", "pension_credit")
#: "Small positive" amounts (pounds a year; hours a week): a model that smears the spike at zero makes these.
SMALL = 100.0
#: Aggregates in pounds (the ones ``small_positive_share`` is reported for).
POUNDS = tuple(c for c in SUMMED if c != "hours_worked") + ("rent", "council_tax", "gross_income")
HEADLINE = ("tv_mean", "ks_features", "ks_aggregates", "quantile_distance", "zero_share_diff",
            "spearman_aggregates", "spearman_features")


# ---- statistics ---------------------------------------------------------------------------------
def slog(x):
    return np.sign(x) * np.log1p(np.abs(x))


def aggregates(rows: pd.DataFrame, spec: F.FeatureSpec) -> pd.DataFrame:
    """Household-level numbers from feature rows (sums over adult slots of the amounts present)."""
    out = {}
    feats = set(spec.adult_features)
    for name, parts in SUMMED.items():
        cols = [f"adult{i}_{p}" for p in parts if p in feats for i in range(1, spec.max_adults + 1)]
        if cols:
            out[name] = rows[cols].to_numpy(dtype=float).sum(axis=1)
    for c in ("rent", "council_tax"):
        if c in rows:
            out[c] = rows[c].to_numpy(dtype=float)
    out["head_age"] = rows["adult1_age"].to_numpy(dtype=float)
    out["n_adults"] = rows["n_adults"].to_numpy(dtype=float)
    out["n_children"] = rows["n_children"].to_numpy(dtype=float)
    frame = pd.DataFrame(out, index=rows.index)
    present = [p for p in INCOME_PARTS if p in frame]
    frame["gross_income"] = frame[present].sum(axis=1)
    return frame


class Ecdf:
    """Weighted empirical distribution of one numeric column."""

    def __init__(self, x, w):
        order = np.argsort(x, kind="stable")
        self.x = np.asarray(x, dtype=float)[order]
        cw = np.cumsum(np.asarray(w, dtype=float)[order])
        self.total = cw[-1]
        self.cw = cw / self.total
        self.mid = (cw - 0.5 * np.asarray(w, dtype=float)[order]) / self.total

    def cdf(self, t):
        k = np.searchsorted(self.x, t, side="right")
        return np.where(k > 0, self.cw[np.maximum(k - 1, 0)], 0.0)

    def quantile(self, q):
        return np.interp(q, self.mid, self.x)


def ks(a: Ecdf, b: Ecdf) -> float:
    grid = np.unique(np.concatenate([a.x, b.x]))
    return float(np.max(np.abs(a.cdf(grid) - b.cdf(grid))))


def shares(values, w) -> pd.Series:
    s = pd.Series(np.asarray(w, dtype=float)).groupby(pd.Series(np.asarray(values, dtype=object)).astype(str)).sum()
    return s / s.sum()


def weighted_spearman(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Spearman matrix: weighted Pearson of mid-ECDF ranks (uniform weights: Spearman)."""
    w = np.asarray(w, dtype=float)
    ranks = np.empty_like(x, dtype=float)
    for j in range(x.shape[1]):
        u, inv = np.unique(x[:, j], return_inverse=True)
        at = np.bincount(inv, weights=w, minlength=len(u))
        below = np.cumsum(at) - at
        ranks[:, j] = ((below + 0.5 * at) / w.sum())[inv]
    m = (ranks * w[:, None]).sum(axis=0) / w.sum()
    d = ranks - m
    cov = (d * w[:, None]).T @ d / w.sum()
    sd = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.outer(sd, sd)


class Reference:
    """The population's distributions, computed once, and distances of other rows to them."""

    def __init__(self, rows: pd.DataFrame, spec: F.FeatureSpec, weights=None, corr_rows: int = 50_000, seed: int = 0):
        self.spec = spec
        kinds = spec.column_kinds()
        self.cat_cols = [c for c, k in kinds.items() if k in ("categorical", "boolean")]
        self.num_cols = [c for c, k in kinds.items() if k in ("numerical", "integer")]
        w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
        agg = aggregates(rows, spec)
        self.agg_cols = list(agg.columns)
        self.corr_agg_cols = [c for c in self.agg_cols if c != "gross_income"]
        self.shares = {c: shares(rows[c].to_numpy(), w) for c in self.cat_cols}
        self.ecdf = {c: Ecdf(rows[c].to_numpy(dtype=float), w) for c in self.num_cols}
        self.agg_ecdf = {c: Ecdf(agg[c].to_numpy(), w) for c in self.agg_cols}
        self.agg_q = {c: slog(e.quantile(QUANTILES)) for c, e in self.agg_ecdf.items()}
        self.agg_zero = {c: float(w[agg[c].to_numpy() == 0].sum() / w.sum()) for c in self.agg_cols}
        # Correlations on a uniform subsample (Spearman on all 194k rows adds nothing but time).
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(rows), size=min(corr_rows, len(rows)), replace=False))
        self.corr_agg = weighted_spearman(agg[self.corr_agg_cols].to_numpy()[pick], w[pick])
        self.corr_feat = weighted_spearman(rows[self.num_cols].to_numpy(dtype=float)[pick], w[pick])

    def distances(self, rows: pd.DataFrame, weights=None, detail: bool = False) -> dict:
        w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
        rows = F.normalise(rows, self.spec)
        agg = aggregates(rows, self.spec)
        tv = {c: float(0.5 * shares(rows[c].to_numpy(), w).sub(self.shares[c], fill_value=0.0).abs().sum())
              for c in self.cat_cols}
        ks_f = {c: ks(Ecdf(rows[c].to_numpy(dtype=float), w), self.ecdf[c]) for c in self.num_cols}
        ks_a, qd, zd = {}, {}, {}
        for c in self.agg_cols:
            e = Ecdf(agg[c].to_numpy(), w)
            ks_a[c] = ks(e, self.agg_ecdf[c])
            qd[c] = float(np.mean(np.abs(slog(e.quantile(QUANTILES)) - self.agg_q[c])))
            zd[c] = abs(float(w[agg[c].to_numpy() == 0].sum() / w.sum()) - self.agg_zero[c])

        def corr_diff(mat_ref, x):
            iu = np.triu_indices(mat_ref.shape[0], k=1)
            d = np.abs(weighted_spearman(x, w)[iu] - mat_ref[iu])
            return float(np.mean(d[np.isfinite(d)])), int(np.isfinite(d).sum())

        sp_a, n_a = corr_diff(self.corr_agg, agg[self.corr_agg_cols].to_numpy())
        sp_f, n_f = corr_diff(self.corr_feat, rows[self.num_cols].to_numpy(dtype=float))
        out = {
            "rows": len(rows),
            "tv_mean": float(np.mean(list(tv.values()))),
            "tv_max": max(tv.values()),
            "tv_household": {c: round(tv[c], 4) for c in HOUSEHOLD_CATEGORICALS if c in tv},
            "ks_features": float(np.mean(list(ks_f.values()))),
            "ks_aggregates": float(np.mean(list(ks_a.values()))),
            "quantile_distance": float(np.mean(list(qd.values()))),
            "zero_share_diff": float(np.mean(list(zd.values()))),
            "spearman_aggregates": sp_a,
            "spearman_features": sp_f,
            "spearman_pairs": {"aggregates": n_a, "features": n_f},
        }
        if detail:
            out["per_column"] = {
                "tv": {c: round(v, 4) for c, v in tv.items()},
                "ks_features": {c: round(v, 4) for c, v in ks_f.items()},
                "aggregates": {c: {"ks": round(ks_a[c], 4), "quantile_distance": round(qd[c], 4),
                                   "zero_share_diff": round(zd[c], 4),
                                   "zero_share": round(float(w[agg[c].to_numpy() == 0].sum() / w.sum()), 4),
                                   "population_zero_share": round(self.agg_zero[c], 4),
                                   **({"small_positive_share": round(float(
                                       w[(agg[c].to_numpy() > 0) & (agg[c].to_numpy() < SMALL)].sum() / w.sum()), 4),
                                       "population_small_positive_share": round(float(
                                           self.agg_ecdf[c].cdf(SMALL - 1e-9) - self.agg_ecdf[c].cdf(0.0)), 4)}
                                      if c in POUNDS else {}),
                                   "median": float(Ecdf(agg[c].to_numpy(), w).quantile(0.5)),
                                   "p90": float(Ecdf(agg[c].to_numpy(), w).quantile(0.9)),
                                   "population_median": float(self.agg_ecdf[c].quantile(0.5)),
                                   "population_p90": float(self.agg_ecdf[c].quantile(0.9))}
                               for c in self.agg_cols},
            }
        return out


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation over replicates of each headline number."""
    out = {}
    for k in HEADLINE + ("tv_max",):
        v = np.array([r[k] for r in runs], dtype=float)
        out[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return out


def compare(weighted: dict, unweighted: dict, replicates: int, tie: float) -> dict:
    """Per headline metric: the mode with the smaller mean distance, the ratio unweighted/weighted,
    and the difference in standard errors of the replicate means (sampling noise only: one fit
    per mode). Overall: the geometric mean of the ratios; a tie when it is within ``tie`` of 1."""
    per, ratios, wins = {}, [], {m: 0 for m in MODES}
    for k in HEADLINE:
        a, b = weighted[k]["mean"], unweighted[k]["mean"]
        better = "weighted" if a < b else "unweighted"
        wins[better] += 1
        ratio = b / a if a > 0 else float("inf")
        ratios.append(ratio)
        se = float(np.sqrt((weighted[k]["std"] ** 2 + unweighted[k]["std"] ** 2) / replicates))
        per[k] = {"weighted": a, "unweighted": b, "closer": better, "ratio_unweighted_to_weighted": ratio,
                  "difference_over_se": float(abs(a - b) / se) if se > 0 else float("inf")}
    gm = float(np.exp(np.mean(np.log(ratios))))
    closer = "tie" if abs(np.log(gm)) < np.log1p(tie) else ("unweighted" if gm < 1 else "weighted")
    by_2se = {m: [k for k, v in per.items() if v["closer"] == m and v["difference_over_se"] >= 2] for m in MODES}
    return {"metrics": per, "wins": wins, "wins_by_2_se": by_2se, "geomean_ratio_unweighted_to_weighted": gm,
            "closer": closer}


# ---- the run ------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--survey", type=Path, default=ROOT / "data" / "survey.h5")
    ap.add_argument("--population", type=Path, default=ROOT / "data" / "population.h5")
    ap.add_argument("--epochs", type=int, default=None, help="default: params.yaml generator.hyperparameters.epochs")
    ap.add_argument("--sample", type=int, default=10_000, help="unconditional rows per model and draw")
    ap.add_argument("--sample-replicates", type=int, default=3, help="unconditional draws per model")
    ap.add_argument("--tie", type=float, default=0.02,
                    help="a comparison is a tie when the geometric-mean distance ratio is within this of 1")
    ap.add_argument("--parents", type=int, default=200)
    ap.add_argument("--per-parent", type=int, default=20)
    ap.add_argument("--replicates", type=int, default=5, help="independent draws of parents per scheme")
    ap.add_argument("--population-rows", type=int, default=None, help="compare with a uniform subsample of the population")
    ap.add_argument("--eval-seed", type=int, default=2025)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training_rows.json")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    gp = params["generator"]
    seed = int(gp["seed"])
    hp = dict(gp.get("hyperparameters") or {})
    if args.epochs is not None:
        hp["epochs"] = int(args.epochs)
    kind = gp.get("kind", "tvae")
    max_adults, max_children = int(gp["max_adults"]), int(gp["max_children"])
    t_all = time.perf_counter()
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "threads": os.environ.get("OMP_NUM_THREADS")},
        "seed": seed, "eval_seed": args.eval_seed, "kind": kind, "epochs": hp.get("epochs"),
        "hyperparameters": hp, "params_training_rows": gp.get("training_rows"),
        "timings": {"imports_seconds": IMPORT_SECONDS},
    }

    # 1. the survey, as the stage reads it (timed as the stage's preprocessing)
    t = time.perf_counter()
    survey = read_survey(args.survey)
    spec = F.FeatureSpec.from_survey(survey, max_adults=max_adults, max_children=max_children)
    ex = F.extract(survey, spec)
    feats = ex.features
    weights = survey.weights[ex.eligible]
    stage_read_extract = time.perf_counter() - t
    s = ex.summary
    result["data"] = {"survey": {
        "path": str(args.survey.relative_to(ROOT)) if args.survey.is_relative_to(ROOT) else str(args.survey),
        "households": s["n_households"], "eligible": s["n_eligible"], "ineligible": s["n_ineligible"],
        "ineligible_weight_share": s["ineligible_weight_share"], "columns": feats.shape[1],
        "kish_ess_eligible": float(kish_ess(weights)),
        "read_extract_seconds": stage_read_extract,
    }}
    print(f"survey: {s['n_eligible']} eligible of {s['n_households']} ({stage_read_extract:.1f} s); "
          f"Kish ESS {kish_ess(weights):.0f}", flush=True)

    # 2. the two fits (the weighted one timed end to end as the stage runs it)
    models = {}
    for mode in MODES:
        t = time.perf_counter()
        gen = G.train_generator(feats, spec, kind=kind, hyperparameters=hp, training_rows=mode,
                                weights=weights if mode == "weighted" else None, seed=seed)
        wall = time.perf_counter() - t
        info = gen.info
        entry = {"wall_seconds": wall, "fit_seconds": info.fit_seconds,
                 "preprocess_seconds": info.preprocess_seconds, "final_loss": info.final_loss,
                 "n_training_rows": info.n_training_rows, "n_distinct_rows": info.n_distinct_rows}
        if mode == gp.get("training_rows", "weighted"):
            # the rest of run_train: save, sample 5,000, quality report against the feature rows
            t2 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                gen.save(Path(tmp) / "generator.pkl")
                entry["pickle_bytes"] = (Path(tmp) / "generator.pkl").stat().st_size
            rows = gen.sample(min(5000, len(feats)), np.random.default_rng(seed))
            G.quality_report(gen, feats, rows)
            post = time.perf_counter() - t2
            result["stage_equivalent"] = {
                "training_rows": mode,
                "imports_seconds": IMPORT_SECONDS, "read_extract_seconds": stage_read_extract,
                "fit_seconds": wall, "save_sample_quality_seconds": post,
                "total_seconds": IMPORT_SECONDS + stage_read_extract + wall + post,
                "note": "what stages/train_generator.py does, minus interpreter start-up and dvc's own hashing",
            }
        models[mode] = gen
        result.setdefault("models", {})[mode] = entry
        print(f"fit {mode}: {wall:.1f} s, final loss {info.final_loss:.2f}, "
              f"{info.n_distinct_rows} distinct of {info.n_training_rows} rows", flush=True)

    # 3. the population (the truth)
    t = time.perf_counter()
    population = read_survey(args.population)
    pex = F.extract(population, spec)
    pop = pex.features
    ps = pex.summary
    if args.population_rows is not None and args.population_rows < len(pop):
        pick = np.sort(np.random.default_rng(args.eval_seed).choice(len(pop), args.population_rows, replace=False))
        pop = pop.iloc[pick]
    ref = Reference(pop, spec, seed=args.eval_seed)
    result["data"]["population"] = {
        "households": ps["n_households"], "eligible": ps["n_eligible"],
        "excluded_beyond_slot_layout": ps["n_ineligible"], "excluded_share": ps["ineligible_weight_share"],
        "excluded_by_reason": ps["by_reason"], "rows_compared": len(pop),
        "correlation_rows": min(50_000, len(pop)), "seconds": time.perf_counter() - t,
    }
    print(f"population: {ps['n_eligible']} eligible, {ps['n_ineligible']} beyond the slot layout "
          f"({ps['ineligible_weight_share']:.2%}); compared {len(pop)} rows", flush=True)

    # 4. baselines
    t = time.perf_counter()
    rng = np.random.default_rng(args.eval_seed + 1)
    base = {}
    for n in (args.sample, args.parents * args.per_parent):
        base[f"population_sample_{n}"] = ref.distances(pop.iloc[rng.choice(len(pop), n, replace=False)])
    base["survey_weighted"] = ref.distances(feats, weights, detail=True)
    base["survey_unweighted"] = ref.distances(feats, detail=True)
    result["baselines"] = base
    result["timings"]["baselines_seconds"] = time.perf_counter() - t

    # 5. unconditional samples
    t = time.perf_counter()
    unc = {}
    tr_w = Reference(feats, spec, weights, seed=args.eval_seed)
    tr_u = Reference(feats, spec, seed=args.eval_seed)
    for mode, gen in models.items():
        runs = []
        for r in range(args.sample_replicates):
            rows = gen.sample(args.sample, np.random.default_rng([args.eval_seed, r, 2]))
            runs.append(ref.distances(rows, detail=(r == 0)))
            if r == 0:
                # against each training distribution (the stage's metrics compare with the unweighted rows)
                keep = HEADLINE + ("tv_max",)
                vs_w = {k: v for k, v in tr_w.distances(rows).items() if k in keep}
                vs_u = {k: v for k, v in tr_u.distances(rows).items() if k in keep}
        unc[mode] = {"rows": args.sample, "replicates": args.sample_replicates, "summary": summarise(runs),
                     "first_replicate": runs[0], "vs_survey_weighted": vs_w, "vs_survey_unweighted": vs_u}
        print(f"unconditional {mode}: " + ", ".join(f"{k} {unc[mode]['summary'][k]['mean']:.4f}" for k in HEADLINE),
              flush=True)
    unc["comparison"] = compare(unc["weighted"]["summary"], unc["unweighted"]["summary"],
                                args.sample_replicates, args.tie)
    result["unconditional"] = unc
    result["timings"]["unconditional_seconds"] = time.perf_counter() - t

    # 6. offspring near random parents
    t = time.perf_counter()
    p_w = weights / weights.sum()
    off = {}
    for scheme in ("weight_proportional", "uniform"):
        runs = {m: [] for m in MODES}
        parents_runs, stats, secs = [], {m: [] for m in MODES}, {m: [] for m in MODES}
        for r in range(args.replicates):
            prng = np.random.default_rng([args.eval_seed, r, 0 if scheme == "uniform" else 1])
            pick = prng.choice(len(feats), args.parents, replace=False, p=p_w if scheme == "weight_proportional" else None)
            parents = feats.iloc[np.sort(pick)]
            parents_runs.append(ref.distances(parents.loc[parents.index.repeat(args.per_parent)]))
            for mode, gen in models.items():
                t1 = time.perf_counter()
                o = G.sample_offspring(gen, parents, args.per_parent, rng=np.random.default_rng([args.eval_seed, r, 7]))
                secs[mode].append(time.perf_counter() - t1)
                stats[mode].append(o.attrs["offspring_stats"])
                runs[mode].append(ref.distances(o[spec.columns()], detail=(r == 0)))
        entry = {"parents": args.parents, "per_parent": args.per_parent, "replicates": args.replicates,
                 "parents_as_offspring": summarise(parents_runs)}
        for mode in MODES:
            entry[mode] = {"summary": summarise(runs[mode]), "first_replicate": runs[mode][0],
                           "replicates": [{k: r[k] for k in HEADLINE + ("tv_max",)} for r in runs[mode]],
                           "seconds_per_call": float(np.mean(secs[mode])),
                           "mean_held_share": float(np.mean([s_["mean_held_share"] for s_ in stats[mode]])),
                           "stats_first_replicate": stats[mode][0]}
        entry["comparison"] = compare(entry["weighted"]["summary"], entry["unweighted"]["summary"],
                                      args.replicates, args.tie)
        off[scheme] = entry
        c = entry["comparison"]
        print(f"offspring ({scheme} parents): closer {c['closer']}, wins {c['wins']}, "
              f"geomean unweighted/weighted {c['geomean_ratio_unweighted_to_weighted']:.3f}", flush=True)
    result["offspring"] = off
    result["timings"]["offspring_seconds"] = time.perf_counter() - t

    # 7. verdict, from the numbers above
    comps = {"offspring_weight_proportional_parents": off["weight_proportional"]["comparison"],
             "offspring_uniform_parents": off["uniform"]["comparison"],
             "unconditional": unc["comparison"]}
    calls = {k: c["closer"] for k, c in comps.items()}
    favoured = {c for c in calls.values() if c != "tie"}
    if not favoured:
        decided = "tie"
    elif len(favoured) == 1:
        decided = favoured.pop()
    else:
        decided = "mixed"
    total_wins = {m: sum(c["wins"][m] for c in comps.values()) for m in MODES}
    total_2se = {m: sum(len(c["wins_by_2_se"][m]) for c in comps.values()) for m in MODES}

    def phrase(name, c):
        gm = c["geomean_ratio_unweighted_to_weighted"]
        if c["closer"] == "tie":
            return f"{name}: a tie (unweighted/weighted distance ratio {gm:.3f})"
        pct = (1 - (gm if c["closer"] == "unweighted" else 1 / gm)) * 100
        other = "weighted" if c["closer"] == "unweighted" else "unweighted"
        return (f"{name}: {c['closer']} {pct:.0f}% closer than {other} "
                f"({c['wins'][c['closer']]}/{len(HEADLINE)} metrics, {len(c['wins_by_2_se'][c['closer']])} by >= 2 SE)")

    names = {"offspring_weight_proportional_parents": "offspring of weight-proportional parents",
             "offspring_uniform_parents": "offspring of uniform parents", "unconditional": "unconditional samples"}
    head = {"tie": "Neither training_rows mode is closer to the population",
            "mixed": "The comparisons disagree",
            "weighted": "weighted training rows are closer to the population or tied in every comparison",
            "unweighted": "unweighted training rows are closer to the population or tied in every comparison"}[decided]
    result["verdict"] = {
        "closer_to_population": decided,
        "rule": (f"per comparison, the geometric mean over {len(HEADLINE)} headline distances of unweighted/weighted "
                 f"(a tie within {args.tie:.0%} of 1); overall, the mode no comparison disfavours"),
        "per_comparison": {k: {"closer": c["closer"], "wins": c["wins"],
                               "wins_by_2_se": {m: len(v) for m, v in c["wins_by_2_se"].items()},
                               "geomean_ratio_unweighted_to_weighted": c["geomean_ratio_unweighted_to_weighted"]}
                           for k, c in comps.items()},
        "headline_wins_all_comparisons": total_wins,
        "headline_wins_by_2_se_all_comparisons": total_2se,
        "summary": head + ": " + "; ".join(phrase(names[k], c) for k, c in comps.items()) + ".",
    }
    result["total_seconds"] = time.perf_counter() - t_all
    write_json(json.loads(json.dumps(result, default=float)), args.out)
    print(result["verdict"]["summary"])
    print(f"wrote {args.out} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
