"""The repeated-sampling study (weightreg.study, study/dvc.yaml, stages/study_*.py)."""

import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from weightreg.errors import ParameterError
from weightreg.study import BOOTSTRAP_STREAM, check_params, recipe_params, study_settings, summarise

ROOT = Path(__file__).resolve().parent.parent


# ---- the summary, by hand -----------------------------------------------------------------------
def _tiny_study():
    """3 replicates, 2 methods; baseline a, b, e, f, d (d: tiny truth, skipped), reform c."""
    truth = pd.DataFrame({
        "statistic": ["a", "b", "e", "f", "d", "c"],
        "statistic_kind": ["baseline"] * 5 + ["reform"],
        "metric": ["m"] * 6,
        "truth": [10.0, 20.0, 100.0, 50.0, 0.0, -5.0],
        "tiny": [False, False, False, False, True, False],
    })
    original = {"a": [9, 11, 13], "b": [20, 20, 20], "e": [90, 100, 110], "f": [50, 52, 54], "d": [1e6, 0, 5],
                "c": [-4, -6, -5]}
    x = {"a": [10, 10, 12], "b": [19, 21, 20], "e": [100, 100, 100], "f": [50, 56, 50], "d": [7, 8, 9],
         "c": [-5, -5, -5]}
    estimates = []
    for r in range(3):
        names = ["c", "a", "d", "f", "e", "b"]  # any order: joined on the name
        estimates.append(pd.DataFrame({
            "statistic": names,
            "statistic_kind": ["reform", "baseline", "baseline", "baseline", "baseline", "baseline"],
            "original": [float(original[s][r]) for s in names],
            "x": [float(x[s][r]) for s in names],
        }))
    figures = [{"methods": {"original": {"kish_ess": 100.0 * (r + 1), "source_kish_ess": 50.0},
                            "x": {"kish_ess": 10.0, "source_kish_ess": 5.0 * (r + 1)}}} for r in range(3)]
    return truth, estimates, figures


