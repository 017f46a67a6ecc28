"""Targets: filter parsing, validation errors, CSV round trip, and hand-computed target matrices."""

import math

import numpy as np
import pandas as pd
import pytest

from weightreg.survey import Survey
from weightreg.targets import (
    TARGET_COLUMNS,
    TargetError,
    age_band,
    build_target_matrix,
    filter_mask,
    household_type,
    parse_filter,
    read_targets,
    validate_targets,
    write_targets,
)
from weightreg.world import concat_surveys, copy_households


def tiny_survey() -> Survey:
    """Three households (ids 1-3) in PolicyEngine's id scheme.

    1: LONDON, private renters, a couple (30, 28) with a child of 5, earnings 60k and 20k.
    2: NORTH_EAST, owners, a single pensioner (70) with state pension 10k.
    3: LONDON, housing association, a 50-year-old earning 120k and a 22-year-old earning 15k,
       each in their own benefit unit.
    """
    person = pd.DataFrame({
        "person_id": [1001, 1002, 1003, 2001, 3001, 3002],
        "person_benunit_id": [101, 101, 101, 201, 301, 302],
        "person_household_id": [1, 1, 1, 2, 3, 3],
        "age": [30, 28, 5, 70, 50, 22],
        "is_household_head": [True, False, False, True, True, False],
        "employment_income": [60_000.0, 20_000.0, 0.0, 0.0, 120_000.0, 15_000.0],
        "state_pension_reported": [0.0, 0.0, 0.0, 10_000.0, 0.0, 0.0],
    })
    benunit = pd.DataFrame({"benunit_id": [101, 201, 301, 302], "is_married": [True, False, False, False]})
    household = pd.DataFrame({
        "household_id": [1, 2, 3],
        "household_weight": [10.0, 20.0, 5.0],
        "region": ["LONDON", "NORTH_EAST", "LONDON"],
        "tenure_type": ["RENT_PRIVATELY", "OWNED_OUTRIGHT", "RENT_FROM_HA"],
    })
    return Survey(person, benunit, household, "2025").validate()


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(TARGET_COLUMNS))


HAND_TARGETS = frame([
    ("persons/age_band=25-34", 0.0, "", "person", "count", "age_band=25-34"),
    ("employment_income/band", 0.0, "employment_income", "person", "sum", "employment_income in [50000,100000)"),
    ("households/region=LONDON", 0.0, "", "household", "count", "region=LONDON"),
    ("persons/region=LONDON/age_band=16-24", 0.0, "", "person", "count", "region=LONDON; age_band=16-24"),
    ("benunits/region=LONDON", 0.0, "", "benunit", "count", "region=LONDON"),
    ("households/multi", 0.0, "", "household", "count", "household_type=multi_benunit"),
    ("employment_income/all", 0.0, "employment_income", "person", "sum", ""),
    ("persons/age in [28,30]", 0.0, "", "person", "count", "age in [28,30]"),
    ("benunits/married", 0.0, "", "benunit", "count", "is_married=true"),
    ("persons/region=LONDON/tenure", 0.0, "", "person", "count", "tenure_type=RENT_FROM_HA"),
    ("state_pension/open", 0.0, "state_pension_reported", "person", "sum", "state_pension_reported in [1,)"),
])
# Rows: households 1, 2, 3; columns: HAND_TARGETS in order (computed by hand from tiny_survey).
HAND_MATRIX = np.array([
    [2, 60_000, 1, 0, 1, 0, 80_000, 2, 1, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10_000],
    [0, 0, 1, 1, 2, 1, 135_000, 0, 0, 2, 0],
], dtype=float)


# ---- derived slice columns -------------------------------------------------------------------
def test_age_band_edges():
    ages = [0, 15, 16, 24, 25, 34, 35, 64, 65, 74, 75, 101]
    assert list(age_band(ages)) == ["0-15", "0-15", "16-24", "16-24", "25-34", "25-34", "35-44",
                                     "55-64", "65-74", "65-74", "75+", "75+"]


def test_household_type_each_kind():
    # One household per type; ids 1..7. Persons listed as (household, benunit number, age).
    members = [(1, 1, 70), (2, 1, 70), (2, 1, 60), (3, 1, 40), (4, 1, 40), (4, 1, 38),
               (5, 1, 35), (5, 1, 33), (5, 1, 4), (6, 1, 30), (6, 1, 3), (6, 1, 1),
               (7, 1, 50), (7, 2, 20)]
    h = np.array([m[0] for m in members])
    k = np.array([m[1] for m in members])
    p = np.concatenate([np.arange(1, c + 1) for c in np.bincount(h)[1:]])
    person = pd.DataFrame({"person_id": h * 1000 + p, "person_benunit_id": h * 100 + k,
                           "person_household_id": h, "age": [m[2] for m in members]})
    benunit = pd.DataFrame({"benunit_id": np.unique(h * 100 + k)})
    household = pd.DataFrame({"household_id": np.arange(1, 8), "household_weight": 1.0})
    survey = Survey(person, benunit, household).validate()
    assert list(household_type(survey)) == [
        "single_pensioner", "couple_pensioner", "single_adult", "couple_no_children",
        "couple_with_children", "lone_parent", "multi_benunit"]


