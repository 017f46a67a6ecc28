"""Read and write PolicyEngine UK's dataset files (pandas HDFStore, ``.h5``).

Single-year layout (``UKSingleYearDataset``): tables ``/person``, ``/benunit``, ``/household`` and a
one-value Series ``/time_period`` holding the year as a string, written with ``format="table"``.
Multi-year layout (``UKMultiYearDataset``): ``/person/2025``, ``/benunit/2025``, ... ; we read one
year of it (the only one, or the one asked for).

Enumerations (``region``, ``tenure_type``, ...) are name strings; bools stay bools; the weight lives
only in ``household.household_weight``. Columns weightreg does not know pass through untouched.
Some PolicyEngine files carry ``employment_income_before_lsr`` instead of ``employment_income``: on
read it is renamed to ``employment_income`` (weightreg's name) and renamed back on write.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pandas as pd
import tables
import tables.leaf

from .atomic import atomic_path
from .errors import SurveyFormatError
from .survey import Survey

TABLES = ("person", "benunit", "household")
LSR_NAME = "employment_income_before_lsr"


def _open(path: Path) -> pd.HDFStore:
    if not path.exists():
        raise SurveyFormatError(f"{path}: no such file. Run `dvc repro synthesize` or give the path of a PolicyEngine UK .h5 file.")
    try:
        return pd.HDFStore(path, mode="r")
    except Exception as exc:  # pytables raises several unrelated types for a non-HDF5 file
        raise SurveyFormatError(
            f"{path}: not a pandas HDFStore (PolicyEngine UK .h5 dataset) ({type(exc).__name__}: {exc}). "
            "Expected tables /person, /benunit, /household and /time_period."
        ) from exc


def read_survey(path, year: str | int | None = None, validate: bool = True) -> Survey:
    """Read a PolicyEngine UK single-year or multi-year ``.h5`` file into a :class:`Survey`.

    Args:
        path: the file.
        year: for a multi-year file, which year to read (default: the only one; an error if several).
        validate: run :meth:`Survey.validate` (raises with every problem found).

    Raises:
        SurveyFormatError: the file is not such a store, or lacks a table (named in the message).
        SurveyValidationError: the tables are inconsistent.
    """
    path = Path(path)
    with _open(path) as store:
        keys = {k.lstrip("/") for k in store.keys()}
        if all(t in keys for t in TABLES):
            tables = {t: store[t] for t in TABLES}
            time_period = _time_period(store, "time_period", keys, path)
        else:
            years = sorted({k.split("/", 1)[1] for k in keys if "/" in k and k.split("/", 1)[0] in TABLES})
            if not years:
                missing = [t for t in TABLES if t not in keys]
                raise SurveyFormatError(
                    f"{path}: lacks table(s) {missing} (found keys {sorted(keys)}). A PolicyEngine UK dataset has "
                    "/person, /benunit, /household and /time_period (or person/YEAR, ... for a multi-year file)."
                )
            if year is None:
                if len(years) > 1:
                    raise SurveyFormatError(f"{path}: a multi-year file with years {years}; pass year= to choose one.")
                year = years[0]
            year = str(year)
            missing = [f"{t}/{year}" for t in TABLES if f"{t}/{year}" not in keys]
            if missing:
                raise SurveyFormatError(f"{path}: lacks table(s) {missing} (years present: {years}).")
            tables = {t: store[f"{t}/{year}"] for t in TABLES}
            time_period = year
    for name, table in tables.items():
        if not isinstance(table, pd.DataFrame):
            raise SurveyFormatError(f"{path}: /{name} is a {type(table).__name__}, expected a DataFrame table.")
        tables[name] = _decode(table.reset_index(drop=True))
    person = tables["person"]
    lsr = LSR_NAME in person.columns and "employment_income" not in person.columns
    if lsr:
        person = person.rename(columns={LSR_NAME: "employment_income"})
    survey = Survey(person, tables["benunit"], tables["household"], str(time_period), source=str(path))
    survey.person.attrs["employment_income_name"] = LSR_NAME if lsr else "employment_income"
    if validate:
        survey.validate()
    return survey


def _time_period(store, key, keys, path) -> str:
    if key not in keys:
        warnings.warn(f"{path}: no /time_period; assuming 2025", stacklevel=3)
        return "2025"
    value = store[key]
    value = value.iloc[0] if hasattr(value, "iloc") else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn byte strings (fixed-width HDF5 strings) into Python strings."""
    for col in frame.columns:
        if frame[col].dtype == object and len(frame) and isinstance(frame[col].iloc[0], bytes):
            frame[col] = frame[col].str.decode("utf-8")
    return frame


def _encode(frame: pd.DataFrame) -> pd.DataFrame:
    """Make a table writable by PyTables: string columns as object dtype, categoricals as strings."""
    frame = frame.reset_index(drop=True).copy()
    for col in frame.columns:
        dtype = frame[col].dtype
        if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype) and dtype != object:
            frame[col] = frame[col].astype(str).astype(object)
        elif pd.api.types.is_bool_dtype(dtype) and dtype != bool:
            frame[col] = frame[col].astype(bool)
    return frame


def write_survey(survey: Survey, path, multi_year: bool = False) -> Path:
    """Write ``survey`` in PolicyEngine UK's layout, atomically (temporary file, then rename).

    Written bytes depend only on the tables' contents (no timestamps), so DVC hashes are stable.
    """
    path = Path(path)
    person = survey.person
    if person.attrs.get("employment_income_name") == LSR_NAME:
        person = person.rename(columns={"employment_income": LSR_NAME})
    frames = {"person": person, "benunit": survey.benunit, "household": survey.household}
    suffix = f"/{survey.time_period}" if multi_year else ""
    with atomic_path(path) as tmp, _untimed_pytables(), warnings.catch_warnings():
        # Year keys ("person/2025") are PolicyEngine's layout, not Python identifiers; that is fine.
        warnings.simplefilter("ignore", tables.NaturalNameWarning)
        tmp.unlink()
        with pd.HDFStore(tmp, mode="w") as store:
            for name, table in frames.items():
                store.put(f"{name}{suffix}", _encode(table), format="table", data_columns=True)
            store.put(f"time_period{suffix}", pd.Series([str(survey.time_period)]))
    return path



@contextlib.contextmanager
def _untimed_pytables():
    """Create HDF5 datasets without modification times, so identical tables give identical bytes.

    PyTables stamps every dataset it creates, including the index arrays behind
    ``data_columns=True``, with the time (``track_times=True``), and pandas offers no way to pass
    the flag; without this each run would change the file's DVC hash.
    """
    original = tables.leaf.Leaf.__init__

    def untimed(self, *args, **kwargs):
        if len(args) >= 6:  # track_times given positionally (parentnode, name, new, filters, byteorder, _log, ...)
            args = args[:6] + (False,) + args[7:]
        else:
            kwargs["track_times"] = False
        original(self, *args, **kwargs)

    tables.leaf.Leaf.__init__ = untimed
    try:
        yield
    finally:
        tables.leaf.Leaf.__init__ = original
