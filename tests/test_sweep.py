"""The reform sweep on Dask (weightreg.sweep): identical results with 1 and 2 workers, params, CLI."""

import numpy as np
import pandas as pd
import pytest
from surveys import random_survey

from weightreg.cli import main, simulate_surface_from_params
from weightreg.diagnose import evaluate_surface, simulate_surface
from weightreg.errors import ParameterError
from weightreg.parameters import random_reforms
from weightreg.policyengine_format import write_survey
from weightreg.sweep import (
    SweepSettings,
    dask_client,
    map_reforms,
    settings_from_params,
)


def tiny_survey(n=40, seed=0):
    """``n`` random households of 1-4 persons (FRS-style ids), one benefit unit each."""
    return random_survey(n, np.random.default_rng(seed), pe_ids=True, self_employed=0.2)


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


def _lengths(shared, batch):
    return len(batch)


def test_map_reforms_keeps_item_order_and_shares_the_payload():
    with dask_client(SweepSettings(enabled=True, workers=2)) as client:
        assert map_reforms(_square, {"offset": 100}, list(range(8)), client=client) == [100 + k * k for k in range(8)]
        assert map_reforms(_square, {"offset": 0}, [], client=client) == []
        # Batches as items, each counted by its length on the progress bar, still in order.
        assert map_reforms(_lengths, None, [[1], [2, 3], [4, 5, 6]], client=client, item_size=len) == [1, 2, 3]
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
    assert settings_from_params({"dask": {"reforms_per_task": 4}}).reforms_per_task == 4
    assert settings_from_params({"dask": {"reforms_per_task": None}}).reforms_per_task is None
    with pytest.raises(ParameterError, match="dask.reforms_per_task"):
        settings_from_params({"dask": {"reforms_per_task": 0}})


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