def test_household_type_needs_age():
    s = tiny_survey()
    s = Survey(s.person.drop(columns="age"), s.benunit, s.household)
    with pytest.raises(TargetError, match="'age'"):
        household_type(s)


# ---- filters ------------------------------------------------------------------------------------
def test_parse_filter_clauses_and_bounds():
    clauses = parse_filter("region=LONDON; employment_income in [50000,100000)")
    assert [(c.column, c.op) for c in clauses] == [("region", "eq"), ("employment_income", "in")]
    assert clauses[0].value == "LONDON"
    band = clauses[1]
    assert (band.lo, band.hi, band.lo_closed, band.hi_closed) == (50000.0, 100000.0, True, False)
    open_top = parse_filter("x in [1,inf)")[0]
    assert open_top.hi == math.inf
    blank = parse_filter("x in (,5]")[0]
    assert (blank.lo, blank.hi, blank.lo_closed, blank.hi_closed) == (-math.inf, 5.0, False, True)
    assert parse_filter("") == () and parse_filter(None) == () and parse_filter(float("nan")) == ()


@pytest.mark.parametrize("text", ["region", "region==", "x in [1,2", "x in [a,2)", "x in [5,1)", "1x=2"])
def test_parse_filter_rejects_malformed(text):
    with pytest.raises(TargetError):
        parse_filter(text)


def test_filter_mask_interval_closedness():
    s = tiny_survey()
    assert filter_mask(s, "person", "age in [28,30)").tolist() == [False, True, False, False, False, False]
    assert filter_mask(s, "person", "age in (28,30]").tolist() == [True, False, False, False, False, False]
    # A value the column never takes matches nothing (not an error: the cell is empty).
    assert not filter_mask(s, "household", "region=WALES").any()


# ---- the matrix ------------------------------------------------------------------------------------
def test_build_target_matrix_hand_computed():
    s = tiny_survey()
    tm = build_target_matrix(s, HAND_TARGETS)
    assert tm.matrix.shape == (3, len(HAND_TARGETS))
    assert tm.matrix.format == "csr"
    np.testing.assert_array_equal(tm.matrix.toarray(), HAND_MATRIX)
    assert tm.names == HAND_TARGETS["name"].tolist()
    np.testing.assert_array_equal(tm.household_ids, [1, 2, 3])
    # Estimates are A^T w: e.g. London households 10 + 5, 25-34-year-olds 2 x 10.
    est = tm.estimates(s.weights)
    np.testing.assert_allclose(est, HAND_MATRIX.T @ np.array([10.0, 20.0, 5.0]))
    assert est[2] == 15.0 and est[0] == 20.0


def test_matrix_follows_household_order():
    s = tiny_survey()
    order = [2, 0, 1]
    shuffled = Survey(s.person.iloc[::-1].reset_index(drop=True), s.benunit,
                      s.household.iloc[order].reset_index(drop=True))
    tm = build_target_matrix(shuffled, HAND_TARGETS)
    np.testing.assert_array_equal(tm.matrix.toarray(), HAND_MATRIX[order])


def test_matrix_rebuilds_for_survey_with_added_households():
    s = tiny_survey()
    copies = copy_households(s, [0, 2, 0], [10, 11, 12])  # household 1 twice, household 3 once
    grown = concat_surveys(s, copies).validate()
    tm = build_target_matrix(grown, HAND_TARGETS).matrix.toarray()
    np.testing.assert_array_equal(tm[:3], HAND_MATRIX)
    np.testing.assert_array_equal(tm[3:], HAND_MATRIX[[0, 2, 0]])


def test_relative_errors():
    s = tiny_survey()
    targets = HAND_TARGETS.iloc[[2]].copy()
    targets["value"] = 30.0
    tm = build_target_matrix(s, targets)
    np.testing.assert_allclose(tm.relative_errors(s.weights), [(15.0 - 30.0) / 30.0])


def test_build_names_target_and_missing_column():
    s = tiny_survey()
    s = Survey(s.person, s.benunit, s.household.drop(columns="region"))
    with pytest.raises(TargetError) as err:
        build_target_matrix(s, HAND_TARGETS)
    msg = str(err.value)
    assert "'households/region=LONDON' (row 4)" in msg and "'region'" in msg