def test_summary_by_hand():
    truth, estimates, figures = _tiny_study()
    result = summarise(truth, estimates, figures, bootstrap=50, seed=1, methods=("original", "x"))
    m = result.metrics
    assert m["replicates"] == 3
    assert m["statistics"] == {"baseline": 4, "reform": 1}
    assert m["statistics_skipped_tiny"] == {"baseline": 1, "reform": 0}

    # Per statistic, by hand. original a = 9, 11, 13 (truth 10): mean 11, SD sqrt((4 + 0 + 4) / 2) = 2,
    # RMSE sqrt((1 + 1 + 9) / 3). x a = 10, 10, 12: mean 32/3, SD sqrt((4/9 + 4/9 + 16/9) / 2), RMSE sqrt(4/3).
    st = result.statistics.set_index(["method", "statistic"])
    assert st.loc[("original", "a"), "bias"] == pytest.approx(1.0)
    assert st.loc[("original", "a"), "sd"] == pytest.approx(2.0)
    assert st.loc[("original", "a"), "rmse"] == pytest.approx(math.sqrt(11 / 3))
    assert st.loc[("x", "a"), "bias"] == pytest.approx(2 / 3)
    assert st.loc[("x", "a"), "sd"] == pytest.approx(math.sqrt(4 / 3))
    assert st.loc[("x", "a"), "rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert st.loc[("x", "f"), "sd"] == pytest.approx(math.sqrt(12))  # 50, 56, 50: mean 52, (4 + 16 + 4) / 2
    assert st.loc[("x", "c"), "bias"] == pytest.approx(0.0)
    assert "d" not in set(result.statistics["statistic"])  # tiny truth: skipped

    # Ratios to original, baseline: b has SD = RMSE = 0 under original (20, 20, 20 = truth): left out.
    # SD ratios: a sqrt(4/3) / 2, e 0 / 10, f sqrt(12) / 2.
    sd_a, sd_e, sd_f = math.sqrt(4 / 3) / 2, 0.0, math.sqrt(12) / 2
    # RMSE ratios: a sqrt(4/3) / sqrt(11/3), e 0 / sqrt(200/3), f sqrt(36/3) / sqrt((0 + 4 + 16) / 3).
    rm_a, rm_e, rm_f = math.sqrt(4 / 11), 0.0, math.sqrt(12 / (20 / 3))
    xb = m["x"]["baseline"]
    assert xb["sd_ratio_median"] == pytest.approx(sd_a)
    assert xb["sd_ratio_mean"] == pytest.approx((sd_a + sd_e + sd_f) / 3)
    assert xb["rmse_ratio_median"] == pytest.approx(rm_a)
    assert xb["rmse_ratio_mean"] == pytest.approx((rm_a + rm_e + rm_f) / 3)
    assert xb["sd_ratio_excluded"] == 1 and xb["rmse_ratio_excluded"] == 1
    assert xb["sd_ratio_statistics"] == 3 and xb["statistics"] == 4
    # Original against itself: every ratio 1, the interval too.
    ob = m["original"]["baseline"]
    assert ob["sd_ratio_median"] == ob["sd_ratio_median_lo"] == ob["sd_ratio_median_hi"] == pytest.approx(1.0)
    # Reform c: original -4, -6, -5 (SD 1), x -5, -5, -5 (SD 0): ratio 0.
    assert m["x"]["reform"]["sd_ratio_median"] == pytest.approx(0.0)
    assert m["x"]["reform"]["rmse_ratio_mean"] == pytest.approx(0.0)

    # Median |bias| / |truth| of x, baseline: a (2/3)/10, b 0, e 0, f 2/50 -> median of (0, 0, 0.04, 0.0667) = 0.02.
    assert xb["abs_rel_bias_median"] == pytest.approx(0.02)
    # Release jump: |x_r - x_r'| / |truth| over the 4 statistics x 3 pairs.
    # x: a 0, .2, .2; b .1, .05, .05; e 0, 0, 0; f .12, 0, .12 -> sorted, the 6th and 7th are .05, .05.
    assert xb["release_jump_median"] == pytest.approx(0.05)
    # original: a .2, .4, .2; b 0, 0, 0; e .1, .2, .1; f .04, .08, .04 -> (.08 + .1) / 2.
    assert ob["release_jump_median"] == pytest.approx(0.09)

    # Means over replicates of the per-replicate figures.
    assert m["original"]["kish_ess_mean"] == pytest.approx(200.0)
    assert m["x"]["source_kish_ess_mean"] == pytest.approx(10.0)

    r = result.ratios.set_index(["method", "statistic_kind", "quantity"])
    assert r.loc[("x", "baseline", "sd"), "median"] == pytest.approx(sd_a)
    assert len(result.ratios) == 2 * 2 * 2


def test_bootstrap_interval_brackets_the_estimate_and_is_deterministic():
    rng = np.random.default_rng(5)
    R, S = 8, 60
    truth = pd.DataFrame({"statistic": [f"s{i}" for i in range(S)],
                          "statistic_kind": ["baseline"] * 40 + ["reform"] * 20, "metric": "m",
                          "truth": rng.uniform(50, 150, S), "tiny": False})
    scale = rng.uniform(1, 10, S)
    estimates = []
    for _ in range(R):
        noise = rng.standard_normal(S) * scale
        estimates.append(pd.DataFrame({"statistic": truth["statistic"], "original": truth["truth"] + noise,
                                       "half": truth["truth"] + 0.5 * noise + rng.standard_normal(S) * 0.2 * scale}))
    figures = [{} for _ in range(R)]
    first = summarise(truth, estimates, figures, bootstrap=300, seed=11, methods=("original", "half"))
    for kind in ("baseline", "reform"):
        k = first.metrics["half"][kind]
        for q in ("sd", "rmse"):
            for s in ("median", "mean"):
                lo, point, hi = k[f"{q}_ratio_{s}_lo"], k[f"{q}_ratio_{s}"], k[f"{q}_ratio_{s}_hi"]
                assert lo <= point <= hi, (kind, q, s, lo, point, hi)
                assert lo < hi
        assert 0.3 < k["sd_ratio_median"] < 0.8
    again = summarise(truth, estimates, figures, bootstrap=300, seed=11, methods=("original", "half"))
    assert json.dumps(again.metrics, sort_keys=True) == json.dumps(first.metrics, sort_keys=True)
    other = summarise(truth, estimates, figures, bootstrap=300, seed=12, methods=("original", "half"))
    assert other.metrics["half"]["baseline"]["sd_ratio_median_lo"] != first.metrics["half"]["baseline"]["sd_ratio_median_lo"]


# ---- params ---------------------------------------------------------------------------------------
def _params(**study):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["study"] = {**params.get("study", {}), **study}
    params["_path"] = "params.yaml"
    return params


@pytest.mark.parametrize("study, named", [
    ({"replicates": [0, 0, 1]}, "study.replicates"),
    ({"replicates": [3]}, "study.replicates"),
    ({"replicates": [0, -1]}, "study.replicates"),
    ({"replicates": "0-7"}, "study.replicates"),
    ({"replicates": [0, 1.5]}, "study.replicates"),
    ({"replicates": [0, BOOTSTRAP_STREAM]}, "study.replicates"),
    ({"max_weight_ratio": 1}, "study.max_weight_ratio"),
    ({"max_weight_ratio": 0.5}, "study.max_weight_ratio"),
    ({"min_weight_ratio": 1.5}, "study.min_weight_ratio"),
    ({"bootstrap": 1}, "study.bootstrap"),
    ({"seed": -3}, "study.seed"),
    ({"workers": 0}, "study.workers"),
    ({"scheduler": ""}, "study.scheduler"),
    ({"overrides": {"nonsense": 1}}, "study.overrides.nonsense"),
    ({"overrides": {"loop": 3}}, "study.overrides.loop"),
    ({"replicate": [0, 1]}, "study.replicate"),
    ({"variants": [1, 2]}, "study.variants"),
    ({"variants": {"raked": {}}}, "study.variants.raked"),
    ({"variants": {"two words": {}}}, "study.variants.two words"),
    ({"variants": {"v": {"loop": {"max_rounds": 2}}}}, "study.variants.v"),
    ({"variants": {"v": {"start": "population"}}}, "study.variants.v.start"),
    ({"variants": {"v": {"recalibrate": {"cap_source": True}}}}, "study.variants.v.recalibrate"),
    ({"variants": {"v": {"cap": -5}}}, "study.variants.v"),
    ({"variants": {"v": {"recalibrate": {"cap_sources": "yes"}}}}, "study.variants.v"),
    ({"variants": {"v": {"recalibrate": {"prune": -1}}}}, "study.variants.v"),
])
def test_bad_study_param_is_named(study, named):
    with pytest.raises(ParameterError, match=named.replace(".", r"\.")):
        check_params(_params(**study))


def test_default_params_and_overrides():
    params = _params(overrides={"loop": {"max_rounds": 3}})
    settings, recipe, numbers = check_params(params)
    assert settings.replicates == tuple(range(8)) and settings.max_weight_ratio > 1
    assert recipe["loop"]["max_rounds"] == 3 and recipe["loop"]["seed"] == params["loop"]["seed"]
    assert "study" not in recipe and recipe["dask"]["workers"] == 1 and recipe["dask"]["enabled"] is False
    assert numbers["eval_seed"] == params["evaluate"]["seed"]
    plain = _params(overrides={})
    assert recipe_params(plain)["loop"] == plain["loop"] and recipe_params(plain)["cap"] == plain["cap"]


@pytest.mark.parametrize("script, extra", [("study_replicate.py", ["--replicate", "0"]), ("study_run.py", []),
                                           ("study_summarise.py", [])])
def test_stage_scripts_exit_2_on_a_bad_param(tmp_path, script, extra):
    params = _params(replicates=[1, 1])
    params.pop("_path")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / script), "--quiet"] + extra, cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "study.replicates" in proc.stderr and "Traceback" not in proc.stderr


