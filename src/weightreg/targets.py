"""Calibration targets: a declarative ``targets.csv`` and the households x targets matrix.

A target is a population total of one survey variable (or a count of entity rows) over a slice
of one entity table. ``targets.csv`` holds one row per target:

========== ==============================================================================
name       unique, readable, e.g. ``persons/region=LONDON/age_band=25-34``
value      the population total (a finite float)
variable   the summed column (of the entity's table), empty for a count
entity     ``person``, ``benunit`` or ``household``
aggregation ``sum`` or ``count``
filter     ``;``-separated clauses, each ``col=VALUE`` or ``col in [lo,hi)``; empty = everyone
========== ==============================================================================

Filters may use any column of the entity's table plus derived *slice columns*: ``age_band``
(persons; bands :data:`AGE_BAND_LABELS`) and ``region``, ``tenure_type`` and ``household_type``
broadcast from the household to its persons and benefit units (``household_type`` is derived
from the household's members, see :func:`household_type`). Interval bounds may be ``inf`` or
``-inf``; ``[`` / ``]`` include a bound and ``(`` / ``)`` exclude it.

Targets use only *input* columns (e.g. ``universal_credit_reported``, not a simulated amount), so
the matrix can be rebuilt for any survey, including one with new households added, without
running the simulator.

The target matrix has one row per household (household-table order) and one column per target:
``A[h, j]`` is the sum, over the rows of target ``j``'s entity that belong to household ``h`` and
match its filter, of the variable (or 1 for a count). So ``A.T @ weights`` estimates the targets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .atomic import atomic_path
from .errors import WeightregError
from .survey import (
    BENUNIT_IDS,
    BENUNIT_INPUTS,
    HOUSEHOLD_IDS,
    HOUSEHOLD_INPUTS,
    PERSON_IDS,
    PERSON_INPUTS,
    WEIGHT,
    Survey,
)

__all__ = [
    "TargetError",
    "TargetMatrix",
    "TARGET_COLUMNS",
    "ENTITIES",
    "AGGREGATIONS",
    "AGE_BANDS",
    "AGE_BAND_LABELS",
    "HOUSEHOLD_TYPES",
    "PENSION_AGE",
    "CHILD_AGE",
    "age_band",
    "household_type",
    "parse_filter",
    "slice_columns",
    "filter_mask",
    "read_targets",
    "write_targets",
    "validate_targets",
    "build_target_matrix",
]


class TargetError(WeightregError, ValueError):
    """A malformed target (unknown column, bad filter, bad value); the message names the target."""


TARGET_COLUMNS = ("name", "value", "variable", "entity", "aggregation", "filter")
ENTITIES = ("person", "benunit", "household")
AGGREGATIONS = ("sum", "count")

#: Age bands as ``(lower inclusive, upper exclusive, label)``.
AGE_BANDS = (
    (0, 16, "0-15"),
    (16, 25, "16-24"),
    (25, 35, "25-34"),
    (35, 45, "35-44"),
    (45, 55, "45-54"),
    (55, 65, "55-64"),
    (65, 75, "65-74"),
    (75, math.inf, "75+"),
)
AGE_BAND_LABELS = tuple(label for _, _, label in AGE_BANDS)

HOUSEHOLD_TYPES = (
    "single_pensioner",
    "couple_pensioner",
    "single_adult",
    "couple_no_children",
    "couple_with_children",
    "lone_parent",
    "multi_benunit",
)
#: An adult at or above this age makes a one-benefit-unit household without children a
#: pensioner household (the state pension age, as in ``parameters.yaml``).
PENSION_AGE = 66
#: Persons younger than this are children (as in the simulator).
CHILD_AGE = 16

#: Derived slice columns, per entity (in addition to the entity table's own columns).
DERIVED_COLUMNS = {
    "person": ("age_band", "region", "tenure_type", "household_type"),
    "benunit": ("region", "tenure_type", "household_type"),
    "household": ("household_type",),
}
#: Columns of a PolicyEngine-UK survey weightreg knows, per entity: what a targets file is
#: checked against when no survey is given.
KNOWN_COLUMNS = {
    "person": PERSON_IDS + PERSON_INPUTS,
    "benunit": BENUNIT_IDS + BENUNIT_INPUTS,
    "household": HOUSEHOLD_IDS + (WEIGHT,) + HOUSEHOLD_INPUTS,
}
_BROADCAST = ("region", "tenure_type", "household_type")

_EQ = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*([^=<>!\[\]()]*?)\s*$")
_IN = re.compile(r"^\s*([A-Za-z_]\w*)\s+in\s+([\[(])\s*([^,]*?)\s*,\s*([^,]*?)\s*([\])])\s*$")


# ---- derived columns ----------------------------------------------------------------------------
def age_band(age) -> np.ndarray:
    """The :data:`AGE_BANDS` label of each age (an array of str)."""
    age = np.asarray(age, dtype=float)
    edges = np.array([lo for lo, _, _ in AGE_BANDS[1:]], dtype=float)
    labels = np.array(AGE_BAND_LABELS, dtype=object)
    return labels[np.searchsorted(edges, age, side="right")]


def household_type(survey: Survey) -> np.ndarray:
    """Each household's type (one of :data:`HOUSEHOLD_TYPES`), in household order.

    ``multi_benunit`` if the household holds more than one benefit unit. Otherwise, with
    children (under :data:`CHILD_AGE`): ``lone_parent`` (one adult) or ``couple_with_children``;
    without: ``single_pensioner`` / ``single_adult`` (one adult, at or above
    :data:`PENSION_AGE` or not) and ``couple_pensioner`` / ``couple_no_children`` (two or more
    adults, any of them at or above pension age or not).

    Raises:
        TargetError: if the person table has no ``age`` column.
    """
    if "age" not in survey.person.columns:
        raise TargetError("household_type needs the person column 'age', which the survey lacks")
    n = survey.n_households
    ph = survey.person_household_index()
    age = survey.person["age"].to_numpy(dtype=float)
    adult = age >= CHILD_AGE
    n_adults = np.bincount(ph, weights=adult, minlength=n)
    n_children = np.bincount(ph, weights=~adult, minlength=n)
    n_pension = np.bincount(ph, weights=adult & (age >= PENSION_AGE), minlength=n)
    bh = survey.benunit_household_index()
    n_units = np.bincount(bh[bh >= 0], minlength=n)

    single = n_adults <= 1
    out = np.where(
        n_children > 0,
        np.where(single, "lone_parent", "couple_with_children"),
        np.where(
            single,
            np.where(n_pension > 0, "single_pensioner", "single_adult"),
            np.where(n_pension > 0, "couple_pensioner", "couple_no_children"),
        ),
    ).astype(object)
    out[n_units > 1] = "multi_benunit"
    return out


# ---- filters ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clause:
    """One filter clause: ``column = value`` (``op='eq'``) or ``column in interval`` (``op='in'``)."""

    column: str
    op: str
    value: str | None = None
    lo: float = -math.inf
    hi: float = math.inf
    lo_closed: bool = True
    hi_closed: bool = False


def _bound(text: str, default: float, clause: str) -> float:
    if text == "":
        return default
    try:
        return float(text)
    except ValueError:
        raise TargetError(f"filter clause {clause!r}: bound {text!r} is not a number (use e.g. 1000, inf)") from None


def parse_filter(text) -> tuple[Clause, ...]:
    """Parse a filter string into clauses (an empty or missing filter matches everyone).

    Raises:
        TargetError: for a clause that is neither ``col=VALUE`` nor ``col in [lo,hi)``.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ()
    clauses = []
    for raw in str(text).split(";"):
        if not raw.strip():
            continue
        m = _IN.match(raw)
        if m:
            col, open_, lo, hi, close = m.groups()
            lo_v = _bound(lo, -math.inf, raw.strip())
            hi_v = _bound(hi, math.inf, raw.strip())
            if lo_v > hi_v:
                raise TargetError(f"filter clause {raw.strip()!r}: lower bound {lo_v} exceeds upper bound {hi_v}")
            clauses.append(Clause(col, "in", None, lo_v, hi_v, open_ == "[", close == "]"))
            continue
        m = _EQ.match(raw)
        if m and m.group(2) != "":
            clauses.append(Clause(m.group(1), "eq", m.group(2)))
            continue
        raise TargetError(
            f"filter clause {raw.strip()!r} is not understood; write 'column=VALUE' or 'column in [lo,hi)', "
            "clauses separated by ';'"
        )
    return tuple(clauses)


