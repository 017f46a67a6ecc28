"""simulator: policyengine (weightreg.policyengine_backend).

The first tests run in the base install (no policyengine-uk): the missing-extra error, the reform
sampler over PolicyEngine paths. The ones marked ``policyengine`` need the extra and are skipped
where ``policyengine_uk`` does not import; they compare the surface with direct PolicyEngine UK
calculations on a tiny file written by weightreg itself.
"""

import numpy as np
import pandas as pd
import pytest
from surveys import random_survey

import weightreg.policyengine_backend as peb
from weightreg.cli import main, simulate_surface_from_params
from weightreg.errors import OptionalDependencyError, ParameterError, WeightregError
from weightreg.policyengine_format import read_survey, write_survey

HINT = 'pip install "weightreg[policyengine]"'
PATHS = [
    "gov.hmrc.income_tax.rates.uk[0].rate",
    "gov.hmrc.income_tax.allowances.personal_allowance.amount",
    "gov.dwp.universal_credit.means_test.reduction_rate",
]


def tiny_survey(n=8, seed=0):
    """``n`` households of 1-4 persons (FRS-style ids), one benefit unit each."""
    return random_survey(n, np.random.default_rng(seed), pe_ids=True, self_employed=0.2, adult_ages=(20, 85),
                         child_ages=(0, 16), earnings_mu=10.2, benunit_heads=True, time_period="2025")


def pe_params(count=1, paths=PATHS, **extra):
    params = {"simulator": "policyengine", "threshold": 0.05, "surface": {},
              "reforms": {"count": count, "seed": 4, "low": 0.8, "high": 1.2},
              "policyengine": {"reform_paths": list(paths)}}
    params.update(extra)
    return params


# ---- base install ---------------------------------------------------------------------------------
def test_missing_extra_is_a_clear_error_naming_the_install_command(monkeypatch):
    monkeypatch.setattr(peb, "policyengine_available", lambda: False)
    with pytest.raises(OptionalDependencyError, match=r'pip install "weightreg\[policyengine\]"') as info:
        simulate_surface_from_params(tiny_survey(), pe_params())
    assert isinstance(info.value, WeightregError)


def test_cli_without_the_extra_exits_2_with_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(peb, "policyengine_available", lambda: False)
    path = write_survey(tiny_survey(), tmp_path / "tiny.h5")
    monkeypatch.chdir(tmp_path)
    code = main(["diagnose", str(path), "--simulator", "policyengine", "--reforms", "3", "--quiet", "-o", "out"])
    assert code == 2
    err = capsys.readouterr().err
    assert "weightreg diagnose: error:" in err and HINT in err
    assert not (tmp_path / "out" / "diagnose.json").exists()


def test_regularise_without_the_extra_exits_2_before_training(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(peb, "policyengine_available", lambda: False)
    survey = tiny_survey()
    path = write_survey(survey, tmp_path / "tiny.h5")
    targets = tmp_path / "targets.csv"
    pd.DataFrame({"name": ["households"], "entity": ["household"], "variable": [""], "aggregation": ["count"],
                  "filter": [""], "value": [float(survey.weights.sum())]}).to_csv(targets, index=False)
    monkeypatch.chdir(tmp_path)
    code = main(["regularise", str(path), "--targets", str(targets), "--simulator", "policyengine", "--quiet",
                 "-o", "out.h5"])
    assert code == 2
    assert HINT in capsys.readouterr().err
    assert not (tmp_path / "out.generator.pkl").exists() and not (tmp_path / "out.h5").exists()


@pytest.mark.skipif(peb.policyengine_available(), reason="policyengine_uk is installed here")
def test_base_install_really_lacks_the_extra():
    with pytest.raises(OptionalDependencyError, match="not installed"):
        peb.require_policyengine()


def test_reform_batches_are_contiguous_near_equal_and_keep_order():
    items = list(range(10))
    for n in (1, 2, 3, 4, 10, 25):
        batches = peb._batches(items, n)
        assert [x for b in batches for x in b] == items
        assert len(batches) == min(n, 10) and all(batches)
        assert max(map(len, batches)) - min(map(len, batches)) <= 1
    assert peb._batches(items, 3) == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]


def test_unknown_simulator_is_a_parameter_error():
    with pytest.raises(ParameterError, match="'builtin' or 'policyengine'"):
        simulate_surface_from_params(tiny_survey(), {"simulator": "openfisca", "surface": {}})


