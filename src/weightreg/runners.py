"""The ``run_*`` functions: one per DVC stage, shared by ``stages/`` and the ``weightreg`` CLI.

Each ``run_*`` reads its inputs, validates params (errors name the param), calls the library and
writes its outputs atomically. ``params`` is a dict shaped like the project's ``params.yaml``.
Kept apart from the argument parsing in :mod:`weightreg.cli`, so a CLI-only change reruns no stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .params import get, positive

__all__ = [
    "check_simulator",
    "reforms_from_params",
    "run_diagnose",
    "run_loop",
    "run_recalibrate",
    "run_train",
    "run_world",
    "simulate_surface_from_params",
]


def _surface_kwargs(params: dict) -> dict:
    import importlib

    D = importlib.import_module("weightreg.diagnose")  # the module: weightreg.diagnose is the function

    surface = get(params, "surface", {}) or {}
    return {
        "metrics": tuple(surface.get("metrics") or D.DEFAULT_METRICS),
        "dimensions": tuple(surface.get("dimensions") or D.DEFAULT_DIMENSIONS),
        "age_bands": tuple(surface.get("age_bands") or D.DEFAULT_AGE_BANDS),
        "n_deciles": int(positive(params, "surface.n_deciles", surface.get("n_deciles", 10), integer=True)),
    }


def reforms_from_params(params: dict, seed=None, count=None) -> list[dict]:
    """The random reforms the params describe, for the params' simulator.

    ``reforms.count`` reforms drawn with ``reforms.seed`` (or ``count`` and ``seed`` given here, as
    evaluate does for its fresh reforms) over the builtin model's parameters, or over
    ``policyengine.reform_paths`` with ``simulator: policyengine``.
    """
    if get(params, "simulator", "builtin") == "policyengine":
        from .policyengine_backend import reforms_from_params as policyengine_reforms

        return policyengine_reforms(params, seed=seed, count=count)
    from .parameters import random_reforms

    section = get(params, "reforms")
    count = int(section.get("count", 32) if count is None else count)
    seed = int(section.get("seed", 0) if seed is None else seed)
    return random_reforms(
        count, np.random.default_rng(seed), low=float(section.get("low", 0.8)), high=float(section.get("high", 1.2))
    )


def check_simulator(params: dict) -> str:
    """The params' ``simulator``, checked before any long work: ``builtin``, or ``policyengine`` with the
    extra installed.

    Raises:
        ParameterError: another value (naming the param and file).
        OptionalDependencyError: ``policyengine`` without the extra (with the install command).
    """
    from .errors import ParameterError

    simulator = get(params, "simulator", "builtin")
    if simulator == "policyengine":
        from .policyengine_backend import require_policyengine

        require_policyengine()
    elif simulator != "builtin":
        raise ParameterError(
            f"{params.get('_path', 'params.yaml')}: param 'simulator' = {simulator!r} must be 'builtin' or "
            "'policyengine'"
        )
    return simulator


def simulate_surface_from_params(survey, params: dict, reforms=None, progress=False):
    """Simulate the reporting surface the params describe.

    ``simulator: builtin`` runs the embedded model; ``simulator: policyengine`` runs PolicyEngine UK
    (the ``policyengine`` extra), its random reforms drawn from ``policyengine.reform_paths``. The
    reform sweep runs in this process, or as Dask tasks when the ``dask:`` params ask for it
    (:mod:`weightreg.sweep`); the results are the same either way.
    """
    from .sweep import settings_from_params

    simulator = check_simulator(params)
    settings = settings_from_params(params)
    sweep = settings if settings.distributed else None
    if simulator == "policyengine":
        from . import policyengine_backend as pe

        reforms = reforms_from_params(params) if reforms is None else reforms
        return pe.simulate_surface_policyengine(
            survey, reforms=reforms, progress=progress, sweep=sweep, **_surface_kwargs(params)
        )
    from .diagnose import simulate_surface

    reforms = reforms_from_params(params) if reforms is None else reforms
    return simulate_surface(survey, reforms=reforms, progress=progress, sweep=sweep, **_surface_kwargs(params))


def run_diagnose(survey_path, params, *, metrics_path, plots_dir, records_path=None, progress=True):
    """Diagnose ``survey_path`` and write metrics, plot CSVs and the per-record table."""
    from .artifacts import write_diagnosis
    from .diagnose import evaluate_surface
    from .policyengine_format import read_survey

    threshold = float(get(params, "threshold"))
    survey = read_survey(survey_path)
    data = simulate_surface_from_params(survey, params, progress=progress)
    diagnosis = evaluate_surface(data, threshold=threshold, progress=progress, equal_weights=True)
    write_diagnosis(diagnosis, data, metrics_path=metrics_path, plots_dir=plots_dir, records_path=records_path)
    return diagnosis


def _bounds(params: dict, value):
    """``recalibrate.bounds``: null or [lo, hi] with 0 <= lo <= hi."""
    from .errors import ParameterError

    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ParameterError(f"recalibrate.bounds = {value!r} must be null or [lo, hi] (ratio bounds on w / w_prior)")
    return float(value[0]), float(value[1])


def recalibrate_settings(params: dict) -> dict:
    """The final recalibration's settings, validated before any work (stage recalibrate and the
    study's variants): ``cap``, ``penalty``, ``bounds``, ``tol``, ``max_iter``, ``prune`` (null = 0)
    and ``cap_sources``, in that order.

    Raises:
        ParameterError: a bad value, naming the param and ``params['_path']``.
    """
    from .errors import ParameterError

    where = params.get("_path", "params.yaml")
    section = get(params, "recalibrate", {}) or {}
    cap = positive(params, "cap", get(params, "cap", None), allow_none=True)
    penalty = positive(params, "penalty", get(params, "penalty", None), allow_none=True)
    bounds = _bounds(params, section.get("bounds"))
    tol = positive(params, "recalibrate.tol", section.get("tol", 1e-8))
    max_iter = positive(params, "recalibrate.max_iter", section.get("max_iter", 200), integer=True)
    prune = section.get("prune", 1.0)
    if prune is not None and not (isinstance(prune, (int, float)) and not isinstance(prune, bool) and prune >= 0):
        raise ParameterError(f"{where}: param 'recalibrate.prune' = {prune!r} must be a non-negative number or null")
    cap_sources = section.get("cap_sources", True)
    if not isinstance(cap_sources, bool):
        raise ParameterError(f"{where}: param 'recalibrate.cap_sources' = {cap_sources!r} must be true or false")
    if cap_sources and bounds is not None and cap is not None:
        raise ParameterError(f"{where}: recalibrate.bounds = {list(bounds)} with a cap "
                             "needs the cap on rows: recalibrate.cap_sources is true (the default), and a cap on "
                             "each source household's total cannot be combined with ratio bounds yet; set "
                             "recalibrate.cap_sources: false (CLI: --no-cap-sources), or drop the bounds")
    return {"cap": cap, "penalty": penalty, "bounds": bounds, "tol": tol, "max_iter": max_iter,
            "prune": float(prune or 0.0), "cap_sources": cap_sources}


def run_recalibrate(survey_path, targets_path, params, *, out_path, metrics_path, plots_dir, progress=True,
                    require_convergence=True):
    """Recalibrate ``survey_path`` to ``targets_path`` (KL to its weights, cap, bounds), prune, write.

    Households whose weight ends below ``recalibrate.prune`` are dropped and the problem re-solved on
    the rest, so the targets hold on what is written; ``weight_pruned`` is their weight when dropped.

    Returns the :class:`CalibrationResult`. A solve that did not converge raises
    :class:`InfeasibleError` after writing nothing but the metrics (so the failure is visible),
    unless ``require_convergence`` is false (the study's variants: the weights are written, and
    ``converged`` says what they are).
    """
    from .atomic import write_csv, write_json
    from .plots import quantile_table
    from .calibrate import calibrate
    from .influence import kish_ess
    from .policyengine_format import read_survey, write_survey
    from .sources import source_totals, sources_of
    from .targets import build_target_matrix, read_targets
    import pandas as pd

    cap, penalty, bounds, tol, max_iter, prune, cap_sources = recalibrate_settings(params).values()

    survey = read_survey(survey_path)
    targets = read_targets(targets_path, survey)
    tm = build_target_matrix(survey, targets)
    prior = survey.weights
    # With cap_sources, cap bounds a source household's total (a parent and its offspring), not each row.
    groups = sources_of(survey).codes if cap_sources else None
    fit = calibrate(tm.matrix, tm.values, prior, penalty=penalty, cap=cap, bounds=bounds, tol=tol,
                    max_iter=max_iter, target_names=tm.names, groups=groups)
    # Pruning moves the totals a little: re-solve the same problem on the records kept (their rows of
    # the target matrix), a few passes (a re-solve can leave new weights below the floor).
    keep = np.ones(survey.n_households, dtype=bool)
    weights = fit.weights
    weight_pruned = 0.0
    for _ in range(3):
        low = keep & (weights < prune)
        if not low.any() or not fit.success:
            break
        weight_pruned += float(weights[low].sum())
        keep &= ~low
        fit = calibrate(tm.matrix[keep], tm.values, prior[keep], penalty=penalty, cap=cap, bounds=bounds,
                        tol=tol, max_iter=max_iter, target_names=tm.names,
                        groups=None if groups is None else groups[keep])
        weights = np.zeros(survey.n_households)
        weights[keep] = fit.weights
    low = keep & (weights < prune)
    weight_pruned += float(weights[low].sum())
    keep &= ~low
    result = survey.with_weights(weights).select_households(keep)
    src_before, src_after = sources_of(survey), sources_of(result)
    totals_before, totals_after = source_totals(prior, src_before), source_totals(result.weights, src_after)
    metrics = {
        # Source households first: a parent and its offspring are one sampled household.
        "sources_before": int(src_before.n),
        "sources_after": int(src_after.n),
        "source_ess_before": kish_ess(totals_before),
        "source_ess_after": kish_ess(totals_after),
        "max_source_weight_before": float(totals_before.max()) if src_before.n else 0.0,
        "max_source_weight_after": float(totals_after.max()) if src_after.n else 0.0,
        "converged": bool(fit.success),
        "iterations": int(fit.nit),
        "max_rel_target_error": float(fit.max_rel_error),
        "mean_rel_target_error": float(fit.mean_rel_error),
        "kl": float(fit.kl),
        "ess_before": kish_ess(prior),
        "ess_after": kish_ess(result.weights),
        "max_weight_before": float(prior.max()),
        "max_weight_after": float(result.weights.max()) if result.n_households else 0.0,
        "records_before": int(survey.n_households),
        "records_pruned": int((~keep).sum()),
        "weight_pruned": weight_pruned,
        "records_after": int(result.n_households),
    }
    write_json(metrics, metrics_path)
    plots_dir = Path(plots_dir)
    write_csv(quantile_table(before=prior, after=result.weights), plots_dir / "weight_quantiles.csv")
    order = np.argsort(-np.abs(fit.multipliers), kind="stable")[:10]
    write_csv(pd.DataFrame({"target": np.asarray(tm.names, dtype=object)[order], "multiplier": fit.multipliers[order]}),
              plots_dir / "top_multipliers.csv")
    if require_convergence:
        fit.check()  # a non-converged solve is an error (exit non-zero), after its metrics are on disk
    write_survey(result, out_path)
    return fit, metrics


def run_train(survey_path, params, *, model_path, metrics_path, loss_path, progress=True):
    """Train the household generator on ``survey_path``'s eligible households and write it."""
    import pandas as pd

    from .atomic import write_csv, write_json
    from .features import FeatureSpec, extract
    from .generator import quality_report, train_generator, training_positions
    from .policyengine_format import read_survey

    section = get(params, "generator")
    seed = int(get(params, "generator.seed"))
    survey = read_survey(survey_path)
    spec = FeatureSpec.from_survey(
        survey,
        max_adults=positive(params, "generator.max_adults", integer=True),
        max_children=positive(params, "generator.max_children", integer=True),
    )
    extraction = extract(survey, spec)
    model = train_generator(
        extraction.features, spec, kind=section.get("kind", "tvae"),
        hyperparameters=dict(section.get("hyperparameters") or {}),
        training_rows=section.get("training_rows", "weighted"),
        weights=survey.weights[extraction.eligible], seed=seed, progress=progress,
    )
    model.save(model_path)
    sampled = model.sample(min(5000, max(len(extraction.features), 1)), np.random.default_rng(seed))
    # Compare with what the model was fitted to: for weighted training rows, the weighted survey.
    mode = section.get("training_rows", "weighted")
    reference = extraction.features.iloc[
        training_positions(len(extraction.features), survey.weights[extraction.eligible], mode, None,
                           np.random.default_rng([seed, 5]))
    ]
    quality = quality_report(model, reference, sampled)
    # Numbers that are the same on every run with the same inputs; the fit's wall time
    # (model.info.fit_seconds) is printed, not recorded, so rerunning the stage never changes the metrics.
    metrics = {
        "final_loss": float(model.info.final_loss) if model.info.final_loss is not None else 0.0,
        "column_shapes": float(quality["column_shapes"]),
        "column_pair_trends": float(quality["column_pair_trends"]),
        "max_tv_distance": float(quality["max_tv_distance"]),
        "mean_tv_distance": float(quality["mean_tv_distance"]),
        "valid_share": float(quality.get("generator_valid_share") or quality["valid_share"]),
        "training_rows": int(model.info.n_training_rows),
        "eligible_households": int(extraction.summary["n_eligible"]),
        "ineligible_households": int(extraction.summary["n_ineligible"]),
        "ineligible_weight_share": float(extraction.summary["ineligible_weight_share"]),
        "tv_distance": {k: float(v) for k, v in quality["tv_distance"].items()},
    }
    write_json(metrics, metrics_path)
    loss = list(model.info.loss)
    write_csv(pd.DataFrame({"epoch": np.arange(1, len(loss) + 1), "loss": loss}), loss_path)
    return model, metrics


