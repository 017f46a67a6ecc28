"""Record influence and effective sample size: pure numerics on weights and values.

Nothing here knows about surveys. Every function is whole-array numpy and O(N) in the number of
records; the running-max :class:`InfluenceTracker` lets a caller scan any number of statistics
while holding only a few arrays of length N (never an N x statistics matrix).

Influence. A statistic here is a weighted total ``T_c = sum_{j in c} w_j x_j`` of a metric ``x``
over a slice cell ``c``. The influence of record ``i`` on it is its share of the statistic's
absolute weighted mass::

    influence_i = |w_i x_i| / sum_{j in c} |w_j x_j|       (0 where the cell's mass is 0)

which lies in [0, 1] and sums to 1 over a cell with positive mass. The seemingly more natural
``|w_i x_i| / |sum_{j in c} w_j x_j|`` (share of the *net* total) is not used because it is
unbounded as soon as values change sign, as reform deltas routinely do (some households gain, some
lose): a cell holding +100 and -99 has net total 1, so the first record would get an "influence"
of 100, and as the net total approaches 0 the ratio grows without bound. Such a number says the
total is fragile, not that one record dominates it, and it cannot be compared with a threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "kish_ess",
    "kish_by_group",
    "WeightSummary",
    "weight_summary",
    "cell_influence",
    "shares_from_mass",
    "InfluenceTracker",
]


def kish_ess(weights) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``.

    Equal weights give N; concentrating weight on few records lowers it towards 1.

    Returns:
        The ESS as a float; 0.0 when every weight is zero (or there are none).
    """
    w = np.asarray(weights, dtype=float)
    sq = float(np.dot(w, w))
    if sq == 0.0:
        return 0.0
    total = float(w.sum())
    return total * total / sq


def kish_by_group(weights, codes, n_groups: int) -> np.ndarray:
    """Kish ESS of each group, in one pass.

    Args:
        weights: shape (N,).
        codes: shape (N,) integer group of each record in ``0..n_groups-1``; ``-1`` puts a record
            in no group.
        n_groups: number of groups (groups without records get ESS 0).

    Returns:
        Array of shape (n_groups,).
    """
    w = np.asarray(weights, dtype=float)
    codes1 = _shifted_codes(codes, n_groups, len(w))
    total = np.bincount(codes1, weights=w, minlength=n_groups + 1)[1:]
    sq = np.bincount(codes1, weights=w * w, minlength=n_groups + 1)[1:]
    out = np.zeros(n_groups)
    np.divide(total * total, sq, out=out, where=sq > 0)
    return out


@dataclass(frozen=True)
class WeightSummary:
    """Distribution of a set of weights.

    Attributes:
        n: number of records.
        n_positive: records with a weight above zero.
        mean, median, p90, p99, max: of all weights (percentiles by linear interpolation).
        min_positive: smallest weight above zero (0.0 when none is).
        skewness: Fisher-Pearson coefficient ``m3 / m2**1.5`` (``scipy.stats.skew(bias=True)``);
            0.0 for constant weights, where it is 0/0.
        kish_ess: Kish effective sample size.
        kish_share: ``kish_ess / n``: 1 for equal weights, lower as weight concentrates.

    Every field is 0 for an empty set of weights, so the summary is always JSON-able.
    """

    n: int
    n_positive: int
    mean: float
    median: float
    p90: float
    p99: float
    max: float
    min_positive: float
    skewness: float
    kish_ess: float
    kish_share: float

    def as_dict(self) -> dict:
        """The fields as plain Python numbers."""
        return asdict(self)