def _columns_of(clauses) -> list[str]:
    return [c.column for c in clauses]


class _Slices:
    """Lazily built slice columns of one survey, with per-column and per-clause caches.

    Derived columns are computed only when a target asks for them, so a survey without, say,
    ``age`` still builds targets that do not use ``age_band``.
    """

    def __init__(self, survey: Survey):
        self.survey = survey
        self._cols: dict[tuple[str, str], np.ndarray] = {}
        self._codes: dict[tuple[str, str], tuple[np.ndarray, dict]] = {}
        self._masks: dict[tuple[str, Clause], np.ndarray] = {}
        self._hh_index: dict[str, np.ndarray] = {}
        self._hh_type: np.ndarray | None = None

    def table(self, entity: str) -> pd.DataFrame:
        return getattr(self.survey, entity)

    def has(self, entity: str, col: str) -> bool:
        if col in self.table(entity).columns:
            return True
        if col == "age_band":
            return entity == "person" and "age" in self.survey.person.columns
        if col == "household_type":
            return "age" in self.survey.person.columns
        if col in _BROADCAST and entity != "household":
            return col in self.survey.household.columns
        return False

    def household_index(self, entity: str) -> np.ndarray:
        """Row position of each entity row's household."""
        if entity not in self._hh_index:
            if entity == "household":
                idx = np.arange(self.survey.n_households)
            elif entity == "person":
                idx = self.survey.person_household_index()
            else:
                idx = self.survey.benunit_household_index()
            self._hh_index[entity] = idx
        return self._hh_index[entity]

    def column(self, entity: str, col: str) -> np.ndarray:
        key = (entity, col)
        if key not in self._cols:
            table = self.table(entity)
            if col in table.columns:
                values = table[col].to_numpy()
            elif col == "age_band":
                values = age_band(self.survey.person["age"].to_numpy(dtype=float))
            elif col == "household_type":
                if self._hh_type is None:
                    self._hh_type = household_type(self.survey)
                values = self._hh_type if entity == "household" else self._hh_type[self.household_index(entity)]
            else:  # broadcast from the household
                values = self.survey.household[col].to_numpy()[self.household_index(entity)]
            self._cols[key] = values
        return self._cols[key]

    def mask(self, entity: str, clause: Clause) -> np.ndarray:
        key = (entity, clause)
        if key not in self._masks:
            self._masks[key] = self._evaluate(entity, clause)
        return self._masks[key]

    def _evaluate(self, entity: str, clause: Clause) -> np.ndarray:
        values = self.column(entity, clause.column)
        if clause.op == "in":
            x = _as_float(values, clause.column)
            lo_ok = x >= clause.lo if clause.lo_closed else x > clause.lo
            hi_ok = x <= clause.hi if clause.hi_closed else x < clause.hi
            return lo_ok & hi_ok
        if values.dtype == bool:
            return values == _as_bool(clause.value, clause.column)
        if np.issubdtype(values.dtype, np.number):
            try:
                target = float(clause.value)
            except ValueError:
                raise TargetError(
                    f"column {clause.column!r} is numeric but the filter compares it with {clause.value!r}; "
                    "give a number"
                ) from None
            return values.astype(float) == target
        # Strings (enumerations): compare integer codes, factorised once per column.
        key = (entity, clause.column)
        if key not in self._codes:
            codes, uniques = pd.factorize(pd.Series(values).astype(str))
            self._codes[key] = (codes, {u: i for i, u in enumerate(uniques)})
        codes, lookup = self._codes[key]
        code = lookup.get(clause.value)
        return np.zeros(len(codes), dtype=bool) if code is None else codes == code


