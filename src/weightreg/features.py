"""Flat household features: one row per household, and the exact way back to persons and units.

The generator learns, and the adversarial loop samples, households as flat rows. This module
defines that row (:class:`FeatureSpec`), reads it off a survey (:func:`extract`) and builds a real
household from it (:func:`build`). The invariant everything else relies on:

* a built household is a consistent household: every feature in its row is applied to the
  persons, benefit units and household built, and nothing else is carried (no household total
  written onto the head: each adult's incomes live in that adult's own slot);
* ``extract(build(rows)).features == normalise(rows)`` exactly, for rows ``valid_rows`` accepts;
* ``build(extract(survey).features)`` reproduces every eligible household of ``survey`` up to ids
  and row order (every modelled column, every benefit-unit membership);
* a household the row cannot represent is *ineligible* and listed with its reason and weight share;
  it is never truncated into a row.

Columns of a row (``spec.columns()``)
    household: ``region``, ``tenure_type``, ``council_tax_band`` (categorical), ``rent``,
    ``council_tax`` (numerical).

    structure: ``n_adults``, ``n_children`` (integer), ``layout`` (categorical, below).

    adult slots ``i = 1..max_adults``: ``adult{i}_age`` (integer), ``adult{i}_gender``
    (``MALE``/``FEMALE``, ``NONE`` for an unused slot), ``adult{i}_<amount>`` for the amounts in
    :data:`ADULT_AMOUNTS` (numerical, annual pounds; ``hours_worked`` is weekly hours) and
    ``adult{i}_is_disabled_for_benefits`` (boolean). Slot 1 is the household head, slot 2 the
    head's partner when the head is in a couple, then the other adults: grouped by benefit unit,
    couple units before single ones (married before cohabiting), units in order of their first
    member in the person table, each unit's flagged head (``is_benunit_head``) first, then person
    order. For households of up to three adults this is simply "the others in person order".

    benefit-unit slots ``k = 1..max_adults``: ``bu{k}_would_claim_uc``, ``bu{k}_would_claim_pc``,
    ``bu{k}_would_claim_child_benefit`` (boolean). ``bu1`` is the head's unit; unit ``k`` is the
    ``k``-th unit met walking the adult slots in order.

    child slots ``j = 1..max_children``: ``child{j}_age`` (integer 0-15), ``child{j}_gender``,
    ``child{j}_is_disabled_for_benefits`` (boolean; disabled children drive UC and Child Benefit
    related entitlements, and households with one would otherwise be ineligible as parents).
    Children are kept in person order and always belong to the head's benefit unit.

    A feature whose source column is absent from the survey drops out of every slot; the source
    column is recorded in ``spec.dropped``. ``age`` is required (it tells adults from children).

Adults and children
    A person aged 16 or over is an adult, a younger one a child (as in :mod:`weightreg.simulate`).
    The head must be 18 or over.

Layouts (the benefit-unit partition of the adults, in slot order)
    Each benefit unit is a ``single`` (one adult), a ``couple`` (two adults, ``is_married`` true)
    or, when the survey carries ``is_married``, a ``cohabiting`` couple (two adults,
    ``is_married`` false: the simulator treats those as two single claimants, so the distinction
    must survive). Without ``is_married`` every two-adult unit is a ``couple``. A layout names
    the units in slot order, joined by ``_plus_``; all-single layouts are ``single``,
    ``two_singles``, ``three_singles``, ... With ``max_adults=3``:

    ``single``, ``couple``, ``cohabiting``, ``two_singles``, ``couple_plus_single``,
    ``cohabiting_plus_single``, ``single_plus_couple``, ``single_plus_cohabiting``,
    ``three_singles`` (without ``is_married``: the six without ``cohabiting``).

    A unit with more than two adults has no layout (the household is ineligible).

Canonical form (:func:`normalise`)
    Integer columns rounded to the nearest integer (halves to even); a missing (or beyond 2**53)
    integer becomes -1 (which :func:`valid_rows` rejects). Booleans: ``True``, or a number >= 0.5. Negative amounts
    (``rent``, ``council_tax``, every adult amount and ``hours_worked``) clipped to 0, except
    ``self_employment_income`` (losses are real). Unused slots (adults beyond ``n_adults``,
    children beyond ``n_children``, units beyond the layout's) set to 0 / ``False`` / ``"NONE"``.

What :func:`build` writes
    Persons: adult slots in order, then children; ids ``person_id = household_id * 1000 + p``,
    ``benunit_id = household_id * 100 + k`` (``p``, ``k`` 1-based); ``is_household_head`` on
    adult 1, ``is_benunit_head`` on the first adult of each unit, ``is_married`` true for
    ``couple`` units only. Children carry zero amounts and no adult flag but their own disability
    (a survey household whose children carry any other is ineligible). :func:`modelled_columns` lists every column build
    writes. It writes the structural flags even when the survey lacks them (the round trip needs
    the head flag), so whoever mixes built households with the survey's must give the survey the
    same columns, or drop them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import FeatureError
from .survey import (
    COUNCIL_TAX_BANDS,
    GENDERS,
    REGIONS,
    RENTING_TENURES,
    TENURE_TYPES,
    WEIGHT,
    Survey,
)

__all__ = [
    "FeatureSpec",
    "Extraction",
    "extract",
    "normalise",
    "row_problems",
    "valid_rows",
    "build",
    "modelled_columns",
    "person_slots",
    "feature_columns_by_slot",
    "NONE",
    "ADULT_AGE",
    "HEAD_MIN_AGE",
    "ADULT_AMOUNTS",
    "REASONS",
]

#: The category of an unused gender slot.
NONE = "NONE"
#: Persons this age or older are adults (as in the simulator); younger ones are children.
ADULT_AGE = 16
#: The household head must be at least this old.
HEAD_MIN_AGE = 18
#: Ages above this are rejected as implausible.
MAX_AGE = 120
#: Hard limits of the id scheme (person = household * 1000 + p, unit = household * 100 + k).
MAX_ADULTS_LIMIT = 8
MAX_PERSONS_PER_HOUSEHOLD = 999

HOUSEHOLD_KINDS = {
    "region": "categorical",
    "tenure_type": "categorical",
    "rent": "numerical",
    "council_tax": "numerical",
    "council_tax_band": "categorical",
}
#: Per-adult amounts (annual pounds; ``hours_worked`` weekly hours), one slot column each.
ADULT_AMOUNTS = (
    "employment_income",
    "self_employment_income",
    "private_pension_income",
    "savings_interest_income",
    "dividend_income",
    "property_income",
    "hours_worked",
    "state_pension_reported",
    "universal_credit_reported",
    "housing_benefit_reported",
    "child_benefit_reported",
    "pension_credit_reported",
)
#: Amounts that may be negative (everything else is clipped to 0 by :func:`normalise`).
SIGNED_AMOUNTS = ("self_employment_income",)
ADULT_FLAGS = ("is_disabled_for_benefits",)
PERSON_SOURCES = ("age", "gender") + ADULT_AMOUNTS + ADULT_FLAGS
#: Flags children carry too (a child slot column each).
CHILD_FLAGS = ("is_disabled_for_benefits",)
BENUNIT_FLAGS = ("would_claim_uc", "would_claim_pc", "would_claim_child_benefit")
#: ``is_married`` is read into the layout (couple vs cohabiting), not into a column of its own.
BENUNIT_SOURCES = ("is_married",) + BENUNIT_FLAGS
HOUSEHOLD_SOURCES = tuple(HOUSEHOLD_KINDS)
CLIPPED_HOUSEHOLD_AMOUNTS = ("rent", "council_tax")
REQUIRED_SOURCES = ("age",)

#: Columns build() writes whatever the survey carries.
STRUCTURAL_COLUMNS = {
    "person": ("person_id", "person_benunit_id", "person_household_id", "is_household_head", "is_benunit_head"),
    "benunit": ("benunit_id", "is_married"),
    "household": ("household_id", WEIGHT),
}

_HOUSEHOLD_CATEGORIES = {"region": REGIONS, "tenure_type": TENURE_TYPES, "council_tax_band": COUNCIL_TAX_BANDS}
_GENDER_CATEGORIES = GENDERS + (NONE,)

#: Reason codes for an ineligible household or an invalid row (``child_has_<column>`` and
#: ``missing_<column>`` are formed per column).
REASONS = {
    "no_adult": "no person aged 16 or over",
    "too_many_adults": "more adults than max_adults (raise max_adults to cover it)",
    "too_many_children": "more children than max_children (raise max_children to cover it)",
    "head_is_child": "the household head is under 16",
    "child_outside_head_benunit": "a child is not in the household head's benefit unit",
    "benunit_over_two_adults": "a benefit unit has more than two adults",
    "married_single_benunit": "a one-adult benefit unit has is_married true",
    "household_head_flag_mismatch": "is_household_head is not set on exactly the household head",
    "benunit_head_flag_mismatch": "is_benunit_head is not set on exactly the first adult of each unit",
    "child_has_<column>": "a child has a non-zero amount or a true flag in <column> (children carry none)",
    "missing_<column>": "a source value of <column> is missing",
    "non_finite_value": "a value is missing or infinite",
    "non_integer": "an integer column (age, n_adults, n_children) holds a non-integer",
    "invalid_boolean": "a boolean column holds something other than true/false/0/1",
    "negative_amount": "a negative amount other than self_employment_income",
    "n_adults_out_of_range": "n_adults outside 1..max_adults",
    "n_children_out_of_range": "n_children outside 0..max_children",
    "unknown_layout": "layout is not one of spec.layouts",
    "layout_mismatch": "the layout's number of adults differs from n_adults",
    "head_under_18": "adult1_age under 18",
    "adult_under_16": "an adult slot in use has age under 16",
    "age_over_120": "an age over 120",
    "child_age_out_of_range": "a child slot in use has age outside 0..15",
    "unknown_region": "region not one of REGIONS",
    "unknown_tenure_type": "tenure_type not one of TENURE_TYPES",
    "unknown_council_tax_band": "council_tax_band not one of A-I",
    "unknown_gender": "a slot in use has gender other than MALE/FEMALE",
    "rent_without_renting": "rent > 0 for a household whose tenure_type is not a RENT_* type",
    "unused_slot_not_empty": "a slot beyond n_adults / n_children / the layout's units is not 0 / False / NONE",
}


# ---- layouts ----------------------------------------------------------------------------------
_KIND_CODE = {"single": 1, "couple": 2, "cohabiting": 3}
_KIND_SIZE = {"single": 1, "couple": 2, "cohabiting": 2}
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _layout_name(kinds: tuple[str, ...]) -> str:
    if all(k == "single" for k in kinds) and len(kinds) > 1:
        return f"{_NUMBER_WORDS[len(kinds)]}_singles"
    return "_plus_".join(kinds)


@dataclass(frozen=True)
class _LayoutTable:
    """Every canonical layout for (max_adults, married tracked), as lookup arrays."""

    names: tuple[str, ...]
    kinds: tuple[tuple[str, ...], ...]
    n_adults: np.ndarray  # (L,) adults in the layout
    n_units: np.ndarray  # (L,) benefit units in the layout
    unit_of_slot: np.ndarray  # (L, A) 0-based unit of each adult slot, -1 when unused
    unit_head: np.ndarray  # (L, A) bool: the slot is its unit's first adult
    unit_married: np.ndarray  # (L, A) bool per unit slot: a ``couple`` unit
    codes: np.ndarray  # (L,) sum of kind_code * 4**k over units k (0-based), as extraction computes

    def index(self, names) -> np.ndarray:
        """Position of each layout name in the table; -1 for an unknown name."""
        lookup = {n: i for i, n in enumerate(self.names)}
        return pd.Series(names, dtype=object).map(lookup).fillna(-1).to_numpy(dtype=np.int64)


@functools.lru_cache(maxsize=None)
def _layout_table(max_adults: int, married: bool) -> _LayoutTable:
    pair_kinds = ("couple", "cohabiting") if married else ("couple",)
    layouts: list[tuple[str, ...]] = []
    for n in range(1, max_adults + 1):
        for head in ("single",) + pair_kinds:
            rest = n - _KIND_SIZE[head]
            if rest < 0:
                continue
            # The other units in canonical order: couples, then cohabiting couples, then singles.
            for n_pairs in range(rest // 2, -1, -1):
                for n_first in range(n_pairs, -1, -1):
                    if len(pair_kinds) == 1 and n_first != n_pairs:
                        continue
                    others = (
                        (pair_kinds[0],) * n_first
                        + ((pair_kinds[-1],) * (n_pairs - n_first) if len(pair_kinds) > 1 else ())
                        + ("single",) * (rest - 2 * n_pairs)
                    )
                    layouts.append((head,) + others)
    L, A = len(layouts), max_adults
    unit_of_slot = np.full((L, A), -1, dtype=np.int64)
    unit_head = np.zeros((L, A), dtype=bool)
    unit_married = np.zeros((L, A), dtype=bool)
    n_adults = np.zeros(L, dtype=np.int64)
    n_units = np.zeros(L, dtype=np.int64)
    codes = np.zeros(L, dtype=np.int64)
    for li, kinds in enumerate(layouts):
        slot = 0
        for k, kind in enumerate(kinds):
            unit_head[li, slot] = True
            unit_married[li, k] = kind == "couple"
            unit_of_slot[li, slot : slot + _KIND_SIZE[kind]] = k
            slot += _KIND_SIZE[kind]
            codes[li] += _KIND_CODE[kind] * 4**k
        n_adults[li] = slot
        n_units[li] = len(kinds)
    return _LayoutTable(
        tuple(_layout_name(k) for k in layouts),
        tuple(layouts),
        n_adults,
        n_units,
        unit_of_slot,
        unit_head,
        unit_married,
        codes,
    )


# ---- the spec ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """Which flat columns a household row has.

    Attributes:
        max_adults: adult (and benefit-unit) slots; households with more adults are ineligible.
        max_children: child slots; households with more children are ineligible.
        person_columns: the person source columns present (subset of ``PERSON_SOURCES``; ``age``
            is required).
        benunit_columns: the benefit-unit source columns present (``is_married`` splits couples
            into ``couple`` / ``cohabiting`` layouts).
        household_columns: the household source columns present.
        dropped: the source columns absent from the survey, hence from every row (computed).
    """

    max_adults: int = 3
    max_children: int = 4
    person_columns: tuple[str, ...] = PERSON_SOURCES
    benunit_columns: tuple[str, ...] = BENUNIT_SOURCES
    household_columns: tuple[str, ...] = HOUSEHOLD_SOURCES
    dropped: tuple[str, ...] = field(default=())

    def __post_init__(self):
        for name, lo, hi in (("max_adults", 1, MAX_ADULTS_LIMIT), ("max_children", 0, MAX_PERSONS_PER_HOUSEHOLD)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise FeatureError(f"FeatureSpec.{name}={value!r}: expected an integer in {lo}..{hi}")
            object.__setattr__(self, name, int(value))
        if self.max_adults + self.max_children > MAX_PERSONS_PER_HOUSEHOLD:
            raise FeatureError(
                f"FeatureSpec: max_adults + max_children = {self.max_adults + self.max_children} exceeds "
                f"{MAX_PERSONS_PER_HOUSEHOLD}, the most persons the id scheme (household_id * 1000 + p) allows"
            )
        absent = []
        for attr, known in (
            ("person_columns", PERSON_SOURCES),
            ("benunit_columns", BENUNIT_SOURCES),
            ("household_columns", HOUSEHOLD_SOURCES),
        ):
            given = tuple(getattr(self, attr))
            unknown = [c for c in given if c not in known]
            if unknown:
                raise FeatureError(f"FeatureSpec.{attr} has unknown column(s) {unknown}; known: {list(known)}")
            # Canonical order, so equal specs compare equal and columns() is stable.
            object.__setattr__(self, attr, tuple(c for c in known if c in given))
            absent += [c for c in known if c not in given]
        missing_required = [c for c in REQUIRED_SOURCES if c not in self.person_columns]
        if missing_required:
            raise FeatureError(
                f"FeatureSpec.person_columns lacks {missing_required}: age is needed to tell adults from children"
            )
        if self.dropped and set(self.dropped) != set(absent):
            raise FeatureError(
                f"FeatureSpec.dropped={list(self.dropped)} disagrees with the columns given (absent: {absent}); "
                "leave dropped out, it is computed"
            )
        object.__setattr__(self, "dropped", tuple(absent))

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_survey(cls, survey: Survey, max_adults: int = 3, max_children: int = 4) -> FeatureSpec:
        """The spec of the source columns ``survey`` carries.

        Raises:
            FeatureError: the person table has no ``age`` column.
        """
        if "age" not in survey.person.columns:
            raise FeatureError(
                "person table lacks 'age', which tells adults from children; add it (years, integer) "
                "before extracting features"
            )
        return cls(
            max_adults=max_adults,
            max_children=max_children,
            person_columns=tuple(c for c in PERSON_SOURCES if c in survey.person.columns),
            benunit_columns=tuple(c for c in BENUNIT_SOURCES if c in survey.benunit.columns),
            household_columns=tuple(c for c in HOUSEHOLD_SOURCES if c in survey.household.columns),
        )

    def to_dict(self) -> dict:
        """A JSON-able description (``layouts`` is informative; :meth:`from_dict` checks it)."""
        return {
            "version": 1,
            "max_adults": self.max_adults,
            "max_children": self.max_children,
            "person_columns": list(self.person_columns),
            "benunit_columns": list(self.benunit_columns),
            "household_columns": list(self.household_columns),
            "dropped": list(self.dropped),
            "layouts": list(self.layouts),
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        """The spec :meth:`to_dict` described.

        Raises:
            FeatureError: a key is missing or the description is inconsistent.
        """
        needed = ("max_adults", "max_children", "person_columns", "benunit_columns", "household_columns")
        missing = [k for k in needed if k not in d]
        if missing:
            raise FeatureError(f"feature spec description lacks {missing}; it must come from FeatureSpec.to_dict()")
        spec = cls(
            max_adults=d["max_adults"],
            max_children=d["max_children"],
            person_columns=tuple(d["person_columns"]),
            benunit_columns=tuple(d["benunit_columns"]),
            household_columns=tuple(d["household_columns"]),
            dropped=tuple(d.get("dropped", ())),
        )
        if "layouts" in d and list(d["layouts"]) != list(spec.layouts):
            raise FeatureError(
                f"feature spec description lists layouts {list(d['layouts'])}, but this version of weightreg "
                f"defines {list(spec.layouts)}; retrain the generator with this version"
            )
        return spec

    # ---- derived ------------------------------------------------------------------------------
    @property
    def tracks_married(self) -> bool:
        """Whether layouts tell married couples from cohabiting ones (the survey has ``is_married``)."""
        return "is_married" in self.benunit_columns

    @property
    def layouts(self) -> tuple[str, ...]:
        return self._table.names

    def layout_units(self) -> dict[str, tuple[str, ...]]:
        """``layout -> (unit kind, ...)`` in slot order, kinds ``single``/``couple``/``cohabiting``."""
        return dict(zip(self._table.names, self._table.kinds))

    def layout_adults(self) -> dict[str, int]:
        """``layout -> number of adults`` (what ``n_adults`` must equal)."""
        return {name: int(n) for name, n in zip(self._table.names, self._table.n_adults)}

    @property
    def _table(self) -> _LayoutTable:
        return _layout_table(self.max_adults, self.tracks_married)

    @property
    def household_features(self) -> tuple[str, ...]:
        return self.household_columns

    @property
    def adult_features(self) -> tuple[str, ...]:
        """The per-adult feature names (the part after ``adult{i}_``)."""
        return tuple(c for c in PERSON_SOURCES if c in self.person_columns)

    @property
    def benunit_features(self) -> tuple[str, ...]:
        """The per-unit feature names (the part after ``bu{k}_``)."""
        return tuple(c for c in BENUNIT_FLAGS if c in self.benunit_columns)

    @property
    def child_features(self) -> tuple[str, ...]:
        return tuple(c for c in ("age", "gender") + CHILD_FLAGS if c in self.person_columns)

    def columns(self) -> list[str]:
        """Every row column, in a fixed order."""
        cols = list(self.household_features) + ["n_adults", "n_children", "layout"]
        for i in range(1, self.max_adults + 1):
            cols += [f"adult{i}_{f}" for f in self.adult_features]
        for k in range(1, self.max_adults + 1):
            cols += [f"bu{k}_{f}" for f in self.benunit_features]
        for j in range(1, self.max_children + 1):
            cols += [f"child{j}_{f}" for f in self.child_features]
        return cols

    def column_kinds(self) -> dict[str, str]:
        """``column -> "categorical" | "numerical" | "integer" | "boolean"``."""
        kinds = {c: HOUSEHOLD_KINDS[c] for c in self.household_features}
        kinds.update(n_adults="integer", n_children="integer", layout="categorical")
        for i in range(1, self.max_adults + 1):
            for f in self.adult_features:
                kinds[f"adult{i}_{f}"] = _person_kind(f)
        for k in range(1, self.max_adults + 1):
            for f in self.benunit_features:
                kinds[f"bu{k}_{f}"] = "boolean"
        for j in range(1, self.max_children + 1):
            for f in self.child_features:
                kinds[f"child{j}_{f}"] = _person_kind(f)
        return {c: kinds[c] for c in self.columns()}

    def categories(self) -> dict[str, tuple[str, ...]]:
        """The allowed values of every categorical column (gender slots include ``NONE``)."""
        out: dict[str, tuple[str, ...]] = {}
        for col in self.columns():
            if col in _HOUSEHOLD_CATEGORIES:
                out[col] = _HOUSEHOLD_CATEGORIES[col]
            elif col == "layout":
                out[col] = self.layouts
            elif col.endswith("_gender"):
                out[col] = _GENDER_CATEGORIES
        return out


def _person_kind(feature: str) -> str:
    if feature == "age":
        return "integer"
    if feature == "gender":
        return "categorical"
    if feature in ADULT_FLAGS:
        return "boolean"
    return "numerical"


def modelled_columns(spec: FeatureSpec) -> dict[str, set[str]]:
    """The survey columns :func:`build` writes, per entity (``person``, ``benunit``, ``household``).

    Any other column of a survey is not modelled: built households do not carry it.
    """
    return {
        "person": set(STRUCTURAL_COLUMNS["person"]) | set(spec.person_columns),
        "benunit": set(STRUCTURAL_COLUMNS["benunit"]) | set(spec.benunit_columns),
        "household": set(STRUCTURAL_COLUMNS["household"]) | set(spec.household_columns),
    }


# ---- value helpers ----------------------------------------------------------------------------
_BOOL_STRINGS = {"true": 1.0, "false": 0.0}


def _as_float(values) -> np.ndarray:
    """Numbers (and booleans, and "true"/"false" strings) as float64; anything else NaN."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        mapped = s.astype(str).str.strip().str.lower().map(_BOOL_STRINGS)
        numeric = pd.to_numeric(s.where(mapped.isna()), errors="coerce")
        return mapped.fillna(numeric).to_numpy(dtype=float)
    if isinstance(s.dtype, pd.CategoricalDtype):
        return _as_float(s.astype(object))
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "biuf":
        return s.to_numpy(dtype=float)  # fast path: plain numpy numbers and booleans
    return pd.to_numeric(s, errors="coerce").astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def _as_str(values) -> np.ndarray:
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    return s.astype(str).to_numpy(dtype=object)


