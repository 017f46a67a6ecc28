"""Survey validation and the PolicyEngine UK .h5 layout: round trips and every rejection."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from weightreg.errors import SurveyFormatError, SurveyValidationError
from weightreg.policyengine_format import read_survey, write_survey
from weightreg.survey import Survey


def tiny_survey() -> Survey:
    person = pd.DataFrame(
        {
            "person_id": [1001, 1002, 1003, 2001],
            "person_benunit_id": [101, 101, 101, 201],
            "person_household_id": [1, 1, 1, 2],
            "age": [40, 38, 7, 70],
            "gender": ["MALE", "FEMALE", "FEMALE", "FEMALE"],
            "employment_income": [30000.5, 12000.0, 0.0, 0.0],
            "is_disabled_for_benefits": [False, True, False, False],
            "is_household_head": [True, False, False, True],
            "some_extra_column": [1, 2, 3, 4],
        }
    )
    benunit = pd.DataFrame({"benunit_id": [101, 201], "is_married": [True, False], "would_claim_uc": [True, False]})
    household = pd.DataFrame(
        {
            "household_id": [1, 2],
            "household_weight": [120.5, 3000.0],
            "region": ["LONDON", "WALES"],
            "tenure_type": ["RENT_PRIVATELY", "OWNED_OUTRIGHT"],
            "rent": [9600.0, 0.0],
            "council_tax_band": ["C", "E"],
            "extra_household_float": [0.25, np.nan],
        }
    )
    return Survey(person, benunit, household, "2025")


def assert_same(a: Survey, b: Survey):
    for name in ("person", "benunit", "household"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_dtype=True)
    assert a.time_period == b.time_period


def test_round_trip_keeps_dtypes_enums_bools_and_extra_columns(tmp_path):
    s = tiny_survey()
    path = write_survey(s, tmp_path / "s.h5")
    back = read_survey(path)
    assert_same(s, back)
    assert back.person["is_disabled_for_benefits"].dtype == bool
    assert back.household["region"].tolist() == ["LONDON", "WALES"]


def test_written_layout_is_policyengine_single_year(tmp_path):
    path = write_survey(tiny_survey(), tmp_path / "s.h5")
    with pd.HDFStore(path, "r") as store:
        assert sorted(store.keys()) == ["/benunit", "/household", "/person", "/time_period"]
        assert store["time_period"].iloc[0] == "2025"
        assert store.get_storer("person").is_table  # format="table"
        assert "household_weight" not in store["person"].columns
        assert store["household"]["tenure_type"].iloc[0] == "RENT_PRIVATELY"


def test_identical_tables_give_identical_bytes(tmp_path):
    s = tiny_survey()
    a = write_survey(s, tmp_path / "a.h5")
    b = write_survey(s, tmp_path / "b.h5")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_multi_year_file_reads(tmp_path):
    s = tiny_survey()
    path = write_survey(s, tmp_path / "m.h5", multi_year=True)
    with pd.HDFStore(path, "r") as store:
        assert "/person/2025" in store.keys()
    assert_same(s, read_survey(path))
    with pytest.raises(SurveyFormatError, match="2031"):
        read_survey(path, year=2031)


def test_employment_income_before_lsr_is_accepted_and_written_back(tmp_path):
    s = tiny_survey()
    path = tmp_path / "lsr.h5"
    with pd.HDFStore(path, "w") as store:
        store.put("person", s.person.rename(columns={"employment_income": "employment_income_before_lsr"}), format="table")
        store.put("benunit", s.benunit, format="table")
        store.put("household", s.household, format="table")
        store.put("time_period", pd.Series(["2025"]))
    back = read_survey(path)
    assert back.person["employment_income"].tolist() == s.person["employment_income"].tolist()
    out = write_survey(back, tmp_path / "out.h5")
    with pd.HDFStore(out, "r") as store:
        assert "employment_income_before_lsr" in store["person"].columns
        assert "employment_income" not in store["person"].columns


def test_not_a_store_names_the_file(tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("hello")
    with pytest.raises(SurveyFormatError, match="notes.h5.*not a pandas HDFStore"):
        read_survey(bad)
    with pytest.raises(SurveyFormatError, match="no such file"):
        read_survey(tmp_path / "absent.h5")


def test_missing_table_is_named(tmp_path):
    s = tiny_survey()
    path = tmp_path / "partial.h5"
    with pd.HDFStore(path, "w") as store:
        store.put("person", s.person, format="table")
        store.put("household", s.household, format="table")
    with pytest.raises(SurveyFormatError, match=r"lacks table\(s\) \['benunit'\]"):
        read_survey(path)


def test_failed_write_leaves_existing_file_untouched(tmp_path):
    path = write_survey(tiny_survey(), tmp_path / "keep.h5")
    before = path.read_bytes()
    s = tiny_survey()
    s.household["unwritable"] = [object(), object()]  # PyTables cannot store arbitrary objects
    with pytest.raises(Exception):
        write_survey(s, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.h5"]


# ---- validation: every problem collected, naming ids and columns ------------------------------


def problems_of(s: Survey) -> str:
    with pytest.raises(SurveyValidationError) as info:
        s.validate()
    return str(info.value)


def test_valid_survey_passes():
    assert tiny_survey().validate() is not None


def test_duplicate_ids_are_named():
    s = tiny_survey()
    s.person.loc[3, "person_id"] = 1001
    s.person.loc[3, "person_benunit_id"] = 101
    s.person.loc[3, "person_household_id"] = 1
    msg = problems_of(s)
    assert "person.person_id has 1 duplicate id(s): [1001]" in msg
    assert "household(s) with no person: household_id [2]" in msg  # household 2 lost its only person


def test_orphans_split_benunits_and_bad_weights_all_reported_together():
    s = tiny_survey()
    s.person.loc[3, "person_household_id"] = 99  # no such household
    s.person.loc[2, "person_benunit_id"] = 201  # benunit 201 now spans households 1 and 99
    s.household.loc[0, "household_weight"] = np.nan
    s.household.loc[1, "household_weight"] = -5.0
    err = pytest.raises(SurveyValidationError, s.validate)
    msg = str(err.value)
    assert "person_household_id has no household row: person_id [2001]" in msg
    assert "split across households: benunit_id [201]" in msg
    assert "household_weight is NaN for 1 household(s): household_id [1]" in msg
    assert "household_weight is negative for 1 household(s): household_id [2]" in msg
    assert len(err.value.problems) >= 5


def test_infinite_weight_and_missing_columns():
    s = tiny_survey()
    s.household.loc[1, "household_weight"] = np.inf
    assert "household_weight is infinite" in problems_of(s)
    s = tiny_survey()
    s.benunit = s.benunit.drop(columns="benunit_id")
    s.household = s.household.drop(columns="household_weight")
    msg = problems_of(s)
    assert "table 'benunit' lacks required column(s) ['benunit_id']" in msg
    assert "table 'household' lacks required column(s) ['household_weight']" in msg


def test_orphan_benunit_reference_and_unknown_enum():
    s = tiny_survey()
    s.person.loc[0, "person_benunit_id"] = 555
    s.household.loc[0, "region"] = "ATLANTIS"
    msg = problems_of(s)
    assert "person_benunit_id has no benunit row: person_id [1001]" in msg
    assert "household.region has unknown value(s) ['ATLANTIS']" in msg


def test_head_is_flagged_person_not_oldest_and_select_households():
    s = tiny_survey()
    s.person.loc[0, "age"] = 20  # the flagged head is younger than their partner
    heads = s.household_head_index()
    assert heads.tolist() == [0, 3]
    sub = s.select_households(np.array([False, True]))
    assert sub.person["person_id"].tolist() == [2001]
    assert sub.benunit["benunit_id"].tolist() == [201]
    sub.validate()
