"""Score weight sets against the truth the embedded world knows (DVC stage ``evaluate``).

In the embedded world the survey is a sample of a known population (``data/population.h5``), so
every statistic a survey estimates has a true value. :func:`evaluate` compares, on the same
reporting surface that ``diagnose`` scans, several weight sets:

* the candidates passed in (the pipeline's ``original``, ``augmented`` and ``regularised``);
* two baselines computed in the same run from the original survey: ``trimmed`` (weights above a
  cap set to it, the excess spread proportionally over the others until none exceeds it:
  :func:`trim_weights`) and ``raked`` (KL calibration of the original weights to the targets
  with the same cap and penalty as the final recalibration, exact by default, no offspring;
  targets no weights within the cap can reach are left out and counted; a calibration that
  does not converge is flagged and its weights used anyway).

A *statistic* is the weighted total of one household metric over one slice cell (or the whole
population), on the baseline values or, for each of a fresh set of random reforms (drawn with
``evaluate.seed``, not the loop's ``reforms.seed``, so the comparison is out of sample), the total
change the reform makes. The truth is the same statistic on the population at its uniform
weights. Income deciles are each weight set's own person-weighted cut points, the truth's the
population's, as in ``diagnose``.

Per weight set the report has the RMSE and median of the relative error ``(estimate - truth) /
|truth|`` over statistics, split baseline / reform; the worst statistic; the target fit; Kish ESS,
the largest weight and the record count. Statistics whose truth is zero or tiny
(``|truth| < 1e-9 x`` the population's total absolute baseline value of the same metric) have no
meaningful relative error and are skipped, and counted: in practice they are reform changes of
metrics a reform does not touch and cells where a metric is zero (pension credit of the under-25s).

An optional bootstrap re-draws the survey from the population with the world's sampling design
(:func:`weightreg.world.draw_sample`, :func:`weightreg.world.draw_enhancement`), re-calibrates each
replicate from design weights (KL, the same cap) and reports the spread (coefficient of variation
across replicates, median over statistics) of its estimates.

Without a population (a user's own file) only the weight figures are reported.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from .calibrate import calibrate
from .diagnose import (
    ALL,
    SurfaceData,
    _check_weights,
    _evaluation_slices,
    simulate_surface,
)
from .errors import ParameterError, SurveyFormatError
from .influence import kish_by_group, kish_ess
from .sources import source_kish_by_group, source_totals
from .survey import Survey
from .targets import build_target_matrix

__all__ = [
    "TINY",
    "TRIM_QUANTILE",
    "EvaluationResult",
    "draw_replicate",
    "evaluate",
    "reachable_targets",
    "run_evaluate",
    "surface_statistics",
    "trim_weights",
]

#: A statistic is skipped when ``|truth| < TINY x`` its metric's population absolute total.
TINY = 1e-9
#: Without a ``cap``, trimming caps at this quantile of the original weights.
TRIM_QUANTILE = 0.999
#: Kinds of statistic: baseline levels and reform changes.
KINDS = ("baseline", "reform")
#: Columns of the CSVs this module writes.
TRUTH_ERROR_COLUMNS = ("weights", "statistic_kind", "rmse", "median_abs_rel_error", "mean_scaled_error")
ESS_COLUMNS = ("dimension", "cell", "weights", "source_ess", "ess")
WORST_COLUMNS = ("weights", "rank", "statistic", "statistic_kind", "truth", "estimate", "rel_error")


# ---- trimming ----------------------------------------------------------------------------------
def trim_weights(weights, cap: float) -> np.ndarray:
    """Trim weights at ``cap``, spreading the excess proportionally over the uncapped records.

    The classic procedure sets weights above ``cap`` to ``cap``, scales the uncapped records up by a
    common factor so the total is unchanged, and repeats until none exceeds ``cap``. Its fixed point
    is ``min(cap, c x w)`` for the one ``c >= 1`` that conserves the total, which this computes
    directly (one sort, whole-array): with the weights in descending order and ``k`` of them capped,
    ``c_k = (total - k cap) / (sum of the rest)``, and the answer is the smallest ``k`` for which
    the largest uncapped record stays within the cap. Zero weights stay zero.

    Args:
        weights: shape (N,) non-negative finite weights.
        cap: the largest weight allowed (positive).

    Returns:
        The trimmed weights, shape (N,): every one at most ``cap``, total unchanged (to rounding).

    Raises:
        ValueError: bad weights or cap, or a cap so low that the positive records cannot carry the
            total (``cap x records with positive weight < total``).
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be a 1-D array of finite, non-negative numbers")
    cap = float(cap)
    if not (cap > 0 and math.isfinite(cap)):
        raise ValueError(f"cap={cap!r} must be a positive finite number")
    if not np.any(w > cap):
        return w.copy()
    total = float(w.sum())
    n_pos = int(np.count_nonzero(w))
    if cap * n_pos < total * (1 - 1e-12):
        raise ValueError(
            f"cap={cap:.6g} x {n_pos} households with positive weight = {cap * n_pos:.6g} is below the total "
            f"weight {total:.6g}: no trimming at this cap conserves the total; raise the cap"
        )
    order = np.argsort(-w, kind="stable")
    ws = w[order]
    rest = np.cumsum(ws[::-1])[::-1]  # rest[k] = sum of ws[k:], the records left uncapped when k are capped
    k = np.arange(len(ws))
    with np.errstate(divide="ignore", invalid="ignore"):  # rest is 0 past the last positive weight
        c = (total - k * cap) / rest
        fits = (rest > 0) & (c * ws <= cap * (1 + 1e-12))
    out = np.where(w > 0, cap, 0.0)  # the limit when every positive record ends at the cap
    if fits.any():
        k_star = int(np.argmax(fits))
        scaled = np.minimum(ws * c[k_star], cap)
        scaled[:k_star] = cap
        out = np.empty_like(w)
        out[order] = scaled
    return out


