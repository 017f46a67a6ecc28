"""Tests for weightreg.parameters: loading, paths, reforms, random reforms."""

import numpy as np
import pytest
import yaml

from weightreg.errors import ParameterError
from weightreg.parameters import (
    REFORMABLE_PATHS,
    Parameters,
    load_parameters,
    random_reforms,
)


@pytest.fixture(scope="module")
def params():
    return load_parameters()


def test_packaged_values(params):
    assert params.get("income_tax.personal_allowance") == 12570
    assert params.get("income_tax.allowance_taper_threshold") == 100000
    assert params.get("income_tax.rates.basic") == 0.20
    assert params.get("income_tax.rates.higher") == 0.40
    assert params.get("income_tax.rates.additional") == 0.45
    assert params.get("income_tax.thresholds.higher") == 37700
    assert params.get("income_tax.thresholds.additional") == 125140
    assert params.get("national_insurance.class_1.primary_threshold") == 12570
    assert params.get("national_insurance.class_1.upper_earnings_limit") == 50270
    assert params.get("national_insurance.class_1.main_rate") == 0.08
    assert params.get("national_insurance.class_4.main_rate") == 0.06
    assert params.get("child_benefit.eldest_weekly") == 26.05
    assert params.get("child_benefit.additional_weekly") == 17.25
    assert params.get("universal_credit.standard_allowance_monthly.couple_one_25_plus") == 628.10
    assert params.get("universal_credit.taper") == 0.55
    assert params.get("universal_credit.child_limit") == 2
    assert params.get("pension_credit.standard_minimum_guarantee_weekly.single") == 227.10
    assert params.get("pension_credit.standard_minimum_guarantee_weekly.couple") == 346.60
    assert params.get("state_pension.uprating") == 1.0
    assert params.get("state_pension.pension_age") == 66
    assert isinstance(params.get("income_tax.personal_allowance"), float)
    assert params["income_tax.rates.basic"] == 0.20
    assert "income_tax.rates.basic" in params and "income_tax.rates" not in params


def test_paths_are_numeric_leaves_and_cover_reformable(params):
    paths = params.paths()
    assert len(paths) == len(set(paths))
    assert not any(p.startswith("metadata") for p in paths)
    assert all(isinstance(params.get(p), float) for p in paths)
    assert set(REFORMABLE_PATHS) <= set(paths)
    assert "universal_credit.child_limit" not in REFORMABLE_PATHS


def test_default_load_is_shared_but_to_dict_is_a_copy(params):
    d = params.to_dict()
    d["income_tax"]["personal_allowance"] = 1
    assert load_parameters().get("income_tax.personal_allowance") == 12570
    assert d["metadata"]["year"] == "2025-26"


def test_unknown_path_lists_close_matches(params):
    with pytest.raises(ParameterError) as info:
        params.get("income_tax.rates.basc")
    msg = str(info.value)
    assert "income_tax.rates.basic" in msg and "nearest valid paths" in msg
    assert isinstance(info.value, KeyError)  # ParameterError is a KeyError
    with pytest.raises(ParameterError, match="income_tax.personal_allowance"):
        params.get("income_tax.personal_alowance")
    # a bare leaf name still finds its full path
    with pytest.raises(ParameterError, match="universal_credit.taper"):
        params.get("taper_uc")


def test_group_path_lists_children(params):
    with pytest.raises(ParameterError, match="is a group") as info:
        params.get("income_tax.rates")
    assert "income_tax.rates.higher" in str(info.value)


def test_apply_reform_set_multiply_add(params):
    reformed = params.apply_reform(
        {
            "income_tax.personal_allowance": 15000,
            "income_tax.rates.basic": {"multiply": 1.1},
            "universal_credit.taper": {"add": -0.05},
            "child_benefit.eldest_weekly": {"value": 30},
        }
    )
    assert isinstance(reformed, Parameters) and reformed is not params
    assert reformed.get("income_tax.personal_allowance") == 15000
    assert reformed.get("income_tax.rates.basic") == pytest.approx(0.22)
    assert reformed.get("universal_credit.taper") == pytest.approx(0.50)
    assert reformed.get("child_benefit.eldest_weekly") == 30
    # the original is untouched, and untouched paths carry over
    assert params.get("income_tax.personal_allowance") == 12570
    assert params.get("income_tax.rates.basic") == 0.20
    assert reformed.get("income_tax.rates.higher") == 0.40
    assert reformed.to_dict()["income_tax"]["personal_allowance"] == 15000
    assert params.apply_reform({}) == params
    assert params.apply_reform(None) == params
    assert reformed != params


