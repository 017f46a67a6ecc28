"""Influence bounds inside the calibration: no source household carries more than ``threshold`` of a statistic.

A statistic of the reporting surface is a weighted total of one metric (baseline, or a reform's change)
over one slice cell; a source household's influence on it is the combined share of its rows in the
statistic's absolute mass (:mod:`weightreg.diagnose`). For statistic ``k`` on cell ``C`` and source
``h`` the bound

    sum_{i in h, i in C} |x_ik| w_i  <=  threshold * sum_{i in C} |x_ik| w_i

is *linear* in the weights: ``g_k^T w <= 0`` with ``g_ik = |x_ik| (1[i in h] - threshold)`` on the
cell's rows. So it can be a constraint of the KL calibration (:func:`weightreg.calibrate.calibrate`'s
``inequalities``, solved on the dual by projected Newton), and the optimum is exact: the weights closest
to the prior in KL that meet the targets, the cap and every bound.

There are far too many (statistic, source) pairs to pose them all, and almost all hold with room to
spare, so :func:`calibrate_influence` uses a *working set*: calibrate; find the pairs above the
threshold on statistics that are not thin (fewer than ``1/threshold`` contributing sources: no
weights can bring every share under the threshold); add them; calibrate again; repeat until none is
left or ``max_rounds``. Bounds once added stay (a bound that no longer binds has multiplier 0).
Where the bounds and the targets conflict, soft targets (``penalty``) trade target error against
KL and every bound still holds; with hard targets the solve fails and says so. Cells of
``income_decile`` move with the weights (deciles are cut for the weights evaluated): each round's
new bounds use the cells of that round's weights, and the final check uses the final ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from .calibrate import CalibrationResult, calibrate
from .diagnose import SurfaceData, _evaluation_slices, _shares, _statistic_name, min_contributors
from .errors import CalibrationError
from .sources import Sources

__all__ = ["InfluenceBoundsResult", "calibrate_influence", "influence_violations", "bound_matrix"]

#: A pair counts as above the threshold when its share exceeds ``threshold * (1 + MARGIN)``: the
#: calibration meets each bound to its tolerance, so shares equal to the threshold are not new violations.
MARGIN = 1e-6


@dataclass(frozen=True, eq=False)
class InfluenceBoundsResult:
    """Outcome of :func:`calibrate_influence` (``OptimizeResult`` style).

    Attributes:
        weights: the calibrated weights, shape (N,).
        success: the last calibration converged and no (statistic, source) pair that is not thin is
            above the threshold at the final weights.
        message: what happened, with the numbers.
        nit: Newton iterations over all rounds.
        rounds: calibrations run (1 = no bound was ever needed).
        bounds: one row per bound posed: ``statistic``, ``source`` (code), ``share_before`` (when it
            was added), ``share_after``, ``multiplier`` (0: not binding at the optimum), ``round``.
        violations: the pairs still above the threshold at the final weights (same columns as
            :func:`influence_violations`); empty on success.
        calibration: the last :class:`weightreg.calibrate.CalibrationResult`.
    """

    weights: np.ndarray
    success: bool
    message: str
    nit: int
    rounds: int
    bounds: pd.DataFrame
    violations: pd.DataFrame
    calibration: CalibrationResult

    @property
    def n_bounds(self) -> int:
        return int(len(self.bounds))

    @property
    def n_binding(self) -> int:
        return int((self.bounds["multiplier"] > 0).sum()) if len(self.bounds) else 0


def influence_violations(data: SurfaceData, weights, threshold: float, sources: Sources | None = None,
                         margin: float = MARGIN) -> pd.DataFrame:
    """Every (statistic, source) pair above ``threshold`` on a statistic that is not thin by source.

    Returns one row per pair: ``batch`` (the statistic batch id of :mod:`weightreg.diagnose`),
    ``cell``, ``source`` (code in ``sources``), ``share``, ``statistic`` (readable name).
    """
    w = np.asarray(weights, dtype=float)
    src = data.sources() if sources is None else sources
    slices = _evaluation_slices(data, w)
    need = min_contributors(threshold)
    found = []
    for batch, _, _, _, s_share, s_thin, _ in _shares(data, w, slices, False, need, src):
        rows = np.flatnonzero(~s_thin & (s_share > threshold * (1 + margin)))
        if not rows.size:
            continue
        cells = slices[batch % len(slices)].codes[rows]
        # one share per (cell, source): every row of the source in the cell carries the source's share
        key, first = np.unique(np.stack([cells, src.codes[rows]]), axis=1, return_index=True)
        found.extend(zip([batch] * len(first), key[0].tolist(), key[1].tolist(), s_share[rows][first].tolist()))
    table = pd.DataFrame(found, columns=["batch", "cell", "source", "share"])
    table["statistic"] = [_statistic_name(data, slices, b, c) for b, c in zip(table["batch"], table["cell"])]
    return table


def _cell_columns(data: SurfaceData, w: np.ndarray, pairs: pd.DataFrame, src: Sources):
    """Two (N, K) matrices for ``pairs``: column k is ``|x_i|`` on the rows of its statistic's cell
    (cells as cut for ``w``), and the same on the source's rows only."""
    slices = _evaluation_slices(data, w)
    n, m, n_dims = data.n_records, len(data.metrics), len(slices)
    rows_all, cols_all, vals_all, own_all = [], [], [], []
    for k, (batch, cell, h) in enumerate(zip(pairs["batch"].tolist(), pairs["cell"].tolist(), pairs["source"].tolist())):
        d, i, surface = batch % n_dims, (batch // n_dims) % m, batch // (n_dims * m)
        values = data.baseline[i] if surface == 0 else data.deltas[surface - 1][i]
        rows = np.flatnonzero((slices[d].codes == cell) & (values != 0))
        rows_all.append(rows)
        cols_all.append(np.full(rows.size, k))
        vals_all.append(np.abs(values[rows]))
        own_all.append(src.codes[rows] == h)
    if not rows_all:
        empty = sp.csr_array((n, 0))
        return empty, empty
    rows, cols, vals = np.concatenate(rows_all), np.concatenate(cols_all), np.concatenate(vals_all)
    own = np.concatenate(own_all)
    shape = (n, len(rows_all))
    return (sp.csr_array((vals, (rows, cols)), shape=shape),
            sp.csr_array((vals[own], (rows[own], cols[own])), shape=shape))


def bound_matrix(data: SurfaceData, weights, pairs: pd.DataFrame, threshold: float,
                 sources: Sources | None = None) -> sp.csr_array:
    """The (N, K) matrix G of the bounds ``G^T w <= 0`` for ``pairs`` (rows of
    :func:`influence_violations`): column k is ``|x_i| (1[i in source_k] - threshold)`` on the rows of
    its statistic's cell (cells as cut for ``weights``)."""
    cell, own = _cell_columns(data, np.asarray(weights, dtype=float), pairs, data.sources() if sources is None else sources)
    return (own - threshold * cell).tocsr()


def calibrate_influence(data: SurfaceData, matrix, targets, prior, *, threshold: float = 0.05, penalty=None, cap=None,
                        bounds=None, groups=None, tol: float = 1e-8, max_iter: int = 200, max_rounds: int = 8,
                        max_new: int | None = None, target_names=None, progress: bool = False) -> InfluenceBoundsResult:
    """KL calibration with every source household's influence on every statistic that is not thin
    bounded by ``threshold`` (a working set of bounds; see the module docstring).

    Args:
        data: the reporting surface of the records being calibrated (same rows, same order); its
            ``source_id`` says which rows are one source household.
        matrix, targets, prior, penalty, cap, bounds, groups, tol, max_iter, target_names: as
            :func:`weightreg.calibrate.calibrate`.
        threshold: the largest share a source household may carry of a statistic, in (0, 1).
        max_rounds: calibrations at most (the first has no bounds).
        max_new: bounds added per round at most, the largest shares first (``None``: every pair
            above the threshold). Each bound is a dual variable of the Newton system, so on a
            survey with thousands of pairs above the threshold this trades rounds for time.
        progress: a progress bar over rounds.

    Raises:
        CalibrationError: bad input (as ``calibrate``), a threshold outside (0, 1), or ``data`` whose
            rows do not match ``prior``.
    """
    if not (0 < threshold < 1):
        raise CalibrationError(f"threshold must be in (0, 1), got {threshold}")
    if data.n_records != len(np.asarray(prior)):
        raise CalibrationError(f"the surface has {data.n_records} records but the prior {len(np.asarray(prior))}: "
                               "simulate the surface of the records being calibrated")
    if int(max_rounds) < 1:
        raise CalibrationError(f"max_rounds must be at least 1, got {max_rounds}")
    src = data.sources()
    kwargs = dict(penalty=penalty, cap=cap, bounds=bounds, groups=groups, tol=tol, max_iter=max_iter,
                  target_names=target_names)
    fit = calibrate(matrix, targets, prior, **kwargs)
    nit, rounds = fit.nit, 1
    posed = pd.DataFrame(columns=["batch", "cell", "source", "share", "statistic", "round"])
    G = None
    bar = tqdm(total=int(max_rounds), desc="influence bounds", disable=not progress, leave=False)
    bar.update()
    found = influence_violations(data, fit.weights, threshold, src)
    while len(found) and fit.success and rounds < max_rounds:
        new = found.assign(round=rounds)
        known = set(zip(posed["batch"], posed["cell"], posed["source"]))
        new = new[[k not in known for k in zip(new["batch"], new["cell"], new["source"])]]
        if not len(new):  # every pair above is already posed: its bound is met to tol, not better
            break
        if max_new is not None:
            new = new.sort_values("share", ascending=False, kind="stable").head(int(max_new))
        block = bound_matrix(data, fit.weights, new, threshold, src)
        G = block if G is None else sp.hstack([G, block], format="csr")
        posed = new if not len(posed) else pd.concat([posed, new], ignore_index=True)
        fit = calibrate(matrix, targets, prior, inequalities=G, **kwargs)
        nit += fit.nit
        rounds += 1
        bar.update()
        found = influence_violations(data, fit.weights, threshold, src)
    bar.close()
    table = posed.rename(columns={"share": "share_before"})[["statistic", "source", "share_before", "round"]]
    if len(posed):
        after = _pair_shares(data, fit.weights, posed, src)
        table = table.assign(share_after=after, multiplier=fit.inequality_multipliers)
    else:
        table = table.assign(share_after=[], multiplier=[])
    success = bool(fit.success and not len(found))
    worst = float(found["share"].max()) if len(found) else 0.0
    if success:
        message = (f"converged: every source household at most {threshold:g} of every statistic that is not thin; "
                   f"{len(posed)} bound(s) posed over {rounds} calibration(s), {int((table['multiplier'] > 0).sum())} "
                   f"binding; {fit.message}")
    elif not fit.success:
        message = f"the calibration with {len(posed)} influence bound(s) did not converge: {fit.message}"
    else:
        message = (f"{len(found)} (statistic, source) pair(s) still above {threshold:g} after {rounds} calibration(s) "
                   f"(largest share {worst:.3g}, on {found.loc[found['share'].idxmax(), 'statistic']}); raise "
                   f"max_rounds. {fit.message}")
    return InfluenceBoundsResult(weights=fit.weights, success=success, message=message, nit=int(nit), rounds=rounds,
                                 bounds=table.reset_index(drop=True), violations=found.reset_index(drop=True),
                                 calibration=fit)


def _pair_shares(data: SurfaceData, w: np.ndarray, pairs: pd.DataFrame, src: Sources) -> np.ndarray:
    """Each pair's source share of its statistic at ``w`` (cells as cut for ``w``)."""
    cell, own = _cell_columns(data, w, pairs, src)
    total, mine = np.asarray(cell.T @ w).ravel(), np.asarray(own.T @ w).ravel()
    return np.divide(mine, total, out=np.zeros(len(mine)), where=total > 0)