def weight_summary(weights) -> WeightSummary:
    """Summarise ``weights`` (shape (N,)) as a :class:`WeightSummary`."""
    w = np.asarray(weights, dtype=float).ravel()
    n = len(w)
    if n == 0:
        return WeightSummary(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    positive = w[w > 0]
    mean = float(w.mean())
    dev = w - mean
    m2 = float(np.mean(dev * dev))
    m3 = float(np.mean(dev * dev * dev))
    # Constant weights make this 0/0; a symmetric (degenerate) distribution has zero skew.
    skew = m3 / m2**1.5 if m2 > 0 else 0.0
    p50, p90, p99 = np.percentile(w, [50, 90, 99])
    ess = kish_ess(w)
    return WeightSummary(
        n=int(n),
        n_positive=int(len(positive)),
        mean=mean,
        median=float(p50),
        p90=float(p90),
        p99=float(p99),
        max=float(w.max()),
        min_positive=float(positive.min()) if len(positive) else 0.0,
        skewness=float(skew),
        kish_ess=ess,
        kish_share=ess / n,
    )


def _shifted_codes(codes, n_cells: int, n: int) -> np.ndarray:
    """Validate ``codes`` (``-1..n_cells-1``) and return ``codes + 1`` as intp, so that slot 0 of a
    bincount collects the records in no cell."""
    c = np.asarray(codes)
    if c.shape != (n,):
        raise ValueError(f"codes has shape {c.shape}, expected ({n},): one cell code per record")
    if n_cells < 0:
        raise ValueError(f"n_cells must be >= 0, got {n_cells}")
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {c.dtype}")
    if n and (c.min() < -1 or c.max() >= n_cells):
        raise ValueError(
            f"codes must lie in -1..{n_cells - 1} (-1 = in no cell); found {int(c.min())}..{int(c.max())}"
        )
    return c.astype(np.intp) + 1


def shares_from_mass(mass: np.ndarray, codes1: np.ndarray, n_slots: int) -> np.ndarray:
    """Each record's share of its cell's total mass (the unchecked inner loop of
    :func:`cell_influence`).

    Args:
        mass: shape (N,), non-negative (``|w x|``).
        codes1: shape (N,) cell code **plus one** (0 = in no cell), intp.
        n_slots: number of cells plus one.

    Returns:
        Shape (N,) shares in [0, 1]; 0 for records in no cell or in a cell whose mass is 0.
    """
    totals = np.bincount(codes1, weights=mass, minlength=n_slots)
    totals[0] = 0.0  # records in no cell belong to no statistic
    denom = totals[codes1]
    out = np.zeros(len(mass))
    # A sum of non-negative floats is never below any of its terms, so shares never exceed 1.
    np.divide(mass, denom, out=out, where=denom > 0)
    return out


def cell_influence(values, weights, codes, n_cells: int) -> np.ndarray:
    """Each record's influence on the weighted total of ``values`` over its own cell.

    Influence is ``|w_i x_i| / sum_{j in cell(i)} |w_j x_j|``, the record's share of the cell's
    absolute weighted mass. Not ``|w_i x_i| / |sum_j w_j x_j|``: with values of both signs (reform
    deltas: gainers and losers) the net total can be tiny, so that ratio exceeds 1 and is unbounded
    (+100 and -99 give a total of 1 and an "influence" of 100), which no threshold can judge.

    Args:
        values: shape (N,) the metric (any sign).
        weights: shape (N,) record weights.
        codes: shape (N,) each record's cell in ``0..n_cells-1``; ``-1`` = in no cell (influence 0).
        n_cells: number of cells.

    Returns:
        Shape (N,) influence in [0, 1]; 0 in a cell whose absolute mass is 0.
    """
    x = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    if x.shape != w.shape or x.ndim != 1:
        raise ValueError(f"values {x.shape} and weights {w.shape} must be 1-D of the same length")
    codes1 = _shifted_codes(codes, n_cells, len(x))
    return shares_from_mass(np.abs(w * x), codes1, n_cells + 1)


class InfluenceTracker:
    """Running per-record maximum of influence over any number of statistics, in O(N) memory.

    Call :meth:`update` once per scanned batch of statistics (e.g. one metric over one slice
    dimension, where each record's share refers to its own cell's statistic).

    Attributes:
        max_influence: shape (N,) the largest share seen per record (0 before any update).
        argmax: shape (N,) the ``statistic_id`` of that largest share (-1 if none was positive).
            Ties keep the earliest update.
        violations: shape (N,) how many updates gave the record a share strictly above
            ``threshold``.
        n_updates: number of updates so far.
    """

    def __init__(self, n_records: int, threshold: float = 0.05):
        if n_records < 0:
            raise ValueError(f"n_records must be >= 0, got {n_records}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a share of a statistic, in [0, 1]; got {threshold}")
        self.threshold = float(threshold)
        self.max_influence = np.zeros(n_records)
        self.argmax = np.full(n_records, -1, dtype=np.int64)
        self.violations = np.zeros(n_records, dtype=np.int64)
        self.n_updates = 0

    def update(self, share, statistic_id) -> None:
        """Fold one batch of shares in.

        Args:
            share: shape (N,) each record's influence on the statistic(s) of this batch.
            statistic_id: an int naming the batch, or shape (N,) ints naming each record's
                statistic; stored in :attr:`argmax` where this batch sets a new maximum.
        """
        share = np.asarray(share, dtype=float)
        if share.shape != self.max_influence.shape:
            raise ValueError(f"share has shape {share.shape}, expected {self.max_influence.shape}")
        self.violations += share > self.threshold
        better = share > self.max_influence
        if np.ndim(statistic_id) == 0:
            np.putmask(self.argmax, better, int(statistic_id))
        else:
            ids = np.asarray(statistic_id)
            if ids.shape != share.shape:
                raise ValueError(f"statistic_id has shape {ids.shape}, expected a scalar or {share.shape}")
            self.argmax[better] = ids[better]
        np.maximum(self.max_influence, share, out=self.max_influence)
        self.n_updates += 1