def _as_float(values: np.ndarray, col: str) -> np.ndarray:
    try:
        return values.astype(float)
    except (TypeError, ValueError):
        raise TargetError(f"column {col!r} is not numeric, so 'in [lo,hi)' cannot apply; use '{col}=VALUE'") from None


def _as_bool(text: str, col: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes"):
        return True
    if t in ("false", "0", "no"):
        return False
    raise TargetError(f"column {col!r} is a flag; compare it with true or false, not {text!r}")


def slice_columns(survey: Survey, entity: str) -> list[str]:
    """Every column a filter on ``entity`` may use for ``survey`` (table columns + derived)."""
    s = _Slices(survey)
    cols = list(s.table(entity).columns)
    cols += [c for c in DERIVED_COLUMNS[entity] if c not in cols and s.has(entity, c)]
    return cols


def filter_mask(survey: Survey, entity: str, filter_text: str) -> np.ndarray:
    """Boolean mask over ``entity``'s rows of those matching ``filter_text``."""
    s = _Slices(survey)
    mask = np.ones(len(s.table(entity)), dtype=bool)
    for clause in parse_filter(filter_text):
        if not s.has(entity, clause.column):
            raise TargetError(f"filter {filter_text!r}: {entity} has no slice column {clause.column!r}")
        mask &= s.mask(entity, clause)
    return mask


# ---- reading, writing, validating ------------------------------------------------------------
def _where(source) -> str:
    return f" in {source}" if source else ""


def _row_label(i: int, name) -> str:
    # Row numbers count the header as line 1, as an editor shows them.
    return f"target {name!r} (row {i + 2})"


def validate_targets(targets: pd.DataFrame, survey: Survey | None = None, source=None) -> pd.DataFrame:
    """Check a targets frame; return it normalised (column order, dtypes, empty strings for blanks).

    Columns of filters and variables are checked against ``survey``'s tables (plus derived slice
    columns) when given, else against the PolicyEngine UK columns weightreg knows.

    Raises:
        TargetError: naming the target (and its row), the offending column or value, and ``source``.
    """
    where = _where(source or targets.attrs.get("source"))
    missing = [c for c in TARGET_COLUMNS if c not in targets.columns]
    if missing:
        raise TargetError(f"targets{where} lack column(s) {missing}; expected {list(TARGET_COLUMNS)}")
    df = targets.loc[:, list(TARGET_COLUMNS)].copy().reset_index(drop=True)
    for col in ("name", "variable", "entity", "aggregation", "filter"):
        df[col] = df[col].fillna("").astype(str).str.strip()
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)

    dup = df["name"][df["name"].duplicated()].unique()
    if len(dup):
        raise TargetError(f"targets{where} have duplicate name(s) {list(dup[:10])}; names must be unique")
    slices = _Slices(survey) if survey is not None else None
    for i, row in enumerate(df.itertuples(index=False)):
        label = _row_label(i, row.name)
        if not row.name:
            raise TargetError(f"target at row {i + 2}{where} has an empty name")
        if not np.isfinite(row.value):
            raise TargetError(f"{label}{where}: value {targets['value'].iloc[i]!r} is not a finite number")
        if row.entity not in ENTITIES:
            raise TargetError(f"{label}{where}: unknown entity {row.entity!r}; use one of {list(ENTITIES)}")
        if row.aggregation not in AGGREGATIONS:
            raise TargetError(
                f"{label}{where}: unknown aggregation {row.aggregation!r}; use one of {list(AGGREGATIONS)}"
            )
        if row.aggregation == "sum" and not row.variable:
            raise TargetError(f"{label}{where}: a 'sum' target needs a variable (or use aggregation 'count')")
        if row.aggregation == "count" and row.variable:
            raise TargetError(
                f"{label}{where}: a 'count' target takes no variable (got {row.variable!r}); to count rows with "
                f"a nonzero value, filter on it, e.g. '{row.variable} in [0.01,inf)'"
            )

        def known(col, derived_ok=True):
            if slices is not None:
                if derived_ok:
                    return slices.has(row.entity, col)
                return col in slices.table(row.entity).columns
            return col in KNOWN_COLUMNS[row.entity] or (derived_ok and col in DERIVED_COLUMNS[row.entity])

        def options(derived_ok=True):
            if slices is not None:
                cols = slice_columns(survey, row.entity) if derived_ok else list(slices.table(row.entity).columns)
            else:
                cols = list(KNOWN_COLUMNS[row.entity]) + (list(DERIVED_COLUMNS[row.entity]) if derived_ok else [])
            return cols

        if row.variable and not known(row.variable, derived_ok=False):
            raise TargetError(
                f"{label}{where}: unknown {row.entity} column {row.variable!r} in 'variable'; "
                f"{row.entity} columns are {options(False)}"
            )
        try:
            clauses = parse_filter(row.filter)
        except TargetError as exc:
            raise TargetError(f"{label}{where}: {exc}") from None
        for col in _columns_of(clauses):
            if not known(col):
                raise TargetError(
                    f"{label}{where}: unknown {row.entity} column {col!r} in filter {row.filter!r}; "
                    f"slice columns are {options()}"
                )
    df.attrs["source"] = source or targets.attrs.get("source")
    return df


