"""The ``weightreg`` command line: argument parsing over the stage runners of :mod:`weightreg.runners`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import WeightregError
from .params import get
from .runners import (  # noqa: F401  (re-exported: the CLI's public helpers)
    _surface_kwargs,
    check_simulator,
    reforms_from_params,
    run_diagnose,
    run_loop,
    run_recalibrate,
    run_train,
    run_world,
    simulate_surface_from_params,
)

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
    "recalibrate": {"bounds": None, "tol": 1.0e-8, "max_iter": 500, "prune": 1.0, "cap_sources": True},
    "world": {
        "seed": 20250406,
        "time_period": "2025",
        "population_households": 200000,
        "sample_households": 20000,
        "enhancement_households": 20000,
    },
}


def _load_params(path) -> dict:
    from .params import load_params

    if path:
        return load_params(path)
    if Path("params.yaml").exists():
        return load_params("params.yaml")
    return {}  # _cli_params lays the file over DEFAULT_PARAMS


def _apply_surface_flags(params: dict, args) -> None:
    """``--reforms``, ``--seed``, ``--simulator``, ``--workers``, ``--scheduler`` into ``params``."""
    params["reforms"] = {**DEFAULT_PARAMS["reforms"], **(params.get("reforms") or {})}
    if args.reforms is not None:
        params["reforms"]["count"] = _flag("--reforms", args.reforms, "non-negative integer")
    if args.seed is not None:
        params["reforms"]["seed"] = args.seed
    if args.simulator:
        params["simulator"] = args.simulator
    if args.workers is not None or args.scheduler is not None:
        params["dask"] = dict(params.get("dask") or {})
        if args.workers is not None:
            params["dask"].update(enabled=True, workers=_flag("--workers", args.workers))
        if args.scheduler is not None:
            params["dask"].update(enabled=True, scheduler=args.scheduler)


def _add_cap_sources_flag(p) -> None:
    p.add_argument("--cap-sources", action=argparse.BooleanOptionalAction, default=None,
                   help="the cap bounds each source household's total (a parent and its offspring), not only each "
                        "row (default: recalibrate.cap_sources, true)")


def _add_surface_flags(p) -> None:
    p.add_argument("--reforms", type=int, help="number of random reforms (default 32)")
    p.add_argument("--seed", type=int, help="seed of the random reforms")
    p.add_argument("--simulator", choices=["builtin", "policyengine"],
                   help="tax-benefit model (policyengine needs: pip install \"weightreg[policyengine]\")")
    p.add_argument("--workers", type=int, help="run the reform sweep on a local Dask cluster of this many processes")
    p.add_argument("--scheduler", help="run the reform sweep on this Dask scheduler (tcp://host:8786)")


def _cmd_diagnose(args) -> int:
    params = _cli_params(args.params)
    if args.threshold is not None:
        params["threshold"] = args.threshold
    _apply_surface_flags(params, args)
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
    params = _cli_params(args.params)
    for key in ("cap", "penalty"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    params.setdefault("recalibrate", {})
    if args.bounds is not None:
        params["recalibrate"]["bounds"] = list(args.bounds)
    if args.prune is not None:
        params["recalibrate"]["prune"] = args.prune
    if args.cap_sources is not None:
        params["recalibrate"]["cap_sources"] = bool(args.cap_sources)
    out = Path(args.output)
    fit, metrics = run_recalibrate(
        args.survey, args.targets, params, out_path=out,
        metrics_path=out.with_suffix(".metrics.json"), plots_dir=out.parent / f"{out.stem}-plots",
        progress=not args.quiet,
    )
    print(f"{fit.message}\nsource household ESS {metrics['source_ess_before']:,.0f} -> {metrics['source_ess_after']:,.0f} "
          f"(rows: ESS {metrics['ess_before']:,.0f} -> {metrics['ess_after']:,.0f}); max weight "
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
    """Params of every command: ``path`` (else ./params.yaml) over DEFAULT_PARAMS.

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
          + f" in {model.info.fit_seconds:.1f} s; valid share {metrics['valid_share']:.3f}, max TV distance "
          f"{metrics['max_tv_distance']:.3f}\nwrote {out} (metrics {out.with_suffix('.metrics.json')})")
    return 0


def _cmd_regularise(args) -> int:
    """Train (unless --model), run the adversarial loop, recalibrate; write OUT and its side files."""
    from .atomic import write_json
    from .diagnose import evaluate_surface
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
    if args.cap_sources is not None:
        params["recalibrate"] = {**(get(params, "recalibrate", {}) or {}), "cap_sources": bool(args.cap_sources)}
    _apply_surface_flags(params, args)
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

    # Check the inputs before the (long) training: a bad survey, targets file or simulator fails in seconds.
    check_simulator(params)
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
    # surface the loop diagnosed (same simulator, reforms and surface params), so before/after compare.
    final = read_survey(out)
    data = simulate_surface_from_params(final, params)
    after = evaluate_surface(data, threshold=threshold)
    summary = {
        "threshold": threshold,
        # Source households first: a parent and its offspring are one sampled household.
        "sources_above_threshold_before": int(loop.before.n_above_sources),
        "sources_above_threshold_after": int(after.n_above_sources),
        "sources_above_threshold_not_thin_before": int(loop.before.n_above_not_thin_sources),
        "sources_above_threshold_not_thin_after": int(after.n_above_not_thin_sources),
        "source_max_influence_before": float(loop.before.max_influence_source),
        "source_max_influence_after": float(after.max_influence_source),
        "source_ess_before": float(loop.before.source_kish.kish_ess),
        "source_ess_after": float(after.source_kish.kish_ess),
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
        f"source households above threshold {threshold:g}: {summary['sources_above_threshold_before']:,} -> "
        f"{summary['sources_above_threshold_after']:,} (source max influence "
        f"{summary['source_max_influence_before']:.4f} -> {summary['source_max_influence_after']:.4f}); source "
        f"household ESS {summary['source_ess_before']:,.0f} -> {summary['source_ess_after']:,.0f}\n"
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
    _add_surface_flags(p)
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
    _add_cap_sources_flag(p)
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
    p.add_argument("--max-rounds", type=int, help="loop rounds at most (loop.max_rounds; default 12)")
    p.add_argument("--cap", type=float, help="absolute cap on any weight in the final recalibration")
    _add_cap_sources_flag(p)
    p.add_argument("--penalty", type=float,
                   help="soft targets in the final recalibration (default: hard; loop.penalty sets the loop's)")
    _add_surface_flags(p)
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