# ---- the world's draw is shared ---------------------------------------------------------------------
def test_replicates_are_drawn_by_the_worlds_code(world):
    from weightreg.evaluate import draw_replicate
    from weightreg.world import draw_survey, draw_world_survey

    params = {"seed": 3, "population_households": 4000, "sample_households": 800, "enhancement_households": 40}
    # generate_world(rng=default_rng(3)) spawns population, survey and calibration streams in that order.
    _, survey_rng, cal_rng = np.random.default_rng(3).spawn(3)
    drawn = draw_world_survey(world.population, params, survey_rng, cal_rng)
    assert np.array_equal(drawn.survey.weights, world.survey.weights)
    pd.testing.assert_frame_equal(drawn.survey.person, world.survey.person)
    pd.testing.assert_frame_equal(drawn.targets, world.targets)
    # evaluate's bootstrap replicate is draw_survey's survey, misreporting included.
    rep, prior = draw_replicate(world.population, params, np.random.default_rng(1))
    same = draw_survey(world.population, params, np.random.default_rng(1))
    pd.testing.assert_frame_equal(rep.person, same.person)
    assert np.array_equal(prior, same.weights)
    reported = rep.person["universal_credit_reported"].to_numpy()
    truth = world.population.person.set_index("person_id").loc[rep.person["person_id"][:1000],
                                                               "universal_credit_reported"].to_numpy()
    assert np.any(reported[:1000] < truth)  # under-reported, as in the world's survey