def _fill(kind: str):
    return {"categorical": NONE, "integer": 0, "numerical": 0.0, "boolean": False}[kind]


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """For each element of a sorted key array, the position where its group starts."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


class _Reasons:
    """Reason codes accumulated as boolean masks, joined per row at the end (no loop over rows)."""

    def __init__(self, n: int):
        self.n = n
        self.masks: dict[str, np.ndarray] = {}

    def add(self, code: str, mask) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.masks[code] = self.masks.get(code, np.zeros(self.n, dtype=bool)) | mask

    def any(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for m in self.masks.values():
            out |= m
        return out

    def strings(self) -> np.ndarray:
        out = np.full(self.n, "", dtype=object)
        for code, mask in self.masks.items():
            out[mask] = out[mask] + (code + "; ")
        return pd.Series(out, dtype=object).str.removesuffix("; ").to_numpy(dtype=object)


# ---- canonical form and validity --------------------------------------------------------------
def _check_columns(rows: pd.DataFrame, spec: FeatureSpec) -> None:
    if not isinstance(rows, pd.DataFrame):
        raise FeatureError(f"rows must be a pandas DataFrame with spec.columns(); got {type(rows).__name__}")
    missing = [c for c in spec.columns() if c not in rows.columns]
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise FeatureError(
            f"rows lack {len(missing)} feature column(s): {missing[:10]}{more}; rows must carry every column "
            "of spec.columns() (the spec the generator was trained with)"
        )


def normalise(rows: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The canonical form of flat rows (see the module docstring): what :func:`build` applies.

    Returns:
        A new DataFrame with exactly ``spec.columns()``, ``rows``' index, and dtypes int64
        (integer), float64 (numerical), bool (boolean), object strings (categorical).

    Raises:
        FeatureError: a column of ``spec.columns()`` is missing.
    """
    _check_columns(rows, spec)
    kinds = spec.column_kinds()
    out: dict[str, np.ndarray] = {}
    clipped = {f"adult{i}_{f}" for i in range(1, spec.max_adults + 1) for f in ADULT_AMOUNTS if f not in SIGNED_AMOUNTS}
    clipped |= set(CLIPPED_HOUSEHOLD_AMOUNTS)
    for col, kind in kinds.items():
        if kind == "integer":
            v = np.round(_as_float(rows[col]))
            # Missing or absurdly large values (which would overflow int64) become -1: invalid.
            out[col] = np.where(np.isfinite(v) & (np.abs(v) < 2.0**53), v, -1).astype(np.int64)
        elif kind == "numerical":
            v = _as_float(rows[col])
            out[col] = np.where(v < 0, 0.0, v) if col in clipped else v
        elif kind == "boolean":
            s = rows[col]
            out[col] = s.to_numpy(dtype=bool) if s.dtype == bool else _as_float(s) >= 0.5
        else:
            out[col] = _as_str(rows[col])
    n_adults, n_children = out["n_adults"], out["n_children"]
    table = spec._table
    li = table.index(out["layout"])
    n_units = np.where(li >= 0, table.n_units[li], spec.max_adults)
    for i in range(1, spec.max_adults + 1):
        unused = i > n_adults
        for f in spec.adult_features:
            col = f"adult{i}_{f}"
            out[col] = np.where(unused, _fill(kinds[col]), out[col]).astype(out[col].dtype)
        unused = i > n_units
        for f in spec.benunit_features:
            out[f"bu{i}_{f}"] = out[f"bu{i}_{f}"] & ~unused
    for j in range(1, spec.max_children + 1):
        unused = j > n_children
        for f in spec.child_features:
            col = f"child{j}_{f}"
            out[col] = np.where(unused, _fill(kinds[col]), out[col]).astype(out[col].dtype)
    return pd.DataFrame(out, index=rows.index, columns=spec.columns())


