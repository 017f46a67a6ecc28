"""The ``weightreg`` command line: world, train and regularise on a tiny world, and their errors.

Everything runs through :func:`weightreg.cli.main` on a world of 800 population households (a
320-record survey), a generator trained for 1-2 epochs and one loop round on 2 reforms.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from weightreg.cli import DEFAULT_PARAMS, main
from weightreg.generator import load_generator
from weightreg.influence import kish_ess
from weightreg.policyengine_format import read_survey
from weightreg.targets import read_targets
from weightreg.world import generate_world

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "world": {"seed": 5, "population_households": 800, "sample_households": 300, "enhancement_households": 20},
    "reforms": {"count": 2},
    "generator": {"hyperparameters": {"epochs": 1, "batch_size": 500}},
    "loop": {"records_per_round": 5, "max_rounds": 1, "max_offspring": 3},
}


@pytest.fixture(scope="module")
def params_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory, params_file):
    out = tmp_path_factory.mktemp("world") / "world"
    assert main(["world", "-o", str(out), "--params", str(params_file), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, world_dir, params_file):
    out = tmp_path_factory.mktemp("model") / "model.pkl"
    rc = main(["train", str(world_dir / "survey.h5"), "--params", str(params_file), "--epochs", "2",
               "-o", str(out), "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def region_targets(tmp_path_factory, world_dir):
    """The world's household counts by region: jointly attainable, so hard targets can be met exactly."""
    targets = pd.read_csv(world_dir / "targets.csv", keep_default_na=False)
    regional = targets[targets["name"].str.fullmatch(r"households/region=[A-Z_]+")]
    assert len(regional) == 12
    path = tmp_path_factory.mktemp("targets") / "regions.csv"
    regional.to_csv(path, index=False)
    return path


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run each test in an empty folder, so the repository's params.yaml is never picked up."""
    monkeypatch.chdir(tmp_path)


def _keys(tree):
    return {k: _keys(v) if isinstance(v, dict) else None for k, v in tree.items()}


# ---- world --------------------------------------------------------------------------------------
def test_world_writes_a_valid_world(world_dir):
    population = read_survey(world_dir / "population.h5")  # read_survey validates (raises on any problem)
    survey = read_survey(world_dir / "survey.h5")
    assert population.n_households == 800
    assert survey.n_households == 300 + 20
    assert survey.time_period == "2025"
    targets = read_targets(world_dir / "targets.csv", survey)
    assert len(targets) > 12 and (targets["value"] > 0).all()
    metrics = json.loads((world_dir / "world.json").read_text())
    assert metrics["n_records"] == 320 and metrics["n_population_households"] == 800
    assert metrics["kish_ess"] == pytest.approx(kish_ess(survey.weights))


