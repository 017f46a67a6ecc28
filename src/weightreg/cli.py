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
    """Simulate the reporting surface the params describe (builtin or PolicyEngine simulator)."""
    from .diagnose import simulate_surface

    simulator = get(params, "simulator", "builtin")
    if simulator != "builtin":
        from .errors import ParameterError

        raise ParameterError(
            f"simulator: {simulator!r} is not available in this install; use 'builtin' "
            "(the PolicyEngine UK backend is tracked as a separate issue)."
        )
    reforms = reforms_from_params(params) if reforms is None else reforms
    return simulate_surface(survey, reforms=reforms, progress=progress, **_surface_kwargs(params))


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
    keep = fit.weights >= prune
    result = survey.with_weights(fit.weights).select_households(keep)
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
        "weight_pruned": float(fit.weights[~keep].sum()),
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
    from .generator import quality_report, train_generator
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
    quality = quality_report(model, extraction.features, sampled)
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
        surface=_surface_kwargs(params),
        progress=progress,
        log=print if progress else None,
    )
    write_survey(result.survey, out_path)
    write_json(result.to_metrics(), metrics_path)
    write_csv(result.trace, trace_path)
    print(result.message)
    return result


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightreg", description="Find and fix over-influential survey records.")
    parser.add_argument("--version", action="version", version=f"weightreg {__import__('weightreg').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("diagnose", help="influence of each household on a reporting surface, and Kish ESS")
    p.add_argument("survey", help="PolicyEngine UK .h5 file")
    p.add_argument("--threshold", type=float, help="influence share that counts as a violation (default 0.05)")
    p.add_argument("--reforms", type=int, help="number of random reforms (default 32)")
    p.add_argument("--seed", type=int, help="seed of the random reforms")
    p.add_argument("--simulator", choices=["builtin", "policyengine"], help="tax-benefit model")
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