def row_problems(rows: pd.DataFrame, spec: FeatureSpec) -> pd.Series:
    """Why each row, exactly as given, is not a canonical row of a valid household.

    Returns:
        A Series of strings, on ``rows``' index: reason codes (see :data:`REASONS`) joined by
        ``"; "``, empty for a row that builds as is. ``normalise(rows)`` has no
        ``non_integer``/``negative_amount``/``unused_slot_not_empty`` problems.

    Raises:
        FeatureError: a column of ``spec.columns()`` is missing.
    """
    return pd.Series(_row_reasons(rows, spec).strings(), index=rows.index, dtype=object, name="problems")


def _row_reasons(rows: pd.DataFrame, spec: FeatureSpec) -> _Reasons:
    _check_columns(rows, spec)
    n = len(rows)
    kinds = spec.column_kinds()
    r = _Reasons(n)
    v: dict[str, np.ndarray] = {}
    for col, kind in kinds.items():
        if kind == "categorical":
            v[col] = _as_str(rows[col])
            continue
        x = _as_float(rows[col])
        r.add("non_finite_value", ~np.isfinite(x))
        if kind == "integer":
            r.add("non_integer", np.isfinite(x) & (x != np.round(x)))
        elif kind == "boolean":
            r.add("invalid_boolean", np.isfinite(x) & (x != 0) & (x != 1))
        v[col] = x

    A, C = spec.max_adults, spec.max_children
    n_adults, n_children = v["n_adults"], v["n_children"]
    r.add("n_adults_out_of_range", ~((n_adults >= 1) & (n_adults <= A)))
    r.add("n_children_out_of_range", ~((n_children >= 0) & (n_children <= C)))
    table = spec._table
    li = table.index(v["layout"])
    known = li >= 0
    r.add("unknown_layout", ~known)
    r.add("layout_mismatch", known & (table.n_adults[np.maximum(li, 0)] != n_adults))
    n_units = np.where(known, table.n_units[np.maximum(li, 0)], A)

    for col, allowed in _HOUSEHOLD_CATEGORIES.items():
        if col in v:
            r.add(f"unknown_{col}", ~np.isin(v[col], allowed))
    for col in CLIPPED_HOUSEHOLD_AMOUNTS:
        if col in v:
            r.add("negative_amount", v[col] < 0)
    if "rent" in v and "tenure_type" in v:
        r.add("rent_without_renting", (v["rent"] != 0) & ~np.isin(v["tenure_type"], RENTING_TENURES))

    for i in range(1, A + 1):
        used = i <= n_adults
        age = v[f"adult{i}_age"]
        r.add("head_under_18" if i == 1 else "adult_under_16", used & (age < (HEAD_MIN_AGE if i == 1 else ADULT_AGE)))
        r.add("age_over_120", used & (age > MAX_AGE))
        for f in spec.adult_features:
            col = f"adult{i}_{f}"
            if f == "gender":
                r.add("unknown_gender", used & ~np.isin(v[col], GENDERS))
                r.add("unused_slot_not_empty", ~used & (v[col] != NONE))
            else:
                if f in ADULT_AMOUNTS and f not in SIGNED_AMOUNTS:
                    r.add("negative_amount", used & (v[col] < 0))
                r.add("unused_slot_not_empty", ~used & (v[col] != 0))
        unit_used = i <= n_units
        for f in spec.benunit_features:
            r.add("unused_slot_not_empty", ~unit_used & (v[f"bu{i}_{f}"] != 0))
    for j in range(1, C + 1):
        used = j <= n_children
        age = v[f"child{j}_age"]
        r.add("child_age_out_of_range", used & ~((age >= 0) & (age < ADULT_AGE)))
        r.add("unused_slot_not_empty", ~used & (age != 0))
        if "gender" in spec.child_features:
            g = v[f"child{j}_gender"]
            r.add("unknown_gender", used & ~np.isin(g, GENDERS))
            r.add("unused_slot_not_empty", ~used & (g != NONE))
        for f in CHILD_FLAGS:
            if f in spec.child_features:
                r.add("unused_slot_not_empty", ~used & (v[f"child{j}_{f}"] != 0))
    return r