def test_random_reforms_draw_only_the_listed_policyengine_paths():
    a = peb.reforms_from_params(pe_params(count=20))
    assert a == peb.reforms_from_params(pe_params(count=20))  # same seed, same reforms
    assert len(a) == 20
    used = {path for reform in a for path in reform}
    assert used == set(PATHS)
    for reform in a:
        assert 2 <= len(reform) <= 3
        assert all(0.8 <= entry["multiply"] <= 1.2 for entry in reform.values())
    default = peb.reforms_from_params({"reforms": {"count": 5, "seed": 1}})
    assert {p for r in default for p in r} <= set(peb.DEFAULT_REFORM_PATHS)
    with pytest.raises(ParameterError, match="reform_paths"):
        peb.reforms_from_params({"reforms": {"count": 1}, "policyengine": {"reform_paths": PATHS[0]}})


def test_every_stage_draws_its_reforms_for_the_params_simulator():
    """Diagnose, the loop and evaluate's fresh reforms (its own seed and count) all go through
    runners.reforms_from_params: PolicyEngine paths under simulator: policyengine, builtin ones otherwise."""
    from weightreg.parameters import REFORMABLE_PATHS
    from weightreg.runners import reforms_from_params

    fresh = reforms_from_params(pe_params(count=20), seed=99, count=6)
    assert len(fresh) == 6 and {p for r in fresh for p in r} <= set(PATHS)
    assert fresh == peb.reforms_from_params(pe_params(count=20), seed=99, count=6)
    assert fresh != reforms_from_params(pe_params(count=20), seed=98, count=6)
    assert reforms_from_params(pe_params(count=3)) == peb.reforms_from_params(pe_params(count=3))
    builtin = reforms_from_params(dict(pe_params(count=3), simulator="builtin"), seed=99, count=6)
    assert {p for r in builtin for p in r} <= set(REFORMABLE_PATHS) and not {p for r in builtin for p in r} & set(PATHS)


# ---- with policyengine-uk installed ------------------------------------------------------------
@pytest.fixture(scope="module")
def pe_file(tmp_path_factory):
    pytest.importorskip("policyengine_uk")
    path = tmp_path_factory.mktemp("pe") / "tiny.h5"
    write_survey(tiny_survey(), path)
    return path


@pytest.fixture(scope="module")
def pe_surface(pe_file):
    return simulate_surface_from_params(read_survey(pe_file), pe_params(count=1))


def _direct(path, variable, reform=None):
    from policyengine_uk import Microsimulation

    sim = Microsimulation(dataset=str(path), reform=reform)
    return np.asarray(sim.calculate(variable, 2025, map_to="household", unweighted=True), dtype=float)


@pytest.mark.policyengine
def test_baseline_metric_equals_a_direct_policyengine_calculation(pe_file, pe_surface):
    i = pe_surface.metrics.index("household_net_income")
    direct = _direct(pe_file, "household_net_income")
    assert direct.shape == (8,) and np.abs(direct).sum() > 0
    np.testing.assert_array_equal(pe_surface.baseline[i], direct)
    tax = _direct(pe_file, "income_tax")
    np.testing.assert_array_equal(pe_surface.baseline[pe_surface.metrics.index("income_tax")], tax)


@pytest.mark.policyengine
def test_reform_delta_equals_a_direct_reform_calculation(pe_file, pe_surface):
    (reform,) = pe_surface.reforms
    pe_reform = peb.to_policyengine_reform(reform, "2025")
    for path, entry in reform.items():
        assert path in PATHS and set(pe_reform[path]) == {"2025"}
    i = pe_surface.metrics.index("income_tax")
    direct = _direct(pe_file, "income_tax", pe_reform) - _direct(pe_file, "income_tax")
    assert np.abs(direct).sum() > 0  # the reform moves income tax on this file
    np.testing.assert_allclose(pe_surface.deltas[0, i], direct, rtol=0, atol=1e-9)