def run_loop(survey_path, targets_path, model_path, params, *, out_path, metrics_path, trace_path, progress=True):
    """Run the adversarial loop (diagnose, spawn offspring, split weight, recalibrate) and write its outputs."""
    from .atomic import write_csv, write_json
    from .generator import load_generator
    from .loop import regularise_loop
    from .policyengine_format import read_survey, write_survey
    from .targets import read_targets

    section = get(params, "loop")
    check_simulator(params)
    survey = read_survey(survey_path)
    targets = read_targets(targets_path, survey)
    model = load_generator(model_path)
    fractions = section.get("conditioning_fractions", [0.2, 0.8])
    result = regularise_loop(
        survey, targets, model,
        reforms=reforms_from_params(params),
        rng=np.random.default_rng(int(get(params, "loop.seed"))),
        threshold=float(get(params, "threshold")),
        records_per_round=positive(params, "loop.records_per_round", integer=True),
        max_rounds=int(get(params, "loop.max_rounds")),
        max_offspring=positive(params, "loop.max_offspring", integer=True),
        conditioning_fractions=tuple(fractions) if len(fractions) == 2 else list(fractions),
        penalty=positive(params, "loop.penalty", section.get("penalty"), allow_none=True),
        patience=positive(params, "loop.patience", section.get("patience", 2), integer=True),
        always_hold=tuple(section.get("always_hold") or ()),
        simulate=lambda survey, reforms: simulate_surface_from_params(survey, params, reforms=reforms),
        surface=_surface_kwargs(params),
        progress=progress,
        log=print if progress else None,
    )
    write_survey(result.survey, out_path)
    write_json(result.to_metrics(), metrics_path)
    write_csv(result.trace, trace_path)
    print(result.message)
    return result


def run_world(params, out_dir, metrics_path, progress=True):
    """Generate the embedded synthetic world the ``world`` section describes and write it.

    Writes ``out_dir``/population.h5, survey.h5 and targets.csv, and the world's metrics to
    ``metrics_path``. Returns the :class:`weightreg.world.World`.
    """
    from .atomic import write_json
    from .policyengine_format import write_survey
    from .targets import write_targets
    from .world import generate_world

    world_params = get(params, "world")
    world = generate_world(world_params, rng=np.random.default_rng(get(params, "world.seed")), progress=progress)
    out_dir = Path(out_dir)
    write_survey(world.population, out_dir / "population.h5")
    write_survey(world.survey, out_dir / "survey.h5")
    write_targets(world.targets, out_dir / "targets.csv")
    write_json(world.metrics, metrics_path)
    return world
