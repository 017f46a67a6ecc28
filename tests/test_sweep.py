"""The reform sweep on Dask (weightreg.sweep): identical results with 1 and 2 workers, params, CLI."""

import numpy as np
import pandas as pd
import pytest

from weightreg.cli import main, simulate_surface_from_params
from weightreg.diagnose import evaluate_surface, simulate_surface
from weightreg.errors import ParameterError
from weightreg.parameters import random_reforms
from weightreg.policyengine_format import write_survey
from weightreg.survey import REGIONS, TENURE_TYPES, Survey
from weightreg.sweep import SweepSettings, dask_client, map_reforms, settings_from_params


def tiny_survey(n=40, seed=0):
    """``n`` random households of 1-4 persons, one benefit unit each."""
    rng = np.random.default_rng(seed)
    size = rng.integers(1, 5, n)
    hid = np.arange(1, n + 1)
    ph = np.repeat(hid, size)
    m = len(ph)
    pos = np.arange(m) - np.repeat(np.r_[0, np.cumsum(size)[:-1]], size)
    age = np.where(pos < 2, rng.integers(18, 90, m), rng.integers(0, 18, m)).astype(float)
    person = pd.DataFrame(
        {"person_id": ph * 1000 + pos, "person_benunit_id": ph * 100, "person_household_id": ph, "age": age,
         "employment_income": np.where((age >= 18) & (age < 66), rng.lognormal(10, 0.8, m), 0.0),
         "self_employment_income": np.where(rng.random(m) < 0.2, rng.lognormal(9.5, 1, m), 0.0),
         "state_pension_reported": np.where(age >= 66, 9000.0, 0.0), "is_household_head": pos == 0}
    )
    tenure = np.array(TENURE_TYPES)[rng.integers(0, 5, n)]
    household = pd.DataFrame(
        {"household_id": hid, "household_weight": rng.lognormal(7, 0.6, n),
         "region": np.array(REGIONS)[rng.integers(0, 12, n)], "tenure_type": tenure,
         "rent": np.where(pd.Series(tenure).str.startswith("RENT"), rng.uniform(4000, 15000, n), 0.0),
         "council_tax": rng.uniform(1000, 3000, n)}
    )
    benunit = pd.DataFrame({"benunit_id": hid * 100, "is_married": size >= 2})
    return Survey(person, benunit, household).validate()


def _square(shared, item):  # module level: Dask pickles it by reference
    return shared["offset"] + item * item


def _fail_on_three(shared, item):
    if item == 3:
        raise ValueError(f"task {item} failed")
    return item


@pytest.fixture(scope="module")
def survey():
    return tiny_survey()


@pytest.fixture(scope="module")
def reforms():
    return random_reforms(6, np.random.default_rng(3))


@pytest.fixture(scope="module")
def in_process(survey, reforms):
    return simulate_surface(survey, reforms=reforms)


@pytest.mark.parametrize("workers", [1, 2])
def test_sweep_is_bit_identical_to_the_in_process_loop(survey, reforms, in_process, workers):
    data = simulate_surface(survey, reforms=reforms, sweep=SweepSettings(enabled=True, workers=workers))
    assert np.abs(in_process.deltas).sum() > 0  # the reforms do move the metrics
    assert data.deltas.dtype == in_process.deltas.dtype
    assert data.deltas.tobytes() == in_process.deltas.tobytes()
    assert data.baseline.tobytes() == in_process.baseline.tobytes()
    assert data.metrics == in_process.metrics and data.reforms == in_process.reforms
    a = evaluate_surface(in_process, threshold=0.05).records
    b = evaluate_surface(data, threshold=0.05).records
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_map_reforms_keeps_item_order_and_shares_the_payload():
    with dask_client(SweepSettings(enabled=True, workers=2)) as client:
        assert map_reforms(_square, {"offset": 100}, list(range(8)), client=client) == [100 + k * k for k in range(8)]
        assert map_reforms(_square, {"offset": 0}, [], client=client) == []
        with pytest.raises(ValueError, match="task 3 failed"):
            map_reforms(_fail_on_three, None, list(range(6)), client=client)


def test_settings_from_params_and_when_the_sweep_is_distributed():
    assert settings_from_params({}) == SweepSettings()
    assert not SweepSettings().distributed
    assert SweepSettings(enabled=True).distributed
    assert SweepSettings(workers=2).distributed
    assert SweepSettings(scheduler="tcp://127.0.0.1:8786").distributed
    s = settings_from_params({"dask": {"enabled": False, "scheduler": None, "workers": 3}})
    assert s.workers == 3 and s.distributed
    with pytest.raises(ParameterError, match="dask.workers"):
        settings_from_params({"dask": {"workers": 0}})
    with pytest.raises(ParameterError, match="dask.worker"):
        settings_from_params({"dask": {"worker": 2}})
    with pytest.raises(ParameterError, match="dask.enabled"):
        settings_from_params({"dask": {"enabled": "yes"}})


def test_params_route_the_builtin_sweep_through_dask(survey, in_process, reforms, monkeypatch):
    import weightreg.sweep as sweep_module

    calls = []
    real = sweep_module.builtin_reform_results

    def spy(*args, **kwargs):
        calls.append(kwargs.get("settings"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "builtin_reform_results", spy)
    params = {"simulator": "builtin", "surface": {}, "dask": {"workers": 1, "enabled": False}}
    quick = simulate_surface_from_params(survey, params, reforms=reforms)
    assert calls == []  # one worker, not enabled: in process
    params["dask"] = {"workers": 2}
    data = simulate_surface_from_params(survey, params, reforms=reforms)
    assert calls == [SweepSettings(workers=2)]
    assert data.deltas.tobytes() == quick.deltas.tobytes() == in_process.deltas.tobytes()


def test_cli_diagnose_with_two_workers_matches_in_process(survey, tmp_path, monkeypatch, capsys):
    path = write_survey(survey, tmp_path / "tiny.h5")
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the CLI's built-in defaults
    base = ["diagnose", str(path), "--reforms", "3", "--seed", "5", "--quiet"]
    assert main(base + ["-o", "a"]) == 0
    assert main(base + ["-o", "b", "--workers", "2"]) == 0
    a = pd.read_parquet(tmp_path / "a" / "records.parquet")
    b = pd.read_parquet(tmp_path / "b" / "records.parquet")
    assert a["max_influence"].gt(0).any()
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (tmp_path / "a" / "diagnose.json").read_text() == (tmp_path / "b" / "diagnose.json").read_text()
