"""The repeated-sampling study: how noisy is each set of weights, over samples of one population?

A design-based simulation study. The embedded world's population (``data/population.h5``) is fixed;
``R`` independent surveys (*replicates*) are drawn from it with the world's whole design, and every
method of weighting is run on each, exactly as the pipeline runs it. Across replicates, each
statistic's estimates then have a bias, a standard deviation and an RMSE against the population's
truth, so the methods can be compared on sampling noise, not on one sample's luck.

**One replicate** (:func:`run_replicate`), replicate index ``k``:

1. *Draw and calibrate* (:func:`weightreg.world.draw_world_survey`, the code
   :func:`weightreg.world.generate_world` uses after making the population): a sample with
   differential non-response, benefit under-reporting, the enhancement block at its tiny starting
   weight, the targets valued on the population, and the unregularised Adam calibration. The
   replicate's generator is ``numpy.random.default_rng([study.seed, k])``, spawned into two
   independent streams: the draw (sample, misreporting and enhancement, split further by
   ``draw_survey``) and the calibration (dropout). The recipe's own seeds (``generator.seed``,
   ``loop.seed``, ``reforms.seed``) are the pipeline's params, the same on every replicate.
2. *The recipe*, by the pipeline's own stage runners on files in a temporary folder
   (:func:`weightreg.runners.run_diagnose`, ``run_train``, ``run_loop``, ``run_recalibrate``),
   with the pipeline's params (the root ``params.yaml``) merged with ``study.overrides``. Each
   replicate's reform sweep runs in process (``dask.*`` is ignored: the study parallelises over
   replicates instead).
3. *Six weight sets* (:data:`METHODS`) of the replicate:

   * ``original``: the replicate's Adam-calibrated weights;
   * ``trimmed``: :func:`weightreg.evaluate.trim_weights` of ``original`` at ``cap`` (without a
     cap, at the 99.9th percentile of the original weights, as ``evaluate`` does);
   * ``raked``: KL calibration of ``original`` to the replicate's targets with ``cap`` and
     ``penalty`` (``evaluate``'s ``_rake``: targets no weights within the cap can reach are left
     out and counted);
   * ``bounded_ratio``: like PolicyEngine's ``max_weight_ratio``, KL calibration starting from the
     replicate's *starting* (design) weights ``w0`` with ratio bounds
     ``study.min_weight_ratio <= w / w0 <= study.max_weight_ratio``, no absolute cap, ``penalty``
     (soft targets); targets the bounds cannot reach are left out and counted;
   * ``augmented``: the adversarial loop's output (original records plus offspring);
   * ``regularised``: the final capped recalibration of ``augmented``;
   * and one per ``study.variants`` entry (:data:`VARIANT_KEYS`): the final recalibration
     (``runners.run_recalibrate``, pruning included) run again on ``augmented`` (or, with
     ``start: original``, on the replicate's own sample) with that entry's ``cap``, ``penalty`` and
     ``recalibrate.*``. A variant costs one calibration, not a training and a loop, so settings of the
     final step (a cap on each source household's total, a lower cap) are judged on the same
     replicates as the recipe; an empty entry reproduces ``regularised`` exactly.

4. *Estimates*: every statistic of the reporting surface (``surface.*``), on the baseline and on
   ``evaluate.reforms`` random reforms drawn with ``evaluate.seed``
   (:func:`weightreg.runners.reforms_from_params`, as ``evaluate`` draws them: out of sample for
   the loop), by :func:`weightreg.evaluate.surface_statistics` under each weight set; and per
   weight set: records, source households, row Kish ESS, *source* Kish ESS
   (:func:`weightreg.sources.source_kish_ess`: a parent and all its offspring are one sampled
   household), largest weight, largest relative target error (against the replicate's own
   targets), and the source households above ``threshold`` on the same surface
   (:func:`weightreg.diagnose.evaluate_surface`), all and on statistics that are not thin.

The replicate's outputs are small: ``<k>.parquet`` (one row per statistic, one column per method)
and ``<k>.json`` (the per-method figures); the ``.h5`` intermediates live in a temporary folder
that is removed.

**The summary** (:func:`summarise`). The truth of a statistic is the same statistic on the
population at its own weights. Statistics whose truth is zero or tiny (``|truth| < TINY x`` the
population's total absolute baseline value of that metric, exactly as ``evaluate`` skips them) are
left out and counted. For method ``m`` and statistic ``s`` with estimates ``x_1..x_R`` and truth
``T``:

* bias ``mean(x) - T``; standard deviation ``SD = sqrt(sum (x_r - mean(x))^2 / (R - 1))``;
  ``RMSE = sqrt(mean((x_r - T)^2))``;
* the ratios ``SD_m / SD_original`` and ``RMSE_m / RMSE_original`` per statistic; statistics where
  the original's SD (or RMSE) is 0 are left out of that ratio and counted (``*_excluded``);
* per kind (``baseline``: levels; ``reform``: reform changes), the median and the mean over
  statistics of each ratio, with a percentile bootstrap interval over replicates: ``study.bootstrap``
  times, draw ``R`` replicate indices with replacement, recompute every statistic's SD and RMSE on
  that resample and the median / mean ratio (a statistic whose original SD or RMSE is 0 in a
  resample is left out of that resample); the interval is the 2.5th and 97.5th percentiles
  (:data:`LEVEL`) of the resampled values (a resample that repeats one replicate only has no SD
  ratio and is left out). The resampling generator is
  ``numpy.random.default_rng([study.seed, BOOTSTRAP_STREAM])`` (no replicate index can equal
  :data:`BOOTSTRAP_STREAM`). With few replicates the intervals are rough (a resample repeats
  replicates, which shrinks SDs in numerator and denominator alike);
* per kind, the medians over statistics of ``|bias| / |T|``, ``SD / |T|`` and ``RMSE / |T|``;
* the *release jump*: the median over statistics and replicate pairs ``r < r'`` of
  ``|x_r - x_r'| / |T|``, how far a published figure moves between two equally good releases;
* per method, the means over replicates of the row and source Kish ESS, the largest relative
  target error, and the source households above the threshold on statistics that are not thin.

A statistic with a missing estimate in some replicate (a cell the weight set cannot produce) is
left out for that method and counted (``statistics_missing``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import InfeasibleError, ParameterError, SurveyFormatError
from .params import get

__all__ = [
    "METHODS",
    "KINDS",
    "LEVEL",
    "BOOTSTRAP_STREAM",
    "DEFAULT_STUDY",
    "StudySettings",
    "ReplicateResult",
    "StudySummary",
    "study_settings",
    "recipe_params",
    "check_params",
    "replicate_rngs",
    "run_replicate",
    "replicate_task",
    "write_replicate",
    "read_replicate",
    "replicate_paths",
    "read_population",
    "run_replicate_stage",
    "study_truth",
    "summarise",
    "run_summarise",
    "plot_ratios",
    "RATIO_COLUMNS",
]

#: The weight sets compared, in report order; ``original`` is the yardstick of every ratio.
METHODS = ("original", "trimmed", "raked", "bounded_ratio", "augmented", "regularised")
#: Kinds of statistic: baseline levels and reform changes.
KINDS = ("baseline", "reform")
#: Coverage of the bootstrap intervals (percentiles 2.5 and 97.5).
LEVEL = 0.95
#: The bootstrap's generator is ``default_rng([study.seed, BOOTSTRAP_STREAM])``; replicate indices
#: are below it, so no replicate shares its stream.
BOOTSTRAP_STREAM = 2**31
#: Defaults of the ``study`` section of params.yaml.
DEFAULT_STUDY: dict = {
    "replicates": list(range(8)),
    "seed": 2026,
    "max_weight_ratio": 10.0,
    "min_weight_ratio": 0.0,
    "bootstrap": 1000,
    "workers": 2,
    "scheduler": None,
    "overrides": {},
    "variants": {},
}
#: What a variant may set: where its final recalibration starts, and that recalibration's params.
VARIANT_KEYS = ("start", "cap", "penalty", "recalibrate")
#: A variant's ``start``: the loop's output (as ``regularised``) or the replicate's own sample (as ``raked``).
VARIANT_STARTS = ("augmented", "original")
#: Columns of ``plots/study/study_ratios.csv``.
RATIO_COLUMNS = ("method", "statistic_kind", "quantity", "label", "median", "median_lo", "median_hi", "mean",
                 "mean_lo", "mean_hi", "statistics", "excluded")
#: Columns of the per-statistic table (``study/statistics.parquet``).
STATISTIC_COLUMNS = ("method", "statistic", "statistic_kind", "metric", "truth", "mean", "bias", "sd", "rmse")
# The per-method figures each replicate records (numbers), and which of them the summary averages.
_AVERAGED = ("n_records", "n_sources", "kish_ess", "source_kish_ess", "max_weight", "max_source_weight",
             "max_rel_target_error", "sources_above_threshold", "sources_above_threshold_not_thin", "converged")


# ---- params -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudySettings:
    """The ``study`` section of params.yaml, validated (:func:`study_settings`).

    Attributes:
        replicates: replicate indices (distinct, non-negative, below :data:`BOOTSTRAP_STREAM`; at least 2).
        seed: the study's seed (replicate ``k`` draws from ``default_rng([seed, k])``).
        max_weight_ratio: ``bounded_ratio``'s upper bound on ``w / w0`` (> 1).
        min_weight_ratio: ``bounded_ratio``'s lower bound on ``w / w0`` (in [0, 1)).
        bootstrap: resamples of the replicates for the intervals.
        workers: local Dask worker processes of ``stages/study_run.py``.
        scheduler: a running Dask scheduler's address for ``stages/study_run.py`` (``None``: local).
        overrides: params merged over the pipeline's for the study's recipe only.
        variants: extra weight sets per replicate, name -> spec: the final recalibration
            (:func:`weightreg.runners.run_recalibrate`, with its pruning) run again on the
            replicate's ``augmented`` records (or, with ``start: original``, its own sample) with
            ``cap``, ``penalty`` and ``recalibrate.*`` changed as the spec says. Cheap next to the
            recipe (no new training or loop), so several settings of the final step are compared on
            the same replicates.
    """

    replicates: tuple[int, ...]
    seed: int
    max_weight_ratio: float
    min_weight_ratio: float
    bootstrap: int
    workers: int
    scheduler: str | None
    overrides: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)

    @property
    def methods(self) -> tuple[str, ...]:
        """The weight sets compared: :data:`METHODS`, then the variants in the order given."""
        return METHODS + tuple(self.variants)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def study_settings(params: Mapping) -> StudySettings:
    """The validated ``study`` section of ``params`` (missing keys take :data:`DEFAULT_STUDY`).

    Raises:
        ParameterError: an unknown key or a bad value, naming the param, the file and what to do.
    """
    where = params.get("_path", "params.yaml")
    section = params.get("study")
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ParameterError(f"{where}: param 'study' must be a mapping (replicates, seed, ...), got {section!r}")
    unknown = sorted(set(section) - set(DEFAULT_STUDY))
    if unknown:
        raise ParameterError(f"{where}: unknown param(s) {', '.join('study.' + k for k in unknown)}; "
                             f"known: {', '.join(sorted(DEFAULT_STUDY))}")
    s = {**DEFAULT_STUDY, **section}

    def bad(key, what):
        return ParameterError(f"{where}: param 'study.{key}' = {s[key]!r} must be {what}")

    reps = s["replicates"]
    if not isinstance(reps, (list, tuple)) or not all(_is_int(k) and 0 <= k < BOOTSTRAP_STREAM for k in reps):
        raise bad("replicates", f"a list of distinct non-negative integers below {BOOTSTRAP_STREAM}, e.g. [0, 1, 2, 3]")
    if len(set(int(k) for k in reps)) != len(reps):
        raise bad("replicates", "a list of *distinct* integers; remove the repeated ones")
    if len(reps) < 2:
        raise bad("replicates", "at least 2 replicates (a standard deviation needs two); e.g. [0, 1, 2, 3, 4, 5, 6, 7]")
    if not _is_int(s["seed"]) or s["seed"] < 0:
        raise bad("seed", "a non-negative integer")
    if not _is_number(s["max_weight_ratio"]) or s["max_weight_ratio"] <= 1:
        raise bad("max_weight_ratio", "a number above 1 (the largest w / w0 of bounded_ratio, e.g. 10)")
    if not _is_number(s["min_weight_ratio"]) or not 0 <= s["min_weight_ratio"] < 1:
        raise bad("min_weight_ratio", "a number in [0, 1) (the smallest w / w0 of bounded_ratio; 0 = none)")
    if not _is_int(s["bootstrap"]) or s["bootstrap"] < 2:
        raise bad("bootstrap", "an integer of at least 2 (resamples for the intervals, e.g. 1000)")
    if not _is_int(s["workers"]) or s["workers"] < 1:
        raise bad("workers", "a positive integer (local Dask worker processes)")
    if s["scheduler"] is not None and (not isinstance(s["scheduler"], str) or not s["scheduler"].strip()):
        raise bad("scheduler", "a Dask scheduler address such as 'tcp://host:8786', or null for a local cluster")
    overrides = s["overrides"] if s["overrides"] is not None else {}
    if not isinstance(overrides, Mapping):
        raise bad("overrides", "a mapping of params to override for the study, e.g. {loop: {max_rounds: 6}}")
    for key, value in overrides.items():
        if key in ("study", "_path"):
            raise ParameterError(f"{where}: param 'study.overrides' cannot override '{key}'; set it directly")
        if key not in params:
            raise ParameterError(f"{where}: param 'study.overrides.{key}' overrides a param params.yaml does not "
                                 f"have; known: {', '.join(sorted(k for k in params if k not in ('_path', 'study')))}")
        if isinstance(value, Mapping) != isinstance(params[key], Mapping):
            raise ParameterError(f"{where}: param 'study.overrides.{key}' = {value!r} must have the shape of "
                                 f"'{key}' in params.yaml ({'a mapping' if isinstance(params[key], Mapping) else 'a value'})")
    variants = s["variants"] if s["variants"] is not None else {}
    if not isinstance(variants, Mapping):
        raise bad("variants", "a mapping name -> {start, cap, penalty, recalibrate}, e.g. "
                              "{source_cap: {recalibrate: {cap_sources: true}}}")
    for name, spec in variants.items():
        label = f"{where}: param 'study.variants.{name}'"
        if not isinstance(name, str) or not name.isidentifier() or name in METHODS:
            raise ParameterError(f"{label}: a variant's name must be an identifier (letters, digits, _) and not "
                                 f"one of the study's own methods ({', '.join(METHODS)})")
        spec = {} if spec is None else spec
        if not isinstance(spec, Mapping):
            raise ParameterError(f"{label} = {spec!r} must be a mapping with keys from {', '.join(VARIANT_KEYS)}")
        unknown = sorted(set(spec) - set(VARIANT_KEYS))
        if unknown:
            raise ParameterError(f"{label}: unknown key(s) {', '.join(unknown)}; a variant changes only the final "
                                 f"recalibration: {', '.join(VARIANT_KEYS)} (change the recipe itself with "
                                 "study.overrides)")
        if spec.get("start", "augmented") not in VARIANT_STARTS:
            raise ParameterError(f"{where}: param 'study.variants.{name}.start' = {spec['start']!r} must be one of "
                                 f"{', '.join(VARIANT_STARTS)}")
        recal = spec.get("recalibrate", {}) or {}
        if not isinstance(recal, Mapping):
            raise ParameterError(f"{where}: param 'study.variants.{name}.recalibrate' = {recal!r} must be a mapping "
                                 "of recalibrate params")
        known = set(params.get("recalibrate") or {}) | {"cap_sources", "bounds", "tol", "max_iter", "prune"}
        unknown = sorted(set(recal) - known)
        if unknown:
            raise ParameterError(f"{where}: param 'study.variants.{name}.recalibrate': unknown key(s) "
                                 f"{', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(known))}")
    return StudySettings(
        replicates=tuple(int(k) for k in reps), seed=int(s["seed"]), max_weight_ratio=float(s["max_weight_ratio"]),
        min_weight_ratio=float(s["min_weight_ratio"]), bootstrap=int(s["bootstrap"]), workers=int(s["workers"]),
        scheduler=s["scheduler"], overrides=json.loads(json.dumps(dict(overrides))),
        variants=json.loads(json.dumps({k: dict(v or {}) for k, v in variants.items()})),
    )


def variant_params(recipe: Mapping, spec: Mapping) -> dict:
    """The recipe's params with a variant's ``cap``, ``penalty`` and ``recalibrate.*`` laid over them."""
    return _merge(dict(recipe), {k: v for k, v in spec.items() if k != "start"})


def _merge(base, override):
    if not isinstance(base, Mapping) or not isinstance(override, Mapping):
        return override
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base.get(key), value) if isinstance(value, Mapping) else value
    return out


def recipe_params(params: Mapping, settings: StudySettings | None = None) -> dict:
    """The params each replicate's recipe runs with: ``params`` with ``study.overrides`` merged
    over it (mappings key by key, other values replaced), without the ``study`` section, and the
    reform sweep in process (``dask.enabled: false``, one worker, no scheduler)."""
    settings = study_settings(params) if settings is None else settings
    base = {k: v for k, v in params.items() if k != "study"}
    out = _merge(base, settings.overrides)
    out["dask"] = {**(out.get("dask") or {}), "enabled": False, "workers": 1, "scheduler": None}
    out["_path"] = params.get("_path", "params.yaml")
    return out


def _recipe_numbers(recipe: Mapping) -> dict:
    """The numbers the study itself reads from the recipe's params, validated."""
    from .params import positive
    from .runners import _surface_kwargs, check_simulator

    check_simulator(recipe)
    _surface_kwargs(recipe)
    where = recipe.get("_path", "params.yaml")
    recal = get(recipe, "recalibrate", {}) or {}
    n_reforms = get(recipe, "evaluate.reforms", 16)
    if not _is_int(n_reforms) or n_reforms < 0:
        raise ParameterError(f"{where}: param 'evaluate.reforms' = {n_reforms!r} must be a non-negative integer")
    seed = get(recipe, "evaluate.seed")
    if not _is_int(seed) or seed < 0:
        raise ParameterError(f"{where}: param 'evaluate.seed' = {seed!r} must be a non-negative integer")
    threshold = get(recipe, "threshold")
    if not _is_number(threshold) or not 0 < threshold <= 1:
        raise ParameterError(f"{where}: param 'threshold' = {threshold!r} must be a number in (0, 1]")
    return {
        "cap": positive(recipe, "cap", get(recipe, "cap", None), allow_none=True),
        "penalty": positive(recipe, "penalty", get(recipe, "penalty", None), allow_none=True),
        "tol": positive(recipe, "recalibrate.tol", recal.get("tol", 1e-8)),
        "max_iter": positive(recipe, "recalibrate.max_iter", recal.get("max_iter", 200), integer=True),
        "threshold": float(threshold),
        "eval_seed": int(seed),
        "eval_reforms": int(n_reforms),
    }


