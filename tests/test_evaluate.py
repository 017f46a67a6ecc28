"""Tests for weightreg.evaluate: trimming by hand, statistics by hand, zero error against the truth
itself, a small world end to end (raked baseline on target, finite metrics, bootstrap),
determinism, and the stage's files with and without a population."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from weightreg.cli import reforms_from_params
from weightreg.diagnose import ALL, Slice, SurfaceData
from weightreg.errors import ParameterError, SurveyFormatError
from weightreg.evaluate import (
    ESS_COLUMNS,
    TRUTH_ERROR_COLUMNS,
    WORST_COLUMNS,
    draw_replicate,
    evaluate,
    reachable_targets,
    run_evaluate,
    surface_statistics,
    trim_weights,
)
from weightreg.policyengine_format import write_survey
from weightreg.targets import build_target_matrix, write_targets
from weightreg.world import generate_world

ROOT = Path(__file__).resolve().parents[1]
WORLD = {"population_households": 6000, "sample_households": 1200, "enhancement_households": 60, "seed": 5,
         "calibration_steps": 300}
SURFACE = {"metrics": ("household_net_income", "income_tax", "universal_credit", "state_pension"),
           "dimensions": ("income_decile", "region", "age_band", "tenure_type")}


# ---- trimming ------------------------------------------------------------------------------------
def test_trim_hand_case():
    # Cap 4: the 10 loses 6, spread over 1+1+1 = 3 in proportion: each gains 2.
    out = trim_weights([1.0, 1.0, 1.0, 10.0], 4.0)
    np.testing.assert_allclose(out, [3.0, 3.0, 3.0, 4.0], rtol=1e-15)


def test_trim_needing_a_second_round():
    # Cap 5: round 1 caps the 10 (excess 5 over 1+2+3 = 6 -> x 11/6: 1.833, 3.667, 5.5), round 2 caps
    # the 5.5 (excess 0.5 over 5.5 -> x 12/11): 2, 4, 5, 5. Total 16 throughout.
    out = trim_weights(np.array([1.0, 2.0, 3.0, 10.0]), 5.0)
    np.testing.assert_allclose(out, [2.0, 4.0, 5.0, 5.0], rtol=1e-14)


def _trim_by_rounds(w, cap):
    """The textbook procedure, round by round (the independent reference)."""
    w = w.astype(float).copy()
    capped = np.zeros(len(w), dtype=bool)
    while (w > cap * (1 + 1e-12)).any():
        over = w > cap
        excess = (w[over] - cap).sum()
        capped |= over
        w[over] = cap
        free = ~capped
        w[free] *= 1 + excess / w[free].sum()
    return w


def test_trim_matches_the_round_by_round_procedure_and_conserves_total():
    rng = np.random.default_rng(0)
    w = rng.lognormal(7, 1.5, 2000)
    w[:20] = 0.0
    cap = float(np.quantile(w, 0.98))
    out = trim_weights(w, cap)
    np.testing.assert_allclose(out, _trim_by_rounds(w, cap), rtol=1e-10)
    assert out.max() <= cap
    assert out.sum() == pytest.approx(w.sum(), rel=1e-12)
    assert np.all(out[:20] == 0)
    # Order is kept and uncapped records all scale by one factor.
    free = out < cap
    ratio = out[free & (w > 0)] / w[free & (w > 0)]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)


def test_trim_noop_and_errors():
    w = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(trim_weights(w, 3.0), w)
    with pytest.raises(ValueError, match="raise the cap"):
        trim_weights([5.0, 5.0, 0.0], 4.0)  # 2 positive records x 4 < 10
    np.testing.assert_allclose(trim_weights([5.0, 3.0], 4.0), [4.0, 4.0])  # exactly at capacity
    with pytest.raises(ValueError):
        trim_weights([1.0, -1.0], 4.0)


# ---- statistics by hand ----------------------------------------------------------------------------
def test_surface_statistics_by_hand():
    # 4 households, 2 metrics, 1 reform that changes only the first metric, one slice with a record in no cell.
    baseline = np.array([[10.0, 20.0, 30.0, 40.0], [1.0, 0.0, 2.0, 0.0]])
    deltas = np.array([[[1.0, -1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    data = SurfaceData(
        household_id=np.array([1, 2, 3, 4]), weights=np.array([1.0, 2.0, 3.0, 4.0]), metrics=("a", "b"),
        baseline=baseline, deltas=deltas, reforms=({},),
        slices=(Slice("region", np.array([0, 1, 0, -1]), ("X", "Y")),),
    )
    stats = surface_statistics(data, [2.0, 1.0, 1.0, 1.0]).set_index("statistic")
    assert len(stats) == 2 * 2 * 3  # surfaces x metrics x (all + 2 cells)
    expect = {
        "a|all|baseline": 2 * 10 + 20 + 30 + 40,
        "a|region=X|baseline": 2 * 10 + 30,
        "a|region=Y|baseline": 20,
        "b|all|baseline": 2 + 2,
        "a|all|reform 0": 2 * 1 - 1 + 2,
        "a|region=X|reform 0": 2 + 2,
        "b|region=Y|reform 0": 0,
    }
    for name, value in expect.items():
        assert stats.loc[name, "value"] == pytest.approx(value), name
    assert stats.loc["a|region=Y|reform 0", "statistic_kind"] == "reform"
    assert set(stats.loc[stats["dimension"] == ALL, "cell"]) == {ALL}


def test_reachable_targets():
    A = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    prior = np.array([1.0, 1.0, 0.0])
    # target 0: 2 records x cap 10 = 20 > 15; target 1: one record, 10 < 15; target 2: only a zero-prior record.
    np.testing.assert_array_equal(reachable_targets(A, [15.0, 15.0, 1.0], prior, 10.0), [True, False, False])
    np.testing.assert_array_equal(reachable_targets(A, [15.0, 15.0, 1.0], prior, None), [True, True, False])


# ---- the small world -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    return generate_world(WORLD, np.random.default_rng(WORLD["seed"]))


@pytest.fixture(scope="module")
def targets(world):
    """Households by region and persons by region x age band: a consistent set exact raking can meet
    on a 1,260-record sample (the full set has cells too thin to meet exactly)."""
    t = world.targets
    keep = t["name"].str.match(r"^households/region=[A-Z_]+$|^persons/region=[A-Z_]+/age_band=[^/]+$")
    return t[keep].reset_index(drop=True)


@pytest.fixture(scope="module")
def reforms():
    return reforms_from_params({"reforms": {"low": 0.8, "high": 1.2}}, seed=99, count=4)


def _evaluate(world, targets, reforms, **kwargs):
    cap = 3 * world.metrics["design_weight"]
    other = world.survey.with_weights(np.full(world.survey.n_households,
                                              world.population.weights.sum() / world.survey.n_households))
    return evaluate(world.population, {"original": world.survey, "uniform": other}, targets, reforms=reforms,
                    surface=SURFACE, cap=cap, **kwargs)


@pytest.fixture(scope="module")
def result(world, targets, reforms):
    return _evaluate(world, targets, reforms, bootstrap=2, world_params=WORLD, rng=np.random.default_rng(7))


def test_truth_itself_has_zero_error(world, reforms):
    r = evaluate(world.population, {"truth": world.population}, world.targets, reforms=reforms,
                 surface=SURFACE, baseline_of=None)
    s = r.summary["truth"]
    for key in ("rmse_baseline", "rmse_reform", "median_abs_rel_error_baseline", "median_abs_rel_error_reform",
                "worst_abs_rel_error"):
        assert s[key] == 0.0, key
    assert s["n_statistics_baseline"] > 0 and s["n_statistics_reform"] > 0
    assert s["max_rel_target_error"] < 1e-12
    assert s["kish_ess"] == pytest.approx(world.population.n_households)
    assert (r.errors.loc[r.errors["scored"], "rel_error"] == 0).all()


def test_small_world_metrics_are_finite(result, world, targets):
    m = result.to_metrics()
    assert m["truth_comparison"] == 1
    assert list(result.weight_sets) == ["original", "uniform", "trimmed", "raked"]

    def numbers(node):
        for v in node.values():
            if isinstance(v, dict):
                yield from numbers(v)
            else:
                yield v

    values = list(numbers(m))
    assert all(isinstance(v, (int, float)) and np.isfinite(v) for v in values)
    json.dumps(m, allow_nan=False)
    for name in result.weight_sets:
        s = m[name]
        assert s["n_records"] == world.survey.n_households
        assert s["rmse_baseline"] > 0 and s["rmse_reform"] > 0
        # Neither the RMSE nor the median exceeds the worst error.
        for kind in ("baseline", "reform"):
            assert s[f"median_abs_rel_error_{kind}"] <= s["worst_abs_rel_error"]
            assert s[f"rmse_{kind}"] <= s["worst_abs_rel_error"]
    # Trimming and raking respect the cap and keep (trimming) the total.
    cap = m["cap"]
    assert m["trim_cap"] == cap
    assert m["trimmed"]["max_weight"] <= cap and m["raked"]["max_weight"] <= cap * (1 + 1e-9)
    assert m["trimmed"]["total_weight"] == pytest.approx(m["original"]["total_weight"], rel=1e-12)
    # The raked baseline meets the targets (the original Adam weights do not exactly).
    assert m["raked"]["converged"] == 1 and m["raked"]["targets_dropped"] == 0
    assert m["raked"]["max_rel_target_error"] < 1e-6
    tm = build_target_matrix(world.survey, targets)
    assert m["original"]["max_rel_target_error"] == pytest.approx(np.abs(tm.relative_errors(world.survey.weights)).max())
    # The statistic counts add up: scored + skipped = surfaces x metrics x cells.
    n_cells = 1 + 10 + 12 + 7 + 5
    assert m["n_statistics_baseline"] + m["n_skipped_baseline"] == 4 * n_cells
    assert m["n_statistics_reform"] + m["n_skipped_reform"] == 4 * 4 * n_cells
    b = m["bootstrap"]
    assert b["replicates"] == 2 and b["cv_median_baseline"] > 0 and b["design_cv_median_baseline"] > 0


def test_skipped_statistics_are_the_tiny_truths(result):
    e = result.errors[result.errors["weights"] == "original"]
    # Pension-age benefits of the youngest heads and untouched metrics under a reform: truth 0, skipped.
    assert e.loc[e["truth"] == 0, "tiny"].all()
    assert not e.loc[e["tiny"], "scored"].any() and e.loc[e["tiny"], "rel_error"].isna().all()
    scored = e[e["scored"]]
    np.testing.assert_allclose(scored["rel_error"], (scored["estimate"] - scored["truth"]) / scored["truth"].abs())


def test_tables(result):
    te = result.truth_error_table()
    assert list(te.columns) == list(TRUTH_ERROR_COLUMNS) and len(te) == 2 * len(result.weight_sets)
    assert list(result.ess[list(ESS_COLUMNS)].columns) == list(ESS_COLUMNS)
    all_rows = result.ess[result.ess["dimension"] == ALL].set_index("weights")["ess"]
    assert all_rows["original"] == pytest.approx(result.summary["original"]["kish_ess"])
    worst = result.worst_table(top=3)
    assert list(worst.columns) == list(WORST_COLUMNS)
    first = worst[(worst["weights"] == "original") & (worst["rank"] == 1)].iloc[0]
    assert abs(first["rel_error"]) == pytest.approx(result.summary["original"]["worst_abs_rel_error"])
    assert "original" in result.summary_text()


def test_deterministic(result, world, targets, reforms):
    again = _evaluate(world, targets, reforms, bootstrap=2, world_params=WORLD, rng=np.random.default_rng(7))
    assert json.dumps(again.to_metrics(), sort_keys=True) == json.dumps(result.to_metrics(), sort_keys=True)


def test_replicate_follows_the_design(world):
    rep, prior = draw_replicate(world.population, WORLD, np.random.default_rng(1))
    rep.validate()
    assert rep.n_households == 1200 + 60
    assert prior[:1200] == pytest.approx(world.population.weights.sum() / 1200)
    assert np.all(prior[1200:] == 1.0)
    assert rep.household_ids[1200:].min() >= 10_000  # enhancement ids above the population's


def test_bad_arguments(world, reforms):
    with pytest.raises(ParameterError, match="baseline_of"):
        evaluate(world.population, {"x": world.survey}, None, reforms=reforms, surface=SURFACE)
    with pytest.raises(ParameterError, match="bootstrap"):
        evaluate(world.population, {"original": world.survey}, None, bootstrap=1)


# ---- the stage -----------------------------------------------------------------------------------
def _params(cap):
    return {
        "cap": cap, "penalty": None, "simulator": "builtin",
        "surface": {"metrics": list(SURFACE["metrics"]), "dimensions": list(SURFACE["dimensions"]),
                    "age_bands": [16, 25, 35, 45, 55, 65, 75], "n_deciles": 10},
        "reforms": {"count": 4, "seed": 7, "low": 0.8, "high": 1.2},
        "recalibrate": {"tol": 1e-8, "max_iter": 200},
        "world": dict(WORLD),
        "evaluate": {"seed": 99, "reforms": 3, "bootstrap": 0},
    }


@pytest.fixture(scope="module")
def files(world, targets, tmp_path_factory):
    d = tmp_path_factory.mktemp("evaluate") / "data"
    write_survey(world.population, d / "population.h5")
    write_survey(world.survey, d / "survey.h5")
    # Stand-ins for the loop's and recalibration's outputs (any weight set will do here).
    write_survey(world.survey.with_weights(trim_weights(world.survey.weights, 60_000)), d / "augmented.h5")
    write_survey(world.survey.select_households(np.arange(world.survey.n_households) % 2 == 0), d / "regularised.h5")
    write_targets(targets, d / "targets.csv")
    return d


def test_run_evaluate_writes_outputs_and_skips_without_population(files, world, tmp_path, capsys):
    d = files
    params = _params(3 * world.metrics["design_weight"])
    paths = [d / "survey.h5", d / "augmented.h5", d / "regularised.h5", d / "targets.csv"]
    result = run_evaluate(d / "population.h5", *paths, params, metrics_path=tmp_path / "m.json",
                          plots_dir=tmp_path / "plots", progress=False)
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["truth_comparison"] == 1 and m["reforms_out_of_sample"] == 1 and m["n_reforms"] == 3
    assert set(result.weight_sets) == {"original", "augmented", "regularised", "trimmed", "raked"}
    assert m["regularised"]["n_records"] == (world.survey.n_households + 1) // 2
    te = pd.read_csv(tmp_path / "plots" / "truth_error.csv")
    assert list(te.columns) == list(TRUTH_ERROR_COLUMNS) and len(te) == 10
    ess = pd.read_csv(tmp_path / "plots" / "ess_compare.csv")
    assert list(ess.columns) == list(ESS_COLUMNS)
    assert list(pd.read_csv(tmp_path / "plots" / "worst_statistics.csv").columns) == list(WORST_COLUMNS)

    run_evaluate(tmp_path / "nowhere.h5", *paths, params, metrics_path=tmp_path / "m2.json",
                 plots_dir=tmp_path / "plots2", progress=False)
    assert "skipped the truth comparison" in capsys.readouterr().out
    m2 = json.loads((tmp_path / "m2.json").read_text())
    assert m2["truth_comparison"] == 0 and "bootstrap" not in m2
    assert set(m2["original"]) == {"n_sources", "source_kish_ess", "max_source_weight", "n_records", "kish_ess",
                                   "max_weight", "total_weight", "max_rel_target_error"}
    assert m2["original"]["kish_ess"] == m["original"]["kish_ess"]
    assert len(pd.read_csv(tmp_path / "plots2" / "truth_error.csv")) == 0

    with pytest.raises(SurveyFormatError, match="adversarial_loop"):
        run_evaluate(d / "population.h5", d / "survey.h5", tmp_path / "missing.h5", None, d / "targets.csv",
                     params, metrics_path=tmp_path / "m3.json", plots_dir=tmp_path / "p3", progress=False)


def test_stage_script(files, world, tmp_path, monkeypatch, capsys):
    import shutil

    import yaml

    shutil.copytree(files, tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(3 * world.metrics["design_weight"])))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--quiet"])
    runpy.run_path(str(ROOT / "stages" / "evaluate.py"), run_name="__main__")
    assert "regularised" in capsys.readouterr().out
    m = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert m["truth_comparison"] == 1
    assert (tmp_path / "plots" / "evaluate" / "ess_compare.csv").exists()


def test_without_cap_trimming_uses_the_999th_percentile_and_no_population_scores_weights_only(world):
    r = evaluate(None, {"original": world.survey}, None, surface=SURFACE)
    m = r.to_metrics()
    assert m["truth_comparison"] == 0 and "cap" not in m and r.errors is None
    assert m["trim_cap"] == pytest.approx(np.percentile(world.survey.weights, 99.9))
    assert m["trimmed"]["max_weight"] <= m["trim_cap"]
    assert list(r.weight_sets) == ["original", "trimmed"]  # no targets: no raked baseline
    assert "truth comparison skipped" in r.summary_text()


def test_scaled_error_is_the_error_over_the_metric_total_and_counts_tiny_truths():
    from weightreg.evaluate import _error_summary, _rel_errors

    truth = pd.DataFrame({"statistic": ["x|a|baseline", "x|b|baseline", "y|a|baseline"],
                          "statistic_kind": ["baseline"] * 3, "metric": ["x", "x", "y"], "value": [50.0, 0.0, 4.0]})
    estimate = pd.DataFrame({"statistic": ["x|a|baseline", "x|b|baseline", "y|a|baseline"], "value": [60.0, 2.0, 3.0]})
    e = _rel_errors(truth, estimate, {"x": 100.0, "y": 8.0})
    # Relative errors only where the truth is not tiny (x|b has truth 0); scaled errors everywhere.
    np.testing.assert_allclose(e["rel_error"].to_numpy(), [0.2, np.nan, -0.25])
    np.testing.assert_allclose(e["scaled_error"].to_numpy(), [10 / 100, 2 / 100, -1 / 8])
    s = _error_summary(e)
    assert s["mean_scaled_error_baseline"] == pytest.approx((0.1 + 0.02 + 0.125) / 3)
    assert s["median_abs_rel_error_baseline"] == pytest.approx((0.2 + 0.25) / 2)