# ---- statistics ----------------------------------------------------------------------------------
def surface_statistics(data: SurfaceData, weights=None) -> pd.DataFrame:
    """Every statistic of a reporting surface under ``weights``: weighted totals per cell.

    One statistic per (surface, metric, cell): the surfaces are the baseline and each reform (for
    a reform the total *change*), the cells the whole population (``all``) and every cell of every
    slice dimension; income deciles are cut for ``weights`` (see ``diagnose``). All totals come
    from one sparse product of the metric arrays with a households x cells matrix of weights.

    Args:
        data: from :func:`weightreg.diagnose.simulate_surface`.
        weights: shape (N,); ``data.weights`` when ``None``.

    Returns:
        A DataFrame with ``statistic`` (``metric|dimension=cell|baseline`` or ``...|reform k``, as
        ``diagnose`` names them), ``statistic_kind`` (``baseline``/``reform``), ``surface`` (0 =
        baseline, ``k + 1`` = reform ``k``), ``metric``, ``dimension``, ``cell`` and ``value``.
    """
    w = _check_weights(data.weights if weights is None else weights, data)
    n, m = data.n_records, len(data.metrics)
    slices = _evaluation_slices(data, w)
    rows, cols, dims, cells = [], [], [], []
    offset = 0
    for s in slices:
        inside = np.flatnonzero(s.codes >= 0)
        rows.append(inside)
        cols.append(offset + s.codes[inside])
        dims += [s.name] * len(s.labels)
        cells += list(s.labels)
        offset += len(s.labels)
    rows_a = np.concatenate(rows)
    weighted_cells = sp.csr_matrix((w[rows_a], (rows_a, np.concatenate(cols))), shape=(n, offset))
    baseline = np.asarray(data.baseline, dtype=float).reshape(m, n)
    deltas = np.asarray(data.deltas, dtype=float)
    k = deltas.shape[0]
    flat = np.vstack([baseline, deltas.reshape(k * m, n)])  # (surfaces x metrics, N)
    totals = np.asarray(weighted_cells.T @ flat.T).T  # (surfaces x metrics, cells)

    where = [ALL if d == ALL else f"{d}={c}" for d, c in zip(dims, cells)]
    when = ["baseline"] + [f"reform {j}" for j in range(k)]
    n_cells = len(where)
    surface = np.repeat(np.arange(k + 1), m * n_cells)
    metric = np.tile(np.repeat(np.asarray(data.metrics, dtype=object), n_cells), k + 1)
    where_a = np.tile(np.asarray(where, dtype=object), (k + 1) * m)
    names = [f"{mt}|{wh}|{when[s]}" for s, mt, wh in zip(surface.tolist(), metric.tolist(), where_a.tolist())]
    return pd.DataFrame(
        {
            "statistic": names,
            "statistic_kind": np.where(surface == 0, KINDS[0], KINDS[1]),
            "surface": surface,
            "metric": metric,
            "dimension": np.tile(np.asarray(dims, dtype=object), (k + 1) * m),
            "cell": np.tile(np.asarray(cells, dtype=object), (k + 1) * m),
            "value": totals.ravel(),
        }
    )