@pytest.mark.policyengine
def test_reform_translation_scales_the_baseline_value_and_names_bad_paths(pe_file):
    from policyengine_uk import CountryTaxBenefitSystem

    root = CountryTaxBenefitSystem().parameters
    out = peb.to_policyengine_reform({"gov.hmrc.income_tax.rates.uk[0].rate": {"multiply": 1.5}}, 2025, root)
    assert out == {"gov.hmrc.income_tax.rates.uk[0].rate": {"2025": pytest.approx(0.3)}}
    with pytest.raises(ParameterError, match=r"gov\.hmrc\.income_tax\.rates\.basic"):
        peb.to_policyengine_reform({"gov.hmrc.income_tax.rates.basic": 0.2}, 2025, root)
    with pytest.raises(ParameterError, match="group"):
        peb.to_policyengine_reform({"gov.hmrc.income_tax.rates": {"multiply": 1.1}}, 2025, root)
    bad = [{"gov.hmrc.income_tax.rates.uk[0].rate": {"multiply": 1.1}}, {"gov.hmrc.no_such_parameter": 5.0}]
    with pytest.raises(ParameterError, match=r"reform 1 .*gov\.hmrc\.no_such_parameter"):
        simulate_surface_from_params(read_survey(pe_file), pe_params(), reforms=bad)


@pytest.mark.policyengine
def test_policyengine_sweep_on_two_dask_workers_is_identical(pe_file):
    survey = read_survey(pe_file)
    here = simulate_surface_from_params(survey, pe_params(count=3))
    for dask in ({"workers": 2}, {"workers": 2, "reforms_per_task": 1}, {"enabled": True, "workers": 1}):
        data = simulate_surface_from_params(survey, pe_params(count=3, dask=dask))
        assert data.reforms == here.reforms
        assert data.deltas.tobytes() == here.deltas.tobytes(), dask
        assert data.baseline.tobytes() == here.baseline.tobytes(), dask


@pytest.mark.policyengine
def test_reforms_in_place_equal_fresh_simulations_and_never_stack(pe_file):
    survey = read_survey(pe_file)
    root = __import__("policyengine_uk").CountryTaxBenefitSystem().parameters
    reforms = [peb.to_policyengine_reform(r, "2025", root) for r in peb.reforms_from_params(pe_params(count=3))]
    # The same path twice in a row: a stacked second reform would scale the first one's value.
    reforms.append(dict(reforms[-1]))
    shared = (survey.person, survey.benunit, survey.household, "2025",
              ("income_tax", "universal_credit", "household_net_income"))
    sequence = [None, *reforms, None]  # the trailing baseline checks the reset after a reform
    in_place = list(peb.simulate_in_place(shared, sequence))
    assert len(in_place) == len(sequence)
    for k, reform in enumerate(sequence):
        fresh = peb.calculate_metrics(shared, reform)
        for name, values in fresh.items():
            assert in_place[k][name].tobytes() == values.tobytes(), (k, name)
    moved = [np.abs(out["income_tax"] - in_place[0]["income_tax"]).sum() for out in in_place[1:-1]]
    assert min(moved) > 0  # every reform changes income tax on this file, so the comparison has teeth
    assert in_place[-2]["income_tax"].tobytes() == in_place[-3]["income_tax"].tobytes()


@pytest.mark.policyengine
def test_cli_diagnose_with_policyengine(pe_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["diagnose", str(pe_file), "--simulator", "policyengine", "--reforms", "1", "--quiet", "-o", "out"])
    assert code == 0, capsys.readouterr().err
    records = pd.read_parquet(tmp_path / "out" / "records.parquet")
    assert len(records) == 8 and records["max_influence"].gt(0).all()
    assert "Kish ESS" in capsys.readouterr().out


@pytest.mark.policyengine
def test_a_file_with_offspring_loads_and_simulates_in_policyengine(tmp_path):
    pytest.importorskip("policyengine_uk")
    from weightreg import features as F
    from weightreg.offspring import spawn

    survey = tiny_survey()
    spec = F.FeatureSpec.from_survey(survey)
    extraction = F.extract(survey, spec)
    parents = extraction.features.index[:2].to_numpy()
    # Exact clones as offspring: built from their rows alone, new ids, as the loop writes them.
    rows = extraction.features.loc[parents].reset_index().rename(columns={"household_id": "parent_id"})
    result = spawn(survey, parents, [2, 2], rows, extraction.features.loc[parents], spec, 1,
                   rng=np.random.default_rng(0))
    path = tmp_path / "augmented.h5"
    write_survey(result.survey, path)
    tax = _direct(path, "income_tax")
    net = _direct(path, "household_net_income")
    assert tax.shape == net.shape == (result.survey.n_households,) and np.isfinite(net).all()
    ids = read_survey(path).household_ids
    for parent, child in zip(parents, result.new_household_ids):
        # Income tax has no random draws: a clone pays exactly what its parent pays.
        assert tax[ids == child][0] == tax[ids == parent][0]
