"""Diagnose a survey's weights: which households dominate which published-style statistics.

A *statistic* is a weighted total of one household-level metric (net income, income tax, UC, ...)
over one cell of a slice dimension (income decile, region, age band of the head, tenure) or over
the whole population. Statistics are scanned on several *surfaces*: the baseline values of each
metric, and, for each of K random parameter reforms, the per-household change the reform makes
(reform minus baseline), since costing reforms is what the data is used for and a record that is
harmless in a level can dominate a change. Each record's influence on a statistic is its share of
the statistic's absolute weighted mass (see :mod:`weightreg.influence`); the report keeps, per
record, the largest influence over all statistics, which statistic that was, and how many
statistics it exceeds a threshold on.

Work is split in two so a caller that only changes weights need not re-simulate:

* :func:`simulate_surface` runs the simulator (baseline + one run per reform) and returns a
  :class:`SurfaceData` holding per-household metric arrays and slice codes;
* :func:`evaluate_surface` scores any weights against it, in whole-array numpy: one
  ``np.bincount`` group-sum per (surface, metric, dimension), O(N) memory (never records x
  statistics).

:func:`diagnose` does both.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import ParameterError, SurveyValidationError
from .influence import (
    InfluenceTracker,
    WeightSummary,
    kish_by_group,
    shares_from_mass,
    weight_summary,
)
from .parameters import Parameters, load_parameters, random_reforms
from .sources import Sources, cell_pairs, source_ids, source_kish_by_group, source_totals
from .survey import REGIONS, TENURE_TYPES, Survey

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_DIMENSIONS",
    "DEFAULT_AGE_BANDS",
    "METRIC_INPUTS",
    "MetricDroppedWarning",
    "Slice",
    "SurfaceData",
    "Diagnosis",
    "diagnose",
    "simulate_surface",
    "evaluate_surface",
    "person_weighted_deciles",
    "age_band_codes",
    "age_band_labels",
]

#: Household-level metrics scanned by default (columns of ``SimulationResult.household``).
DEFAULT_METRICS: tuple[str, ...] = (
    "household_net_income",
    "income_tax",
    "national_insurance",
    "universal_credit",
    "child_benefit",
    "pension_credit",
    "housing_benefit",
    "state_pension",
    "employment_income",
    "self_employment_income",
)
#: Slice dimensions scanned by default (the whole population, ``all``, is always scanned too).
DEFAULT_DIMENSIONS: tuple[str, ...] = ("income_decile", "region", "age_band", "tenure_type")
#: Lower edges of the household head's age bands: 16-24, 25-34, ..., 65-74, 75+.
DEFAULT_AGE_BANDS: tuple[int, ...] = (16, 25, 35, 45, 55, 65, 75)
#: Metrics that are only meaningful when a person input column exists: without it the simulator
#: would report zeros, which would look like data rather than an absence.
METRIC_INPUTS: dict[str, str] = {
    "employment_income": "employment_income",
    "self_employment_income": "self_employment_income",
    "state_pension": "state_pension_reported",
}
#: The dimension name of the whole population.
ALL = "all"
#: The cell label, in ``ess_by_slice``, of records that fall in no cell of a dimension.
NO_CELL = "(none)"


class MetricDroppedWarning(UserWarning):
    """A requested metric or slice dimension cannot be computed on this file and was dropped."""


# ---- slices -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Slice:
    """One slice dimension: each household's cell.

    Attributes:
        name: the dimension (``region``).
        codes: shape (N,) int64 cell index into ``labels``; -1 = in no cell.
        labels: the cells' readable names.
    """

    name: str
    codes: np.ndarray
    labels: tuple[str, ...]


def age_band_labels(edges: Sequence[int]) -> tuple[str, ...]:
    """Readable labels for age bands with lower ``edges``: ``(16, 25, 75)`` -> 16-24, 25-74, 75+."""
    edges = [int(e) for e in edges]
    return tuple(f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])) + (f"{edges[-1]}+",)


def age_band_codes(ages, edges: Sequence[int]) -> np.ndarray:
    """Band index of each age for bands with lower ``edges`` (``[edges[k], edges[k+1])``, the last
    open-ended); -1 for ages below the first edge or missing."""
    a = np.asarray(ages, dtype=float)
    e = np.asarray(edges, dtype=float)
    codes = np.searchsorted(e, a, side="right").astype(np.int64) - 1
    codes[~np.isfinite(a)] = -1
    return codes


def _check_age_bands(edges) -> tuple[int, ...]:
    try:
        out = tuple(int(e) for e in edges)
        ok = len(out) >= 1 and all(float(e) == int(e) for e in edges)
    except (TypeError, ValueError):
        ok = False
    if not ok or any(b <= a for a, b in zip(out, out[1:])) or out[0] < 0:
        raise ParameterError(
            f"age_bands={edges!r} must be strictly increasing non-negative whole ages (lower band "
            f"edges), e.g. {DEFAULT_AGE_BANDS}"
        )
    return out


def person_weighted_deciles(income, weights, household_size, n_groups: int = 10) -> np.ndarray:
    """Quantile group of each household's (equivalised) income, cut points over persons.

    As in HBAI, people are ranked by their household's income and each person counts with the
    household's weight, so a household counts ``weight x household_size``. Cut point ``k`` is the
    lowest income at which at least ``k / n_groups`` of the weighted persons have that income or
    less (the inverted-CDF quantile); a household is in group ``k`` when ``cut_k < income <=
    cut_{k+1}``. A whole household takes one group, so when one household straddles a cut point it
    goes below it (on a tiny survey a top group can then be empty; on a real one it is one
    household in tens of thousands).

    Args:
        income: shape (N,); non-finite values are put in no group (-1).
        weights: shape (N,) household weights.
        household_size: shape (N,) persons per household.
        n_groups: number of groups (10 for deciles).

    Returns:
        Shape (N,) int64 group in ``0..n_groups-1`` (0 = poorest), -1 where undefined; all -1 when
        no household has positive person weight.
    """
    x = np.asarray(income, dtype=float)
    pw = np.asarray(weights, dtype=float) * np.asarray(household_size, dtype=float)
    codes = np.full(len(x), -1, dtype=np.int64)
    finite = np.isfinite(x)
    xs, ps = x[finite], pw[finite]
    order = np.argsort(xs, kind="stable")
    cum = np.cumsum(ps[order])
    if len(cum) == 0 or cum[-1] <= 0:
        return codes
    total = cum[-1]
    targets = total * np.arange(1, n_groups) / n_groups
    # Relative slack so float error in the cumulative sum cannot push a cut past an exact boundary.
    idx = np.searchsorted(cum, targets - 1e-9 * total, side="left")
    cuts = xs[order][np.minimum(idx, len(cum) - 1)]
    codes[finite] = np.searchsorted(cuts, xs, side="left")
    return codes


def _category_codes(values: pd.Series, categories: Sequence | None) -> tuple[np.ndarray, tuple[str, ...]]:
    if categories is None:
        categories = sorted(pd.unique(values.dropna()).tolist(), key=str)
    codes = pd.Categorical(values, categories=list(categories)).codes.astype(np.int64)
    return codes, tuple(str(c) for c in categories)


def _build_slices(
    survey: Survey,
    dimensions: Sequence[str],
    age_bands: Sequence[int],
    decile_income: np.ndarray,
    n_deciles: int,
) -> tuple[list[Slice], dict[str, str]]:
    """The requested slice dimensions; ones the file cannot support are dropped with a warning."""
    slices: list[Slice] = []
    dropped: dict[str, str] = {}
    household, person = survey.household, survey.person
    for name in dict.fromkeys(dimensions):
        if name == ALL:
            continue  # always scanned
        reason = None
        if name == "income_decile":
            codes = person_weighted_deciles(decile_income, survey.weights, survey.household_size(), n_deciles)
            labels = tuple(str(k + 1) for k in range(n_deciles))
        elif name == "age_band":
            if "age" not in person.columns:
                reason = "the survey has no person.age column to take the household head's age from"
            else:
                head = survey.household_head_index()
                age = pd.to_numeric(person["age"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                # The head's own age (never a sum or mean over members); -1 heads (no members) -> NaN.
                head_age = np.where(head >= 0, age[np.maximum(head, 0)], np.nan)
                codes = age_band_codes(head_age, age_bands)
                labels = age_band_labels(age_bands)
        elif name in ("region", "tenure_type"):
            if name not in household.columns:
                reason = f"the survey has no household.{name} column"
            else:
                cats = REGIONS if name == "region" else TENURE_TYPES
                codes, labels = _category_codes(household[name].astype("object"), cats)
        elif name in household.columns:
            codes, labels = _category_codes(household[name], None)
        else:
            raise ParameterError(
                f"unknown slice dimension {name!r}; use income_decile, region, age_band, tenure_type "
                "or the name of a household column"
            )
        if reason is not None:
            warnings.warn(f"diagnose: dropping slice dimension {name!r}: {reason}", MetricDroppedWarning, stacklevel=3)
            dropped[name] = reason
            continue
        slices.append(Slice(name, np.asarray(codes, dtype=np.int64), labels))
    return slices, dropped


# ---- surfaces ---------------------------------------------------------------------------------
@dataclass(eq=False)
class SurfaceData:
    """Per-household metric arrays for the baseline and each reform, plus slice codes.

    Built by :func:`simulate_surface`; may also be built directly from precomputed arrays.

    Attributes:
        household_id: shape (N,) ids, in household order.
        weights: shape (N,) the weights used when :func:`evaluate_surface` is given none.
        metrics: the M metric names (rows of ``baseline``).
        baseline: shape (M, N) baseline value of each metric per household.
        deltas: shape (K, M, N) change (reform minus baseline) per reform, metric, household.
        reforms: the K reform dicts.
        slices: the slice dimensions (the whole population is added at evaluation).
        decile_income: shape (N,) baseline equivalised net income; when set, the ``income_decile``
            slice is recomputed from it for the weights being evaluated (cut points over persons).
        household_size: shape (N,) persons per household (needed with ``decile_income``).
        n_deciles: the number of income groups.
        dropped_metrics: requested metrics left out, name -> reason.
        dropped_dimensions: requested dimensions left out, name -> reason.
        simulate_seconds: time spent simulating.
        source_id: shape (N,) the sampled household each row descends from
            (:func:`weightreg.sources.source_ids`); ``None``: every row is its own source.
    """

    household_id: np.ndarray
    weights: np.ndarray
    metrics: tuple[str, ...]
    baseline: np.ndarray
    deltas: np.ndarray
    reforms: tuple[dict, ...] = ()
    slices: tuple[Slice, ...] = ()
    decile_income: np.ndarray | None = None
    household_size: np.ndarray | None = None
    n_deciles: int = 10
    dropped_metrics: dict[str, str] = field(default_factory=dict)
    dropped_dimensions: dict[str, str] = field(default_factory=dict)
    simulate_seconds: float = 0.0
    source_id: np.ndarray | None = None

    @property
    def n_records(self) -> int:
        return len(self.household_id)

    def sources(self) -> Sources:
        """Each row's source household as a dense code (:class:`weightreg.sources.Sources`)."""
        if self.source_id is None:
            return Sources.identity(self.n_records)
        ids = np.asarray(self.source_id)
        if ids.shape != (self.n_records,):
            raise ValueError(f"source_id has shape {ids.shape}, expected ({self.n_records},): one per household")
        return Sources.from_ids(ids)


