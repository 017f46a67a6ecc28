"""The survey data model: three entity tables (person, benefit unit, household) and a year.

Column names follow PolicyEngine UK. Amounts are annual, in pounds. Enumerations are stored as
upper-case name strings (``LONDON``, ``RENT_PRIVATELY``), as PolicyEngine UK's files store them.
Only the id columns and ``household_weight`` are required; every other column is optional, so a
user's file with fewer variables still loads (stages that need a missing column say so).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import SurveyValidationError

REGIONS = (
    "NORTH_EAST",
    "NORTH_WEST",
    "YORKSHIRE",
    "EAST_MIDLANDS",
    "WEST_MIDLANDS",
    "EAST_OF_ENGLAND",
    "LONDON",
    "SOUTH_EAST",
    "SOUTH_WEST",
    "WALES",
    "SCOTLAND",
    "NORTHERN_IRELAND",
)
TENURE_TYPES = (
    "RENT_FROM_COUNCIL",
    "RENT_FROM_HA",
    "RENT_PRIVATELY",
    "OWNED_OUTRIGHT",
    "OWNED_WITH_MORTGAGE",
)
RENTING_TENURES = ("RENT_FROM_COUNCIL", "RENT_FROM_HA", "RENT_PRIVATELY")
COUNCIL_TAX_BANDS = ("A", "B", "C", "D", "E", "F", "G", "H", "I")
GENDERS = ("MALE", "FEMALE")

PERSON_IDS = ("person_id", "person_benunit_id", "person_household_id")
BENUNIT_IDS = ("benunit_id",)
HOUSEHOLD_IDS = ("household_id",)
WEIGHT = "household_weight"

REQUIRED_COLUMNS = {
    "person": PERSON_IDS,
    "benunit": BENUNIT_IDS,
    "household": HOUSEHOLD_IDS + (WEIGHT,),
}

# Inputs the embedded world writes and the simulator reads (all optional on a user's file).
PERSON_INPUTS = (
    "age",
    "gender",
    "is_household_head",
    "is_benunit_head",
    "employment_income",
    "self_employment_income",
    "private_pension_income",
    "savings_interest_income",
    "dividend_income",
    "property_income",
    "hours_worked",
    "is_disabled_for_benefits",
    "state_pension_reported",
    "universal_credit_reported",
    "housing_benefit_reported",
    "child_benefit_reported",
    "pension_credit_reported",
)
BENUNIT_INPUTS = ("is_married", "would_claim_uc", "would_claim_pc", "would_claim_child_benefit")
HOUSEHOLD_INPUTS = ("region", "tenure_type", "rent", "council_tax", "council_tax_band")

ENUM_COLUMNS = {
    "region": REGIONS,
    "tenure_type": TENURE_TYPES,
    "council_tax_band": COUNCIL_TAX_BANDS,
    "gender": GENDERS,
}

# Columns that trace synthetic offspring back to their parent (written by the adversarial loop).
PARENT_COLUMN = "household_parent_id"
ROUND_COLUMN = "offspring_round"
# The sampled household an offspring descends from (its parent's source; original households: -1).
SOURCE_COLUMN = "household_source_id"


@dataclass
class Survey:
    """A household survey in PolicyEngine UK's layout.

    Attributes:
        person: one row per person, with ``person_id``, ``person_benunit_id``, ``person_household_id``.
        benunit: one row per benefit unit, with ``benunit_id``.
        household: one row per household, with ``household_id`` and ``household_weight``.
        time_period: the year the data describe, as a string (e.g. ``"2025"``).
    """

    person: pd.DataFrame
    benunit: pd.DataFrame
    household: pd.DataFrame
    time_period: str = "2025"
    source: str | None = field(default=None, compare=False, repr=False)

    # ---- shape -------------------------------------------------------------------------------
    @property
    def n_households(self) -> int:
        return len(self.household)

    @property
    def n_persons(self) -> int:
        return len(self.person)

    @property
    def weights(self) -> np.ndarray:
        """Household weights as a float array, in household-table order."""
        return self.household[WEIGHT].to_numpy(dtype=float)

    @property
    def household_ids(self) -> np.ndarray:
        return self.household["household_id"].to_numpy()

    def copy(self) -> Survey:
        return Survey(
            self.person.copy(), self.benunit.copy(), self.household.copy(), self.time_period, self.source
        )

    def with_weights(self, weights) -> Survey:
        """A copy with ``household_weight`` replaced (in household-table order)."""
        weights = np.asarray(weights, dtype=float)
        if weights.shape != (self.n_households,):
            raise ValueError(
                f"weights has shape {weights.shape}, expected ({self.n_households},): one per household"
            )
        household = self.household.copy()
        household[WEIGHT] = weights
        return Survey(self.person, self.benunit, household, self.time_period, self.source)

    # ---- index maps (positions into the entity tables) -----------------------------------------
    def person_household_index(self) -> np.ndarray:
        """For each person, the row position of their household in ``household``."""
        return _positions(self.household["household_id"], self.person["person_household_id"])

    def person_benunit_index(self) -> np.ndarray:
        """For each person, the row position of their benefit unit in ``benunit``."""
        return _positions(self.benunit["benunit_id"], self.person["person_benunit_id"])

    def benunit_household_index(self) -> np.ndarray:
        """For each benefit unit, the row position of its household (via its first member)."""
        pb = self.person_benunit_index()
        ph = self.person_household_index()
        out = np.full(len(self.benunit), -1, dtype=np.int64)
        out[pb] = ph
        return out

    def household_size(self) -> np.ndarray:
        return np.bincount(self.person_household_index(), minlength=self.n_households)

    def household_head_index(self) -> np.ndarray:
        """Row position in ``person`` of each household's head.

        The head is the person flagged ``is_household_head``; where no such column exists (or a
        household has none flagged), the oldest member, ties broken by the lowest ``person_id``.
        """
        ph = self.person_household_index()
        n = self.n_households
        age = (
            self.person["age"].to_numpy(dtype=float)
            if "age" in self.person
            else np.zeros(self.n_persons)
        )
        flag = (
            self.person["is_household_head"].to_numpy(dtype=bool)
            if "is_household_head" in self.person
            else np.zeros(self.n_persons, dtype=bool)
        )
        pid = self.person["person_id"].to_numpy()
        # Sort so the chosen head comes first within each household: flagged, then oldest, then lowest id.
        order = np.lexsort((pid, -age, ~flag, ph))
        first = np.ones(len(order), dtype=bool)
        first[1:] = ph[order][1:] != ph[order][:-1]
        head = np.full(n, -1, dtype=np.int64)
        head[ph[order][first]] = order[first]
        return head

    # ---- subsetting -------------------------------------------------------------------------
    def select_households(self, keep) -> Survey:
        """A survey with only the households where ``keep`` (a bool mask in household order) is true,
        together with their persons and benefit units."""
        keep = np.asarray(keep, dtype=bool)
        ids = self.household["household_id"].to_numpy()[keep]
        person_keep = self.person["person_household_id"].isin(ids).to_numpy()
        bu_ids = self.person.loc[person_keep, "person_benunit_id"].unique()
        return Survey(
            self.person.loc[person_keep].reset_index(drop=True),
            self.benunit.loc[self.benunit["benunit_id"].isin(bu_ids)].reset_index(drop=True),
            self.household.loc[keep].reset_index(drop=True),
            self.time_period,
            self.source,
        )

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> Survey:
        """Check the tables' consistency, collecting every problem before raising.

        Raises:
            SurveyValidationError: listing each problem with the ids and columns concerned.
        """
        problems = validation_problems(self)
        if problems:
            raise SurveyValidationError(problems, self.source)
        return self


def _positions(keys: pd.Series, values: pd.Series) -> np.ndarray:
    """Row positions in ``keys`` of each of ``values`` (all values must be present)."""
    k = keys.to_numpy()
    v = values.to_numpy()
    order = np.argsort(k, kind="stable")
    pos = np.searchsorted(k, v, sorter=order)
    pos = np.clip(pos, 0, len(k) - 1)
    found = order[pos]
    if len(k) == 0 or not np.array_equal(k[found], v):
        missing = pd.unique(v[(k[found] != v)] if len(k) else v)[:10]
        raise SurveyValidationError([f"{values.name}: no row for id(s) {list(missing)}"])
    return found


def _sample(values, limit=10) -> str:
    values = [v.item() if hasattr(v, "item") else v for v in values]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"{values[:limit]}{more}"


def validation_problems(survey: Survey) -> list[str]:
    """Every consistency problem in ``survey``, as readable strings (empty when valid)."""
    problems: list[str] = []
    tables = {"person": survey.person, "benunit": survey.benunit, "household": survey.household}
    missing_cols = False
    for name, cols in REQUIRED_COLUMNS.items():
        absent = [c for c in cols if c not in tables[name].columns]
        if absent:
            missing_cols = True
            problems.append(f"table '{name}' lacks required column(s) {absent}; add them (PolicyEngine UK names)")
    if missing_cols:
        return problems

    for name, col in (("person", "person_id"), ("benunit", "benunit_id"), ("household", "household_id")):
        ids = tables[name][col]
        if ids.isna().any():
            problems.append(f"{name}.{col} has {int(ids.isna().sum())} missing id(s)")
        dup = ids[ids.duplicated()].unique()
        if len(dup):
            problems.append(f"{name}.{col} has {len(dup)} duplicate id(s): {_sample(dup)}")

    hh_ids = set(survey.household["household_id"].tolist())
    bu_ids = set(survey.benunit["benunit_id"].tolist())
    p = survey.person
    orphan_hh = p.loc[~p["person_household_id"].isin(hh_ids), "person_id"]
    if len(orphan_hh):
        problems.append(
            f"{len(orphan_hh)} person(s) whose person_household_id has no household row: person_id {_sample(orphan_hh)}"
        )
    orphan_bu = p.loc[~p["person_benunit_id"].isin(bu_ids), "person_id"]
    if len(orphan_bu):
        problems.append(
            f"{len(orphan_bu)} person(s) whose person_benunit_id has no benunit row: person_id {_sample(orphan_bu)}"
        )
    split = p.groupby("person_benunit_id")["person_household_id"].nunique()
    split = split[split > 1]
    if len(split):
        problems.append(f"{len(split)} benefit unit(s) split across households: benunit_id {_sample(split.index)}")
    empty_bu = survey.benunit.loc[~survey.benunit["benunit_id"].isin(set(p["person_benunit_id"])), "benunit_id"]
    if len(empty_bu):
        problems.append(f"{len(empty_bu)} benefit unit(s) with no person: benunit_id {_sample(empty_bu)}")
    empty_hh = survey.household.loc[
        ~survey.household["household_id"].isin(set(p["person_household_id"])), "household_id"
    ]
    if len(empty_hh):
        problems.append(f"{len(empty_hh)} household(s) with no person: household_id {_sample(empty_hh)}")

    w = pd.to_numeric(survey.household[WEIGHT], errors="coerce").to_numpy(dtype=float)
    hid = survey.household["household_id"].to_numpy()
    for label, bad in (("NaN", np.isnan(w)), ("infinite", np.isinf(w)), ("negative", w < 0)):
        if bad.any():
            problems.append(f"household_weight is {label} for {int(bad.sum())} household(s): household_id {_sample(hid[bad])}")

    for name, table in tables.items():
        for col, allowed in ENUM_COLUMNS.items():
            if col in table.columns:
                values = table[col].astype(str)
                bad = sorted(set(values.unique()) - set(allowed))
                if bad:
                    problems.append(
                        f"{name}.{col} has unknown value(s) {bad[:10]}; expected one of {list(allowed)}"
                    )
    return problems