def test_world_flags_override_the_params(params_file, tmp_path):
    rc = main(["world", "-o", "w", "--params", str(params_file), "--households", "500", "--sample", "200",
               "--enhancement", "0", "--seed", "9", "--quiet"])
    assert rc == 0
    assert read_survey("w/population.h5").n_households == 500
    survey = read_survey("w/survey.h5")
    assert survey.n_households == 200
    expected = generate_world({**TINY["world"], "population_households": 500, "sample_households": 200,
                               "enhancement_households": 0}, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(survey.weights, expected.survey.weights)


def test_world_without_a_params_file_uses_the_defaults(tmp_path):
    assert not Path("params.yaml").exists()
    rc = main(["world", "-o", "w", "--households", "400", "--sample", "150", "--enhancement", "10", "--quiet"])
    assert rc == 0
    defaults = DEFAULT_PARAMS["world"]
    expected = generate_world({**defaults, "population_households": 400, "sample_households": 150,
                               "enhancement_households": 10}, rng=np.random.default_rng(defaults["seed"]))
    np.testing.assert_array_equal(read_survey("w/survey.h5").weights, expected.survey.weights)


def test_synthesize_stage_writes_what_the_world_command_writes(world_dir, params_file, tmp_path):
    spec = importlib.util.spec_from_file_location("synthesize_stage", ROOT / "stages/synthesize.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    stage.main(["--params", str(params_file), "--quiet"])  # writes data/*, metrics/synthesize.json in the cwd
    for name in ("population.h5", "survey.h5", "targets.csv"):
        assert (tmp_path / "data" / name).read_bytes() == (world_dir / name).read_bytes(), name
    assert (tmp_path / "metrics/synthesize.json").read_bytes() == (world_dir / "world.json").read_bytes()


def test_default_params_have_every_key_of_the_project_params():
    project = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section in ("generator", "loop", "recalibrate", "world", "reforms"):
        assert _keys(DEFAULT_PARAMS[section]) == _keys(project[section]), section


# ---- train --------------------------------------------------------------------------------------
def test_train_writes_a_loadable_model_and_honours_epochs(model_path):
    model = load_generator(model_path)
    assert model.kind == "tvae"
    assert model.hyperparameters["epochs"] == 2  # the params file says 1: --epochs overrides it
    assert len(model.info.loss) == 2
    rows = model.sample(20, np.random.default_rng(0))
    assert len(rows) == 20 and list(rows.columns) == model.spec.columns()
    metrics = json.loads(model_path.with_suffix(".metrics.json").read_text())
    assert metrics["valid_share"] > 0 and metrics["eligible_households"] > 0
    loss = pd.read_csv(model_path.with_suffix(".loss.csv"))
    assert list(loss["epoch"]) == [1, 2]
    assert model_path.with_suffix(".metadata.json").exists()


def test_train_gaussian_copula_drops_the_neural_settings(world_dir, params_file):
    rc = main(["train", str(world_dir / "survey.h5"), "--params", str(params_file), "--kind", "gaussian_copula",
               "--seed", "3", "--training-rows", "unweighted", "-o", "copula.pkl", "--quiet"])
    assert rc == 0
    model = load_generator("copula.pkl")
    assert model.kind == "gaussian_copula" and "epochs" not in model.hyperparameters
    assert model.info.training_rows == "unweighted" and model.seed == 3
    # Same inputs, same metrics file byte for byte (no wall times in it), so a rerun changes no hash.
    first = Path("copula.metrics.json").read_bytes()
    assert main(["train", str(world_dir / "survey.h5"), "--params", str(params_file), "--kind", "gaussian_copula",
                 "--seed", "3", "--training-rows", "unweighted", "-o", "copula.pkl", "--quiet"]) == 0
    assert Path("copula.metrics.json").read_bytes() == first


def test_train_missing_survey_is_an_error_naming_the_file(capsys):
    rc = main(["train", "no_such_survey.h5", "-o", "model.pkl", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("weightreg train: error:") and "no_such_survey.h5" in err and "no such file" in err
    assert not Path("model.pkl").exists()


# ---- regularise ---------------------------------------------------------------------------------
def test_regularise_meets_hard_targets_under_the_cap(world_dir, model_path, region_targets, params_file, capsys):
    survey = read_survey(world_dir / "survey.h5")
    targets = pd.read_csv(region_targets, keep_default_na=False)
    region_of = survey.household["region"].to_numpy()
    counts = {r: int((region_of == r).sum()) for r in np.unique(region_of)}
    # Feasible (every region can reach its total under the cap) yet binding (below today's largest weight).
    needed = max(row.value / counts[row.filter.split("=")[1]] for row in targets.itertuples())
    cap = round(1.5 * needed)
    assert cap < survey.weights.max()
    rc = main(["regularise", str(world_dir / "survey.h5"), "--targets", str(region_targets), "--model",
               str(model_path), "--params", str(params_file), "--cap", str(cap), "--max-rounds", "1",
               "-o", "out/regularised.h5", "--quiet"])
    assert rc == 0
    out = read_survey("out/regularised.h5")
    assert out.weights.max() <= cap * (1 + 1e-9)
    for row in targets.itertuples():
        total = out.weights[out.household["region"].to_numpy() == row.filter.split("=")[1]].sum()
        assert total == pytest.approx(row.value, rel=1e-6), row.name

    augmented = read_survey("out/regularised.augmented.h5")
    summary = json.loads(Path("out/regularised.metrics.json").read_text())
    loop = json.loads(Path("out/regularised.loop.json").read_text())
    # The loop returns its best round: round 1 (with offspring) or round 0 (the survey as it came).
    assert loop["best_round"] in (0, 1)
    assert (summary["households_added"] > 0) == (loop["best_round"] == 1)
    assert summary["households_added"] == loop["households_added"]
    assert augmented.n_households == survey.n_households + summary["households_added"]
    assert summary["households_after"] == out.n_households
    assert summary["ess_before"] == pytest.approx(kish_ess(survey.weights))
    assert summary["ess_after"] == pytest.approx(kish_ess(out.weights))
    assert summary["max_weight_after"] <= cap * (1 + 1e-9)
    assert summary["max_rel_target_error"] < 1e-6
    assert loop["iterations"] == 1
    assert summary["records_above_threshold_before"] == loop["records_above_threshold_before"]
    printed = capsys.readouterr().out
    assert "records above threshold 0.05:" in printed and "households added" in printed
    assert f"households added {summary['households_added']:,}" in printed


def test_regularise_takes_the_surface_flags_of_diagnose(world_dir, model_path, region_targets, params_file):
    """--reforms 0: the loop's first diagnosis is diagnose's baseline-only surface, record for record."""
    assert main(["diagnose", str(world_dir / "survey.h5"), "--params", str(params_file), "--reforms", "0",
                 "-o", "diag", "--quiet"]) == 0
    before = json.loads(Path("diag/diagnose.json").read_text())
    # diagnose splits its offenders: thin-only + value-driven + weight-driven = all above the threshold.
    parts = ("thin_only", "value_driven", "weight_driven")
    assert sum(before[f"records_above_threshold_{p}"] for p in parts) == before["records_above_threshold"] > 0
    assert main(["regularise", str(world_dir / "survey.h5"), "--targets", str(region_targets), "--model",
                 str(model_path), "--params", str(params_file), "--max-rounds", "0", "--reforms", "0",
                 "--simulator", "builtin", "-o", "out/r.h5", "--quiet"]) == 0
    loop = json.loads(Path("out/r.loop.json").read_text())
    assert loop["records_above_threshold_before"] == before["records_above_threshold"]
    assert loop["records_above_threshold_before"] == loop["baseline_records_above_threshold_before"]
    assert main(["regularise", str(world_dir / "survey.h5"), "--targets", str(region_targets), "--model",
                 str(model_path), "--reforms", "-1", "-o", "out/r2.h5", "--quiet"]) == 2


def test_regularise_trains_a_generator_when_no_model_is_given(world_dir, region_targets, params_file):
    rc = main(["regularise", str(world_dir / "survey.h5"), "--targets", str(region_targets), "--params",
               str(params_file), "--epochs", "1", "--max-rounds", "1", "--threshold", "0.2", "-o", "out.h5",
               "--quiet"])
    assert rc == 0
    model = load_generator("out.generator.pkl")
    assert len(model.info.loss) == 1
    assert json.loads(Path("out.metrics.json").read_text())["threshold"] == 0.2
    assert read_survey("out.h5").n_households > 0


def test_regularise_checks_the_targets_before_training(world_dir, params_file, capsys):
    rc = main(["regularise", str(world_dir / "survey.h5"), "--targets", "missing_targets.csv", "--params",
               str(params_file), "-o", "out.h5", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("weightreg regularise: error:") and "missing_targets.csv" in err
    assert not Path("out.generator.pkl").exists() and not Path("out.h5").exists()


def test_regularise_missing_survey_or_model_names_it(world_dir, capsys):
    rc = main(["regularise", "absent.h5", "--targets", str(world_dir / "targets.csv"), "-o", "out.h5", "--quiet"])
    assert rc == 2 and "absent.h5" in capsys.readouterr().err
    rc = main(["regularise", str(world_dir / "survey.h5"), "--targets", str(world_dir / "targets.csv"),
               "--model", "nomodel.pkl", "-o", "out.h5", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--model nomodel.pkl" in err and "weightreg train" in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["regularise", "s.h5", "--targets", "t.csv", "--threshold", "1.5", "-o", "o.h5"], "--threshold 1.5"),
        (["regularise", "s.h5", "--targets", "t.csv", "--cap", "-1", "-o", "o.h5"], "--cap -1"),
        (["regularise", "s.h5", "--targets", "t.csv", "--max-rounds", "-1", "-o", "o.h5"], "--max-rounds -1"),
        (["regularise", "s.h5", "--targets", "t.csv", "--model", "m.pkl", "--epochs", "2", "-o", "o.h5"],
         "--epochs applies only"),
        (["train", "s.h5", "--epochs", "0", "-o", "m.pkl"], "--epochs 0"),
        (["train", "s.h5", "--kind", "gaussian_copula", "--epochs", "3", "-o", "m.pkl"], "no epochs"),
        (["world", "--households", "0", "-o", "w"], "--households 0"),
        (["world", "--households", "100", "--sample", "200", "-o", "w"], "--sample 200 exceeds --households 100"),
    ],
)
def test_bad_flags_are_named(argv, fragment, capsys):
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"weightreg {argv[0]}: error:") and fragment in err
    assert not any(Path(".").iterdir())  # nothing written


def test_world_output_that_is_a_file_is_an_error(capsys):
    Path("taken").write_text("")
    assert main(["world", "-o", "taken", "--households", "100", "--sample", "50", "--quiet"]) == 2
    assert "-o taken: is a file" in capsys.readouterr().err


def test_recalibrate_prunes_low_weights_and_still_meets_the_targets(world_dir, region_targets, tmp_path):
    from weightreg.policyengine_format import write_survey

    survey = read_survey(world_dir / "survey.h5")
    # Give a tenth of the households a tiny prior: the solution keeps them tiny, below the floor.
    w = survey.weights.copy()
    tiny = np.arange(survey.n_households) % 10 == 0
    w[tiny] = 50.0  # below the floor of 100; their mass (~130 per region) moves totals by ~1e-4 unless re-solved
    src = tmp_path / "tiny.h5"
    write_survey(survey.with_weights(w), src)
    rc = main(["recalibrate", str(src), "--targets", str(region_targets), "--prune", "100", "-o",
               str(tmp_path / "out.h5"), "--quiet"])
    assert rc == 0
    out = read_survey(tmp_path / "out.h5")
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["records_pruned"] == survey.n_households - out.n_households >= int(tiny.sum())
    pruned = set(survey.household_ids) - set(out.household_ids)
    assert set(survey.household_ids[tiny]) <= pruned  # (the world's own near-zero weights may join them)
    # Their persons and benefit units went with them.
    assert set(out.person["person_household_id"]) == set(out.household_ids)
    assert out.weights.min() >= 100
    # Targets are met on the records kept (re-solved after pruning), and the metric says so.
    targets = pd.read_csv(region_targets, keep_default_na=False)
    for row in targets.itertuples():
        total = out.weights[out.household["region"].to_numpy() == row.filter.split("=")[1]].sum()
        assert total == pytest.approx(row.value, rel=1e-6), row.name
    assert metrics["max_rel_target_error"] < 1e-6


def test_recalibrate_cap_sources_bounds_each_source_households_total(world_dir, region_targets, tmp_path):
    from weightreg.policyengine_format import write_survey
    from weightreg.sources import SOURCE_COLUMN, source_totals, sources_of

    survey = read_survey(world_dir / "survey.h5")
    # Pair households up as if each odd one were an offspring of the even one before it.
    ids = survey.household_ids
    paired = survey.copy()
    paired.household[SOURCE_COLUMN] = ids[np.arange(len(ids)) // 2 * 2]
    src_path = tmp_path / "paired.h5"
    write_survey(paired, src_path)
    cap = float(np.quantile(survey.weights, 0.95))
    plain_out, source_out = tmp_path / "rows.h5", tmp_path / "sources.h5"
    common = ["--targets", str(region_targets), "--cap", str(cap), "--prune", "0", "--quiet"]
    assert main(["recalibrate", str(src_path), *common, "--no-cap-sources", "-o", str(plain_out)]) == 0
    assert main(["recalibrate", str(src_path), *common, "-o", str(source_out)]) == 0  # cap_sources is the default
    rows, sources = read_survey(plain_out), read_survey(source_out)
    assert rows.weights.max() <= cap * (1 + 1e-12)
    assert source_totals(rows.weights, sources_of(rows)).max() > cap  # the row cap alone lets a pair pass it
    assert source_totals(sources.weights, sources_of(sources)).max() <= cap * (1 + 1e-12)
    metrics = json.loads((tmp_path / "sources.metrics.json").read_text())
    assert metrics["max_source_weight_after"] <= cap * (1 + 1e-12) and metrics["converged"]
    targets = pd.read_csv(region_targets, keep_default_na=False)
    for row in targets.itertuples():  # hard targets still met
        total = sources.weights[sources.household["region"].to_numpy() == row.filter.split("=")[1]].sum()
        assert total == pytest.approx(row.value, rel=1e-6), row.name