def read_targets(path, survey: Survey | None = None) -> pd.DataFrame:
    """Read and validate a ``targets.csv``.

    Args:
        path: the CSV file.
        survey: when given, filter and variable columns are checked against its tables;
            otherwise against the PolicyEngine UK columns weightreg knows.

    Returns:
        A DataFrame with columns :data:`TARGET_COLUMNS` (blanks as empty strings);
        ``attrs["source"]`` holds the path.

    Raises:
        TargetError: if the file is missing or any target is malformed (the message names the
            file, the target and its row, and the column).
    """
    path = Path(path)
    if not path.exists():
        raise TargetError(f"{path}: no such targets file; run `weightreg world` (DVC stage synthesize) to make one")
    try:
        # round_trip: the values read back are exactly the floats written (%.17g).
        frame = pd.read_csv(path, dtype={c: str for c in TARGET_COLUMNS if c != "value"}, keep_default_na=False,
                            float_precision="round_trip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: not a readable targets CSV ({exc})") from None
    return validate_targets(frame, survey, source=str(path))


def write_targets(targets: pd.DataFrame, path) -> Path:
    """Validate and write targets as CSV, atomically (temporary file in the same folder, then rename)."""
    df = validate_targets(targets)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.17g")
    return Path(path)


# ---- the matrix --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TargetMatrix:
    """Households x targets matrix of a survey.

    Attributes:
        matrix: ``scipy.sparse.csr_matrix`` of shape (households, targets), household order.
        values: the targets' values, shape (targets,).
        names: the targets' names.
        household_ids: the survey's household ids, in row order.
    """

    matrix: sp.csr_matrix
    values: np.ndarray
    names: list[str]
    household_ids: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def estimates(self, weights) -> np.ndarray:
        """``A^T w``: the survey's estimate of every target under ``weights``."""
        return np.asarray(self.matrix.T @ np.asarray(weights, dtype=float)).ravel()

    def relative_errors(self, weights) -> np.ndarray:
        """Signed ``(estimate - value) / |value|`` (``estimate`` itself where a value is 0)."""
        est = self.estimates(weights)
        denom = np.where(self.values != 0, np.abs(self.values), 1.0)
        return (est - self.values) / denom