def _metric_values(
    name: str, result, survey: Survey, person_household: np.ndarray
) -> tuple[np.ndarray | None, bool, str | None]:
    """(values, simulated?, reason-if-dropped) of one metric from a baseline simulation result."""
    required = METRIC_INPUTS.get(name)
    if required is not None and (required in result.missing_inputs or required not in survey.person.columns):
        return None, False, (
            f"its input column person.{required} is absent from the survey, so it would be all zeros"
        )
    if name in result.household.columns:
        return result.household[name].to_numpy(dtype=float), True, None
    for table, values in (("household", survey.household), ("person", survey.person)):
        if name in values.columns:
            col = pd.to_numeric(values[name], errors="coerce")
            if col.isna().all() and values[name].notna().any():
                return None, False, f"{table}.{name} is not numeric"
            arr = col.to_numpy(dtype=float, na_value=0.0)
            if table == "person":  # a person column counts as its household total
                arr = np.bincount(person_household, weights=arr, minlength=survey.n_households)
            return arr, False, None
    return None, False, (
        "it is neither a simulated household variable "
        f"({', '.join(result.household.columns)}) nor a household or person column of the survey"
    )


def _check_finite(name: str, values: np.ndarray, survey: Survey, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        ids = survey.household_ids[bad][:10].tolist()
        raise SurveyValidationError(
            [f"{what} {name} is not finite for {int(bad.sum())} household(s): household_id {ids}; "
             "check their input amounts"],
            survey.source,
        )


def simulate_surface(
    survey: Survey,
    metrics: Sequence[str] = DEFAULT_METRICS,
    reforms: Sequence[Mapping] = (),
    parameters: Parameters | None = None,
    *,
    dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
    age_bands: Sequence[int] = DEFAULT_AGE_BANDS,
    n_deciles: int = 10,
    progress: bool = False,
    sweep=None,
) -> SurfaceData:
    """Simulate the baseline and each reform and collect per-household metric arrays.

    A metric that cannot be computed on this file (its input column is absent, or its name is
    neither simulated nor a survey column) is dropped with a :class:`MetricDroppedWarning` and
    recorded in ``dropped_metrics``; likewise a slice dimension whose column is absent.

    Args:
        survey: the survey.
        metrics: household metrics: simulated household variables, else numeric household columns,
            else numeric person columns (summed per household); the latter two do not respond to
            reforms.
        reforms: reform dicts (see :meth:`Parameters.apply_reform`).
        parameters: baseline parameters (the packaged ones when ``None``).
        dimensions: slice dimensions: ``income_decile``, ``region``, ``age_band``,
            ``tenure_type``, or any household column (its distinct values are the cells).
        age_bands: lower edges of the head's age bands.
        n_deciles: number of person-weighted income groups.
        progress: show a progress bar over reforms.
        sweep: run the reforms as Dask tasks (:mod:`weightreg.sweep`): a
            :class:`~weightreg.sweep.SweepSettings` or a ``distributed.Client``. ``None`` (the
            default) runs them one after another in this process. The results are identical.

    Raises:
        ParameterError: a reform fails to apply (naming it), an unknown dimension, bad
            ``age_bands``/``n_deciles``, duplicate metrics, or no computable metric left.
        SurveyValidationError: a metric is not finite for some households.
    """
    from .simulate import prepare_inputs, simulate  # late: the simulator is heavier than this module

    start = time.perf_counter()
    metrics = list(metrics)
    if len(set(metrics)) != len(metrics):
        dup = sorted({m for m in metrics if metrics.count(m) > 1})
        raise ParameterError(f"metrics lists {dup} more than once; give each metric once")
    if isinstance(n_deciles, bool) or not isinstance(n_deciles, (int, np.integer)) or n_deciles < 1:
        raise ParameterError(f"n_deciles={n_deciles!r} must be a positive integer (10 for deciles)")
    age_bands = _check_age_bands(age_bands)
    params = load_parameters() if parameters is None else parameters
    if not isinstance(params, Parameters):
        raise TypeError(f"parameters must be a Parameters object, got {type(params).__name__}")
    reforms = [dict(r) for r in reforms]
    # Apply every reform before simulating anything, so a bad one fails fast (never skipped).
    reformed = []
    for k, reform in enumerate(reforms):
        try:
            reformed.append(params.apply_reform(reform))
        except ParameterError as exc:
            raise ParameterError(f"reform {k} ({reform!r}) failed to apply: {exc}") from None

    inputs = prepare_inputs(survey)  # read the tables and build index maps once, not per reform
    base = simulate(inputs, parameters=params)
    ph = survey.person_household_index()
    used: list[str] = []
    rows: list[np.ndarray] = []
    simulated: list[bool] = []
    dropped: dict[str, str] = {}
    for name in metrics:
        values, is_sim, reason = _metric_values(name, base, survey, ph)
        if reason is not None:
            warnings.warn(f"diagnose: dropping metric {name!r}: {reason}", MetricDroppedWarning, stacklevel=2)
            dropped[name] = reason
            continue
        _check_finite(name, values, survey, "baseline metric")
        used.append(name)
        rows.append(values)
        simulated.append(is_sim)
    if not used:
        raise ParameterError(
            f"no metric can be computed on this survey (dropped: {dropped}); choose metrics from "
            f"{list(DEFAULT_METRICS)} whose input columns the file has"
        )
    if "equivalised_household_net_income" not in base.household.columns:
        raise SurveyValidationError(["the simulator returned no equivalised_household_net_income"], survey.source)
    decile_income = base.household["equivalised_household_net_income"].to_numpy(dtype=float)
    slices, dropped_dims = _build_slices(survey, dimensions, age_bands, decile_income, int(n_deciles))

    n, m = survey.n_households, len(used)
    baseline = np.vstack(rows) if rows else np.zeros((0, n))
    deltas = np.zeros((len(reforms), m, n))
    sim_rows = [i for i, s in enumerate(simulated) if s]
    if sweep is not None and reformed:
        from .sweep import SweepSettings, builtin_reform_results

        where = {"settings": sweep} if isinstance(sweep, SweepSettings) else {"client": sweep}
        outcomes = builtin_reform_results(inputs, reformed, [used[i] for i in sim_rows], progress=progress, **where)
    else:
        outcomes = (simulate(inputs, parameters=p).household for p in tqdm(reformed, desc="reforms", disable=not progress))
    for k, result in enumerate(outcomes):
        for i in sim_rows:
            values = np.asarray(result[used[i]], dtype=float)
            _check_finite(used[i], values, survey, f"reform {k} metric")
            np.subtract(values, baseline[i], out=deltas[k, i])
    return surface_data(survey, used, baseline, deltas, reforms, slices, decile_income, n_deciles, dropped,
                        dropped_dims, start)


def surface_data(survey, used, baseline, deltas, reforms, slices, decile_income, n_deciles, dropped, dropped_dims,
                 start: float) -> SurfaceData:
    """A :class:`SurfaceData` for ``survey`` (ids, weights and sizes from it; time since ``start``)."""
    return SurfaceData(
        household_id=survey.household_ids.copy(),
        weights=survey.weights,
        metrics=tuple(used),
        baseline=baseline,
        deltas=deltas,
        reforms=tuple(reforms),
        slices=tuple(slices),
        decile_income=decile_income,
        household_size=survey.household_size().astype(float),
        n_deciles=int(n_deciles),
        dropped_metrics=dropped,
        dropped_dimensions=dropped_dims,
        simulate_seconds=time.perf_counter() - start,
        source_id=source_ids(survey),
    )


# ---- the report -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Diagnosis:
    """What :func:`diagnose` / :func:`evaluate_surface` report.

    Attributes:
        records: one row per household, in household order: ``household_id``, ``weight``,
            ``max_influence`` (largest share of any statistic), ``worst_statistic`` (that
            statistic, ``metric|dimension=cell|baseline`` or ``...|reform k`` with ``k`` an index
            into ``reforms``; ``metric|all|...`` for the whole population; empty when the record
            influences nothing), ``violations`` (statistics on which its share exceeds
            ``threshold``).
        kish: summary of the weights.
        ess_by_slice: ``dimension``, ``cell``, ``n_records``, ``ess``, ``weight_total`` for the whole
            population (``all``) and every cell (a ``(none)`` row counts records in no cell).
        metrics_used: the metrics scanned.
        dropped_metrics: requested metrics left out, name -> reason.
        dropped_dimensions: requested slice dimensions left out, name -> reason.
        n_above: households whose ``max_influence`` exceeds ``threshold``.
        max_influence: the largest influence of any household on any statistic.
        worst_statistic: the statistic on which it occurs.
        worst_household_id: the household it belongs to (None when nothing has influence).
        reforms: the reform dicts, in order.
        threshold: the influence threshold.
        n_statistics: statistics scanned (surfaces x metrics x cells, whole population included).
        n_thin_statistics: statistics with fewer than ``1 / threshold`` contributing records (non-zero
            value). In such a cell some record's share is at least ``1 / n > threshold`` whatever
            the weights: no reweighting can fix it, only more contributing households can.
        n_above_thin_only: households above the threshold only on thin statistics (their
            ``max_influence_not_thin`` in ``records`` is at most ``threshold``).
        n_above_value_driven: of the households above the threshold on a statistic that is not thin,
            those still above it with every weight alike (``max_influence_equal_weights`` in
            ``records``, over statistics that are not thin): their own values dominate the cell, so
            spreading weight cannot fix them; only more households in the cell (or a lower weight
            for them alone) can. The rest of those households are *weight-driven*: their weight
            makes them offenders, and splitting or capping it fixes them. ``None`` unless
            :func:`evaluate_surface` ran with ``equal_weights=True``.
        sources: one row per *source* household (:mod:`weightreg.sources`: the sampled household a
            row descends from; a parent and its offspring are one source): ``source_id``, ``rows``,
            ``weight`` (its rows' total), ``max_influence`` (the largest combined share of its rows
            in any statistic), ``max_influence_not_thin`` (statistics with at least ``1 / threshold``
            contributing sources), ``worst_statistic`` and, with ``equal_weights``,
            ``max_influence_equal_weights`` (every source at the same total weight).
        source_kish: summary of the source totals (Kish ESS over sources).
        n_above_sources, n_above_thin_only_sources, n_above_value_driven_sources: as the row
            counts, over sources (``n_above_weight_driven_sources`` and ``n_above_not_thin_sources``
            follow). On a survey without offspring they equal the row counts.
        n_thin_statistics_sources: statistics with fewer than ``1 / threshold`` contributing sources.
        max_influence_source, worst_statistic_source, worst_source_id: the largest source share.
        timings: seconds spent ``simulate_s`` and ``influence_s`` (not in :meth:`to_metrics`: they
            vary run to run).
    """

    records: pd.DataFrame
    kish: WeightSummary
    ess_by_slice: pd.DataFrame
    metrics_used: tuple[str, ...]
    dropped_metrics: dict[str, str]
    dropped_dimensions: dict[str, str]
    n_above: int
    max_influence: float
    worst_statistic: str
    worst_household_id: object
    reforms: tuple[dict, ...]
    threshold: float
    n_statistics: int
    timings: dict[str, float] = field(default_factory=dict)
    n_thin_statistics: int = 0
    n_above_thin_only: int = 0
    n_above_value_driven: int | None = None
    sources: pd.DataFrame | None = None
    source_kish: WeightSummary | None = None
    n_above_sources: int = 0
    n_above_thin_only_sources: int = 0
    n_above_value_driven_sources: int | None = None
    n_thin_statistics_sources: int = 0
    max_influence_source: float = 0.0
    worst_statistic_source: str = ""
    worst_source_id: object = None

    @property
    def n_above_weight_driven(self) -> int | None:
        """Households above the threshold on a statistic that is not thin but not at equal weights."""
        if self.n_above_value_driven is None:
            return None
        return self.n_above - self.n_above_thin_only - self.n_above_value_driven

    @property
    def n_above_weight_driven_sources(self) -> int | None:
        """Source households above the threshold on a statistic that is not thin, but not at equal weights."""
        if self.n_above_value_driven_sources is None:
            return None
        return self.n_above_sources - self.n_above_thin_only_sources - self.n_above_value_driven_sources

    @property
    def n_above_not_thin_sources(self) -> int:
        """Source households above the threshold on some statistic that is not thin."""
        return self.n_above_sources - self.n_above_thin_only_sources

    def to_metrics(self) -> dict:
        """Numbers only, JSON-able and deterministic for the same inputs (for DVC metrics)."""
        cells = self.ess_by_slice[(self.ess_by_slice["dimension"] != ALL) & (self.ess_by_slice["cell"] != NO_CELL)]
        populated = cells[cells["n_records"] > 0]
        sk = self.source_kish
        out = {
            # Source households first: a parent and its offspring are one sampled household.
            "sources": int(sk.n),
            "source_ess": float(sk.kish_ess),
            "source_ess_share": float(sk.kish_share),
            "sources_above_threshold": int(self.n_above_sources),
            "sources_above_threshold_not_thin": int(self.n_above_not_thin_sources),
            "sources_above_threshold_thin_only": int(self.n_above_thin_only_sources),
            **(
                {}
                if self.n_above_value_driven_sources is None
                else {
                    "sources_above_threshold_value_driven": int(self.n_above_value_driven_sources),
                    "sources_above_threshold_weight_driven": int(self.n_above_weight_driven_sources),
                }
            ),
            "source_max_influence": float(self.max_influence_source),
            "thin_statistics_sources": int(self.n_thin_statistics_sources),
            "min_slice_source_ess": float(populated["source_ess"].min()) if len(populated) else 0.0,
            "max_source_weight": float(sk.max),
            "records": int(len(self.records)),
            "ess": float(self.kish.kish_ess),
            "ess_share": float(self.kish.kish_share),
            "records_above_threshold": int(self.n_above),
            "max_influence": float(self.max_influence),
            "threshold": float(self.threshold),
            "violations_total": int(self.records["violations"].sum()),
            "n_metrics": len(self.metrics_used),
            "n_dropped_metrics": len(self.dropped_metrics),
            "n_reforms": len(self.reforms),
            "n_statistics": int(self.n_statistics),
            "thin_statistics": int(self.n_thin_statistics),
            "records_above_threshold_not_thin": int(self.n_above - self.n_above_thin_only),
            "records_above_threshold_thin_only": int(self.n_above_thin_only),
            **(
                {}
                if self.n_above_value_driven is None
                else {
                    "records_above_threshold_value_driven": int(self.n_above_value_driven),
                    "records_above_threshold_weight_driven": int(self.n_above_weight_driven),
                }
            ),
            "min_slice_ess": float(populated["ess"].min()) if len(populated) else 0.0,
            "empty_slices": int((cells["n_records"] == 0).sum()),
        }
        for key, value in self.kish.as_dict().items():
            out[f"weight_{key}"] = value
        return out

    def summary_text(self, top: int = 20) -> str:
        """A plain-text report: weight summary, the ``top`` most influential households with their
        worst statistic, and the ``top`` thinnest slices by ESS."""
        k, sk = self.kish, self.source_kish
        lines = [
            f"Source households (a parent and its offspring are one sampled household): {sk.n:,}; Kish ESS over "
            f"sources {sk.kish_ess:,.1f}; {self.n_above_sources:,} above the threshold {self.threshold:g} "
            f"({self.n_above_not_thin_sources:,} on statistics that are not thin); max source influence "
            f"{self.max_influence_source:.4f} (source {self.worst_source_id}, {self.worst_statistic_source or '-'})",
            f"Weights: {k.n} households ({k.n_positive} positive); mean {k.mean:,.1f}, median {k.median:,.1f}, "
            f"p90 {k.p90:,.1f}, p99 {k.p99:,.1f}, max {k.max:,.1f}, min positive {k.min_positive:,.3g}; "
            f"skewness {k.skewness:.2f}",
            f"Kish ESS: {k.kish_ess:,.1f} ({k.kish_share:.1%} of records)",
            f"Scanned {self.n_statistics:,} statistics: {len(self.metrics_used)} metrics x "
            f"(baseline + {len(self.reforms)} reforms) x slices",
            f"Households above influence threshold {self.threshold:g}: {self.n_above:,}; "
            f"max influence {self.max_influence:.4f} (household {self.worst_household_id}, {self.worst_statistic or '-'})",
            f"Of those, {self.n_above_thin_only:,} exceed it only on thin statistics (fewer than "
            f"{min_contributors(self.threshold)} contributing households: {self.n_thin_statistics:,} such statistics), "
            "which no reweighting can fix",
        ]
        if self.n_above_value_driven is not None:
            lines.append(
                f"Of the {self.n_above - self.n_above_thin_only:,} above it on statistics that are not thin, "
                f"{self.n_above_weight_driven:,} are weight-driven (at or below it with every weight alike: "
                f"splitting or capping their weight fixes them) and {self.n_above_value_driven:,} value-driven "
                "(above it even at equal weights: their values dominate the cell)"
            )
        if self.n_above_value_driven_sources is not None:
            lines.append(
                f"By source: of the {self.n_above_not_thin_sources:,} source households above it on statistics that are "
                f"not thin, {self.n_above_weight_driven_sources:,} are weight-driven and "
                f"{self.n_above_value_driven_sources:,} value-driven"
            )
        for what, dropped in (("metric", self.dropped_metrics), ("dimension", self.dropped_dimensions)):
            for name, reason in dropped.items():
                lines.append(f"Dropped {what} {name}: {reason}")
        recs = self.records.sort_values("max_influence", ascending=False, kind="stable").head(top)
        lines += ["", f"Top {len(recs)} households by influence:"]
        lines.append(f"{'household_id':>14} {'weight':>12} {'max_infl':>9} {'violations':>10}  worst statistic")
        for row in recs.itertuples(index=False):
            lines.append(
                f"{str(row.household_id):>14} {row.weight:>12,.1f} {row.max_influence:>9.4f} "
                f"{row.violations:>10d}  {row.worst_statistic or '-'}"
            )
        thin = self.ess_by_slice[self.ess_by_slice["cell"] != NO_CELL].sort_values("ess", kind="stable").head(top)
        lines += ["", f"Thinnest {len(thin)} slices by Kish ESS:"]
        lines.append(f"{'dimension':>14} {'cell':>20} {'records':>8} {'ess':>10} {'weight total':>16}")
        for row in thin.itertuples(index=False):
            lines.append(
                f"{row.dimension:>14} {row.cell:>20} {row.n_records:>8d} {row.ess:>10.1f} {row.weight_total:>16,.0f}"
            )
        return "\n".join(lines)


def _plain(value):
    """A numpy scalar as the Python value it holds (ids read better and serialise)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_weights(weights, data: SurfaceData) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    n = data.n_records
    if w.shape != (n,):
        raise ValueError(f"weights has shape {w.shape}, expected ({n},): one per household, in household order")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        ids = np.asarray(data.household_id)[bad][:10].tolist()
        raise ValueError(
            f"weights must be finite and non-negative; {int(bad.sum())} are not (household_id {ids})"
        )
    return w


def _ess_table(w: np.ndarray, slices: Sequence[Slice], sources: Sources | None = None) -> pd.DataFrame:
    """Per slice cell: records, sources, source ESS, row ESS, weight total (``(none)``: in no cell)."""
    sources = Sources.identity(len(w)) if sources is None else sources
    parts = []
    for s in slices:
        nc = len(s.labels)
        ok = s.codes >= 0
        n_rec = np.bincount(s.codes[ok], minlength=nc)
        _, pair_cell = cell_pairs(Sources(sources.codes[ok], sources.ids, False), s.codes[ok], nc)
        n_src = np.bincount(pair_cell, minlength=nc)
        total = np.bincount(s.codes[ok], weights=w[ok], minlength=nc)
        cells = list(s.labels)
        ess = kish_by_group(w, s.codes, nc)
        src_ess = source_kish_by_group(w, s.codes, nc, sources)
        if not ok.all():  # say how many records are in no cell rather than lose them silently
            cells.append(NO_CELL)
            n_rec = np.append(n_rec, (~ok).sum())
            n_src = np.append(n_src, len(np.unique(sources.codes[~ok])))
            ess = np.append(ess, 0.0)
            src_ess = np.append(src_ess, 0.0)
            total = np.append(total, w[~ok].sum())
        parts.append(
            pd.DataFrame(
                {
                    "dimension": s.name,
                    "cell": cells,
                    "n_records": n_rec.astype(np.int64),
                    "n_sources": n_src.astype(np.int64),
                    "source_ess": src_ess,
                    "ess": ess,
                    "weight_total": total,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _per_source_max(values: np.ndarray, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
    """The largest of ``values`` over each source's rows, and the position of a row that has it
    (the first in household order)."""
    best = np.zeros(sources.n)
    np.maximum.at(best, sources.codes, values)
    at = np.full(sources.n, -1, dtype=np.intp)
    hits = np.flatnonzero(values == best[sources.codes])  # ascending, so np.unique's first index is the first row
    owners, first = np.unique(sources.codes[hits], return_index=True)
    at[owners] = hits[first]
    return best, at


def evaluate_surface(
    data: SurfaceData, weights=None, threshold: float = 0.05, *, progress: bool = False, equal_weights: bool = False
) -> Diagnosis:
    """Score ``weights`` on precomputed surfaces: per-record and per-source max influence, ESS, slice ESS.

    One pass per (surface, metric, dimension): ``|w x|``, a ``bincount`` of it by cell (and by
    (source, cell) pair when some rows share a source), and running maxima; memory stays
    O(N + cells). Metric arrays that are all zero (a reform that does not touch the metric) are
    skipped, since every share on them is 0.

    Every household figure is reported twice: over rows and over *source* households
    (:mod:`weightreg.sources`: a parent and its offspring are one sampled household, whose share
    of a statistic is the combined share of its rows, and whose weight is its rows' total).

    Args:
        data: from :func:`simulate_surface` (or built directly).
        weights: shape (N,) household weights; ``data.weights`` when ``None``.
        threshold: influence share above which a record "violates" a statistic, in [0, 1].
        progress: show a progress bar over surfaces.
        equal_weights: also score every household of positive weight at one common weight, on the
            same cells (a second pass): ``max_influence_equal_weights`` in ``records`` and the split of
            offenders into weight-driven and value-driven (:class:`Diagnosis`). For sources, every
            source gets the same total weight (its rows keep their proportions).

    Raises:
        ValueError: weights of the wrong shape, negative or not finite; a bad threshold.
    """
    start = time.perf_counter()
    w = _check_weights(data.weights if weights is None else weights, data)
    n, m = data.n_records, len(data.metrics)
    k_reforms = np.shape(data.deltas)[0]
    src = data.sources()
    slices = _evaluation_slices(data, w)
    n_dims = len(slices)
    slots = [len(s.labels) + 1 for s in slices]
    need = min_contributors(threshold)
    tracker, not_thin = InfluenceTracker(n, threshold), InfluenceTracker(n, threshold)
    s_tracker, s_not_thin = InfluenceTracker(n, threshold), InfluenceTracker(n, threshold)
    n_thin = n_thin_src = 0
    for stat_id, share, thin, thin_cells, s_share, s_thin, s_thin_cells in _shares(
            data, w, slices, progress, need, src):
        tracker.update(share, stat_id)
        not_thin.update(np.where(thin, 0.0, share), stat_id)
        n_thin += thin_cells
        if not src.trivial:
            s_tracker.update(s_share, stat_id)
            s_not_thin.update(np.where(s_thin, 0.0, s_share), stat_id)
            n_thin_src += s_thin_cells
    if src.trivial:
        s_tracker, s_not_thin, n_thin_src = tracker, not_thin, n_thin
    equal = s_equal = None
    if equal_weights:
        # The same cells (deciles cut for w) and the same contributors, every weight alike: a record
        # still above the threshold here owes it to its values, not its weight.
        equal = InfluenceTracker(n, threshold)
        for stat_id, share, thin, *_ in _shares(data, (w > 0).astype(float), slices, False, need):
            equal.update(np.where(thin, 0.0, share), stat_id)
        s_equal = equal
        if not src.trivial:
            # Every source at the same total weight, its rows in their current proportions.
            total = source_totals(w, src)[src.codes]
            w_eq = np.divide(w, total, out=np.zeros(n), where=total > 0)
            s_equal = InfluenceTracker(n, threshold)
            for stat_id, _, _, _, s_share, s_thin, _ in _shares(data, w_eq, slices, False, need, src):
                s_equal.update(np.where(s_thin, 0.0, s_share), stat_id)

    # Readable names only for the distinct (statistic batch, cell) pairs that are someone's worst.
    codes_all = np.stack([s.codes for s in slices])  # (D, N) int: O(N x dimensions)
    width = max(slots) + 1

    def statistic_names(stat: np.ndarray, rows: np.ndarray) -> np.ndarray:
        names = np.full(len(stat), "", dtype=object)
        has = stat >= 0
        if has.any():
            cell = codes_all[stat[has] % n_dims, rows[has]]
            uniq, inverse = np.unique(stat[has] * width + cell, return_inverse=True)
            labels = [_statistic_name(data, slices, *divmod(kk, width)) for kk in uniq.tolist()]
            names[has] = np.asarray(labels, dtype=object)[inverse.ravel()]
        return names

    names = statistic_names(tracker.argmax, np.arange(n))
    s_max, s_at = _per_source_max(s_tracker.max_influence, src)
    s_max_not_thin, _ = _per_source_max(s_not_thin.max_influence, src)
    at = np.maximum(s_at, 0)
    s_names = statistic_names(np.where(s_at >= 0, s_tracker.argmax[at], -1), at)
    s_weight = source_totals(w, src)

    records = pd.DataFrame(
        {
            "household_id": data.household_id,
            "source_id": src.ids[src.codes],
            "weight": w,
            "max_influence": tracker.max_influence,
            "max_influence_not_thin": not_thin.max_influence,
            "source_max_influence": s_max[src.codes],
            "worst_statistic": names,
            "violations": tracker.violations,
        }
    )
    sources = pd.DataFrame(
        {
            "source_id": src.ids,
            "rows": np.bincount(src.codes, minlength=src.n).astype(np.int64),
            "weight": s_weight,
            "max_influence": s_max,
            "max_influence_not_thin": s_max_not_thin,
            "worst_statistic": s_names,
        }
    )
    above_not_thin = not_thin.max_influence > threshold
    s_above_not_thin = s_max_not_thin > threshold
    n_value = n_value_src = None
    if equal is not None:
        records["max_influence_equal_weights"] = equal.max_influence
        n_value = int((above_not_thin & (equal.max_influence > threshold)).sum())
        s_max_equal, _ = _per_source_max(s_equal.max_influence, src)
        sources["max_influence_equal_weights"] = s_max_equal
        n_value_src = int((s_above_not_thin & (s_max_equal > threshold)).sum())
    worst = int(np.argmax(tracker.max_influence)) if n else -1
    top = float(tracker.max_influence[worst]) if n else 0.0
    s_worst = int(np.argmax(s_max)) if src.n else -1
    s_top = float(s_max[s_worst]) if src.n else 0.0
    cells_per_surface = sum(len(s.labels) for s in slices)
    return Diagnosis(
        records=records,
        kish=weight_summary(w),
        ess_by_slice=_ess_table(w, slices, src),
        metrics_used=tuple(data.metrics),
        dropped_metrics=dict(data.dropped_metrics),
        dropped_dimensions=dict(data.dropped_dimensions),
        n_above=int((tracker.max_influence > threshold).sum()),
        max_influence=top,
        worst_statistic=str(names[worst]) if top > 0 else "",
        worst_household_id=_plain(data.household_id[worst]) if top > 0 else None,
        reforms=tuple(data.reforms),
        threshold=float(threshold),
        n_statistics=int((1 + k_reforms) * m * cells_per_surface),
        n_thin_statistics=int(n_thin),
        n_above_thin_only=int(((tracker.max_influence > threshold) & (not_thin.max_influence <= threshold)).sum()),
        n_above_value_driven=n_value,
        timings={"simulate_s": float(data.simulate_seconds), "influence_s": time.perf_counter() - start},
        sources=sources,
        source_kish=weight_summary(s_weight),
        n_above_sources=int((s_max > threshold).sum()),
        n_above_thin_only_sources=int(((s_max > threshold) & (s_max_not_thin <= threshold)).sum()),
        n_above_value_driven_sources=n_value_src,
        n_thin_statistics_sources=int(n_thin_src),
        max_influence_source=s_top,
        worst_statistic_source=str(s_names[s_worst]) if s_top > 0 else "",
        worst_source_id=_plain(src.ids[s_worst]) if s_top > 0 else None,
    )


def _evaluation_slices(data: SurfaceData, w: np.ndarray) -> list[Slice]:
    """The whole population plus ``data``'s slices, income deciles cut for the weights ``w``."""
    n = data.n_records
    slices = [Slice(ALL, np.zeros(n, dtype=np.int64), (ALL,))]
    for s in data.slices:
        if s.name == "income_decile" and data.decile_income is not None:
            # Cut points follow the weights being evaluated (deciles of *this* weighted population).
            codes = person_weighted_deciles(data.decile_income, w, data.household_size, data.n_deciles)
            s = Slice(s.name, codes, s.labels)
        codes = np.asarray(s.codes)
        if codes.shape != (n,) or (n and (codes.min() < -1 or codes.max() >= len(s.labels))):
            raise ValueError(f"slice {s.name!r}: codes must be shape ({n},) in -1..{len(s.labels) - 1}")
        slices.append(s)
    return slices


def min_contributors(threshold: float) -> int:
    """The fewest contributing records a statistic needs for every share to be able to stay at or
    below ``threshold`` (equal masses give ``1/n``)."""
    return int(np.ceil(1.0 / threshold - 1e-9)) if threshold > 0 else np.iinfo(np.int64).max


def _source_pairs(sources: Sources | None, shifted: list[np.ndarray], slots: list[int]):
    """Per dimension, each row's (source, cell) pair as a dense index and each pair's cell slot, or
    ``None`` when every row is its own source (the source figures are then the row figures)."""
    if sources is None or sources.trivial:
        return None
    return [cell_pairs(sources, codes1, n_slots) for codes1, n_slots in zip(shifted, slots)]


def _shares(data: SurfaceData, w: np.ndarray, slices: list[Slice], progress: bool = False, min_contributors: int = 1,
            sources: Sources | None = None):
    """Yield ``(statistic batch id, per-record share, thin, thin cells, source share, source thin,
    source thin cells)`` for every (surface, metric, dimension).

    The batch id is ``(surface x M + metric) x D + dimension``; a record's share is of the cell it
    falls in. ``thin`` marks records in a cell with fewer than ``min_contributors`` records of
    non-zero mass; ``thin cells`` counts such cells (with any mass) in the batch. The source
    share of a record is the combined share of its source's rows in the record's cell, and
    ``source thin`` marks cells with fewer than ``min_contributors`` contributing *sources*; without
    ``sources`` (or when every row is its own source) they are the record's own. Metric arrays
    that are all zero (a reform that does not touch the metric) are skipped, since every share on
    them is 0.
    """
    n, m = data.n_records, len(data.metrics)
    baseline = np.asarray(data.baseline, dtype=float)
    deltas = np.asarray(data.deltas, dtype=float)
    if baseline.shape != (m, n) or deltas.shape[1:] != (m, n):
        raise ValueError(f"baseline {baseline.shape} / deltas {deltas.shape} do not match {m} metrics x {n} records")
    n_dims = len(slices)
    shifted = [s.codes.astype(np.intp) + 1 for s in slices]
    slots = [len(s.labels) + 1 for s in slices]
    pairs = _source_pairs(sources, shifted, slots)
    for surface in tqdm(range(1 + deltas.shape[0]), desc="surfaces", disable=not progress):
        values = baseline if surface == 0 else deltas[surface - 1]
        for i in range(m):
            mass = np.abs(w * values[i])
            if not mass.any():
                continue
            positive = (mass > 0).astype(float)
            for d in range(n_dims):
                count = np.bincount(shifted[d], weights=positive, minlength=slots[d])
                count[0] = 0
                thin_cell = (count > 0) & (count < min_contributors)
                share = shares_from_mass(mass, shifted[d], slots[d])
                thin = thin_cell[shifted[d]]
                batch = (surface * m + i) * n_dims + d
                if pairs is None:
                    yield batch, share, thin, int(thin_cell.sum()), share, thin, int(thin_cell.sum())
                    continue
                pair_of, pair_cell = pairs[d]
                pair_mass = np.bincount(pair_of, weights=mass, minlength=len(pair_cell))
                # A source's share of its cell: the summed mass of its rows there over the cell's mass.
                source_share = shares_from_mass(pair_mass, pair_cell, slots[d])[pair_of]
                n_sources = np.bincount(pair_cell, weights=(pair_mass > 0).astype(float), minlength=slots[d])
                n_sources[0] = 0
                thin_source_cell = (n_sources > 0) & (n_sources < min_contributors)
                yield (batch, share, thin, int(thin_cell.sum()), source_share, thin_source_cell[shifted[d]],
                       int(thin_source_cell.sum()))


def _statistic_name(data: SurfaceData, slices: list[Slice], batch: int, cell: int) -> str:
    """``metric|dimension=cell|baseline`` (or ``|reform k``) for a batch id and cell code."""
    n_dims, m = len(slices), len(data.metrics)
    d, i, surface = batch % n_dims, (batch // n_dims) % m, batch // (n_dims * m)
    where = ALL if d == 0 else f"{slices[d].name}={slices[d].labels[cell]}"
    when = "baseline" if surface == 0 else f"reform {surface - 1}"
    return f"{data.metrics[i]}|{where}|{when}"


def influence_table(data: SurfaceData, positions, weights=None, top_statistics: int = 20) -> pd.DataFrame:
    """Influence of a few records (``positions`` in household order) on the statistics they weigh most on.

    Returns a long table ``household_id``, ``statistic``, ``influence`` over the selected records and the
    ``top_statistics`` statistics with the largest influence of any of them (for the heatmap). Memory is
    O(N + statistics x len(positions)).
    """
    w = _check_weights(data.weights if weights is None else weights, data)
    positions = np.asarray(positions, dtype=np.intp)
    slices = _evaluation_slices(data, w)
    rows = []  # (batch, cell, shares of the selected records)
    for stat_id, share, *_ in _shares(data, w, slices):
        cells = slices[stat_id % len(slices)].codes[positions]
        picked = share[positions]
        for cell in np.unique(cells[picked > 0]):
            rows.append((stat_id, int(cell), np.where(cells == cell, picked, 0.0)))
    if not rows:
        return pd.DataFrame({"household_id": [], "statistic": [], "influence": []})
    best = np.array([r[2].max() for r in rows])
    keep = np.argsort(-best, kind="stable")[:top_statistics]
    ids = data.household_id[positions]
    frames = [
        pd.DataFrame({"household_id": ids, "statistic": _statistic_name(data, slices, rows[k][0], rows[k][1]),
                      "influence": rows[k][2]})
        for k in keep
    ]
    return pd.concat(frames, ignore_index=True)


def diagnose(
    survey: Survey,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
    age_bands: Sequence[int] = DEFAULT_AGE_BANDS,
    n_deciles: int = 10,
    n_reforms: int = 32,
    rng: np.random.Generator,
    threshold: float = 0.05,
    parameters: Parameters | None = None,
    progress: bool = False,
    weights=None,
    equal_weights: bool = True,
) -> Diagnosis:
    """Find the households whose weighted values dominate any statistic, baseline or reform.

    Draws ``n_reforms`` random reforms from ``rng`` (:func:`weightreg.parameters.random_reforms`),
    simulates them (:func:`simulate_surface`) and scores the weights (:func:`evaluate_surface`).

    Args:
        survey: the survey.
        metrics: household metrics to scan (see :func:`simulate_surface`).
        dimensions: slice dimensions (the whole population is always scanned too).
        age_bands: lower edges of the household head's age bands.
        n_deciles: number of person-weighted income groups.
        n_reforms: how many random reforms.
        rng: the generator the reforms are drawn from (same state, same result).
        threshold: influence share that counts as a violation.
        parameters: baseline parameters (packaged 2025-26 when ``None``).
        progress: show progress bars.
        weights: weights to score instead of the survey's ``household_weight``.
        equal_weights: split the offenders into weight- and value-driven (a second influence pass;
            see :attr:`Diagnosis.n_above_value_driven`).

    Returns:
        A :class:`Diagnosis`.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    if not 0.0 <= threshold <= 1.0:
        raise ParameterError(f"threshold={threshold!r} is a share of a statistic and must lie in [0, 1]")
    reforms = random_reforms(n_reforms, rng)
    data = simulate_surface(
        survey,
        metrics,
        reforms,
        parameters,
        dimensions=dimensions,
        age_bands=age_bands,
        n_deciles=n_deciles,
        progress=progress,
    )
    return evaluate_surface(data, weights, threshold, progress=progress, equal_weights=equal_weights)
