"""The ``weightreg`` command line, and the ``run_*`` functions the DVC stages share with it.

Each ``run_*`` reads its inputs, validates params (errors name the param), calls the library and
writes its outputs atomically. ``params`` is a dict shaped like the project's ``params.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import WeightregError
from .params import get, positive

#: Defaults used by the CLI when no params.yaml is given (same keys as the project's params.yaml).
DEFAULT_PARAMS = {
    "cap": None,
    "penalty": None,
    "threshold": 0.05,
    "simulator": "builtin",
    "surface": {
        "metrics": None,
        "dimensions": None,
        "age_bands": None,
        "n_deciles": 10,
    },
    "reforms": {"count": 32, "seed": 7, "low": 0.8, "high": 1.2},
    # The sections below mirror the project's params.yaml (the train, regularise and world commands).
    "generator": {
        "kind": "tvae",
        "seed": 1,
        "training_rows": "weighted",
        "max_adults": 3,
        "max_children": 6,
        "hyperparameters": {"epochs": 30, "batch_size": 500},
    },
    "loop": {
        "seed": 11,
        "records_per_round": 400,
        "max_rounds": 12,
        "max_offspring": 20,
        "patience": 2,
        "conditioning_fractions": [0.5, 0.9],
        "always_hold": ["region", "tenure_type", "adult1_age"],
        "penalty": 0.01,
    },
    "recalibrate": {"bounds": None, "tol": 1.0e-8, "max_iter": 500, "prune": 1.0},
    "world": {
        "seed": 20250406,
        "time_period": "2025",
        "population_households": 200000,
        "sample_households": 20000,
        "enhancement_households": 20000,
    },
}


def _surface_kwargs(params: dict) -> dict:
    from . import diagnose as D

    surface = get(params, "surface", {}) or {}
    return {
        "metrics": tuple(surface.get("metrics") or D.DEFAULT_METRICS),
        "dimensions": tuple(surface.get("dimensions") or D.DEFAULT_DIMENSIONS),
        "age_bands": tuple(surface.get("age_bands") or D.DEFAULT_AGE_BANDS),
        "n_deciles": int(positive(params, "surface.n_deciles", surface.get("n_deciles", 10), integer=True)),
    }


def reforms_from_params(params: dict, seed=None, count=None) -> list[dict]:
    """The random reforms the params describe (``reforms.count`` drawn with ``reforms.seed``)."""
    from .parameters import random_reforms

    section = get(params, "reforms")
    count = int(section.get("count", 32) if count is None else count)
    seed = int(section.get("seed", 0) if seed is None else seed)
    return random_reforms(
        count, np.random.default_rng(seed), low=float(section.get("low", 0.8)), high=float(section.get("high", 1.2))
    )


def simulate_surface_from_params(survey, params: dict, reforms=None, progress=False):
    """Simulate the reporting surface the params describe.

    ``simulator: builtin`` runs the embedded model; ``simulator: policyengine`` runs PolicyEngine UK
    (the ``policyengine`` extra), its random reforms drawn from ``policyengine.reform_paths``. The
    reform sweep runs in this process, or as Dask tasks when the ``dask:`` params ask for it
    (:mod:`weightreg.sweep`); the results are the same either way.
    """
    from .errors import ParameterError
    from .sweep import settings_from_params

    simulator = get(params, "simulator", "builtin")
    settings = settings_from_params(params)
    sweep = settings if settings.distributed else None
    if simulator == "policyengine":
        from . import policyengine_backend as pe

        pe.require_policyengine()  # a clear install hint before anything else
        reforms = pe.reforms_from_params(params) if reforms is None else reforms
        return pe.simulate_surface_policyengine(
            survey, reforms=reforms, progress=progress, sweep=sweep, **_surface_kwargs(params)
        )
    if simulator != "builtin":
        raise ParameterError(
            f"{params.get('_path', 'params.yaml')}: param 'simulator' = {simulator!r} must be 'builtin' or "
            "'policyengine'"
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
    diagnosis = evaluate_surface(data, threshold=threshold, progress=progress)
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


def run_recalibrate(survey_path, targets_path, params, *, out_path, metrics_path, plots_dir, progress=True):
    """Recalibrate ``survey_path`` to ``targets_path`` (KL to its weights, cap, bounds), prune, write.

    Households whose weight ends below ``recalibrate.prune`` are dropped and the problem re-solved on
    the rest, so the targets hold on what is written; ``weight_pruned`` is their weight when dropped.

    Returns the :class:`CalibrationResult`. A solve that did not converge raises
    :class:`InfeasibleError` after writing nothing but the metrics (so the failure is visible).
    """
    from .atomic import write_csv, write_json
    from .plots import quantile_table
    from .calibrate import calibrate
    from .influence import kish_ess
    from .policyengine_format import read_survey, write_survey
    from .targets import build_target_matrix, read_targets
    import pandas as pd

    section = get(params, "recalibrate", {}) or {}
    cap = positive(params, "cap", get(params, "cap", None), allow_none=True)
    penalty = positive(params, "penalty", get(params, "penalty", None), allow_none=True)
    bounds = _bounds(params, section.get("bounds"))
    tol = positive(params, "recalibrate.tol", section.get("tol", 1e-8))
    max_iter = positive(params, "recalibrate.max_iter", section.get("max_iter", 200), integer=True)
    prune = float(section.get("prune", 1.0) or 0.0)

    survey = read_survey(survey_path)
    targets = read_targets(targets_path, survey)
    tm = build_target_matrix(survey, targets)
    prior = survey.weights
    fit = calibrate(tm.matrix, tm.values, prior, penalty=penalty, cap=cap, bounds=bounds, tol=tol,
                    max_iter=max_iter, target_names=tm.names)
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
                        tol=tol, max_iter=max_iter, target_names=tm.names)
        weights = np.zeros(survey.n_households)
        weights[keep] = fit.weights
    low = keep & (weights < prune)
    weight_pruned += float(weights[low].sum())
    keep &= ~low
    result = survey.with_weights(weights).select_households(keep)
    metrics = {
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
    metrics = {
        "fit_seconds": round(float(model.info.fit_seconds), 1),
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
    survey = read_survey(survey_path)
    targets = read_targets(targets_path, survey)
    model = load_generator(model_path)
    fractions = section.get("conditioning_fractions", [0.2, 0.8])
    if get(params, "simulator", "builtin") == "policyengine":
        from .policyengine_backend import reforms_from_params as pe_reforms

        reforms = pe_reforms(params)
    else:
        reforms = reforms_from_params(params)
    result = regularise_loop(
        survey, targets, model,
        reforms=reforms,
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


def _load_params(path) -> dict:
    from .params import load_params

    if path:
        return load_params(path)
    if Path("params.yaml").exists():
        return load_params("params.yaml")
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_PARAMS.items()}


def _cmd_diagnose(args) -> int:
    params = _load_params(args.params)
    if args.threshold is not None:
        params["threshold"] = args.threshold
    params.setdefault("reforms", dict(DEFAULT_PARAMS["reforms"]))
    if args.reforms is not None:
        params["reforms"]["count"] = args.reforms
    if args.seed is not None:
        params["reforms"]["seed"] = args.seed
    if args.simulator:
        params["simulator"] = args.simulator
    if args.workers is not None or args.scheduler is not None:
        params["dask"] = dict(params.get("dask") or {})
        if args.workers is not None:
            params["dask"].update(enabled=True, workers=args.workers)
        if args.scheduler is not None:
            params["dask"].update(enabled=True, scheduler=args.scheduler)
    out = Path(args.output)
    diagnosis = run_diagnose(
        args.survey,
        params,
        metrics_path=out / "diagnose.json",
        plots_dir=out / "plots",
        records_path=out / "records.parquet",
        progress=not args.quiet,
    )
    print(diagnosis.summary_text(top=20))
    return 0


def _cmd_recalibrate(args) -> int:
    params = _load_params(args.params)
    for key in ("cap", "penalty"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    params.setdefault("recalibrate", {})
    if args.bounds is not None:
        params["recalibrate"]["bounds"] = list(args.bounds)
    if args.prune is not None:
        params["recalibrate"]["prune"] = args.prune
    out = Path(args.output)
    fit, metrics = run_recalibrate(
        args.survey, args.targets, params, out_path=out,
        metrics_path=out.with_suffix(".metrics.json"), plots_dir=out.parent / f"{out.stem}-plots",
        progress=not args.quiet,
    )
    print(f"{fit.message}\nESS {metrics['ess_before']:,.0f} -> {metrics['ess_after']:,.0f}; max weight "
          f"{metrics['max_weight_before']:,.0f} -> {metrics['max_weight_after']:,.0f}; "
          f"pruned {metrics['records_pruned']} households; wrote {out}")
    return 0


def _merge(base: dict, over: dict) -> dict:
    """``over`` laid over ``base`` key by key (nested mappings merged, anything else replaced)."""
    import copy

    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _cli_params(path) -> dict:
    """Params of the train, regularise and world commands: ``path`` (else ./params.yaml) over DEFAULT_PARAMS.

    Sections or keys the file lacks take the defaults, so a params file need only hold what it changes.
    """
    import copy

    return _merge(copy.deepcopy(DEFAULT_PARAMS), _load_params(path))


def _flag(name: str, value, kind: str = "positive integer"):
    """Validate a command-line number (``None`` passes through); a ParameterError names the flag.

    ``kind``: ``positive integer``, ``non-negative integer``, ``positive number`` or ``share`` (in (0, 1)).
    """
    from .errors import ParameterError

    if value is None:
        return None
    ok = {"positive integer": value >= 1, "non-negative integer": value >= 0, "positive number": value > 0,
          "share": 0 < value < 1}[kind]
    if not ok:
        what = "a number in (0, 1)" if kind == "share" else f"a {kind}"
        raise ParameterError(f"{name} {value!r}: must be {what}.")
    return value


def _check_output_file(path: Path, flag="-o") -> Path:
    from .errors import ParameterError

    path = Path(path)
    if path.is_dir():
        raise ParameterError(f"{flag} {path}: is a folder; give a file path (for example {path / 'out.h5'}).")
    return path


def _cmd_train(args) -> int:
    from .errors import ParameterError

    params = _cli_params(args.params)
    section = params["generator"] = dict(get(params, "generator", {}) or {})
    hyper = section["hyperparameters"] = dict(section.get("hyperparameters") or {})
    if args.kind is not None:
        section["kind"] = args.kind
    if args.seed is not None:
        section["seed"] = args.seed
    if args.training_rows is not None:
        section["training_rows"] = args.training_rows
    if args.epochs is not None:
        if section.get("kind", "tvae") == "gaussian_copula":
            raise ParameterError("--epochs: the gaussian_copula generator has no epochs; drop --epochs or use "
                                 "--kind tvae|ctgan.")
        hyper["epochs"] = _flag("--epochs", args.epochs)
    elif args.kind == "gaussian_copula":
        # the params' epoch settings are for the neural kinds; the copula rejects them
        for key in ("epochs", "batch_size"):
            hyper.pop(key, None)
    out = _check_output_file(args.output)
    model, metrics = run_train(
        args.survey, params, model_path=out, metrics_path=out.with_suffix(".metrics.json"),
        loss_path=out.with_suffix(".loss.csv"), progress=not args.quiet,
    )
    epochs = len(model.info.loss)
    print(f"trained {model.kind} on {metrics['training_rows']:,} rows ({metrics['eligible_households']:,} eligible "
          f"households)" + (f", {epochs} epochs, final loss {metrics['final_loss']:.4g}" if epochs else "")
          + f" in {metrics['fit_seconds']} s; valid share {metrics['valid_share']:.3f}, max TV distance "
          f"{metrics['max_tv_distance']:.3f}\nwrote {out} (metrics {out.with_suffix('.metrics.json')})")
    return 0


def _cmd_regularise(args) -> int:
    """Train (unless --model), run the adversarial loop, recalibrate; write OUT and its side files."""
    from .atomic import write_json
    from .diagnose import evaluate_surface, simulate_surface
    from .errors import ParameterError
    from .influence import kish_ess
    from .policyengine_format import read_survey
    from .targets import read_targets

    params = _cli_params(args.params)
    if args.threshold is not None:
        params["threshold"] = _flag("--threshold", args.threshold, "share")
    if args.cap is not None:
        params["cap"] = _flag("--cap", args.cap, "positive number")
    if args.penalty is not None:
        params["penalty"] = _flag("--penalty", args.penalty, "positive number")
    params["loop"] = dict(get(params, "loop", {}) or {})
    if args.max_rounds is not None:
        params["loop"]["max_rounds"] = _flag("--max-rounds", args.max_rounds, "non-negative integer")
    if args.model is not None and args.epochs is not None:
        raise ParameterError("--epochs applies only when regularise trains the generator; drop it or drop --model.")
    if args.model is not None and not Path(args.model).is_file():
        raise ParameterError(f"--model {args.model}: no such generator file; train one with `weightreg train` "
                             "or leave out --model to train one here.")
    out = _check_output_file(args.output)
    progress = not args.quiet

    # Check the inputs before the (long) training: a bad survey or targets file fails in seconds.
    survey = read_survey(args.survey)
    read_targets(args.targets, survey)
    threshold = float(get(params, "threshold"))

    model_path = args.model
    if model_path is None:
        model_path = out.with_suffix(".generator.pkl")
        params["generator"] = dict(get(params, "generator", {}) or {})
        if args.epochs is not None:
            hyper = params["generator"]["hyperparameters"] = dict(params["generator"].get("hyperparameters") or {})
            hyper["epochs"] = _flag("--epochs", args.epochs)
        if progress:
            print(f"training the generator ({params['generator'].get('kind', 'tvae')}) into {model_path}")
        run_train(args.survey, params, model_path=model_path, metrics_path=model_path.with_suffix(".metrics.json"),
                  loss_path=model_path.with_suffix(".loss.csv"), progress=progress)

    augmented = out.with_suffix(".augmented.h5")
    loop = run_loop(args.survey, args.targets, model_path, params, out_path=augmented,
                    metrics_path=out.with_suffix(".loop.json"), trace_path=out.with_suffix(".loop-trace.csv"),
                    progress=progress)
    fit, recal = run_recalibrate(augmented, args.targets, params, out_path=out,
                                 metrics_path=out.with_suffix(".recalibrate.json"),
                                 plots_dir=out.parent / f"{out.stem}-plots", progress=progress)

    # Diagnose what was written (the final recalibration's cap and pruning change the weights), on the
    # surface the loop diagnosed (same simulate_surface, reforms and surface params), so before/after compare.
    final = read_survey(out)
    data = simulate_surface(final, reforms=reforms_from_params(params), **_surface_kwargs(params))
    after = evaluate_surface(data, threshold=threshold)
    summary = {
        "threshold": threshold,
        "records_above_threshold_before": int(loop.before.n_above),
        "records_above_threshold_after": int(after.n_above),
        "max_influence_before": float(loop.before.max_influence),
        "max_influence_after": float(after.max_influence),
        "ess_before": float(kish_ess(survey.weights)),
        "ess_after": float(kish_ess(final.weights)),
        "max_weight_before": float(survey.weights.max()),
        "max_weight_after": float(final.weights.max()) if final.n_households else 0.0,
        "households_before": int(survey.n_households),
        "households_added": int(loop.households_added),
        "households_pruned": int(recal["records_pruned"]),
        "households_after": int(final.n_households),
        "max_rel_target_error": float(recal["max_rel_target_error"]),
        "loop_rounds": int(loop.nit),
        "loop_message": loop.message,
        "model": str(model_path),
        "augmented": str(augmented),
    }
    write_json(summary, out.with_suffix(".metrics.json"))
    print(
        f"records above threshold {threshold:g}: {summary['records_above_threshold_before']:,} -> "
        f"{summary['records_above_threshold_after']:,} (max influence {summary['max_influence_before']:.4f} -> "
        f"{summary['max_influence_after']:.4f})\n"
        f"Kish ESS {summary['ess_before']:,.0f} -> {summary['ess_after']:,.0f}; max weight "
        f"{summary['max_weight_before']:,.0f} -> {summary['max_weight_after']:,.0f}\n"
        f"households added {summary['households_added']:,} in {loop.nit} round(s), pruned "
        f"{summary['households_pruned']:,}; max target error {summary['max_rel_target_error']:.2e}\n"
        f"wrote {out} (metrics {out.with_suffix('.metrics.json')}, loop output {augmented})"
    )
    return 0


def _cmd_world(args) -> int:
    from .errors import ParameterError

    params = _cli_params(args.params)
    world = params["world"] = dict(get(params, "world", {}) or {})
    for flag, key, kind in (("--households", "population_households", "positive integer"),
                            ("--sample", "sample_households", "positive integer"),
                            ("--enhancement", "enhancement_households", "non-negative integer"),
                            ("--seed", "seed", "non-negative integer")):
        value = getattr(args, flag.lstrip("-"))
        if value is not None:
            world[key] = _flag(flag, value, kind)
    if args.sample is not None or args.households is not None:
        n_pop, n_sample = world.get("population_households"), world.get("sample_households")
        if isinstance(n_pop, int) and isinstance(n_sample, int) and n_sample > n_pop:
            raise ParameterError(f"--sample {n_sample} exceeds --households {n_pop} (the population the sample is "
                                 "drawn from); lower --sample or raise --households.")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"-o {out}: is a file; give a folder for population.h5, survey.h5, targets.csv.")
    metrics_path = out / "world.json"
    result = run_world(params, out, metrics_path, progress=not args.quiet)
    m = result.metrics
    print(f"world: {m['n_population_households']:,} population households; survey of {m['n_records']:,} records "
          f"({m['n_sample_households']:,} sampled + {m['n_enhancement_households']:,} enhancement), "
          f"{m['n_targets']} targets\nKish ESS {m['kish_ess']:,.0f} ({m['kish_ess_share']:.1%} of records), "
          f"max/median weight {m['max_median_ratio']:,.0f}, max target error {m['target_max_rel_error']:.2e}\n"
          f"wrote {out / 'population.h5'}, {out / 'survey.h5'}, {out / 'targets.csv'}, {metrics_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightreg", description="Find and fix over-influential survey records.")
    parser.add_argument("--version", action="version", version=f"weightreg {__import__('weightreg').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("diagnose", help="influence of each household on a reporting surface, and Kish ESS")
    p.add_argument("survey", help="PolicyEngine UK .h5 file")
    p.add_argument("--threshold", type=float, help="influence share that counts as a violation (default 0.05)")
    p.add_argument("--reforms", type=int, help="number of random reforms (default 32)")
    p.add_argument("--seed", type=int, help="seed of the random reforms")
    p.add_argument("--simulator", choices=["builtin", "policyengine"],
                   help="tax-benefit model (policyengine needs: pip install \"weightreg[policyengine]\")")
    p.add_argument("--workers", type=int, help="run the reform sweep on a local Dask cluster of this many processes")
    p.add_argument("--scheduler", help="run the reform sweep on this Dask scheduler (tcp://host:8786)")
    p.add_argument("--params", help="params.yaml to read (default: ./params.yaml if present)")
    p.add_argument("-o", "--output", default="weightreg-diagnose", help="output folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_diagnose)

    p = sub.add_parser("recalibrate", help="entropy-regularised calibration to targets with a cap and bounds")
    p.add_argument("survey", help="PolicyEngine UK .h5 file (its weights are the prior)")
    p.add_argument("--targets", required=True, help="targets.csv")
    p.add_argument("--cap", type=float, help="absolute cap on any weight")
    p.add_argument("--penalty", type=float, help="soft targets with this penalty on KL (default: hard targets)")
    p.add_argument("--bounds", type=float, nargs=2, metavar=("LO", "HI"), help="ratio bounds on w / w_prior")
    p.add_argument("--prune", type=float, help="drop households whose weight ends below this (default 1)")
    p.add_argument("--params", help="params.yaml to read (default: ./params.yaml if present)")
    p.add_argument("-o", "--output", required=True, help="output .h5")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_recalibrate)

    p = sub.add_parser("train", help="train the household generator (SDV synthesizer over flat households)")
    p.add_argument("survey", help="PolicyEngine UK .h5 file to learn households from")
    p.add_argument("--epochs", type=int, help="training epochs (generator.hyperparameters.epochs; default 30)")
    p.add_argument("--kind", choices=["tvae", "gaussian_copula", "ctgan"], help="synthesizer (default tvae)")
    p.add_argument("--seed", type=int, help="training seed (generator.seed)")
    p.add_argument("--training-rows", choices=["weighted", "unweighted"],
                   help="resample rows by weight (default) or train on the rows as they are")
    p.add_argument("--params", help="params.yaml to read (default: ./params.yaml if present)")
    p.add_argument("-o", "--output", required=True,
                   help="model .pkl (MODEL.metadata.json, MODEL.metrics.json and MODEL.loss.csv go beside it)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("regularise", help="adversarial loop (offspring households) then capped recalibration")
    p.add_argument("survey", help="PolicyEngine UK .h5 file")
    p.add_argument("--targets", required=True, help="targets.csv")
    p.add_argument("--model", help="trained generator .pkl (default: train one into OUT.generator.pkl)")
    p.add_argument("--epochs", type=int, help="epochs when training the generator here (default: params)")
    p.add_argument("--threshold", type=float, help="influence share that counts as a violation (default 0.05)")
    p.add_argument("--max-rounds", type=int, help="loop rounds at most (loop.max_rounds; default 8)")
    p.add_argument("--cap", type=float, help="absolute cap on any weight in the final recalibration")
    p.add_argument("--penalty", type=float,
                   help="soft targets in the final recalibration (default: hard; loop.penalty sets the loop's)")
    p.add_argument("--params", help="params.yaml to read (default: ./params.yaml if present)")
    p.add_argument("-o", "--output", required=True,
                   help="output .h5 (OUT.augmented.h5, OUT.metrics.json, OUT.loop.json, ... go beside it)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_regularise)

    p = sub.add_parser("world", help="generate the embedded synthetic survey world (population, survey, targets)")
    p.add_argument("--households", type=int, help="population households (world.population_households)")
    p.add_argument("--sample", type=int, help="sampled households (world.sample_households)")
    p.add_argument("--enhancement", type=int, help="enhancement-block households (world.enhancement_households)")
    p.add_argument("--seed", type=int, help="world seed (world.seed)")
    p.add_argument("--params", help="params.yaml to read (default: ./params.yaml if present)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (population.h5, survey.h5, targets.csv, world.json)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_world)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except WeightregError as exc:
        print(f"weightreg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