def build_target_matrix(survey: Survey, targets: pd.DataFrame) -> TargetMatrix:
    """Build the households x targets matrix ``A`` of ``survey``.

    ``A[h, j]`` sums, over target ``j``'s entity rows in household ``h`` that match its filter,
    the target's variable (1 for a count). One boolean mask and one gather per target; the
    entries go into COO form and then CSR (duplicates summed).

    Raises:
        TargetError: a target names a column the survey lacks, or a filter that does not apply.
    """
    source = targets.attrs.get("source")
    df = validate_targets(targets, survey, source=source)
    where = _where(source)
    s = _Slices(survey)
    rows, cols, data = [], [], []
    for j, row in enumerate(df.itertuples(index=False)):
        n = len(s.table(row.entity))
        try:
            mask = np.ones(n, dtype=bool)
            for clause in parse_filter(row.filter):
                mask &= s.mask(row.entity, clause)
            idx = np.flatnonzero(mask)
            if row.aggregation == "count":
                vals = np.ones(len(idx))
            else:
                vals = _as_float(s.column(row.entity, row.variable), row.variable)[idx]
        except TargetError as exc:
            raise TargetError(f"{_row_label(j, row.name)}{where}: {exc}") from None
        bad = ~np.isfinite(vals)
        if bad.any():
            raise TargetError(
                f"{_row_label(j, row.name)}{where}: {row.entity} column {row.variable!r} has {int(bad.sum())} "
                "NaN/inf value(s) in the target's slice; fill them (e.g. with 0)"
            )
        nz = vals != 0
        rows.append(s.household_index(row.entity)[idx[nz]])
        cols.append(np.full(int(nz.sum()), j, dtype=np.int64))
        data.append(vals[nz])
    shape = (survey.n_households, len(df))
    if rows:
        coo = sp.coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    else:
        coo = sp.coo_matrix(shape)
    matrix = coo.tocsr()
    matrix.sum_duplicates()
    return TargetMatrix(
        matrix=matrix,
        values=df["value"].to_numpy(dtype=float),
        names=df["name"].tolist(),
        household_ids=survey.household_ids.copy(),
    )