def test_another_world_seeds_population_is_generate_worlds(world):
    from weightreg.world import world_population

    params = {"seed": 3, "population_households": 4000, "sample_households": 800, "enhancement_households": 40}
    population = world_population(params)
    pd.testing.assert_frame_equal(population.person, world.population.person)
    assert np.array_equal(population.weights, world.population.weights)
    other = world_population({**params, "seed": 4})
    assert not np.array_equal(other.person["employment_income"].to_numpy()[:500],
                              population.person["employment_income"].to_numpy()[:500])


def test_world_seed_mode_rejects_the_dvc_worlds_seed(tmp_path):
    params = _params()
    params.pop("_path")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "study").mkdir()
    (tmp_path / "study/dvc.yaml").write_text("stages: {}\n")
    proc = subprocess.run([sys.executable, str(ROOT / "stages/study_run.py"), "--quiet", "--world-seed",
                           str(params["world"]["seed"])], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "--world-seed" in proc.stderr and "Traceback" not in proc.stderr


# ---- end to end: dvc repro study/dvc.yaml on a small world ------------------------------------------
def _load_small_pipeline():
    spec = importlib.util.spec_from_file_location("small_pipeline", ROOT / ".ci/small_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


@pytest.mark.slow
def test_study_pipeline_on_a_small_world(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    sp = _load_small_pipeline()
    repo = tmp_path / "repo"
    repo.mkdir()
    sp.copy_tree(repo)
    sp.apply_small_params(repo)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "DVC_NO_ANALYTICS": "1"}
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    sp.run(["git", "init", "-q"], repo, env)
    sp.run(git + ["add", "-A"], repo, env)
    sp.run(git + ["commit", "-qm", "small world"], repo, env)
    dvc = [sys.executable, "-m", "dvc"]
    sp.run(dvc + ["repro", "synthesize"], repo, env)

    first = sp.run(dvc + ["repro", "study/dvc.yaml"], repo, env)
    replicates = yaml.safe_load((repo / "params.yaml").read_text())["study"]["replicates"]
    expected = [f"study/dvc.yaml:replicate@{k}" for k in replicates] + ["study/dvc.yaml:summarise", "study/dvc.yaml:plot"]
    assert sp.ran(first) == expected, first[-3000:]
    metrics = json.loads((repo / "metrics/study.json").read_text())
    assert metrics["replicates"] == len(replicates)
    study = yaml.safe_load((repo / "params.yaml").read_text())["study"]
    variants = list(study["variants"])
    assert {"same", "row_cap", "source_cap_low", "raked_low"} <= set(variants)
    cap = yaml.safe_load((repo / "params.yaml").read_text())["cap"]
    for k in replicates:
        est = pd.read_parquet(repo / f"study/replicates/{k}.parquet")
        figures = json.loads((repo / f"study/replicates/{k}.json").read_text())["methods"]
        # a variant with nothing changed is the final recalibration itself, by the same runner: the same numbers
        np.testing.assert_array_equal(est["same"].to_numpy(), est["regularised"].to_numpy())
        assert figures["same"] == figures["regularised"]
        # cap_sources (the default) bounds each source household's total; row_cap bounds rows only
        assert figures["regularised"]["max_source_weight"] <= cap * (1 + 1e-12)
        assert figures["row_cap"]["max_weight"] <= cap * (1 + 1e-12)
        assert figures["source_cap_low"]["max_source_weight"] <= study["variants"]["source_cap_low"]["cap"] * (1 + 1e-12)
        assert figures["raked_low"]["max_weight"] <= study["variants"]["raked_low"]["cap"] * (1 + 1e-12)
        assert figures["raked_low"]["n_sources"] == figures["raked_low"]["n_records"]  # no offspring
    for method in ("original", "trimmed", "raked", "bounded_ratio", "augmented", "regularised", *variants):
        for kind in ("baseline", "reform"):
            k = metrics[method][kind]
            assert k["statistics"] > 0
            for q in ("sd", "rmse"):
                for key in (f"{q}_ratio_median", f"{q}_ratio_mean", f"{q}_ratio_median_lo", f"{q}_ratio_median_hi"):
                    assert math.isfinite(k[key]) and k[key] >= 0, (method, kind, key)
        assert metrics[method]["source_kish_ess_mean"] > 0
    assert metrics["original"]["baseline"]["sd_ratio_median"] == pytest.approx(1.0)
    ratios = pd.read_csv(repo / "plots/study/study_ratios.csv")
    assert len(ratios) == (6 + len(variants)) * 2 * 2
    assert list(dict.fromkeys(ratios["method"])) == ["original", "trimmed", "raked", "bounded_ratio", "augmented",
                                                     "regularised", *variants]
    assert (repo / "plots/study/study_ratios.png").stat().st_size > 0

    second = sp.run(dvc + ["repro", "study/dvc.yaml"], repo, env)
    assert sp.ran(second) == [], f"a second dvc repro study/dvc.yaml reran {sp.ran(second)}"
    main = sp.run(dvc + ["status", "dvc.yaml"], repo, env)  # the main pipeline does not see the study's stages
    assert "study/" not in main

    # The Dask driver: replicate 2's outputs deleted, so only it is outdated; the driver runs it on Dask and
    # commits it. Then the stage itself, forced, writes the same bytes (determinism, and driver = stage), so
    # dvc status stays clean.
    last = replicates[-1]
    committed = {p.name: _md5(p) for p in (repo / "study/replicates").glob(f"{last}.*")}
    assert len(committed) == 2
    for name in committed:
        (repo / "study/replicates" / name).unlink()
    out = sp.run([sys.executable, "stages/study_run.py", "--workers", "1"], repo, env)
    assert f"1 of {len(replicates)} replicate(s) to run [{last}]" in out, out[-3000:]
    assert "is up to date" in out and sp.ran(out) == [], out[-3000:]  # summary unchanged: nothing reran
    assert {p.name: _md5(p) for p in (repo / "study/replicates").glob(f"{last}.*")} == committed
    forced = sp.run(dvc + ["repro", "-s", "-f", f"study/dvc.yaml:replicate@{last}"], repo, env)
    assert sp.ran(forced) == [f"study/dvc.yaml:replicate@{last}"]
    assert {p.name: _md5(p) for p in (repo / "study/replicates").glob(f"{last}.*")} == committed
    status = sp.run(dvc + ["status", "study/dvc.yaml"], repo, env)
    assert "up to date" in status, status