def test_build_rejects_nan_in_summed_variable():
    s = tiny_survey()
    s.person.loc[0, "employment_income"] = np.nan
    with pytest.raises(TargetError, match="employment_income/all.*NaN"):
        build_target_matrix(s, HAND_TARGETS)


def test_string_column_compared_with_interval_is_an_error():
    with pytest.raises(TargetError, match="region"):
        build_target_matrix(tiny_survey(), frame([("x", 1.0, "", "household", "count", "region in [0,1)")]))


# ---- reading, writing, validating ---------------------------------------------------------------
def test_write_read_round_trip(tmp_path):
    targets = HAND_TARGETS.copy()
    targets["value"] = [1.0, 0.1 + 0.2, 1e11 / 3, 7.0, 2.5, 1.0, 12345.678901234567, 3.0, 4.0, 5.0, 6.0]
    path = write_targets(targets, tmp_path / "targets.csv")
    back = read_targets(path)
    assert list(back.columns) == list(TARGET_COLUMNS)
    pd.testing.assert_frame_equal(back, validate_targets(targets), check_dtype=True)
    assert back["value"].tolist() == targets["value"].tolist()  # exact float round trip
    assert back.attrs["source"] == str(path)
    assert back.loc[0, "variable"] == ""  # blanks stay empty strings, not NaN
    assert [p.name for p in tmp_path.iterdir()] == ["targets.csv"]  # no temporary file left


def test_write_is_atomic_on_invalid_targets(tmp_path):
    path = tmp_path / "targets.csv"
    write_targets(HAND_TARGETS, path)
    before = path.read_bytes()
    bad = HAND_TARGETS.copy()
    bad.loc[0, "value"] = np.inf
    with pytest.raises(TargetError):
        write_targets(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["targets.csv"]


def _write_raw(tmp_path, rows):
    path = tmp_path / "targets.csv"
    frame(rows).to_csv(path, index=False)
    return path


def test_read_unknown_filter_column_names_target_row_column_and_file(tmp_path):
    path = _write_raw(tmp_path, [
        ("households/all", 1.0, "", "household", "count", ""),
        ("persons/bad", 2.0, "", "person", "count", "region=LONDON;shoe_size in [40,45)"),
    ])
    with pytest.raises(TargetError) as err:
        read_targets(path)
    msg = str(err.value)
    assert "'persons/bad'" in msg and "row 3" in msg and "'shoe_size'" in msg and str(path) in msg


def test_read_unknown_variable_names_target_and_column(tmp_path):
    path = _write_raw(tmp_path, [("income/bad", 2.0, "employment_incom", "person", "sum", "")])
    with pytest.raises(TargetError) as err:
        read_targets(path)
    msg = str(err.value)
    assert "'income/bad'" in msg and "'employment_incom'" in msg and str(path) in msg


def test_read_checks_columns_against_a_given_survey(tmp_path):
    # 'rent' is a known PolicyEngine column, but this survey lacks it.
    path = _write_raw(tmp_path, [("rent/all", 1.0, "rent", "household", "sum", "")])
    assert len(read_targets(path)) == 1
    with pytest.raises(TargetError, match="'rent'"):
        read_targets(path, tiny_survey())


@pytest.mark.parametrize("row, fragment", [
    (("a", "nan", "", "person", "count", ""), "not a finite number"),
    (("a", 1.0, "", "people", "count", ""), "unknown entity"),
    (("a", 1.0, "", "person", "mean", ""), "unknown aggregation"),
    (("a", 1.0, "", "person", "sum", ""), "needs a variable"),
    (("a", 1.0, "age", "person", "count", ""), "takes no variable"),
    (("a", 1.0, "", "person", "count", "age => 3"), "not understood"),
])
def test_read_rejects_malformed_rows(tmp_path, row, fragment):
    path = _write_raw(tmp_path, [row])
    with pytest.raises(TargetError, match=fragment) as err:
        read_targets(path)
    assert "'a'" in str(err.value) and str(path) in str(err.value)


def test_read_rejects_duplicate_names_and_missing_file(tmp_path):
    path = _write_raw(tmp_path, [("a", 1.0, "", "person", "count", ""), ("a", 2.0, "", "person", "count", "")])
    with pytest.raises(TargetError, match="duplicate"):
        read_targets(path)
    with pytest.raises(TargetError, match="no such targets file"):
        read_targets(tmp_path / "missing.csv")
    (tmp_path / "short.csv").write_text("name,value\na,1\n")
    with pytest.raises(TargetError, match="lack column"):
        read_targets(tmp_path / "short.csv")
