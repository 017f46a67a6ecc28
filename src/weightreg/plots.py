"""The ``plot`` stage: PNG figures from the small CSVs the other stages write under ``plots/<stage>/``.

CSV contract. Producers write these files (UTF-8, header row, no index column, ``.`` decimals,
one row per line); every file is optional for the plot stage, which draws what it can and lists
what is missing. Column order is as listed; extra columns are ignored. ``household_id`` is the
survey's household id; ``weights`` names a weight vector, one of ``original`` (the survey as
given), ``augmented`` (after the adversarial loop adds offspring), ``regularised`` (the loop's
final weights), ``trimmed`` (capped), ``raked`` (the recalibrated final weights).

``plots/diagnose/weight_quantiles.csv``
    ``quantile``, ``weight``: the unweighted quantiles of the household weights (each household
    counts once) on the fixed grid :data:`QUANTILE_GRID` = 0, 0.01, ..., 0.99, 0.999, 1 (102 rows,
    ``numpy.quantile``'s default linear method). :func:`quantile_table` builds it. The figure plots
    whatever ``quantile`` values the file holds, so extra grid points draw correctly too.
``plots/diagnose/ess_by_slice.csv``
    ``dimension``, ``cell``, ``n_records``, ``ess``, ``weight_total``, and, when present,
    ``n_sources`` and ``source_ess`` (Kish ESS over source households, :mod:`weightreg.sources`):
    Kish ESS of every slice cell (``weightreg.diagnose.Diagnosis.ess_by_slice`` as is). A
    ``dimension`` of ``all`` is the whole population; a ``cell`` of ``(none)`` counts records in no
    cell (drawn as neither). The figure draws the source ESS as bars and the row ESS as ticks.
``plots/diagnose/top_offenders.csv``
    ``household_id``, ``weight``, ``max_influence``, ``worst_statistic``, ``violations``: the most
    influential households, most influential first.
``plots/diagnose/influence_scatter.csv``
    ``household_id``, ``weight``, ``max_influence``: every household with ``max_influence >
    threshold`` plus a seeded sample of up to 2,000 others, sorted by ``household_id``; and, when
    diagnose split its offenders, ``offender``: one of :data:`OFFENDER_KINDS` (the figure colours
    the offenders by it). :func:`scatter_table` builds it.
``plots/diagnose/influence_heatmap.csv``
    ``household_id``, ``statistic``, ``influence`` (long form): the top 20 households by
    ``max_influence`` x the top 20 statistics by their largest influence among those households.
    :func:`heatmap_table` builds it.
``plots/train_generator/loss.csv``
    ``epoch``, ``loss``.
``plots/adversarial_loop/trace.csv``
    ``iteration``, ``sources_above``, ``source_max_influence``, ``source_ess`` (source households:
    a parent and its offspring are one), ``records_above``, ``max_influence``, ``ess``,
    ``max_rel_target_error``, ``households_added``, ``households``: one row per loop iteration
    (iteration 0 = before the first round).
``plots/recalibrate/weight_quantiles.csv``
    ``quantile``, ``before``, ``after``: as the diagnose file, for the weights entering and leaving
    recalibration.
``plots/recalibrate/top_multipliers.csv``
    ``target``, ``multiplier``: the calibration targets with the largest multipliers
    ``exp(lambda)`` (furthest from 1 first).
``plots/evaluate/truth_error.csv``
    ``weights``, ``statistic_kind`` (``baseline`` | ``reform``), ``rmse``, ``median_abs_rel_error``,
    and, when present, ``mean_scaled_error``:
    error against the embedded world's truth.
``plots/evaluate/ess_compare.csv``
    ``dimension``, ``cell``, ``weights``, ``ess``, and, when present, ``source_ess``: Kish ESS of
    every slice cell under each weight vector, over rows and over source households.

Figures (``out_dir``, default ``plots/plot``): see :data:`FIGURES`. PNG bytes depend only on the
data (no timestamp or software tag), so an unchanged input leaves DVC's hash unchanged.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .errors import WeightregError

__all__ = [
    "QUANTILE_GRID",
    "WEIGHT_KINDS",
    "OFFENDER_KINDS",
    "FIGURES",
    "PlotInputError",
    "Rendered",
    "render_all",
    "quantile_table",
    "scatter_table",
    "offender_kinds",
    "heatmap_table",
    "main",
]

logger = logging.getLogger(__name__)

#: The quantile grid of the ``weight_quantiles.csv`` files: a percentile grid plus the extreme tail.
QUANTILE_GRID = np.concatenate([np.arange(100) / 100.0, [0.999, 1.0]])

#: The weight vectors, in pipeline order (the order of bars and legends).
WEIGHT_KINDS = ("original", "augmented", "regularised", "trimmed", "raked")

#: The ``offender`` column of ``influence_scatter.csv``: below the threshold, above it only on thin
#: statistics, above it even at equal weights (value-driven), above it because of the weight.
OFFENDER_KINDS = ("below threshold", "thin only", "value-driven", "weight-driven")

#: ESS levels drawn as reference lines: below 100 a cell's estimates are noisy; 500 is comfortable.
ESS_LINES = (100.0, 500.0)

_DIAGNOSE_ALL = "all"  # weightreg.diagnose.ALL: the whole-population "dimension"
_NO_CELL = "(none)"  # weightreg.diagnose.NO_CELL: records in no cell (ESS 0 by construction)


class PlotInputError(WeightregError, ValueError):
    """A ``plots/<stage>/*.csv`` file that exists but does not follow the CSV contract."""


class _NothingToDraw(Exception):
    """Raised by a drawer whose inputs exist but hold nothing it can show (the figure is skipped)."""


# --------------------------------------------------------------------------------------------
# Builders for producers: the contract as code, so every stage writes the same shapes.
# --------------------------------------------------------------------------------------------


def quantile_table(**weights) -> pd.DataFrame:
    """The ``weight_quantiles.csv`` table of one or more weight vectors.

    Args:
        **weights: column name -> household weights, e.g. ``weight=w`` (diagnose) or
            ``before=w0, after=w1`` (recalibrate). Vectors may differ in length.

    Returns:
        ``quantile`` (:data:`QUANTILE_GRID`) and one column per keyword, in keyword order.
    """
    if not weights:
        raise ValueError("quantile_table needs at least one weight vector, e.g. quantile_table(weight=w)")
    out = {"quantile": QUANTILE_GRID}
    for name, w in weights.items():
        w = np.asarray(w, dtype=float)
        if w.size == 0 or not np.isfinite(w).all():
            raise ValueError(f"quantile_table: weights {name!r} are empty or not all finite")
        out[name] = np.quantile(w, QUANTILE_GRID)
    return pd.DataFrame(out)


def scatter_table(household_id, weight, max_influence, *, threshold: float, rng: np.random.Generator,
                  n_others: int = 2000, offender=None) -> pd.DataFrame:
    """The ``influence_scatter.csv`` subsample: all records above ``threshold`` + a sample of others.

    Args:
        household_id, weight, max_influence: per-household arrays of equal length.
        threshold: records with ``max_influence > threshold`` are always kept.
        rng: draws the sample of the other records (without replacement).
        n_others: at most this many records at or below the threshold.
        offender: optional per-household labels from :data:`OFFENDER_KINDS` (see
            :func:`offender_kinds`), written as column ``offender``.

    Returns:
        ``household_id``, ``weight``, ``max_influence`` (and ``offender``), sorted by ``household_id``.
    """
    hid = np.asarray(household_id)
    w = np.asarray(weight, dtype=float)
    infl = np.asarray(max_influence, dtype=float)
    if not (hid.shape == w.shape == infl.shape) or hid.ndim != 1:
        raise ValueError(
            f"scatter_table: household_id, weight, max_influence must be 1-d of one length; got shapes "
            f"{hid.shape}, {w.shape}, {infl.shape}"
        )
    above = infl > threshold
    others = np.flatnonzero(~above)
    if others.size > n_others:
        others = rng.choice(others, size=n_others, replace=False)
    keep = np.union1d(np.flatnonzero(above), others)  # sorted, unique
    frame = pd.DataFrame({"household_id": hid[keep], "weight": w[keep], "max_influence": infl[keep]})
    if offender is not None:
        kinds = np.asarray(offender, dtype=object)
        if kinds.shape != hid.shape or not set(kinds.tolist()) <= set(OFFENDER_KINDS):
            raise ValueError(f"scatter_table: offender must hold one of {OFFENDER_KINDS} per household")
        frame["offender"] = kinds[keep]
    return frame.sort_values("household_id", kind="stable", ignore_index=True)


def offender_kinds(records: pd.DataFrame, threshold: float) -> np.ndarray | None:
    """Per record of a diagnosis table, its :data:`OFFENDER_KINDS` label; ``None`` when the table
    has no ``max_influence_equal_weights`` (diagnose did not split its offenders)."""
    if "max_influence_equal_weights" not in records:
        return None
    above = records["max_influence"].to_numpy() > threshold
    not_thin = records["max_influence_not_thin"].to_numpy() > threshold
    value = records["max_influence_equal_weights"].to_numpy() > threshold
    return np.select([~above, ~not_thin, value], list(OFFENDER_KINDS[:3]), OFFENDER_KINDS[3]).astype(object)


def heatmap_table(influence, household_id, statistic, *, n_records: int = 20, n_statistics: int = 20) -> pd.DataFrame:
    """The ``influence_heatmap.csv`` long table from a (records x statistics) influence matrix.

    Records are ranked by their largest influence on any statistic; statistics by their largest
    influence among the chosen records (so the columns are the ones that explain the rows).
    Ties keep the input order.

    Args:
        influence: array (N, S) of influence shares.
        household_id: (N,) ids of the rows.
        statistic: (S,) names of the columns.
        n_records, n_statistics: how many of each to keep.

    Returns:
        ``household_id``, ``statistic``, ``influence``; records in rank order, statistics in rank
        order within each record.
    """
    infl = np.asarray(influence, dtype=float)
    hid = np.asarray(household_id)
    stat = np.asarray(statistic)
    if infl.ndim != 2 or infl.shape != (hid.size, stat.size):
        raise ValueError(
            f"heatmap_table: influence must have shape (len(household_id), len(statistic)) = "
            f"({hid.size}, {stat.size}); got {infl.shape}"
        )
    rows = np.argsort(-np.nanmax(np.abs(infl), axis=1, initial=0.0), kind="stable")[:n_records]
    sub = infl[rows]
    cols = np.argsort(-np.nanmax(np.abs(sub), axis=0, initial=0.0), kind="stable")[:n_statistics]
    return pd.DataFrame(
        {
            "household_id": np.repeat(hid[rows], cols.size),
            "statistic": np.tile(stat[cols], rows.size),
            "influence": sub[:, cols].ravel(),
        }
    )


# --------------------------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------------------------

_TRACE_COLUMNS = ("iteration", "sources_above", "source_max_influence", "source_ess", "records_above", "max_influence",
                  "ess", "max_rel_target_error", "households_added", "households")

#: path under plots_dir -> (required columns, of which numeric)
SCHEMAS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "diagnose/weight_quantiles.csv": (("quantile", "weight"), ("quantile", "weight")),
    "diagnose/ess_by_slice.csv": (
        ("dimension", "cell", "n_records", "ess", "weight_total"),
        ("n_records", "ess", "weight_total"),
    ),
    "diagnose/top_offenders.csv": (
        ("household_id", "weight", "max_influence", "worst_statistic", "violations"),
        ("weight", "max_influence", "violations"),
    ),
    "diagnose/influence_scatter.csv": (("household_id", "weight", "max_influence"), ("weight", "max_influence")),
    "diagnose/influence_heatmap.csv": (("household_id", "statistic", "influence"), ("influence",)),
    "train_generator/loss.csv": (("epoch", "loss"), ("epoch", "loss")),
    "adversarial_loop/trace.csv": (_TRACE_COLUMNS, _TRACE_COLUMNS),
    "recalibrate/weight_quantiles.csv": (("quantile", "before", "after"), ("quantile", "before", "after")),
    "recalibrate/top_multipliers.csv": (("target", "multiplier"), ("multiplier",)),
    "evaluate/truth_error.csv": (
        ("weights", "statistic_kind", "rmse", "median_abs_rel_error"),
        ("rmse", "median_abs_rel_error"),
    ),
    "evaluate/ess_compare.csv": (("dimension", "cell", "weights", "ess"), ("ess",)),
}

# Text columns: read as strings so ids like "007" or cells like "10" keep their spelling.
_TEXT_COLUMNS = ("household_id", "dimension", "cell", "statistic", "worst_statistic", "target", "weights",
                 "statistic_kind")


def read_input(path, relative: str) -> pd.DataFrame:
    """Read one contract CSV and check its columns; ``relative`` is its key in :data:`SCHEMAS`."""
    path = Path(path)
    required, numeric = SCHEMAS[relative]
    stage = relative.split("/", 1)[0]
    fix = f"re-run the stage that writes it (dvc repro {stage}); the contract is in weightreg.plots' docstring"
    try:
        frame = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=False,
                            na_values=["", "nan", "NaN"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PlotInputError(f"{path}: not a readable CSV ({exc}); {fix}.") from exc
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise PlotInputError(
            f"{path}: missing column(s) {', '.join(absent)}; expected {', '.join(required)}; {fix}."
        )
    for col in numeric:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            raise PlotInputError(
                f"{path}: column {col!r} has non-numeric value {frame[col][bad].iloc[0]!r} "
                f"(row {int(np.flatnonzero(bad.to_numpy())[0]) + 2} of the file); {fix}."
            )
        frame[col] = values.astype(float)
    for col in required:
        if col not in numeric:
            frame[col] = frame[col].fillna("").astype(str)
    return frame


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float):
    # A bare Figure + Agg canvas: no pyplot, no global backend switch, no figure registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _ordered(values, preferred=()) -> list:
    """Unique values: those in ``preferred`` first in that order, then the rest as first seen."""
    seen = list(pd.unique(pd.Series(list(values), dtype=object)))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def _log_if_positive(ax, axis: str, values, nonpositive: str = "mask") -> None:
    # Bars need "clip": they start at 0, and "mask" would drop every bar on a log axis.
    values = np.asarray(values, dtype=float)
    if np.any(values > 0):
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log", nonpositive=nonpositive)


def _short(label: str, width: int = 40) -> str:
    # Cut the middle: statistic names start with the metric and end with baseline/reform k.
    if len(label) <= width:
        return label
    tail = (width - 1) // 3
    return label[: width - 1 - tail] + "\u2026" + label[len(label) - tail:]


def _fig_weight_distribution(data: dict, threshold):
    diag = data.get("diagnose/weight_quantiles.csv")
    recal = data.get("recalibrate/weight_quantiles.csv")
    series = []
    if diag is not None:
        series.append(("original (diagnose)", diag["quantile"], diag["weight"], "-"))
    if recal is not None:
        series.append(("before recalibration", recal["quantile"], recal["before"], "--"))
        series.append(("after recalibration", recal["quantile"], recal["after"], "-"))
    fig = _new_figure(11, 4.2)
    full, tail = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for label, q, w, style in series:
        full.plot(q, w, style, label=label, linewidth=1.6)
        top = q >= 0.9
        tail.plot(q[top], w[top], style, marker="o", markersize=3, label=label, linewidth=1.4)
    everything = np.concatenate([np.asarray(s[2], dtype=float) for s in series])
    for ax in (full, tail):
        _log_if_positive(ax, "y", everything)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("quantile of households")
    full.set_ylabel("household weight")
    full.set_title("Weight distribution (quantile function)")
    tail.set_title("Top 10% of weights")
    tail.set_xlim(0.895, 1.005)
    full.legend(loc="upper left", fontsize="small")
    return fig


def _fig_ess_by_slice(data: dict, threshold):
    diag = data.get("diagnose/ess_by_slice.csv")
    cmp_ = data.get("evaluate/ess_compare.csv")
    parts = []

    def with_sources(frame):  # files written before source ESS existed: the row ESS stands for it
        return frame.assign(source_ess=frame["source_ess"] if "source_ess" in frame else frame["ess"])

    if cmp_ is not None:
        parts.append(with_sources(cmp_)[["dimension", "cell", "weights", "source_ess", "ess"]])
    if diag is not None and (cmp_ is None or "original" not in set(cmp_["weights"])):
        parts.append(with_sources(diag)[["dimension", "cell", "source_ess", "ess"]].assign(weights="original"))
    long = pd.concat(parts, ignore_index=True)
    long = long[long["cell"] != _NO_CELL]
    overall = long[long["dimension"] == _DIAGNOSE_ALL].groupby("weights", sort=False)["source_ess"].first()
    if diag is not None and "original" not in overall.index:  # e.g. ess_compare has no "all" rows
        whole = with_sources(diag).loc[diag["dimension"] == _DIAGNOSE_ALL, "source_ess"]
        if len(whole):
            overall["original"] = whole.iloc[0]
    long = long[long["dimension"] != _DIAGNOSE_ALL]
    if long.empty:
        raise _NothingToDraw("no slice cells (only 'all' and '(none)' rows)")
    kinds = _ordered(long["weights"], WEIGHT_KINDS)
    dims = _ordered(long["dimension"])
    fig = _new_figure(11, 0.6 + 2.7 * max(len(dims), 1))
    axes = np.atleast_1d(fig.subplots(max(len(dims), 1), 1, squeeze=False)[:, 0])
    colours = {k: f"C{i}" for i, k in enumerate(kinds)}
    width = 0.8 / max(len(kinds), 1)
    for ax, dim in zip(axes, dims):
        sub = long[long["dimension"] == dim]
        cells = _ordered(sub["cell"])
        x = np.arange(len(cells))
        for i, kind in enumerate(kinds):
            of_kind = sub[sub["weights"] == kind].drop_duplicates("cell").set_index("cell")
            label = kind if kind not in overall.index else f"{kind} (overall source ESS {overall[kind]:,.0f})"
            at = x + (i - (len(kinds) - 1) / 2) * width
            ax.bar(at, of_kind["source_ess"].reindex(cells).to_numpy(), width, color=colours[kind],
                   label=label if ax is axes[0] else None)
            ax.scatter(at, of_kind["ess"].reindex(cells).to_numpy(), marker="_", s=60, color="black", zorder=3,
                       label="row ESS (ticks)" if ax is axes[0] and i == 0 else None)
        for level, style in zip(ESS_LINES, (":", "--")):
            ax.axhline(level, color="0.3", linestyle=style, linewidth=1,
                       label=f"ESS {level:g}" if ax is axes[0] else None)
        _log_if_positive(ax, "y", pd.concat([sub["ess"], sub["source_ess"]]), nonpositive="clip")
        ax.set_xticks(x, [_short(str(c), 18) for c in cells],
                      rotation=30 if len(cells) > 8 else 0, ha="right" if len(cells) > 8 else "center",
                      fontsize="small")
        ax.set_title(f"Kish ESS by {dim}: bars over source households, ticks over rows", fontsize="medium", loc="left")
        ax.set_ylabel("Kish ESS")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig


def _fig_influence_heatmap(data: dict, threshold):
    long = data["diagnose/influence_heatmap.csv"]
    grid = long.pivot_table(index="household_id", columns="statistic", values="influence", aggfunc="max", sort=False)
    rows = grid.max(axis=1).sort_values(ascending=False, kind="stable").index
    cols = grid.max(axis=0).sort_values(ascending=False, kind="stable").index
    grid = grid.loc[rows, cols]
    values = np.ma.masked_invalid(grid.to_numpy(dtype=float))
    fig = _new_figure(max(6.0, 1.8 + 0.32 * len(cols)), max(3.5, 2.8 + 0.26 * len(rows)))
    ax = fig.subplots()
    image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    title = "Influence of the top households on the top statistics"
    if threshold is not None:
        r, c = np.nonzero(values.filled(-np.inf) > threshold)
        ax.scatter(c, r, marker="s", s=30, facecolors="none", edgecolors="red", linewidths=1.0)
        title += f"\n(red squares: influence above the threshold {threshold:g})"
    ax.set_xticks(np.arange(len(cols)), [_short(str(c)) for c in cols], rotation=90, fontsize="x-small")
    ax.set_yticks(np.arange(len(rows)), [str(r) for r in rows], fontsize="x-small")
    ax.set_xlabel("statistic")
    ax.set_ylabel("household_id")
    ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=ax, label="influence (share of the statistic's |mass|)")
    return fig


def _fig_influence_scatter(data: dict, threshold):
    pts = data["diagnose/influence_scatter.csv"]
    top = data.get("diagnose/top_offenders.csv")
    fig = _new_figure(8, 5.5)
    ax = fig.subplots()
    w = pts["weight"].to_numpy()
    infl = pts["max_influence"].to_numpy()
    above = infl > threshold if threshold is not None else np.zeros(infl.size, bool)
    ax.scatter(w[~above], infl[~above], s=6, alpha=0.5, color="C0", linewidths=0, label="households (sample)")
    if above.any() and "offender" in pts:
        kinds = pts["offender"].astype(str).to_numpy()
        for kind, colour in zip(OFFENDER_KINDS[1:], ("C7", "C1", "C3")):
            mask = above & (kinds == kind)
            if mask.any():
                ax.scatter(w[mask], infl[mask], s=14, color=colour, linewidths=0, label=f"{kind} ({mask.sum():,})")
    elif above.any():
        ax.scatter(w[above], infl[above], s=14, color="C3", linewidths=0, label=f"above threshold ({above.sum():,})")
    if threshold is not None:
        ax.axhline(threshold, color="C3", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if top is not None and len(top):
        lead = top.sort_values("max_influence", ascending=False, kind="stable").head(5)
        ax.scatter(lead["weight"], lead["max_influence"], s=40, facecolors="none", edgecolors="k", linewidths=1)
        for i, row in enumerate(lead.itertuples(index=False)):
            if row.weight > 0 and row.max_influence > 0:  # staggered: top offenders often share a y
                ax.annotate(str(row.household_id), (row.weight, row.max_influence), xytext=(4, 4 - 9 * (i % 3)),
                            textcoords="offset points", fontsize="x-small")
    _log_if_positive(ax, "x", w)
    _log_if_positive(ax, "y", infl)
    hidden = int(((w <= 0) | (infl <= 0)).sum())
    note = f" ({hidden:,} with zero weight or influence not shown)" if hidden and ax.get_xscale() == "log" else ""
    ax.set_xlabel("household weight")
    ax.set_ylabel("max influence on any statistic")
    ax.set_title(f"Weight vs influence{note}", fontsize="medium")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def _fig_loop_convergence(data: dict, threshold):
    from matplotlib.ticker import MaxNLocator

    trace = data["adversarial_loop/trace.csv"].sort_values("iteration", kind="stable")
    it = trace["iteration"].to_numpy()
    fig = _new_figure(11, 6.5)
    axes = fig.subplots(2, 2, sharex=True)
    # Source households (a parent and its offspring are one) drawn solid; the same figure over rows dashed.
    panels = [
        (axes[0, 0], "source_max_influence", "max_influence", "max influence"),
        (axes[0, 1], "source_ess", "ess", "Kish ESS"),
        (axes[1, 0], "sources_above", "records_above", "households above threshold"),
        (axes[1, 1], "max_rel_target_error", None, "max relative target error"),
    ]
    for ax, col, row_col, label in panels:
        ax.plot(it, trace[col].to_numpy(), marker="o", markersize=3, linewidth=1.5, color="C0",
                label="source households" if row_col else label)
        if row_col:
            ax.plot(it, trace[row_col].to_numpy(), marker=".", markersize=3, linewidth=1.0, linestyle="--",
                    color="0.45", label="rows")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for col, label, color in (("sources_above_not_thin", "sources, not thin statistics", "C1"),
                              ("baseline_sources_above", "sources, baseline surface", "C4")):
        if col in trace:
            axes[1, 0].plot(it, trace[col].to_numpy(), marker="o", markersize=3, linewidth=1.2, color=color,
                            label=label)
    axes[0, 1].legend(fontsize="small", loc="lower right")
    axes[1, 0].legend(fontsize="small", loc="upper right")
    if threshold is not None:
        axes[0, 0].axhline(threshold, color="C3", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        axes[0, 0].legend(fontsize="small")
    added = axes[1, 0].twinx()
    added.bar(it, trace["households_added"].to_numpy(), width=0.5, alpha=0.25, color="C2", label="households added")
    added.set_ylabel("households added", color="C2")
    added.tick_params(axis="y", colors="C2")
    axes[1, 0].set_zorder(added.get_zorder() + 1)  # the line above the bars
    axes[1, 0].patch.set_visible(False)
    for ax in axes[1]:
        ax.set_xlabel("iteration")
    last = trace.iloc[-1]
    fig.suptitle(f"Adversarial loop: {len(trace)} iteration(s), {last['households']:,.0f} households at the end")
    return fig


def _grouped_bars(ax, frame: pd.DataFrame, value: str, kinds, groups) -> None:
    x = np.arange(len(kinds))
    width = 0.8 / max(len(groups), 1)
    for i, group in enumerate(groups):
        vals = frame[frame["statistic_kind"] == group].drop_duplicates("weights").set_index("weights")[value]
        bars = ax.bar(x + (i - (len(groups) - 1) / 2) * width, vals.reindex(kinds).to_numpy(), width,
                      label=group, color=f"C{i}")
        ax.bar_label(bars, fmt="%.3g", fontsize="x-small", padding=2)
    ax.set_xticks(x, kinds)
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.12)


def _fig_truth_error(data: dict, threshold):
    truth = data["evaluate/truth_error.csv"]
    kinds = _ordered(truth["weights"], WEIGHT_KINDS)
    groups = _ordered(truth["statistic_kind"], ("baseline", "reform"))
    values = ["rmse", "median_abs_rel_error"]
    labels = ["RMSE of relative error", "median |relative error|"]
    if "mean_scaled_error" in truth:
        values.append("mean_scaled_error")
        labels.append("mean |error| / metric total")
    fig = _new_figure(5.5 * len(values), 4.2)
    axes = fig.subplots(1, len(values))
    for ax, value, label in zip(axes, values, labels):
        _grouped_bars(ax, truth, value, kinds, groups)
        ax.set_ylabel(label)
        ax.set_title(f"{label} against the truth", fontsize="medium")
    axes[0].legend(title="statistics", fontsize="small")
    return fig


def _fig_generator_loss(data: dict, threshold):
    loss = data["train_generator/loss.csv"].sort_values("epoch", kind="stable")
    fig = _new_figure(7, 4)
    ax = fig.subplots()
    ax.plot(loss["epoch"], loss["loss"], marker="o", markersize=2, linewidth=1.4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Generator training loss")
    ax.grid(True, alpha=0.3)
    return fig


def _fig_top_multipliers(data: dict, threshold):
    mult = data["recalibrate/top_multipliers.csv"]
    fig = _new_figure(8, max(3.0, 1.0 + 0.28 * len(mult)))
    ax = fig.subplots()
    y = np.arange(len(mult))
    m = mult["multiplier"].to_numpy()
    ax.barh(y, m - 1.0, left=1.0, color=np.where(m >= 1.0, "C0", "C1"))  # bars grow from 1 (no change)
    ax.axvline(1.0, color="0.3", linewidth=1)
    positive = m[m > 0]
    if positive.size and positive.max() / positive.min() > 10:  # a log axis only when a linear one would squash
        _log_if_positive(ax, "x", m, nonpositive="clip")
    ax.set_yticks(y, [_short(t, 48) for t in mult["target"]], fontsize="x-small")
    ax.invert_yaxis()  # the file's first row on top
    ax.set_xlabel("calibration multiplier exp(lambda)")
    ax.set_title("Largest recalibration multipliers")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


@dataclass(frozen=True)
class FigureSpec:
    """One output PNG: its drawer, the inputs it needs, and whether any one of them is enough."""

    draw: Callable
    inputs: tuple[str, ...]
    need_all: bool = True
    optional: tuple[str, ...] = ()


#: PNG file name -> how it is drawn, in report order.
FIGURES: dict[str, FigureSpec] = {
    "weight_distribution.png": FigureSpec(
        _fig_weight_distribution, ("diagnose/weight_quantiles.csv", "recalibrate/weight_quantiles.csv"), need_all=False
    ),
    "ess_by_slice.png": FigureSpec(
        _fig_ess_by_slice, ("diagnose/ess_by_slice.csv", "evaluate/ess_compare.csv"), need_all=False
    ),
    "influence_heatmap.png": FigureSpec(_fig_influence_heatmap, ("diagnose/influence_heatmap.csv",)),
    "influence_scatter.png": FigureSpec(
        _fig_influence_scatter, ("diagnose/influence_scatter.csv",), optional=("diagnose/top_offenders.csv",)
    ),
    "loop_convergence.png": FigureSpec(_fig_loop_convergence, ("adversarial_loop/trace.csv",)),
    "truth_error.png": FigureSpec(_fig_truth_error, ("evaluate/truth_error.csv",)),
    "generator_loss.png": FigureSpec(_fig_generator_loss, ("train_generator/loss.csv",)),
    "top_multipliers.png": FigureSpec(_fig_top_multipliers, ("recalibrate/top_multipliers.csv",)),
}


class Rendered(list):
    """The PNG paths written (a ``list[Path]``), plus what could not be drawn.

    Attributes:
        missing: input CSVs that do not exist (sorted).
        skipped: PNG name -> why it was not drawn.
    """

    def __init__(self, paths=(), missing=(), skipped=None):
        super().__init__(paths)
        self.missing: list[Path] = sorted(missing)
        self.skipped: dict[str, str] = dict(skipped or {})


def _save_png(fig, path: Path, dpi: int) -> None:
    # No "Software" tag (its matplotlib version would change bytes across upgrades) and no time
    # stamp: identical data -> identical bytes -> DVC sees no change.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})


def render_all(plots_dir="plots", out_dir="plots/plot", *, threshold: float | None = None, dpi: int = 100,
               figures=None) -> Rendered:
    """Draw every figure of :data:`FIGURES` whose inputs exist under ``plots_dir``.

    Missing inputs are not an error: the figure is skipped, logged, and listed in the result, and a
    stale PNG of that name in ``out_dir`` is removed (so ``out_dir`` always matches its inputs).

    Args:
        plots_dir: the folder holding ``<stage>/*.csv`` (see the module docstring).
        out_dir: where the PNGs go (created if needed).
        threshold: the influence threshold (``params.yaml: threshold``), drawn as a line and used
            to colour records; None draws no threshold.
        dpi: resolution of the PNGs.
        figures: names from :data:`FIGURES` to draw (default: all); only their inputs are read.

    Returns:
        The PNG paths written, in :data:`FIGURES` order, with ``.missing`` and ``.skipped``.

    Raises:
        PlotInputError: an input exists but breaks the CSV contract (its message names the file,
            the column and the stage to re-run).
    """
    import matplotlib.style

    plots_dir, out_dir = Path(plots_dir), Path(out_dir)
    names = list(FIGURES) if figures is None else list(figures)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"render_all: unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    wanted = {r for n in names for r in (*FIGURES[n].inputs, *FIGURES[n].optional)}
    data: dict[str, pd.DataFrame] = {}
    missing: set[Path] = set()
    for relative in (r for r in SCHEMAS if r in wanted):
        path = plots_dir / relative
        if path.is_file():
            data[relative] = read_input(path, relative)
        else:
            missing.add(path)
    written, skipped = [], {}
    # The default style, whatever the user's matplotlibrc says: the same data draws the same
    # bytes on every machine with the same matplotlib (the context restores the globals after).
    with matplotlib.style.context("default"):
        for name in names:
            spec = FIGURES[name]
            have = [r for r in spec.inputs if r in data]
            absent = [r for r in spec.inputs if r not in data]
            empty = [r for r in have if data[r].empty]
            if (absent and spec.need_all) or not have or (empty and len(empty) == len(have)):
                why = (f"missing {', '.join(str(plots_dir / r) for r in absent)}" if absent
                       else f"no rows in {', '.join(str(plots_dir / r) for r in empty)}")
                skipped[name] = why
                logger.warning("plot %s skipped: %s", name, why)
                (out_dir / name).unlink(missing_ok=True)
                continue
            usable = {r: data[r] for r in (*spec.inputs, *spec.optional) if r in data and not data[r].empty}
            try:
                fig = spec.draw(usable, threshold)
            except _NothingToDraw as exc:
                skipped[name] = str(exc)
                logger.warning("plot %s skipped: %s", name, exc)
                (out_dir / name).unlink(missing_ok=True)
                continue
            _save_png(fig, out_dir / name, dpi)
            written.append(out_dir / name)
            if absent:
                logger.info("plot %s drawn without %s", name, ", ".join(str(plots_dir / r) for r in absent))
    return Rendered(written, missing, skipped)


def main(argv=None) -> int:
    """``python -m weightreg.plots [--plots-dir DIR] [--out-dir DIR] [--params FILE] [--figure NAME ...]``."""
    parser = argparse.ArgumentParser(prog="python -m weightreg.plots", description=__doc__.splitlines()[0])
    parser.add_argument("--plots-dir", default="plots", help="folder with <stage>/*.csv (default: plots)")
    parser.add_argument("--out-dir", default="plots/plot", help="where the PNGs go (default: plots/plot)")
    parser.add_argument("--params", default="params.yaml", help="params file for 'threshold' (default: params.yaml)")
    parser.add_argument("--threshold", type=float, default=None, help="influence threshold (overrides --params)")
    parser.add_argument("--figure", action="append", choices=list(FIGURES), help="draw only this figure (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    threshold = args.threshold
    if threshold is None and Path(args.params).exists():
        from .params import get, load_params

        threshold = get(load_params(args.params), "threshold", None)
    rendered = render_all(args.plots_dir, args.out_dir, threshold=threshold, figures=args.figure)
    for path in rendered:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