def check_params(params: Mapping) -> tuple[StudySettings, dict, dict]:
    """Validate everything a study run reads before any work: the ``study`` section, the recipe's
    numbers and the ``world`` section. Returns ``(settings, recipe params, recipe numbers)``.

    Raises:
        ParameterError: the first bad param, named.
        OptionalDependencyError: ``simulator: policyengine`` without the extra.
    """
    from .world import _params as world_params

    settings = study_settings(params)
    recipe = recipe_params(params, settings)
    numbers = _recipe_numbers(recipe)
    for name, spec in settings.variants.items():
        _check_variant(name, variant_params(recipe, spec))
    world_params(get(recipe, "world", None))
    return settings, recipe, numbers


def _check_variant(name: str, params: Mapping) -> None:
    """A variant's recalibration params, by the stage's own check, before any work."""
    from .runners import recalibrate_settings

    recalibrate_settings({**params, "_path": f"{params.get('_path', 'params.yaml')}: study.variants.{name}"})


# ---- one replicate ------------------------------------------------------------------------------
def replicate_rngs(seed: int, replicate: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Replicate ``replicate``'s independent streams: ``default_rng([seed, replicate]).spawn(2)``,
    the draw (sample, misreporting, enhancement) and the calibration."""
    survey_rng, cal_rng = np.random.default_rng([int(seed), int(replicate)]).spawn(2)
    return survey_rng, cal_rng


@dataclass(eq=False)
class ReplicateResult:
    """One replicate's outputs.

    Attributes:
        replicate: its index.
        estimates: one row per statistic (``statistic``, ``statistic_kind``), one float column per
            method (:data:`METHODS`, then the variants): the estimate under that method's weights (NaN when the weight
            set's survey cannot produce the statistic).
        figures: numbers only: ``methods`` (per method: ``n_records``, ``n_sources``, ``kish_ess``,
            ``source_kish_ess``, ``max_weight``, ``max_source_weight``, ``max_rel_target_error``,
            ``sources_above_threshold``, ``sources_above_threshold_not_thin``, ``records_above_threshold``,
            and for calibrations ``converged`` / ``targets_dropped``), ``recipe`` (figures of the
            replicate's pipeline run: world calibration fit, loop, recalibrate) and ``replicate``.
        timings: seconds per step (``draw``, ``diagnose``, ``train``, ``loop``, ``recalibrate``,
            ``baselines``, ``variants``, ``estimates``); printed, never written (they vary run to run).
        messages: notes (the loop's message, calibrations that did not converge).
    """

    replicate: int
    estimates: pd.DataFrame
    figures: dict
    timings: dict = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def _bounded_ratio(survey, tm, prior, lo: float, hi: float, penalty, tol, max_iter):
    """KL calibration from ``prior`` with ``lo <= w / prior <= hi``; targets the bounds cannot reach
    are left out first. Returns (result, targets dropped)."""
    from .calibrate import _column_range, calibrate

    w0 = np.asarray(prior, dtype=float)
    reach_lo, reach_hi = _column_range(tm.matrix, lo * w0, hi * w0)
    t = np.asarray(tm.values, dtype=float)
    # Same margin as evaluate.reachable_targets: a target met only with every record at a bound
    # is not a problem worth solving.
    keep = (t == 0) | ((t < reach_hi * (1 - 1e-9)) & (t > reach_lo * (1 + 1e-9)))
    idx = np.flatnonzero(keep)
    fit = calibrate(tm.matrix[:, idx], t[idx], w0, penalty=penalty, bounds=(lo, hi), tol=tol, max_iter=max_iter,
                    target_names=[tm.names[j] for j in idx])
    return fit, int((~keep).sum())


def _method_figures(survey, weights, data, targets, threshold) -> dict:
    from .diagnose import evaluate_surface
    from .influence import kish_ess
    from .sources import source_kish_ess, source_totals, sources_of
    from .targets import build_target_matrix

    w = np.asarray(weights, dtype=float)
    sources = sources_of(survey)
    diag = evaluate_surface(data, w, threshold=threshold)
    rel = build_target_matrix(survey, targets).relative_errors(w)
    return {
        "n_records": int(len(w)),
        "n_sources": int(sources.n),
        "kish_ess": float(kish_ess(w)),
        "source_kish_ess": float(source_kish_ess(w, sources)),
        "max_weight": float(w.max()) if len(w) else 0.0,
        "max_source_weight": float(source_totals(w, sources).max()) if len(w) else 0.0,
        "max_rel_target_error": float(np.abs(rel).max()) if len(rel) else 0.0,
        "records_above_threshold": int(diag.n_above),
        "sources_above_threshold": int(diag.n_above_sources),
        "sources_above_threshold_not_thin": int(diag.n_above_sources - diag.n_above_thin_only_sources),
    }


def run_replicate(population, params: Mapping, replicate: int, work_dir, *, progress: bool = False) -> ReplicateResult:
    """Run replicate ``replicate``: draw, the whole recipe, the baselines and every estimate.

    See the module docstring for exactly what is computed. Files go in ``work_dir`` (the
    replicate's ``survey.h5``, ``targets.csv``, the model, ``augmented.h5``, ``regularised.h5``
    and the runners' metrics); the caller removes it.

    Args:
        population: the world's population (:class:`weightreg.survey.Survey`).
        params: the pipeline's params (the root ``params.yaml``, with its ``study`` section).
        replicate: the replicate index ``k`` (its generator is ``default_rng([study.seed, k])``).
        work_dir: an existing, empty folder.
        progress: a progress bar over the steps (the runners themselves run quietly).

    Raises:
        ParameterError: a bad param (named), before any work.
        InfeasibleError: the final recalibration did not converge (as the pipeline's stage).
    """
    from .evaluate import TRIM_QUANTILE, _rake, surface_statistics, trim_weights
    from .policyengine_format import read_survey, write_survey
    from .runners import reforms_from_params, run_diagnose, run_loop, run_recalibrate, run_train
    from .runners import simulate_surface_from_params
    from .targets import build_target_matrix, read_targets, write_targets
    from .world import draw_world_survey

    settings, recipe, num = check_params(params)
    if not _is_int(replicate) or replicate < 0 or replicate >= BOOTSTRAP_STREAM:
        raise ParameterError(f"replicate index {replicate!r} must be a non-negative integer below {BOOTSTRAP_STREAM}")
    work = Path(work_dir)
    timings: dict[str, float] = {}
    messages: list[str] = []
    steps = ("draw", "diagnose", "train", "loop", "recalibrate", "baselines", "variants", "estimates")
    bar = tqdm(total=len(steps), desc=f"replicate {replicate}", disable=not progress, leave=False)
    clock = [time.perf_counter()]

    def done(step):
        now = time.perf_counter()
        timings[step] = now - clock[0]
        clock[0] = now
        bar.set_postfix_str(step)
        bar.update()

    # 1. draw and calibrate, as generate_world does
    survey_rng, cal_rng = replicate_rngs(settings.seed, replicate)
    drawn = draw_world_survey(population, get(recipe, "world", None), survey_rng, cal_rng)
    survey_path, targets_path = work / "survey.h5", work / "targets.csv"
    write_survey(drawn.survey, survey_path)
    write_targets(drawn.targets, targets_path)
    world_fit = np.abs(drawn.matrix.T @ drawn.survey.weights - drawn.targets["value"].to_numpy())
    world_fit = world_fit / drawn.targets["value"].to_numpy()
    done("draw")

    # 2. the recipe, by the pipeline's own runners
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        diag0 = run_diagnose(survey_path, recipe, metrics_path=work / "diagnose.json", plots_dir=work / "diagnose",
                             records_path=None, progress=False)
        done("diagnose")
        run_train(survey_path, recipe, model_path=work / "generator.pkl", metrics_path=work / "train.json",
                  loss_path=work / "loss.csv", progress=False)
        done("train")
        loop = run_loop(survey_path, targets_path, work / "generator.pkl", recipe, out_path=work / "augmented.h5",
                        metrics_path=work / "loop.json", trace_path=work / "trace.csv", progress=False)
        done("loop")
        try:
            fit_reg, recal_metrics = run_recalibrate(work / "augmented.h5", targets_path, recipe,
                                                     out_path=work / "regularised.h5",
                                                     metrics_path=work / "recalibrate.json",
                                                     plots_dir=work / "recalibrate", progress=False)
        except InfeasibleError as exc:
            raise InfeasibleError(
                f"replicate {replicate}: the final recalibration (stage recalibrate's code) did not converge, so the "
                f"pipeline would stop here too: {exc} For the study, set study.overrides (e.g. a larger penalty); "
                "leaving the replicate out of study.replicates would favour the samples the recipe copes with"
            ) from None
        done("recalibrate")
    messages += [line for line in quiet.getvalue().splitlines() if line.strip()]

    # 3. the baselines, on the replicate's own records
    original = read_survey(survey_path)
    targets = read_targets(targets_path, original)
    tm = build_target_matrix(original, targets)
    w_orig = original.weights
    trim_cap = float(num["cap"]) if num["cap"] is not None else float(np.percentile(w_orig, 100 * TRIM_QUANTILE))
    raked, raked_dropped = _rake(original, tm.matrix, tm.values, tm.names, num["cap"], num["tol"], num["max_iter"],
                                 num["penalty"])
    bounded, bounded_dropped = _bounded_ratio(original, tm, drawn.initial_weights, settings.min_weight_ratio,
                                              settings.max_weight_ratio, num["penalty"], num["tol"], num["max_iter"])
    for name, fit in (("raked", raked), ("bounded_ratio", bounded)):
        if not fit.success:
            messages.append(f"{name}: calibration did not converge; its weights are used anyway. {fit.message}")
    augmented = read_survey(work / "augmented.h5")
    regularised = read_survey(work / "regularised.h5")
    sets = {  # method -> (survey, weights)
        "original": (original, w_orig),
        "trimmed": (original, trim_weights(w_orig, trim_cap)),
        "raked": (original, raked.weights),
        "bounded_ratio": (original, bounded.weights),
        "augmented": (augmented, augmented.weights),
        "regularised": (regularised, regularised.weights),
    }
    done("baselines")

    # 3b. the variants: the final recalibration again with changed settings, by the stage's own runner
    variant_fits = {}
    for name, spec in settings.variants.items():
        start = work / "augmented.h5" if spec.get("start", "augmented") == "augmented" else survey_path
        with contextlib.redirect_stdout(io.StringIO()):
            # Unlike the recipe's own step, a variant that does not converge does not stop the replicate:
            # its weights are used and its `converged` figure (averaged in the summary) says so.
            fit_v, _ = run_recalibrate(start, targets_path, variant_params(recipe, spec),
                                       out_path=work / f"variant-{name}.h5", metrics_path=work / f"variant-{name}.json",
                                       plots_dir=work / f"variant-{name}", progress=False, require_convergence=False)
        if not fit_v.success:
            messages.append(f"variant {name}: calibration did not converge; its weights are used anyway. "
                            f"{fit_v.message}")
        variant = read_survey(work / f"variant-{name}.h5")
        sets[name] = (variant, variant.weights)
        variant_fits[name] = fit_v
    done("variants")

    # 4. estimates on the evaluation surface (baseline + out-of-sample reforms)
    reforms = reforms_from_params(recipe, seed=num["eval_seed"], count=num["eval_reforms"])
    distinct = {id(survey): survey for survey, _ in sets.values()}  # surveys are not hashable: by identity
    surfaces = {key: simulate_surface_from_params(s, recipe, reforms=reforms) for key, s in distinct.items()}
    columns, methods = {}, {}
    index = None
    for name, (survey, w) in sets.items():
        data = surfaces[id(survey)]
        stats = surface_statistics(data, w)
        if index is None:
            index = stats[["statistic", "statistic_kind"]].reset_index(drop=True)
        columns[name] = stats.set_index("statistic")["value"].reindex(index["statistic"]).to_numpy(dtype=float)
        methods[name] = _method_figures(survey, w, data, targets, num["threshold"])
    estimates = index.assign(**columns)
    methods["trimmed"]["trim_cap"] = trim_cap
    methods["raked"].update(converged=int(raked.success), targets_dropped=raked_dropped)
    methods["bounded_ratio"].update(converged=int(bounded.success), targets_dropped=bounded_dropped)
    methods["regularised"]["converged"] = int(fit_reg.success)
    for name, fit_v in variant_fits.items():
        methods[name]["converged"] = int(fit_v.success)
    loop_metrics = loop.to_metrics()
    recipe_figures = {
        "world_max_rel_target_error": float(world_fit.max()),
        "world_targets": int(len(drawn.targets)),
        "diagnose_records_above_threshold": int(diag0.n_above),
        "diagnose_sources_above_threshold": int(diag0.n_above_sources),
        "loop_best_round": int(loop.best_round),
        "loop_households_added": int(loop_metrics["households_added"]),
        "recalibrate_records_pruned": int(recal_metrics["records_pruned"]),
    }
    figures = {"replicate": int(replicate), "methods": methods, "recipe": recipe_figures}
    done("estimates")
    bar.close()
    return ReplicateResult(replicate=int(replicate), estimates=estimates, figures=figures, timings=timings,
                           messages=messages)


def replicate_paths(out_dir, replicate: int) -> tuple[Path, Path]:
    """``(<out_dir>/<k>.parquet, <out_dir>/<k>.json)``: a replicate's estimates and figures."""
    out_dir = Path(out_dir)
    return out_dir / f"{int(replicate)}.parquet", out_dir / f"{int(replicate)}.json"


def write_replicate(result: ReplicateResult, out_dir) -> tuple[Path, Path]:
    """Write a replicate's estimates (parquet) and figures (sorted JSON), atomically; deterministic bytes."""
    from .atomic import atomic_path, write_json

    est_path, fig_path = replicate_paths(out_dir, result.replicate)
    with atomic_path(est_path) as tmp:
        result.estimates.to_parquet(tmp, index=False)
    write_json(result.figures, fig_path)
    return est_path, fig_path


def read_replicate(out_dir, replicate: int) -> tuple[pd.DataFrame, dict]:
    """A replicate's ``(estimates, figures)`` as :func:`write_replicate` wrote them."""
    est_path, fig_path = replicate_paths(out_dir, replicate)
    for path in (est_path, fig_path):
        if not path.exists():
            raise SurveyFormatError(f"{path}: no such file (replicate {replicate}); run "
                                    f"`dvc repro study/dvc.yaml:replicate@{replicate}` or `python stages/study_run.py`")
    return pd.read_parquet(est_path), json.loads(fig_path.read_text())


def read_population(path):
    from .policyengine_format import read_survey

    if not Path(path).exists():
        raise SurveyFormatError(f"{path}: no such file (the world's population); run `dvc repro synthesize` first")
    return read_survey(path)


def replicate_task(population, params: Mapping, replicate: int) -> ReplicateResult:
    """:func:`run_replicate` in a temporary folder that is removed afterwards (a Dask task)."""
    with tempfile.TemporaryDirectory(prefix=f"weightreg-study-{int(replicate)}-") as work:
        return run_replicate(population, params, replicate, work, progress=False)


def run_replicate_stage(params: Mapping, population_path, replicate: int, out_dir, *, progress: bool = True) -> ReplicateResult:
    """Stage ``replicate@k``: read the population, run the replicate in a temporary folder, write its outputs."""
    check_params(params)
    population = read_population(population_path)
    with tempfile.TemporaryDirectory(prefix=f"weightreg-study-{int(replicate)}-") as work:
        result = run_replicate(population, params, replicate, work, progress=progress)
    write_replicate(result, out_dir)
    return result


# ---- the summary --------------------------------------------------------------------------------
def study_truth(population, params: Mapping) -> pd.DataFrame:
    """The truth of every statistic: ``statistic``, ``statistic_kind``, ``metric``, ``truth`` and
    ``tiny`` (left out: ``|truth| < TINY x`` the metric's population absolute total, exactly as
    ``evaluate`` decides), on the population at its own weights with the evaluation reforms."""
    from .evaluate import _metric_scale, _rel_errors, surface_statistics
    from .runners import reforms_from_params, simulate_surface_from_params

    _, recipe, num = check_params(params)
    reforms = reforms_from_params(recipe, seed=num["eval_seed"], count=num["eval_reforms"])
    data = simulate_surface_from_params(population, recipe, reforms=reforms)
    stats = surface_statistics(data, population.weights)
    errors = _rel_errors(stats, stats, _metric_scale(data, population.weights))
    return errors[["statistic", "statistic_kind", "metric", "truth", "tiny"]].reset_index(drop=True)


@dataclass(eq=False)
class StudySummary:
    """What :func:`summarise` found.

    Attributes:
        metrics: numbers only, nested by method and kind (``metrics/study.json``).
        ratios: one row per method x kind x quantity (``sd``/``rmse``): the median and mean ratio
            to ``original`` with their intervals (``plots/study/study_ratios.csv``).
        statistics: one row per method x scored statistic: truth, mean estimate, bias, SD, RMSE.
    """

    metrics: dict
    ratios: pd.DataFrame
    statistics: pd.DataFrame
    methods: tuple = METHODS

    def summary_text(self) -> str:
        m = self.metrics
        lines = [f"Repeated-sampling study: {m['replicates']} replicates, {m['statistics']['baseline']} baseline and "
                 f"{m['statistics']['reform']} reform statistics; median ratio to original "
                 f"[{100 * LEVEL:g}% bootstrap interval, {m['bootstrap_draws']} resamples]"]
        lines.append(f"{'method':>14} {'kind':>8} {'SD ratio':>24} {'RMSE ratio':>24} {'jump':>7}")
        for method in self.methods:
            for kind in KINDS:
                k = m[method][kind]
                lines.append(
                    f"{method:>14} {kind:>8} {k['sd_ratio_median']:>8.3f} [{k['sd_ratio_median_lo']:.3f}, "
                    f"{k['sd_ratio_median_hi']:.3f}] {k['rmse_ratio_median']:>8.3f} [{k['rmse_ratio_median_lo']:.3f}, "
                    f"{k['rmse_ratio_median_hi']:.3f}] {k['release_jump_median']:>7.4f}")
        lines.append(f"{'method':>14} {'Kish ESS':>10} {'source ESS':>11} {'max tgt err':>12} {'sources>thr':>12}")
        for method in self.methods:
            k = m[method]
            lines.append(f"{method:>14} {k['kish_ess_mean']:>10.0f} {k['source_kish_ess_mean']:>11.0f} "
                         f"{k['max_rel_target_error_mean']:>12.2e} {k['sources_above_threshold_not_thin_mean']:>12.1f}")
        return "\n".join(lines)


def _sd_rmse(est: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per statistic (last axis) over replicates (axis -2): SD (ddof=1) and RMSE against ``truth``.

    The SD of estimates that are all equal is exactly 0 (not the rounding noise of their mean), so
    "the original's SD is 0" is decided exactly.
    """
    sd = np.where(np.ptp(est, axis=-2) == 0, 0.0, est.std(axis=-2, ddof=1))
    rmse = np.sqrt(np.mean((est - truth) ** 2, axis=-2))
    return sd, rmse


def _ratio_stats(num: np.ndarray, den: np.ndarray, valid: np.ndarray) -> tuple[float, float, int, int]:
    """(median, mean, statistics used, statistics excluded because ``den`` is 0) of ``num / den`` over ``valid``."""
    use = valid & (den > 0)
    excluded = int((valid & ~(den > 0)).sum())
    if not use.any():
        return math.nan, math.nan, 0, excluded
    r = num[use] / den[use]
    return float(np.median(r)), float(np.mean(r)), int(use.sum()), excluded


def _release_jump(est: np.ndarray, truth: np.ndarray) -> float:
    """Median over statistics and replicate pairs r < r' of |x_r - x_r'| / |T| (``est``: replicates x statistics)."""
    i, j = np.triu_indices(est.shape[0], k=1)
    jumps = np.abs(est[i] - est[j]) / np.abs(truth)
    return float(np.median(jumps)) if jumps.size else math.nan


def _finite(x: float) -> float:
    """Numbers for the JSON: NaN (nothing to summarise) becomes 0 (the counts say why)."""
    return float(x) if math.isfinite(x) else 0.0


def summarise(
    truth: pd.DataFrame,
    estimates: Sequence[pd.DataFrame],
    figures: Sequence[Mapping],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    progress: bool = False,
) -> StudySummary:
    """Summarise replicates against the truth (see the module docstring for every figure).

    Args:
        truth: :func:`study_truth`'s table (``statistic``, ``statistic_kind``, ``metric``, ``truth``, ``tiny``).
        estimates: per replicate, a table with ``statistic`` and one column per method.
        figures: per replicate, its figures (``methods`` -> method -> numbers); may be empty dicts.
        bootstrap: resamples of the replicates for the intervals.
        seed: the study seed; the resampling generator is ``default_rng([seed, BOOTSTRAP_STREAM])``.
        methods: the methods, the first the yardstick of the ratios.
        progress: a progress bar over the resamples.

    Raises:
        ParameterError: fewer than 2 replicates, or a method missing from a replicate's table.
    """
    R = len(estimates)
    if R < 2 or len(figures) != R:
        raise ParameterError(f"the study needs at least 2 replicates with estimates and figures, got {R}; "
                             "list more in study.replicates")
    for k, e in enumerate(estimates):
        missing = [m for m in methods if m not in e.columns]
        if missing:
            raise ParameterError(f"replicate {k}'s estimates lack method(s) {missing}; rerun it")
    scored = truth[~truth["tiny"].to_numpy(dtype=bool)].reset_index(drop=True)
    names = scored["statistic"].to_numpy()
    T = scored["truth"].to_numpy(dtype=float)
    kind = scored["statistic_kind"].to_numpy()
    # (methods, replicates, statistics)
    E = np.stack([np.stack([e.set_index("statistic")[m].reindex(names).to_numpy(dtype=float) for e in estimates])
                  for m in methods])
    present = np.isfinite(E).all(axis=1)  # (methods, statistics)
    Ez = np.where(np.isfinite(E), E, 0.0)
    sd, rmse = _sd_rmse(Ez, T)  # (methods, statistics)
    mean = Ez.mean(axis=1)
    bias = mean - T
    absT = np.abs(T)

    # bootstrap over replicates
    rng = np.random.default_rng([int(seed), BOOTSTRAP_STREAM])
    quantities = ("sd", "rmse")
    boot = {(q, s): np.full((bootstrap, len(methods), len(KINDS)), np.nan) for q in quantities for s in ("median", "mean")}
    kind_masks = [kind == k for k in KINDS]
    for b in tqdm(range(bootstrap), desc="bootstrap", disable=not progress, leave=False):
        idx = rng.integers(0, R, size=R)
        b_sd, b_rmse = _sd_rmse(Ez[:, idx, :], T)
        for q, values in (("sd", b_sd), ("rmse", b_rmse)):
            den = values[0]
            for mi in range(len(methods)):
                for ki, km in enumerate(kind_masks):
                    med, avg, _, _ = _ratio_stats(values[mi], den, present[mi] & present[0] & km)
                    boot[(q, "median")][b, mi, ki] = med
                    boot[(q, "mean")][b, mi, ki] = avg
    lo_q, hi_q = 100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2

    def interval(values: np.ndarray) -> tuple[float, float]:
        v = values[np.isfinite(values)]
        if not v.size:
            return math.nan, math.nan
        return float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))

    metrics: dict = {
        "replicates": R,
        "bootstrap_draws": int(bootstrap),
        "interval_level": LEVEL,
        "statistics": {k: int((kind == k).sum()) for k in KINDS},
        "statistics_skipped_tiny": {k: int(((truth["statistic_kind"] == k) & truth["tiny"]).sum()) for k in KINDS},
    }
    ratio_rows, stat_parts = [], []
    for mi, method in enumerate(methods):
        entry: dict = {}
        for ki, k in enumerate(KINDS):
            valid = present[mi] & kind_masks[ki]
            both = valid & present[0]
            ke: dict = {"statistics": int(valid.sum()), "statistics_missing": int((kind_masks[ki] & ~present[mi]).sum())}
            for q, values in (("sd", sd), ("rmse", rmse)):
                med, avg, used, excluded = _ratio_stats(values[mi], values[0], both)
                mlo, mhi = interval(boot[(q, "median")][:, mi, ki])
                alo, ahi = interval(boot[(q, "mean")][:, mi, ki])
                ke.update({f"{q}_ratio_median": med, f"{q}_ratio_median_lo": mlo, f"{q}_ratio_median_hi": mhi,
                           f"{q}_ratio_mean": avg, f"{q}_ratio_mean_lo": alo, f"{q}_ratio_mean_hi": ahi,
                           f"{q}_ratio_statistics": used, f"{q}_ratio_excluded": excluded})
                ratio_rows.append((method, k, q, f"{q.upper()} ratio, {k}: {method}", med, mlo, mhi, avg, alo, ahi,
                                   used, excluded))
            ke["abs_rel_bias_median"] = float(np.median(np.abs(bias[mi][valid]) / absT[valid])) if valid.any() else math.nan
            ke["rel_sd_median"] = float(np.median(sd[mi][valid] / absT[valid])) if valid.any() else math.nan
            ke["rel_rmse_median"] = float(np.median(rmse[mi][valid] / absT[valid])) if valid.any() else math.nan
            ke["release_jump_median"] = _release_jump(E[mi][:, valid], T[valid]) if valid.any() else math.nan
            entry[k] = {key: (_finite(v) if isinstance(v, float) else v) for key, v in ke.items()}
        for key in _AVERAGED:
            values = [f.get("methods", {}).get(method, {}).get(key) for f in figures]
            values = [float(v) for v in values if v is not None]
            if values or key != "converged":  # only calibrations record `converged`
                entry[f"{key}_mean"] = float(np.mean(values)) if values else 0.0
        metrics[method] = entry
        ok = present[mi]
        stat_parts.append(pd.DataFrame({
            "method": method, "statistic": names[ok], "statistic_kind": kind[ok],
            "metric": scored["metric"].to_numpy()[ok], "truth": T[ok], "mean": mean[mi][ok], "bias": bias[mi][ok],
            "sd": sd[mi][ok], "rmse": rmse[mi][ok],
        }))
    ratios = pd.DataFrame(ratio_rows, columns=list(RATIO_COLUMNS))
    statistics = pd.concat(stat_parts, ignore_index=True)[list(STATISTIC_COLUMNS)]
    return StudySummary(metrics=metrics, ratios=ratios, statistics=statistics, methods=tuple(methods))


def run_summarise(params: Mapping, population_path, replicates_dir, *, metrics_path="metrics/study.json",
                  plots_dir="plots/study", statistics_path="study/statistics.parquet",
                  progress: bool = True) -> StudySummary:
    """Stage ``summarise``: the truth on the population, every listed replicate's outputs, the summary;
    writes ``metrics_path``, ``plots_dir/study_ratios.csv`` and ``statistics_path``."""
    from .atomic import atomic_path, write_csv, write_json

    settings, _, _ = check_params(params)
    population = read_population(population_path)
    loaded = [read_replicate(replicates_dir, k) for k in settings.replicates]  # missing ones fail before the truth
    truth = study_truth(population, params)
    result = summarise(truth, [e for e, _ in loaded], [f for _, f in loaded], bootstrap=settings.bootstrap,
                       seed=settings.seed, methods=settings.methods, progress=progress)
    write_json(result.metrics, metrics_path)
    write_csv(result.ratios, Path(plots_dir) / "study_ratios.csv")
    with atomic_path(statistics_path) as tmp:
        result.statistics.to_parquet(tmp, index=False)
    return result


# ---- the chart ----------------------------------------------------------------------------------
def plot_ratios(ratios: pd.DataFrame, path) -> Path:
    """Draw the median SD and RMSE ratios to ``original`` by method and kind, with their intervals
    (means as open markers), to a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    from .atomic import atomic_path

    methods = list(dict.fromkeys(ratios["method"]))  # in the summary's order: METHODS, then the variants
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(methods) + 1.8), sharey=True)
    colours = {"baseline": "#1f77b4", "reform": "#d62728"}
    y = np.arange(len(methods))
    for ax, q, title in zip(axes, ("sd", "rmse"), ("SD ratio to original", "RMSE ratio to original")):
        for offset, kind in ((-0.15, "baseline"), (0.15, "reform")):
            rows = ratios[(ratios["quantity"] == q) & (ratios["statistic_kind"] == kind)].set_index("method")
            rows = rows.reindex(methods)
            med = rows["median"].to_numpy(dtype=float)
            err = np.vstack([med - rows["median_lo"].to_numpy(dtype=float), rows["median_hi"].to_numpy(dtype=float) - med])
            ax.errorbar(med, y + offset, xerr=np.clip(err, 0, None), fmt="o", color=colours[kind], capsize=3,
                        label=f"{kind}: median [{100 * LEVEL:g}% interval]")
            ax.plot(rows["mean"].to_numpy(dtype=float), y + offset, "D", mfc="none", color=colours[kind], ms=5,
                    label=f"{kind}: mean")
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", nonpositive="clip")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_title(title)
        ax.set_xlabel("ratio over statistics (log scale; < 1: less noisy than original)")
        ax.set_yticks(y, methods)
    axes[0].invert_yaxis()
    axes[1].legend(loc="best", fontsize=7)
    fig.suptitle("Repeated-sampling study: per-statistic ratio to the original weights")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