def _metric_scale(data: SurfaceData, weights) -> dict[str, float]:
    """Each metric's total absolute weighted baseline value: the yardstick for "tiny" truths."""
    w = np.asarray(weights, dtype=float)
    return {name: float(np.abs(np.asarray(data.baseline[i], dtype=float)) @ w) for i, name in enumerate(data.metrics)}


def _rel_errors(truth: pd.DataFrame, estimate: pd.DataFrame, scale: Mapping[str, float]) -> pd.DataFrame:
    """Truth statistics joined with ``estimate``'s, with the relative error where it is meaningful.

    ``scored`` is false where the truth is tiny (see :data:`TINY`) or the estimate is missing (a
    metric or cell the candidate's file cannot produce); ``rel_error`` is NaN there.
    """
    est = estimate.set_index("statistic")["value"]
    out = truth[["statistic", "statistic_kind", "metric"]].copy()
    out["truth"] = truth["value"].to_numpy()
    out["estimate"] = est.reindex(truth["statistic"]).to_numpy()
    metric_scale = truth["metric"].map(scale).to_numpy(dtype=float)
    yardstick = TINY * metric_scale
    big = np.abs(out["truth"].to_numpy()) >= yardstick
    big &= out["truth"].to_numpy() != 0
    out["tiny"] = ~big
    out["scored"] = big & np.isfinite(out["estimate"].to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (out["estimate"].to_numpy() - out["truth"].to_numpy()) / np.abs(out["truth"].to_numpy())
    out["rel_error"] = np.where(out["scored"].to_numpy(), rel, np.nan)
    # Scale-free and robust to near-zero truths: the error as a share of the metric's total mass.
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (out["estimate"].to_numpy() - out["truth"].to_numpy()) / metric_scale
    out["scaled_error"] = np.where(np.isfinite(scaled), scaled, np.nan)
    return out


def _error_summary(errors: pd.DataFrame) -> dict[str, float]:
    """RMSE and median absolute relative error by kind, and the worst statistic's error."""
    out: dict[str, float] = {}
    scored = errors[errors["scored"]]
    for kind in KINDS:
        rel = scored.loc[scored["statistic_kind"] == kind, "rel_error"].to_numpy(dtype=float)
        out[f"rmse_{kind}"] = float(np.sqrt(np.mean(rel * rel))) if len(rel) else 0.0
        out[f"median_abs_rel_error_{kind}"] = float(np.median(np.abs(rel))) if len(rel) else 0.0
        out[f"n_statistics_{kind}"] = len(rel)
        scaled = errors.loc[errors["statistic_kind"] == kind, "scaled_error"].to_numpy(dtype=float)
        scaled = scaled[np.isfinite(scaled)]
        out[f"mean_scaled_error_{kind}"] = float(np.mean(np.abs(scaled))) if len(scaled) else 0.0
    rel = scored["rel_error"].to_numpy(dtype=float)
    out["worst_abs_rel_error"] = float(np.abs(rel).max()) if len(rel) else 0.0
    return out


# ---- calibration helpers -----------------------------------------------------------------------
def reachable_targets(matrix, values, prior, cap: float | None) -> np.ndarray:
    """Bool mask of the targets some weights ``0 <= w <= cap`` (zero where ``prior`` is) can meet.

    A positive target is reachable when its column meets a record with a positive prior and,
    with a cap, when ``cap x`` (sum of its positive entries over those records) exceeds it by a
    margin (a target only met with every record at the cap is not a problem worth solving).
    :func:`weightreg.calibrate.calibrate` rejects a problem with any unreachable target; callers
    drop them first and count them.
    """
    A = sp.csr_matrix(matrix, dtype=float)
    t = np.asarray(values, dtype=float)
    usable = (np.asarray(prior, dtype=float) > 0).astype(float)
    positive = A.maximum(0)
    if cap is None:
        reach = np.where(np.asarray(positive.T @ usable).ravel() > 0, np.inf, 0.0)
    else:
        reach = float(cap) * np.asarray(positive.T @ usable).ravel()
    return (t == 0) | (t < reach * (1 - 1e-9))


def _rake(survey: Survey, matrix, values, names, cap, tol, max_iter, penalty=None):
    """KL calibration of ``survey``'s weights to the reachable targets; (result, targets dropped)."""
    keep = reachable_targets(matrix, values, survey.weights, cap)
    idx = np.flatnonzero(keep)
    fit = calibrate(
        matrix[:, idx], np.asarray(values)[idx], survey.weights, penalty=penalty, cap=cap, tol=tol, max_iter=max_iter,
        target_names=[names[j] for j in idx],
    )
    return fit, int((~keep).sum())


# ---- the bootstrap ------------------------------------------------------------------------------
def draw_replicate(population: Survey, world_params: Mapping | None, rng: np.random.Generator) -> tuple[Survey, np.ndarray]:
    """A fresh survey drawn from ``population`` with the world's sampling design, and its design weights.

    :func:`weightreg.world.draw_survey`, the code :func:`weightreg.world.generate_world` draws its
    survey with: the sample (differential non-response) with misreported benefits, each at
    ``population total / sample size``, then the enhancement block (copies of top-income
    households, new ids from the first power of ten above the population's) at
    ``enhancement_initial_weight``. Not calibrated (the caller calibrates from these weights).

    Args:
        population: the world's population.
        world_params: the ``world`` section of params.yaml (missing keys take the world's defaults).
        rng: the replicate's generator (split by ``draw_survey`` into sample, misreporting and
            enhancement streams).

    Returns:
        ``(survey, design_weights)``: the survey at its design weights, and those weights.
    """
    from .world import draw_survey

    survey = draw_survey(population, world_params, rng)
    return survey, survey.weights


def _bootstrap(population, truth_errors, targets, *, replicates, world_params, rng, cap, penalty, tol, max_iter,
               simulate, reforms, progress) -> dict:
    """Spread of calibrated (and design-weighted) estimates over re-drawn samples.

    Each replicate is drawn by :func:`draw_replicate` (the world's whole sampling design,
    misreported benefits included) from one child of ``rng``, KL-calibrated from its design weights
    to ``targets`` with ``cap`` and ``penalty`` (:func:`_rake`: unreachable targets left out), and
    scored on the statistics of ``truth_errors`` that are not tiny. For the full recipe on each
    replicate, see :mod:`weightreg.study`.
    """
    scored = truth_errors[~truth_errors["tiny"]]
    names = scored["statistic"].to_numpy()
    truth = scored["truth"].to_numpy(dtype=float)
    kind = scored["statistic_kind"].to_numpy()
    calibrated, design, converged, dropped, ess, max_w = [], [], 0, [], [], []
    for child in tqdm(rng.spawn(replicates), desc="bootstrap", disable=not progress, leave=False):
        replicate, prior = draw_replicate(population, world_params, child)
        tm = build_target_matrix(replicate, targets)
        fit, n_dropped = _rake(replicate, tm.matrix, tm.values, tm.names, cap, tol, max_iter, penalty)
        converged += bool(fit.success)
        dropped.append(n_dropped)
        ess.append(kish_ess(fit.weights))
        max_w.append(float(fit.weights.max()))
        data = simulate(replicate, reforms)
        for weights, store in ((fit.weights, calibrated), (prior, design)):
            stats = surface_statistics(data, weights).set_index("statistic")["value"]
            store.append(stats.reindex(names).to_numpy(dtype=float))
    out = {
        "replicates": int(replicates),
        "converged": int(converged),
        "targets_dropped_max": int(max(dropped)),
        "kish_ess_mean": float(np.mean(ess)),
        "max_weight_mean": float(np.mean(max_w)),
    }
    for label, store in (("", calibrated), ("design_", design)):
        est = np.vstack(store)  # (replicates, statistics)
        mean = est.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cv = est.std(axis=0, ddof=1) / np.abs(mean)
            rel = (est - truth) / np.abs(truth)
        ok = np.isfinite(cv) & (mean != 0)
        for k in KINDS:
            sel = ok & (kind == k)
            out[f"{label}cv_median_{k}"] = float(np.median(cv[sel])) if sel.any() else 0.0
            r = rel[:, np.isfinite(rel).all(axis=0) & (kind == k)]
            out[f"{label}rmse_{k}_mean"] = float(np.sqrt(np.mean(r * r, axis=1)).mean()) if r.size else 0.0
    return out


# ---- the result ---------------------------------------------------------------------------------
@dataclass(eq=False)
class EvaluationResult:
    """What :func:`evaluate` found.

    Attributes:
        weight_sets: the weight sets' names, in report order.
        summary: per weight set, its numbers (see :meth:`to_metrics`).
        errors: one row per (weight set, statistic): ``weights``, ``statistic``,
            ``statistic_kind``, ``metric``, ``truth``, ``estimate``, ``tiny`` (skipped: truth
            below ``TINY x`` the metric's scale), ``scored``, ``rel_error`` (NaN when not
            scored); ``None`` without a population.
        ess: Kish ESS per slice cell: ``dimension``, ``cell``, ``weights``, ``ess``, ``source_ess``
            (over source households, :mod:`weightreg.sources`).
        info: run-wide numbers (``truth_comparison``, ``trim_cap``, statistic counts, ...).
        bootstrap: the bootstrap's numbers, or ``None`` when skipped.
        messages: notes for a reader (a raking that did not converge, targets dropped, ...).
    """

    weight_sets: tuple[str, ...]
    summary: dict[str, dict]
    errors: pd.DataFrame | None
    ess: pd.DataFrame
    info: dict
    bootstrap: dict | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def truth_comparison(self) -> bool:
        return self.errors is not None

    def to_metrics(self) -> dict:
        """Numbers only, deterministic: run-wide keys plus one nested dict per weight set."""
        out = dict(self.info)
        for name in self.weight_sets:
            out[name] = dict(self.summary[name])
        if self.bootstrap is not None:
            out["bootstrap"] = dict(self.bootstrap)
        return out

    def truth_error_table(self) -> pd.DataFrame:
        """``weights``, ``statistic_kind``, ``rmse``, ``median_abs_rel_error``, ``mean_scaled_error``
        (two rows per set)."""
        rows = []
        if self.truth_comparison:
            for name in self.weight_sets:
                s = self.summary[name]
                for kind in KINDS:
                    rows.append((name, kind, s[f"rmse_{kind}"], s[f"median_abs_rel_error_{kind}"],
                                 s[f"mean_scaled_error_{kind}"]))
        return pd.DataFrame(rows, columns=list(TRUTH_ERROR_COLUMNS))

    def worst_table(self, top: int = 10) -> pd.DataFrame:
        """The ``top`` statistics with the largest absolute relative error, per weight set."""
        if not self.truth_comparison:
            return pd.DataFrame(columns=list(WORST_COLUMNS))
        frames = []
        for name in self.weight_sets:
            e = self.errors[(self.errors["weights"] == name) & self.errors["scored"]]
            e = e.assign(abs_rel=np.abs(e["rel_error"])).sort_values(
                ["abs_rel", "statistic"], ascending=[False, True], kind="stable").head(top)
            frames.append(e.assign(rank=np.arange(1, len(e) + 1)))
        return pd.concat(frames, ignore_index=True)[list(WORST_COLUMNS)]

    def summary_text(self) -> str:
        """A short plain-text table of the weight sets."""
        lines = []
        if self.truth_comparison:
            i = self.info
            lines.append(
                f"Truth comparison on {i['n_statistics_baseline']} baseline and {i['n_statistics_reform']} reform "
                f"statistics ({i['n_reforms']} fresh reforms); skipped {i['n_skipped_baseline']} baseline / "
                f"{i['n_skipped_reform']} reform statistics whose truth is below {TINY:g} x the metric's total."
            )
            lines.append(f"{'weights':>12} {'rmse base':>10} {'rmse ref':>10} {'med base':>9} {'med ref':>9} "
                         f"{'worst':>9} {'scaled b':>9} {'scaled r':>9} {'tgt err':>9} {'src ESS':>9} {'ESS':>9} {'max w':>11} "
                         f"{'records':>8}")
        else:
            lines.append("No population: truth comparison skipped; weight figures only.")
            lines.append(f"{'weights':>12} {'tgt err':>9} {'src ESS':>9} {'ESS':>9} {'max w':>11} {'records':>8}")
        for name in self.weight_sets:
            s = self.summary[name]
            tgt = f"{s['max_rel_target_error']:>9.2e}" if "max_rel_target_error" in s else f"{'-':>9}"
            tail = (f"{tgt} {s['source_kish_ess']:>9.0f} {s['kish_ess']:>9.0f} {s['max_weight']:>11,.0f} "
                    f"{s['n_records']:>8d}")
            if self.truth_comparison:
                lines.append(
                    f"{name:>12} {s['rmse_baseline']:>10.4f} {s['rmse_reform']:>10.4f} "
                    f"{s['median_abs_rel_error_baseline']:>9.4f} {s['median_abs_rel_error_reform']:>9.4f} "
                    f"{s['worst_abs_rel_error']:>9.3f} {s['mean_scaled_error_baseline']:>9.5f} "
                    f"{s['mean_scaled_error_reform']:>9.5f} {tail}"
                )
            else:
                lines.append(f"{name:>12} {tail}")
        if self.bootstrap is not None:
            b = self.bootstrap
            lines.append(
                f"Bootstrap ({b['replicates']} re-drawn samples, KL-calibrated, {b['converged']} converged): median CV "
                f"baseline {b['cv_median_baseline']:.4f}, reform {b['cv_median_reform']:.4f} (design weights: "
                f"{b['design_cv_median_baseline']:.4f}, {b['design_cv_median_reform']:.4f})"
            )
        lines += self.messages
        return "\n".join(lines)


# ---- evaluate -----------------------------------------------------------------------------------
def _ess_rows(name: str, data: SurfaceData, w: np.ndarray) -> pd.DataFrame:
    """Kish ESS of every slice cell under ``w``, over rows and over source households."""
    slices = _evaluation_slices(data, w)
    src = data.sources()
    parts = [
        pd.DataFrame({"dimension": s.name, "cell": list(s.labels), "weights": name,
                      "ess": kish_by_group(w, s.codes, len(s.labels)),
                      "source_ess": source_kish_by_group(w, s.codes, len(s.labels), src)})
        for s in slices
    ]
    return pd.concat(parts, ignore_index=True)


def evaluate(
    population: Survey | None,
    candidates: Mapping[str, Survey],
    targets: pd.DataFrame | None,
    *,
    reforms: Sequence[Mapping] = (),
    surface: Mapping | None = None,
    cap: float | None = None,
    penalty: float | None = None,
    baseline_of: str | None = "original",
    tol: float = 1e-8,
    max_iter: int = 200,
    bootstrap: int = 0,
    world_params: Mapping | None = None,
    rng: np.random.Generator | None = None,
    simulate: Callable[[Survey, Sequence[Mapping]], SurfaceData] | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Compare weight sets with the population's truth on the reporting surface.

    Args:
        population: the world's population (its weights are the truth's); ``None`` on a user's
            own file: then only the weight figures (ESS, largest weight, records, target fit) are
            reported.
        candidates: weight sets to score, name -> survey (its ``household_weight``), in report order.
        targets: the calibration targets (``targets.csv``); used for the target fit, the raked
            baseline and the bootstrap. ``None`` skips all three.
        reforms: the random reforms of the out-of-sample comparison (use a seed the loop did not).
        surface: keyword arguments of :func:`weightreg.diagnose.simulate_surface` (``metrics``,
            ``dimensions``, ``age_bands``, ``n_deciles``) for the default simulator.
        cap: the weight cap of the trimmed and raked baselines (and the bootstrap's calibration);
            ``None``: no cap for raking, and trimming at the 99.9th percentile of the original
            weights (reported as ``trim_cap``).
        baseline_of: the candidate the trimmed and raked baselines start from; ``None`` for none.
        penalty: ``None`` (the default) for exact (hard) KL calibration in the raked baseline and
            the bootstrap; a number for soft targets, as the final recalibration with ``penalty``.
        tol, max_iter: of the KL calibrations (:func:`weightreg.calibrate.calibrate`).
        bootstrap: re-drawn samples for the stability figure (0 to skip; at least 2 otherwise).
        world_params: the ``world`` section of params.yaml (the sampling design of the bootstrap).
        rng: the generator the bootstrap's samples are drawn from (needed when ``bootstrap > 0``).
        simulate: ``simulate(survey, reforms) -> SurfaceData``; by default
            :func:`weightreg.diagnose.simulate_surface` with ``surface``.
        progress: show progress bars.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ParameterError: an unknown ``baseline_of``, a bad ``bootstrap`` count, or no ``rng`` for it.
        CalibrationError: a raking problem that cannot work at all (not one that merely fails to
            converge: that is reported and its weights are used, flagged).
    """
    if not candidates:
        raise ParameterError("evaluate: no weight set to compare; pass at least one candidate survey")
    if baseline_of is not None and baseline_of not in candidates:
        raise ParameterError(
            f"evaluate: baseline_of={baseline_of!r} is not a candidate ({list(candidates)}); name one or pass None"
        )
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0 or bootstrap == 1:
        raise ParameterError(f"evaluate.bootstrap = {bootstrap!r} must be 0 (skip) or an integer of at least 2")
    run_bootstrap = bootstrap > 0 and population is not None and targets is not None
    if run_bootstrap and not isinstance(rng, np.random.Generator):
        raise ParameterError("evaluate: bootstrap > 0 needs rng=numpy.random.default_rng(seed)")
    reserved = {"trimmed", "raked"} & set(candidates) if baseline_of is not None else set()
    if reserved:
        raise ParameterError(f"evaluate: candidate name(s) {sorted(reserved)} are reserved for the baselines")
    if simulate is None:
        kwargs = dict(surface or {})

        def simulate(survey, reforms):
            return simulate_surface(survey, reforms=reforms, **kwargs)

    reforms = list(reforms) if population is not None else []  # without a truth only the slices matter
    messages: list[str] = []
    info: dict = {"truth_comparison": int(population is not None)}
    if cap is not None:
        info["cap"] = float(cap)
    if penalty is not None:
        info["penalty"] = float(penalty)

    # Weight sets: (survey, weights, key of the simulated surface they are scored on).
    sets: dict[str, tuple[Survey, np.ndarray, str]] = {n: (s, s.weights, n) for n, s in candidates.items()}
    extra: dict[str, dict] = {n: {} for n in candidates}
    if baseline_of is not None:
        original = candidates[baseline_of]
        trim_cap = float(cap) if cap is not None else float(np.percentile(original.weights, 100 * TRIM_QUANTILE))
        info["trim_cap"] = trim_cap
        sets["trimmed"] = (original, trim_weights(original.weights, trim_cap), baseline_of)
        extra["trimmed"] = {}
        if targets is not None:
            tm = build_target_matrix(original, targets)
            fit, n_dropped = _rake(original, tm.matrix, tm.values, tm.names, cap, tol, max_iter, penalty)
            sets["raked"] = (original, fit.weights, baseline_of)
            extra["raked"] = {"converged": int(fit.success), "iterations": int(fit.nit), "targets_dropped": n_dropped}
            if not fit.success:
                messages.append(f"raked: calibration did not converge; its weights are used anyway. {fit.message}")
            if n_dropped:
                messages.append(f"raked: {n_dropped} target(s) cannot be reached under cap={cap} and were left out")

    surveys: dict[str, Survey] = {key: candidates[key] for key in dict.fromkeys(v[2] for v in sets.values())}
    bar = tqdm(total=len(surveys) + (population is not None), desc="simulating", disable=not progress, leave=False)
    surfaces = {}
    for key, survey in surveys.items():
        surfaces[key] = simulate(survey, reforms)
        bar.update()
    truth = scale = None
    if population is not None:
        pop_data = simulate(population, reforms)
        truth = surface_statistics(pop_data, population.weights)
        scale = _metric_scale(pop_data, population.weights)
        bar.update()
    bar.close()

    matrices: dict[str, object] = {}
    summary: dict[str, dict] = {}
    ess_parts, error_parts = [], []
    for name, (survey, w, key) in sets.items():
        data = surfaces[key]
        totals = source_totals(w, data.sources())
        s: dict = {"n_sources": len(totals), "source_kish_ess": kish_ess(totals),
                   "max_source_weight": float(totals.max()) if len(totals) else 0.0,
                   "n_records": len(w), "kish_ess": kish_ess(w),
                   "max_weight": float(w.max()) if len(w) else 0.0, "total_weight": float(w.sum())}
        if targets is not None:
            if key not in matrices:
                matrices[key] = build_target_matrix(survey, targets)
            rel = matrices[key].relative_errors(w)
            s["max_rel_target_error"] = float(np.abs(rel).max()) if len(rel) else 0.0
        if truth is not None:
            errors = _rel_errors(truth, surface_statistics(data, w), scale)
            s.update(_error_summary(errors))
            error_parts.append(errors.assign(weights=name))
        s.update(extra.get(name, {}))
        summary[name] = s
        ess_parts.append(_ess_rows(name, data, w))

    errors_all = None
    if truth is not None:
        errors_all = pd.concat(error_parts, ignore_index=True)
        errors_all = errors_all[["weights"] + [c for c in errors_all.columns if c != "weights"]]
        first = errors_all[errors_all["weights"] == next(iter(sets))]
        info["n_reforms"] = len(reforms)
        for kind in KINDS:
            of_kind = first["statistic_kind"] == kind
            info[f"n_statistics_{kind}"] = int((of_kind & ~first["tiny"]).sum())
            info[f"n_skipped_{kind}"] = int((of_kind & first["tiny"]).sum())
        info["tiny"] = TINY

    boot = None
    if run_bootstrap:
        boot = _bootstrap(population, errors_all[errors_all["weights"] == next(iter(sets))], targets,
                          replicates=int(bootstrap), world_params=world_params, rng=rng, cap=cap, penalty=penalty, tol=tol,
                          max_iter=max_iter, simulate=simulate, reforms=reforms, progress=progress)
        if boot["converged"] < boot["replicates"]:
            messages.append(f"bootstrap: {boot['replicates'] - boot['converged']} replicate calibration(s) did not "
                            "converge; their weights are used anyway")
    return EvaluationResult(
        weight_sets=tuple(sets), summary=summary, errors=errors_all, ess=pd.concat(ess_parts, ignore_index=True),
        info=info, bootstrap=boot, messages=messages,
    )


# ---- the stage ----------------------------------------------------------------------------------
def _read_candidate(path, name: str, stage: str) -> Survey:
    from .policyengine_format import read_survey

    if not Path(path).exists():
        raise SurveyFormatError(f"{path}: no such file (the {name} weights); run `dvc repro {stage}` first")
    return read_survey(path)


def run_evaluate(
    population_path,
    survey_path,
    augmented_path,
    regularised_path,
    targets_path,
    params: dict,
    *,
    metrics_path="metrics/evaluate.json",
    plots_dir="plots/evaluate",
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate the pipeline's weight sets and write ``metrics_path`` and the plot CSVs.

    Reads ``evaluate.seed``, ``evaluate.reforms`` and ``evaluate.bootstrap`` (default 5), the
    ``cap``, ``recalibrate.tol``/``max_iter``, the ``surface`` and ``reforms`` (low/high) sections
    and the ``world`` section (the bootstrap's sampling design). ``augmented_path`` or
    ``regularised_path`` may be ``None`` to leave that weight set out. When ``population_path``
    does not exist (a user's own file) the truth comparison and the bootstrap are skipped and
    said so; the weight figures are still written.

    Writes ``metrics_path`` (:meth:`EvaluationResult.to_metrics`, plus ``reforms_out_of_sample``),
    and in ``plots_dir``: ``truth_error.csv``, ``ess_compare.csv``, ``worst_statistics.csv``.
    """
    from .atomic import write_csv, write_json
    from .runners import _surface_kwargs, reforms_from_params, simulate_surface_from_params
    from .params import get, positive
    from .policyengine_format import read_survey
    from .targets import read_targets

    section = get(params, "evaluate", {}) or {}
    seed = int(get(params, "evaluate.seed"))
    n_reforms = int(section.get("reforms", 16))
    if n_reforms < 0:
        raise ParameterError(f"{params.get('_path', 'params.yaml')}: param 'evaluate.reforms' = {n_reforms} must be >= 0")
    bootstrap = section.get("bootstrap", 5)
    bootstrap = 0 if bootstrap is None else bootstrap
    cap = positive(params, "cap", get(params, "cap", None), allow_none=True)
    penalty = positive(params, "penalty", get(params, "penalty", None), allow_none=True)
    recal = get(params, "recalibrate", {}) or {}
    tol = positive(params, "recalibrate.tol", recal.get("tol", 1e-8))
    max_iter = positive(params, "recalibrate.max_iter", recal.get("max_iter", 200), integer=True)
    loop_seed = get(params, "reforms.seed", None)
    out_of_sample = loop_seed is None or int(loop_seed) != seed
    if not out_of_sample:
        warnings.warn(f"evaluate.seed = reforms.seed = {seed}: the evaluation reforms are the loop's own, so the "
                      "comparison is in sample; choose another evaluate.seed", UserWarning, stacklevel=2)
    _surface_kwargs(params)  # validate the surface section before any work

    candidates = {"original": read_survey(survey_path)}
    if augmented_path is not None:
        candidates["augmented"] = _read_candidate(augmented_path, "augmented", "adversarial_loop")
    if regularised_path is not None:
        candidates["regularised"] = _read_candidate(regularised_path, "regularised", "recalibrate")
    targets = read_targets(targets_path, candidates["original"])
    population = None
    if Path(population_path).exists():
        population = read_survey(population_path)
    else:
        print(f"evaluate: {population_path} does not exist, so there is no truth to compare with; "
              "skipped the truth comparison and the bootstrap (weight figures only)")

    start = time.perf_counter()
    result = evaluate(
        population, candidates, targets,
        reforms=reforms_from_params(params, seed=seed, count=n_reforms),
        cap=cap, penalty=penalty, tol=tol, max_iter=max_iter, bootstrap=int(bootstrap),
        world_params=get(params, "world", None), rng=np.random.default_rng(seed),
        simulate=lambda survey, reforms: simulate_surface_from_params(survey, params, reforms=reforms),
        progress=progress,
    )
    metrics = result.to_metrics()
    metrics["reforms_out_of_sample"] = int(out_of_sample)
    write_json(metrics, metrics_path)
    plots_dir = Path(plots_dir)
    write_csv(result.truth_error_table(), plots_dir / "truth_error.csv")
    write_csv(result.ess[list(ESS_COLUMNS)], plots_dir / "ess_compare.csv")
    write_csv(result.worst_table(), plots_dir / "worst_statistics.csv")
    if progress:
        print(f"evaluate: {time.perf_counter() - start:.1f}s")
    return result