def valid_rows(rows: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """Whether each row, once normalised, builds into a valid household (bool array, row order)."""
    return (row_problems(normalise(rows, spec), spec) == "").to_numpy()


# ---- build ------------------------------------------------------------------------------------
def _ids(household_ids, n: int) -> np.ndarray:
    hid = np.asarray(household_ids)
    if hid.shape != (n,):
        raise FeatureError(f"household_ids has shape {hid.shape}, expected ({n},): one id per row")
    if n and not np.issubdtype(hid.dtype, np.integer):
        as_float = pd.to_numeric(pd.Series(hid), errors="coerce").to_numpy(dtype=float)
        if not (np.isfinite(as_float).all() and (as_float == np.round(as_float)).all()):
            raise FeatureError("household_ids must be integers (person ids are household_id * 1000 + p)")
        hid = as_float
    hid = hid.astype(np.int64)
    limit = np.iinfo(np.int64).max // 1000 - 1
    bad = (hid < 0) | (hid > limit)
    if bad.any():
        raise FeatureError(
            f"household_ids {hid[bad][:10].tolist()} outside 0..{limit} (person ids are household_id * 1000 + p)"
        )
    dup = pd.unique(hid[pd.Series(hid).duplicated().to_numpy()])
    if len(dup):
        raise FeatureError(f"household_ids has {len(dup)} duplicate id(s): {dup[:10].tolist()}; give each row its own id")
    return hid


def build(
    rows: pd.DataFrame,
    spec: FeatureSpec,
    *,
    household_ids,
    weights=None,
    time_period: str = "2025",
) -> Survey:
    """Build one household per row, from that row alone.

    Args:
        rows: flat rows with every column of ``spec.columns()`` (normalised here first).
        spec: the feature spec the rows follow.
        household_ids: one non-negative integer id per row, unique.
        weights: ``household_weight`` per row (default 1.0 each).
        time_period: the survey year.

    Returns:
        A :class:`Survey` holding exactly the columns :func:`modelled_columns` lists, persons in
        row order (adult slots, then children), ids ``household_id * 1000 + p`` and
        ``household_id * 100 + k``.

    Raises:
        FeatureError: a row is not valid (see :func:`row_problems`; filter with
            :func:`valid_rows` first), or the ids or weights are unusable.
    """
    rows = normalise(rows, spec)
    n = len(rows)
    problems = row_problems(rows, spec)
    bad = np.flatnonzero((problems != "").to_numpy())
    if len(bad):
        shown = "; ".join(f"row {p} ({rows.index[p]!r}): {problems.iloc[p]}" for p in bad[:5])
        raise FeatureError(
            f"{len(bad)} of {n} row(s) cannot be built into a valid household: {shown}"
            f"{' ...' if len(bad) > 5 else ''}; filter rows with valid_rows() (or resample) before build()"
        )
    hid = _ids(household_ids, n)
    if weights is None:
        w = np.ones(n)
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
            raise FeatureError(f"weights must be {n} finite non-negative numbers (one per row); got shape {w.shape}")

    A, C = spec.max_adults, spec.max_children
    table = spec._table
    li = table.index(rows["layout"].to_numpy())
    na = rows["n_adults"].to_numpy(dtype=np.int64)
    nc = rows["n_children"].to_numpy(dtype=np.int64)

    # Adults: the (row, slot) pairs in use, row-major, so persons come out in row then slot order.
    used_a = np.arange(A)[None, :] < na[:, None]
    a_row, a_slot = np.nonzero(used_a)
    used_c = np.arange(C)[None, :] < nc[:, None]
    c_row, c_slot = np.nonzero(used_c)
    p_row = np.concatenate([a_row, c_row])
    p_pos = np.concatenate([a_slot, na[c_row] + c_slot])  # 0-based position within the household
    order = np.lexsort((p_pos, p_row))
    is_adult = np.concatenate([np.ones(len(a_row), bool), np.zeros(len(c_row), bool)])
    unit = np.concatenate([table.unit_of_slot[li[a_row], a_slot], np.zeros(len(c_row), np.int64)])
    unit_head = np.concatenate([table.unit_head[li[a_row], a_slot], np.zeros(len(c_row), bool)])

    def adult_values(feature: str) -> np.ndarray:
        return rows[[f"adult{i}_{feature}" for i in range(1, A + 1)]].to_numpy()[used_a]

    def child_values(feature: str) -> np.ndarray:
        return rows[[f"child{j}_{feature}" for j in range(1, C + 1)]].to_numpy()[used_c]

    person: dict[str, np.ndarray] = {
        "person_id": hid[p_row] * 1000 + p_pos + 1,
        "person_benunit_id": hid[p_row] * 100 + unit + 1,
        "person_household_id": hid[p_row],
        "is_household_head": is_adult & (p_pos == 0),
        "is_benunit_head": unit_head,
    }
    for f in spec.adult_features:
        kind = _person_kind(f)
        if f in spec.child_features:
            values = np.concatenate([adult_values(f), child_values(f)])
        else:
            values = np.concatenate([adult_values(f), np.full(len(c_row), _fill(kind), dtype=object)])
        dtype = {"integer": np.int64, "numerical": float, "boolean": bool, "categorical": object}[kind]
        person[f] = values.astype(dtype)
    person_df = pd.DataFrame({k: v[order] for k, v in person.items()})

    used_u = np.arange(A)[None, :] < table.n_units[li][:, None]
    u_row, u_k = np.nonzero(used_u)
    benunit: dict[str, np.ndarray] = {
        "benunit_id": hid[u_row] * 100 + u_k + 1,
        "is_married": table.unit_married[li[u_row], u_k],
    }
    for f in spec.benunit_features:
        benunit[f] = rows[[f"bu{k}_{f}" for k in range(1, A + 1)]].to_numpy(dtype=bool)[used_u]
    benunit_df = pd.DataFrame(benunit)

    household = {"household_id": hid, WEIGHT: w}
    for f in spec.household_features:
        household[f] = rows[f].to_numpy()
    household_df = pd.DataFrame(household)
    return Survey(person_df, benunit_df, household_df, str(time_period))


# ---- extraction -------------------------------------------------------------------------------
@dataclass
class Extraction:
    """Flat rows of a survey's eligible households, and why the others are not eligible.

    Attributes:
        features: one canonical row per eligible household (index ``household_id``, in household
            order; columns ``spec.columns()``). Ineligible households have no row (never truncated).
        eligible: bool array in household-table order.
        ineligible: one row per ineligible household: ``household_id``, ``reason`` (codes of
            :data:`REASONS` joined by ``"; "``), ``household_weight``, ``weight_share`` (of the
            survey's total weight).
        spec: the spec used.
        total_weight: the survey's total household weight.
    """

    features: pd.DataFrame
    eligible: np.ndarray
    ineligible: pd.DataFrame
    spec: FeatureSpec
    total_weight: float

    @property
    def summary(self) -> dict:
        """Counts and weight shares, overall and per reason code (a household may have several)."""
        n = len(self.eligible)
        n_in = int(len(self.ineligible))
        share_in = float(self.ineligible["weight_share"].sum()) if n_in else 0.0
        by_reason: dict[str, dict] = {}
        if n_in:
            exploded = self.ineligible.assign(code=self.ineligible["reason"].str.split("; ")).explode("code")
            grouped = exploded.groupby("code", sort=True)["weight_share"].agg(["size", "sum"])
            by_reason = {
                code: {"households": int(row["size"]), "weight_share": float(row["sum"])}
                for code, row in grouped.sort_values("size", ascending=False).iterrows()
            }
        return {
            "n_households": n,
            "n_eligible": n - n_in,
            "n_ineligible": n_in,
            "eligible_weight_share": 1.0 - share_in if n else 0.0,
            "ineligible_weight_share": share_in,
            "by_reason": by_reason,
        }

    def describe(self) -> str:
        """A short human-readable account of coverage."""
        s = self.summary
        lines = [
            f"{s['n_eligible']} of {s['n_households']} households eligible "
            f"({100 * s['eligible_weight_share']:.2f}% of weight); {s['n_ineligible']} ineligible"
        ]
        for code, info in s["by_reason"].items():
            lines.append(f"  {code}: {info['households']} households, {100 * info['weight_share']:.2f}% of weight")
        return "\n".join(lines)


def extract(survey: Survey, spec: FeatureSpec | None = None) -> Extraction:
    """Flat rows of every household the spec can represent exactly.

    Args:
        survey: a valid survey (validated here).
        spec: the row spec; default ``FeatureSpec.from_survey(survey)``.

    Returns:
        An :class:`Extraction`. ``build(extraction.features, spec, ...)`` rebuilds the eligible
        households exactly (modelled columns; up to ids and row order).

    Raises:
        SurveyValidationError: the survey's tables are inconsistent.
        FeatureError: a source column of ``spec`` is absent from the survey.
    """
    if spec is None:
        spec = FeatureSpec.from_survey(survey)
    survey.validate()
    for entity, cols in (
        ("person", spec.person_columns),
        ("benunit", spec.benunit_columns),
        ("household", spec.household_columns),
    ):
        absent = [c for c in cols if c not in getattr(survey, entity).columns]
        if absent:
            raise FeatureError(
                f"{entity} table lacks {absent}, which the feature spec reads; use FeatureSpec.from_survey(survey) "
                "or a spec without them"
            )

    P, B, H = survey.person, survey.benunit, survey.household
    A, C = spec.max_adults, spec.max_children
    n_h, n_p = len(H), len(P)
    st = _structure(survey, spec.tracks_married)
    ph, bh, age, is_adult, is_child, head = st.ph, st.bh, st.age, st.is_adult, st.is_child, st.head
    sa, sh, sb, slot, new_unit, unit_rank = st.sa, st.sh, st.sb, st.slot, st.new_unit, st.unit_rank
    unit_adults, unit_kind = st.unit_adults, st.unit_kind
    reasons = _Reasons(n_h)

    def per_household(person_mask) -> np.ndarray:
        return np.bincount(ph[np.asarray(person_mask, bool)], minlength=n_h) > 0

    reasons.add("missing_age", per_household(~np.isfinite(age)))
    n_adults = np.bincount(ph, weights=is_adult, minlength=n_h).astype(np.int64)
    n_children = np.bincount(ph, weights=is_child, minlength=n_h).astype(np.int64)
    reasons.add("no_adult", n_adults == 0)
    reasons.add("too_many_adults", n_adults > A)
    reasons.add("too_many_children", n_children > C)
    reasons.add("head_is_child", (n_adults > 0) & ~is_adult[head])
    reasons.add("child_outside_head_benunit", per_household(is_child & ~st.in_head_unit))
    reasons.add("benunit_over_two_adults", np.bincount(bh[unit_adults > 2], minlength=n_h) > 0)
    if spec.tracks_married:
        has_adult = unit_adults > 0
        reasons.add("missing_is_married", np.bincount(bh[has_adult & ~np.isfinite(st.married_raw)], minlength=n_h) > 0)
        married_single = (unit_adults == 1) & (st.married_raw == 1)
        reasons.add("married_single_benunit", np.bincount(bh[married_single], minlength=n_h) > 0)

    # Layout code, as _layout_table computes it: sum of kind * 4**k over units k in slot order.
    firsts = new_unit & (unit_rank < A)
    code = np.bincount(
        sh[firsts], weights=unit_kind[sb[firsts]] * 4.0 ** unit_rank[firsts], minlength=n_h
    ).astype(np.int64)
    table = spec._table
    code_order = np.argsort(table.codes)
    pos = np.clip(np.searchsorted(table.codes, code, sorter=code_order), 0, len(table.codes) - 1)
    layout_idx = np.where(table.codes[code_order[pos]] == code, code_order[pos], -1)
    layout = np.where(layout_idx >= 0, np.asarray(table.names, dtype=object)[np.maximum(layout_idx, 0)], "")

    # Structural flags must be exactly what build() would write, or the round trip breaks.
    if "is_household_head" in P.columns:
        flag = _as_float(P["is_household_head"]) == 1
        reasons.add("household_head_flag_mismatch", per_household(flag != st.is_head))
    if "is_benunit_head" in P.columns:
        expected = np.zeros(n_p, dtype=bool)
        expected[sa[new_unit]] = True
        reasons.add("benunit_head_flag_mismatch", per_household(st.unit_head_flag != expected))

    # Children carry nothing but age, gender and their child flags.
    children = np.flatnonzero(is_child)
    c_sorted, c_h, c_slot = st.c_sorted, st.c_h, st.c_slot
    for f in ADULT_AMOUNTS + ADULT_FLAGS:
        if f in spec.person_columns and f not in spec.child_features:
            x = _as_float(P[f])[children]
            reasons.add(f"child_has_{f}", np.bincount(ph[children[~(x == 0)]], minlength=n_h) > 0)

    # The raw rows (values as the survey holds them; the checks below decide if they are canonical).
    kinds = spec.column_kinds()
    raw: dict[str, np.ndarray] = {}
    for f in spec.household_features:
        raw[f] = _as_str(H[f]) if kinds[f] == "categorical" else _as_float(H[f])
    raw["n_adults"] = n_adults.astype(float)
    raw["n_children"] = n_children.astype(float)
    raw["layout"] = layout
    in_slots = slot < A
    for f in spec.adult_features:
        values = _as_str(P[f]) if f == "gender" else _as_float(P[f])
        for i in range(A):
            col = np.full(n_h, NONE if f == "gender" else 0.0, dtype=object if f == "gender" else float)
            m = in_slots & (slot == i)
            col[sh[m]] = values[sa[m]]
            raw[f"adult{i + 1}_{f}"] = col
    for f in spec.benunit_features:
        values = _as_float(B[f])
        for k in range(A):
            col = np.zeros(n_h)
            m = new_unit & (unit_rank == k)
            col[sh[m]] = values[sb[m]]
            raw[f"bu{k + 1}_{f}"] = col
    for f in spec.child_features:
        values = _as_str(P[f]) if f == "gender" else (age if f == "age" else _as_float(P[f]))
        for j in range(C):
            col = np.full(n_h, NONE if f == "gender" else 0.0, dtype=object if f == "gender" else float)
            m = c_slot == j
            col[c_h[m]] = values[c_sorted[m]]
            raw[f"child{j + 1}_{f}"] = col
    raw_df = pd.DataFrame(raw, columns=spec.columns())

    structural_ok = ~reasons.any()
    # Value checks only where the structure is representable (elsewhere the slots are meaningless).
    ok_positions = np.flatnonzero(structural_ok)
    for code, mask in _row_reasons(raw_df.iloc[ok_positions], spec).masks.items():
        bad = np.zeros(n_h, dtype=bool)
        bad[ok_positions[mask]] = True
        reasons.add(code, bad)

    eligible = ~reasons.any()
    hid = H["household_id"].to_numpy()
    features = normalise(raw_df.loc[eligible], spec)
    features.index = pd.Index(hid[eligible], name="household_id")

    w = survey.weights
    total = float(w.sum())
    share = w / total if total > 0 else np.zeros(n_h)
    ineligible = pd.DataFrame(
        {
            "household_id": hid[~eligible],
            "reason": reasons.strings()[~eligible],
            WEIGHT: w[~eligible],
            "weight_share": share[~eligible],
        }
    )
    return Extraction(features, eligible, ineligible, spec, total)


@dataclass
class _Structure:
    """Index maps and slot order of a survey's persons (see the module docstring for the order)."""

    ph: np.ndarray  # person -> household position
    pb: np.ndarray  # person -> benefit-unit position
    bh: np.ndarray  # benefit unit -> household position
    age: np.ndarray
    is_adult: np.ndarray
    is_child: np.ndarray
    head: np.ndarray  # household -> head's person position
    is_head: np.ndarray
    in_head_unit: np.ndarray
    unit_head_flag: np.ndarray  # is_benunit_head as the survey holds it (False without the column)
    married_raw: np.ndarray | None  # is_married per unit as float (None when not tracked)
    unit_adults: np.ndarray
    unit_kind: np.ndarray  # 1 single, 2 couple, 3 cohabiting, 0 none (no adult or over two)
    sa: np.ndarray  # adults' person positions in slot order (households in order)
    sh: np.ndarray  # their household positions
    sb: np.ndarray  # their benefit-unit positions
    slot: np.ndarray  # 0-based adult slot
    new_unit: np.ndarray  # the adult is the first of its unit in slot order
    unit_rank: np.ndarray  # 0-based unit slot of the adult's unit
    c_sorted: np.ndarray  # children's person positions, households in order, person order within
    c_h: np.ndarray
    c_slot: np.ndarray  # 0-based child slot


def _structure(survey: Survey, tracks_married: bool) -> _Structure:
    P, B = survey.person, survey.benunit
    n_p, n_b = len(P), len(B)
    ph = survey.person_household_index()
    pb = survey.person_benunit_index()
    bh = survey.benunit_household_index()
    age = _as_float(P["age"])
    is_adult = age >= ADULT_AGE  # NaN ages count as children (extract flags them)
    is_child = ~is_adult
    head = survey.household_head_index()
    is_head = np.zeros(n_p, dtype=bool)
    is_head[head] = True
    in_head_unit = pb == pb[head][ph]
    unit_adults = np.bincount(pb, weights=is_adult, minlength=n_b).astype(np.int64)
    married_raw = None
    if tracks_married and "is_married" in B.columns:
        married_raw = _as_float(B["is_married"])
        pair_kind = np.where(married_raw == 1, _KIND_CODE["couple"], _KIND_CODE["cohabiting"])
    else:
        pair_kind = np.full(n_b, _KIND_CODE["couple"])
    unit_kind = np.where(unit_adults == 1, _KIND_CODE["single"], np.where(unit_adults == 2, pair_kind, 0))
    if "is_benunit_head" in P.columns:
        unit_head_flag = _as_float(P["is_benunit_head"]) == 1
    else:
        unit_head_flag = np.zeros(n_p, dtype=bool)

    # Adult slot order: head; the head's partner; then the others grouped by unit (couples first,
    # married before cohabiting, units by first member), each unit's flagged head first.
    adults = np.flatnonzero(is_adult)
    a_h, a_b = ph[adults], pb[adults]
    group = np.where(is_head[adults], 0, np.where(in_head_unit[adults], 1, 2))
    unit_first = np.full(n_b, n_p, dtype=np.int64)
    np.minimum.at(unit_first, a_b, adults)
    order = np.lexsort(
        (adults, ~unit_head_flag[adults], unit_first[a_b], unit_kind[a_b], -unit_adults[a_b], group, a_h)
    )
    sa, sh, sb = adults[order], a_h[order], a_b[order]
    starts = _group_starts(sh)
    slot = np.arange(len(sa)) - starts
    new_unit = np.ones(len(sa), dtype=bool)
    new_unit[1:] = (sb[1:] != sb[:-1]) | (sh[1:] != sh[:-1])
    cum = np.cumsum(new_unit)
    unit_rank = cum - cum[starts] if len(sa) else cum

    children = np.flatnonzero(is_child)
    c_sorted = children[np.argsort(ph[children], kind="stable")]
    c_h = ph[c_sorted]
    c_slot = np.arange(len(c_sorted)) - _group_starts(c_h)
    return _Structure(
        ph, pb, bh, age, is_adult, is_child, head, is_head, in_head_unit, unit_head_flag, married_raw,
        unit_adults, unit_kind, sa, sh, sb, slot, new_unit, unit_rank, c_sorted, c_h, c_slot,
    )


def person_slots(survey: Survey, spec: FeatureSpec | None = None) -> np.ndarray:
    """Each person's slot name (``"adult1"``, ``"adult2"``, ..., ``"child1"``, ...), in person-table order.

    The order :func:`extract` uses; for a survey :func:`build` made, slot ``adult{i}`` / ``child{j}``
    is the person built from that slot. Households beyond the spec's limits still get slots
    (``adult4``, ...), which no feature column names.

    Args:
        survey: any survey with an ``age`` column.
        spec: decides whether married and cohabiting couples are told apart (which orders the
            units of households with four or more adults); default: whether ``survey`` has
            ``is_married``.
    """
    if "age" not in survey.person.columns:
        raise FeatureError("person table lacks 'age', which tells adults from children; add it first")
    tracks = spec.tracks_married if spec is not None else "is_married" in survey.benunit.columns
    st = _structure(survey, tracks)
    out = np.full(len(survey.person), "", dtype=object)
    out[st.sa] = ("adult" + pd.Series(st.slot + 1).astype(str)).to_numpy(dtype=object)
    out[st.c_sorted] = ("child" + pd.Series(st.c_slot + 1).astype(str)).to_numpy(dtype=object)
    return out


def feature_columns_by_slot(spec: FeatureSpec) -> dict[str, list[str]]:
    """The row columns of each slot: ``{"adult1": [...], ..., "bu1": [...], ..., "child1": [...]}``."""
    out: dict[str, list[str]] = {}
    for i in range(1, spec.max_adults + 1):
        out[f"adult{i}"] = [f"adult{i}_{f}" for f in spec.adult_features]
    for k in range(1, spec.max_adults + 1):
        out[f"bu{k}"] = [f"bu{k}_{f}" for f in spec.benunit_features]
    for j in range(1, spec.max_children + 1):
        out[f"child{j}"] = [f"child{j}_{f}" for f in spec.child_features]
    return out