def test_apply_reform_rejects_bad_entries(params):
    with pytest.raises(ParameterError, match="income_tax.rates.higher"):
        params.apply_reform({"income_tax.rates.highr": {"multiply": 1.1}})
    with pytest.raises(ParameterError, match="is a group"):
        params.apply_reform({"income_tax.rates": 0.3})
    with pytest.raises(ParameterError, match="multiply"):
        params.apply_reform({"income_tax.rates.basic": {"times": 1.1}})
    with pytest.raises(ParameterError):
        params.apply_reform({"income_tax.rates.basic": {"multiply": 1.1, "add": 1}})
    with pytest.raises(ParameterError, match="non-negative"):
        params.apply_reform({"income_tax.rates.basic": -0.1})
    with pytest.raises(ParameterError, match="finite"):
        params.apply_reform({"income_tax.rates.basic": float("nan")})
    with pytest.raises(ParameterError):
        params.apply_reform({"income_tax.rates.basic": "0.3"})
    with pytest.raises(ParameterError):
        params.apply_reform({"income_tax.rates.basic": True})
    with pytest.raises(ParameterError, match="mapping"):
        params.apply_reform([("income_tax.rates.basic", 0.3)])


def test_parameters_validates_tree():
    with pytest.raises(ParameterError, match="must be a number"):
        Parameters({"a": {"b": "x"}})
    with pytest.raises(ParameterError, match="finite"):
        Parameters({"a": float("inf")})
    with pytest.raises(ParameterError, match="without dots"):
        Parameters({"a.b": 1})
    p = Parameters({"metadata": {"note": "text"}, "a": {"b": 1, "c": 2.5}})
    assert p.paths() == ["a.b", "a.c"]


def test_load_user_yaml_roundtrip_and_missing(tmp_path, params):
    full = tmp_path / "full.yaml"
    tree = params.to_dict()
    tree["income_tax"]["personal_allowance"] = 10000
    full.write_text(yaml.safe_dump(tree))
    loaded = load_parameters(full)
    assert loaded.get("income_tax.personal_allowance") == 10000
    assert sorted(loaded.paths()) == sorted(params.paths())

    partial = tmp_path / "partial.yaml"
    del tree["income_tax"]["rates"]
    partial.write_text(yaml.safe_dump(tree))
    with pytest.raises(ParameterError, match="income_tax.rates.basic"):
        load_parameters(partial)

    bad = tmp_path / "bad.yaml"
    bad.write_text("income_tax: {personal_allowance: lots}\n")
    with pytest.raises(ParameterError, match="bad.yaml"):
        load_parameters(bad)
    with pytest.raises(FileNotFoundError):
        load_parameters(tmp_path / "absent.yaml")


def test_random_reforms_deterministic_and_sized(params):
    a = random_reforms(50, np.random.default_rng(7))
    b = random_reforms(50, np.random.default_rng(7))
    c = random_reforms(50, np.random.default_rng(8))
    assert a == b
    assert a != c
    assert len(a) == 50
    sizes = set()
    for reform in a:
        assert 2 <= len(reform) <= 4
        sizes.add(len(reform))
        for path, change in reform.items():
            assert path in REFORMABLE_PATHS
            assert set(change) == {"multiply"}
            assert 0.8 <= change["multiply"] <= 1.2
        params.apply_reform(reform)  # every random reform is valid
    assert sizes == {2, 3, 4}  # inclusive upper bound is reached
    assert random_reforms(0, np.random.default_rng(0)) == []


def test_random_reforms_options_and_validation():
    rng = np.random.default_rng(1)
    paths = ("income_tax.rates.basic", "universal_credit.taper", "state_pension.uprating")
    out = random_reforms(20, rng, n_params=(3, 3), low=0.5, high=0.6, paths=paths)
    for reform in out:
        assert set(reform) == set(paths)
        assert all(0.5 <= ch["multiply"] <= 0.6 for ch in reform.values())
    with pytest.raises(ParameterError, match="income_tax.rates.basic"):
        random_reforms(1, rng, paths=("income_tax.rates.basicc", "universal_credit.taper"))
    with pytest.raises(ValueError, match="exceeds"):
        random_reforms(1, rng, n_params=(2, 5), paths=paths)
    with pytest.raises(ValueError):
        random_reforms(1, rng, n_params=(0, 2))
    with pytest.raises(ValueError):
        random_reforms(1, rng, low=1.2, high=0.8)
    with pytest.raises(ValueError):
        random_reforms(-1, rng)
