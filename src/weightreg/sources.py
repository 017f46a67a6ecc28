"""Source households: count sampled households, not rows.

A row's *source* is the sampled household it descends from: itself for a household of the starting
survey, else its parent's source (following ``household_parent_id``). A parent and all its offspring
are one source: every estimate still rests on that one sampled household, however its weight is
split. Splitting a record into ``k`` near-copies lowers each row's influence and raises the row
Kish ESS without making any statistic less noisy, so every figure that counts households is also
computed over sources:

* the source ESS is Kish's ``(sum W)^2 / sum W^2`` over the source totals ``W_s = sum_{i in s} w_i``;
  per slice cell, over the totals of each source's rows *in that cell*;
* a source's influence on a statistic is the combined share of its rows
  (``sum_{i in s, i in c} |w_i x_i| / sum_{j in c} |w_j x_j|``).

Both are unchanged when a household is split into pieces that keep its values, and equal the row
figures on a survey without offspring.

Offspring record their source in ``household_source_id`` (written by
:func:`weightreg.offspring.spawn`), so the source survives the pruning of an intermediate offspring;
a file without that column (or with -1 in it) falls back to the parent chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import FeatureError
from .survey import PARENT_COLUMN, SOURCE_COLUMN, Survey

__all__ = [
    "SOURCE_COLUMN",
    "Sources",
    "source_ids",
    "sources_of",
    "source_totals",
    "source_kish_ess",
    "source_kish_by_group",
    "cell_pairs",
]


def _parent_chain_roots(household: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """Follow ``household_parent_id`` from ``ids`` up to a household with no parent (-1) or one
    that is not in the table."""
    if PARENT_COLUMN not in household:
        return ids.copy()
    parent = pd.Series(household[PARENT_COLUMN].to_numpy(dtype=np.int64),
                       index=household["household_id"].to_numpy(dtype=np.int64))
    roots = ids.copy()
    for _ in range(len(parent) + 1):  # a chain is at most one link per household
        up = parent.reindex(roots, fill_value=-1).to_numpy()
        step = up != -1
        if not step.any():
            return roots
        roots = np.where(step, up, roots)
    raise FeatureError(f"{PARENT_COLUMN} forms a cycle; a household cannot descend from itself")


def source_ids(survey: Survey, household_ids=None) -> np.ndarray:
    """The source household id of each household (all of them, in household order, by default).

    Args:
        survey: the survey.
        household_ids: ids to look up (each must be a household of ``survey``, or a parent id the
            chain reaches); ``None`` for every household in order.

    Returns:
        int64 ids: ``household_source_id`` where it is set (not -1), else the end of the
        ``household_parent_id`` chain, else the household itself.
    """
    household = survey.household
    all_ids = household["household_id"].to_numpy(dtype=np.int64)
    ids = all_ids if household_ids is None else np.asarray(household_ids).astype(np.int64)
    roots = _parent_chain_roots(household, ids)
    if SOURCE_COLUMN in household:
        recorded = pd.Series(household[SOURCE_COLUMN].to_numpy(dtype=np.int64), index=all_ids)
        rec = recorded.reindex(ids, fill_value=-1).to_numpy()
        roots = np.where(rec != -1, rec, roots)
    return roots


@dataclass(frozen=True, eq=False)
class Sources:
    """Each row's source as a dense code.

    Attributes:
        codes: shape (N,) intp source code of each row in ``0..n-1``.
        ids: shape (n,) the source household ids, sorted.
        trivial: every row is its own source (no offspring): source figures equal row figures.
    """

    codes: np.ndarray
    ids: np.ndarray
    trivial: bool

    @property
    def n(self) -> int:
        return len(self.ids)

    @classmethod
    def from_ids(cls, ids) -> Sources:
        ids = np.asarray(ids).astype(np.int64)
        uniq, codes = np.unique(ids, return_inverse=True)
        return cls(codes.astype(np.intp).ravel(), uniq, bool(len(uniq) == len(ids)))

    @classmethod
    def identity(cls, n: int) -> Sources:
        return cls(np.arange(n, dtype=np.intp), np.arange(n, dtype=np.int64), True)


def sources_of(survey: Survey) -> Sources:
    """:class:`Sources` of every household of ``survey``, in household order."""
    return Sources.from_ids(source_ids(survey))


def source_totals(weights, sources: Sources) -> np.ndarray:
    """``W_s``, the summed weight of each source's rows, shape (n,)."""
    w = np.asarray(weights, dtype=float)
    if w.shape != sources.codes.shape:
        raise ValueError(f"weights has shape {w.shape}, expected {sources.codes.shape}: one per row")
    return np.bincount(sources.codes, weights=w, minlength=sources.n)


def source_kish_ess(weights, sources: Sources) -> float:
    """Kish ESS over source totals: unchanged when a household is split into pieces."""
    from .influence import kish_ess

    return kish_ess(source_totals(weights, sources))


def cell_pairs(sources: Sources, codes, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (source, cell) pairs of the rows: each row's pair and each pair's cell.

    Args:
        sources: each row's source.
        codes: shape (N,) each row's cell in ``0..n_cells-1`` (callers drop or shift the rows in no cell).
        n_cells: number of cells.

    Returns:
        ``(pair_of_row, pair_cell)``: shape (N,) intp index of each row's pair, and shape (P,) intp
        cell of each pair (pairs in ascending (source, cell) order).
    """
    width = max(int(n_cells), 1)
    key = sources.codes.astype(np.int64) * width + np.asarray(codes, dtype=np.int64)
    uniq, inverse = np.unique(key, return_inverse=True)
    return inverse.ravel().astype(np.intp), (uniq % width).astype(np.intp)


def source_kish_by_group(weights, codes, n_groups: int, sources: Sources) -> np.ndarray:
    """Kish ESS of each group over the sources' totals within the group.

    A source whose rows fall in several cells of a dimension (an offspring in another income decile
    than its parent) counts in each with the weight of its rows there.

    Args:
        weights: shape (N,).
        codes: shape (N,) group of each row in ``0..n_groups-1``; -1 = in no group.
        n_groups: number of groups.
        sources: each row's source.

    Returns:
        Shape (n_groups,); 0 for a group without weight.
    """
    from .influence import kish_by_group

    w = np.asarray(weights, dtype=float)
    c = np.asarray(codes, dtype=np.int64)
    if sources.trivial:
        return kish_by_group(w, c, n_groups)
    inside = c >= 0
    pair_of, pair_cell = cell_pairs(Sources(sources.codes[inside], sources.ids, False), c[inside], n_groups)
    totals = np.bincount(pair_of, weights=w[inside], minlength=len(pair_cell))
    return kish_by_group(totals, pair_cell.astype(np.int64), n_groups)
