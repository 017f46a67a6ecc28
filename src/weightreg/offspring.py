"""Spawn offspring households: split a parent's weight over itself and synthetic offspring.

An offspring household is built by :func:`weightreg.features.build` from its sampled flat row alone:
every feature in the row is applied to its persons, benefit units and household, and nothing of the
parent survives unless it was a conditioned feature (then it equals the parent's value anyway).

Columns of the survey that the flat representation does not model are handled explicitly
(:data:`DERIVED_COLUMNS` and :func:`fill_unmodelled`):

* derived columns are computed from the built household's own values (e.g. ``employment_status``
  from age, hours and incomes; ``marital_status`` from ``is_married``);
* any other column is copied from the parent only where the offspring agrees with the parent on every
  feature the column could depend on (for a person column: the whole adult or child slot; for a
  benefit-unit column: the slots of its members and the layout; for a household column: the whole
  row); elsewhere it takes a neutral value (0, False, or the column's most common value in the survey)
  and the column is listed in :attr:`SpawnResult.neutral_columns`;
* a random-draw column (a name ending ``_random_draw``: PolicyEngine UK's stored draws, such as
  ``uc_deduction_random_draw`` or ``warm_home_discount_random_draw``, otherwise hashed from entity ids)
  is copied from the parent where the offspring agrees with it, as above, and elsewhere gets a fresh
  U(0, 1) draw from the seeded ``rng``: stored as an input, so the offspring file simulates the same
  way every time, whatever its ids (:attr:`SpawnResult.drawn_columns`).

Ids follow PolicyEngine's scheme (benunit = household x 100 + k, person = household x 1000 + p) in a
fresh range above every existing id, so they never collide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import features as F
from .errors import FeatureError
from .survey import PARENT_COLUMN, ROUND_COLUMN, SOURCE_COLUMN, WEIGHT, Survey

INT64_MAX = np.iinfo(np.int64).max


def pieces_needed(max_influence, threshold: float, max_pieces: int, margin: float = 0.8) -> np.ndarray:
    """How many pieces (parent + offspring) to split each offender's weight into.

    A record with share ``m = a / (a + R)`` of a statistic's absolute mass (``a`` its own, ``R`` the
    rest's) has share ``(a/k) / (a/k + R)`` after its weight is divided by ``k``. Requiring that to be
    at most ``margin x threshold`` gives ``k >= m/(1-m) x (1 - t')/t'`` with ``t' = margin x threshold``.
    Offspring that land in the same cell only add to ``R``, so this is conservative. Clipped to
    ``[2, max_pieces]`` (at least one offspring; ``max_pieces`` when ``m`` is 1).
    """
    m = np.clip(np.asarray(max_influence, dtype=float), 0.0, 1.0)
    t = margin * threshold
    with np.errstate(divide="ignore"):
        k = np.where(m < 1.0, m / np.maximum(1.0 - m, 1e-300) * (1.0 - t) / t, np.inf)
    return np.clip(np.ceil(k), 2, max_pieces).astype(np.int64)


def allocate_household_ids(survey: Survey, n: int) -> np.ndarray:
    """``n`` new household ids whose PolicyEngine-scheme person and benunit ids collide with nothing.

    The range starts above the largest household id and above every existing person id / 1000 and
    benunit id / 100, so ``household x 1000 + p`` and ``household x 100 + k`` are all new.
    """
    start = 1 + max(
        int(survey.household["household_id"].max()) if survey.n_households else 0,
        int(survey.person["person_id"].max()) // 1000 if survey.n_persons else 0,
        int(survey.benunit["benunit_id"].max()) // 100 if len(survey.benunit) else 0,
    )
    if (start + n) * 1000 + 999 > INT64_MAX:
        raise FeatureError(
            f"cannot allocate {n} household ids in PolicyEngine's scheme above {start}: person ids would "
            "overflow int64; renumber the survey's ids (household ids below 9e15) first."
        )
    return np.arange(start, start + n, dtype=np.int64)


def _employment_status(person: pd.DataFrame) -> pd.Series:
    age = person["age"].to_numpy(dtype=float)
    hours = person.get("hours_worked", pd.Series(0.0, index=person.index)).to_numpy(dtype=float)
    emp = person.get("employment_income", pd.Series(0.0, index=person.index)).to_numpy(dtype=float)
    se = person.get("self_employment_income", pd.Series(0.0, index=person.index)).to_numpy(dtype=float)
    disabled = person.get("is_disabled_for_benefits", pd.Series(False, index=person.index)).to_numpy(dtype=bool)
    full = hours >= 30
    status = np.select(
        [age < 16, (se > emp) & (se > 0), emp > 0, age >= 66, disabled],
        [
            "CHILD",
            np.where(full, "FT_SELF_EMPLOYED", "PT_SELF_EMPLOYED"),
            np.where(full, "FT_EMPLOYED", "PT_EMPLOYED"),
            "RETIRED",
            "LONG_TERM_DISABLED",
        ],
        default="UNEMPLOYED",
    )
    return pd.Series(status, index=person.index)


def _marital_status(person: pd.DataFrame, benunit: pd.DataFrame, survey: Survey) -> pd.Series:
    married = benunit.set_index("benunit_id")["is_married"].reindex(person["person_benunit_id"]).to_numpy(dtype=bool)
    adult = person["age"].to_numpy(dtype=float) >= 16
    return pd.Series(np.where(married & adult, "MARRIED", "SINGLE"), index=person.index)


# column -> (entity, function(built person, built benunit, survey) -> Series over that entity's rows)
DERIVED_COLUMNS = {
    "employment_status": ("person", lambda p, b, s: _employment_status(p)),
    "marital_status": ("person", _marital_status),
    "is_adult": ("person", lambda p, b, s: p["age"] >= 18),
    "is_child": ("person", lambda p, b, s: p["age"] < 16),
}


@dataclass
class SpawnResult:
    """What :func:`spawn` did: the new survey and an account of every column it filled."""

    survey: Survey
    new_household_ids: np.ndarray
    derived_columns: dict = field(default_factory=dict)  # entity -> [columns]
    copied_columns: dict = field(default_factory=dict)  # entity -> [columns copied where slots agree]
    neutral_columns: dict = field(default_factory=dict)  # entity -> [columns set to a neutral value]
    drawn_columns: dict = field(default_factory=dict)  # entity -> [random-draw columns drawn afresh where not copied]


#: Unmodelled columns with this suffix are random draws (see the module docstring).
DRAW_SUFFIX = "_random_draw"


def _neutral(series: pd.Series):
    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return 0
    mode = series.mode()
    return mode.iloc[0] if len(mode) else ""


def fill_unmodelled(built: Survey, survey: Survey, spec, offspring_rows: pd.DataFrame, parent_rows: pd.DataFrame,
                    rng: np.random.Generator | None = None):
    """Give ``built`` every column ``survey`` has that :func:`features.build` did not write.

    ``offspring_rows`` and ``parent_rows`` are aligned with ``built.household`` (one parent row per
    offspring); ``rng`` draws random-draw columns (needed only when the survey has one).
    Returns ``(built, derived, copied, neutral, drawn)`` with the column lists by entity.
    """
    modelled = F.modelled_columns(spec)
    derived, copied, neutral, drawn = {}, {}, {}, {}
    cols = F.feature_columns_by_slot(spec)
    off = offspring_rows.reset_index(drop=True)
    par = parent_rows.reset_index(drop=True)
    tables = {"person": built.person.copy(), "benunit": built.benunit.copy(), "household": built.household.copy()}
    # which built rows agree with their parent on every feature a column of that entity could depend on
    same_household = _rows_equal(off, par, list(spec.columns()))
    for entity, source in (("person", survey.person), ("benunit", survey.benunit), ("household", survey.household)):
        target = tables[entity]
        missing = [c for c in source.columns if c not in target.columns and c not in modelled[entity]]
        missing = [c for c in missing if c not in (PARENT_COLUMN, ROUND_COLUMN, SOURCE_COLUMN)]
        for col in missing:
            if col in DERIVED_COLUMNS and DERIVED_COLUMNS[col][0] == entity:
                target[col] = DERIVED_COLUMNS[col][1](tables["person"], tables["benunit"], survey).to_numpy()
                derived.setdefault(entity, []).append(col)
                continue
            values = pd.Series([_neutral(source[col])] * len(target), index=target.index, dtype=source[col].dtype)
            is_draw = col.endswith(DRAW_SUFFIX) and pd.api.types.is_float_dtype(source[col])
            if is_draw:
                if rng is None:
                    raise FeatureError(f"spawn: the survey has the random-draw column '{col}'; pass rng= to draw it")
                values = pd.Series(rng.random(len(target)), index=target.index)
                drawn.setdefault(entity, []).append(col)
            agree = _entity_agreement(entity, target, built, off, par, cols, same_household)
            if agree.any():
                parent_values = _parent_values(entity, col, target, survey, par, built, spec)
                values = values.astype(object)
                values[agree] = parent_values[agree]
                values = values.astype(source[col].dtype)
                copied.setdefault(entity, []).append(col)
            elif not is_draw:
                neutral.setdefault(entity, []).append(col)
            target[col] = values.to_numpy()
    out = Survey(tables["person"], tables["benunit"], tables["household"], built.time_period, built.source)
    return out, derived, copied, neutral, drawn


def _rows_equal(a: pd.DataFrame, b: pd.DataFrame, columns) -> np.ndarray:
    if not columns:
        return np.ones(len(a), dtype=bool)
    return np.logical_and.reduce([(a[c].to_numpy() == b[c].to_numpy()) for c in columns])


def _entity_agreement(entity, target, built, off, par, cols, same_household):
    """Per row of ``target``: does the offspring equal its parent on every feature this row depends on?"""
    if entity == "household":
        return same_household
    # A person or benefit unit depends on its slot's features and on the household's structure.
    structure = _rows_equal(off, par, [c for c in ("n_adults", "n_children", "layout") if c in off])
    person_hh = built.person_household_index()
    slot = F.person_slots(built)  # e.g. "adult1", "child2" per built person
    slot_same = np.zeros(len(built.person), dtype=bool)
    for name in pd.unique(slot):
        rows = slot == name
        slot_same[rows] = _rows_equal(off.iloc[person_hh[rows]], par.iloc[person_hh[rows]], cols.get(name, []))
    person_ok = slot_same & structure[person_hh]
    if entity == "person":
        return person_ok
    # a benefit unit agrees when all its members do
    bu_index = built.person_benunit_index()
    bad = np.bincount(bu_index, weights=(~person_ok).astype(float), minlength=len(built.benunit))
    return bad == 0


def _parent_values(entity, col, target, survey, par, built, spec) -> pd.Series:
    """The parent's value of ``col`` for each row of ``target`` (same slot in the parent household)."""
    parent_ids = par["household_id"].to_numpy() if "household_id" in par else par.index.to_numpy()
    if entity == "household":
        src = survey.household.set_index("household_id")[col]
        return pd.Series(src.reindex(parent_ids).to_numpy(), index=target.index)
    slots_src = F.person_slots(survey)
    index_src = pd.MultiIndex.from_arrays([survey.person["person_household_id"].to_numpy(), slots_src])
    person_hh = built.person_household_index()
    key = pd.MultiIndex.from_arrays([parent_ids[person_hh], F.person_slots(built)])
    if entity == "person":
        key_src = pd.Series(survey.person[col].to_numpy(), index=index_src)
        return pd.Series(key_src.reindex(key).to_numpy(), index=target.index)
    # a benefit unit takes the value of the parent's benefit unit holding the same first member's slot
    src_bu = survey.benunit.set_index("benunit_id")[col]
    parent_bu = pd.Series(survey.person["person_benunit_id"].to_numpy(), index=index_src).reindex(key).to_numpy()
    first = ~pd.Series(built.person_benunit_index()).duplicated().to_numpy()
    values = np.empty(len(built.benunit), dtype=object)
    values[built.person_benunit_index()[first]] = src_bu.reindex(parent_bu[first]).to_numpy()
    return pd.Series(values, index=target.index)


def root_households(survey: Survey, household_ids) -> np.ndarray:
    """The original household each of ``household_ids`` descends from: itself for a household of the
    starting survey, else its source (:func:`weightreg.sources.source_ids`: ``household_source_id``
    where recorded, else the end of the ``household_parent_id`` chain)."""
    from .sources import source_ids

    return source_ids(survey, household_ids)


def spawn(
    survey: Survey,
    parent_ids,
    pieces,
    offspring_rows: pd.DataFrame,
    parent_features: pd.DataFrame,
    spec,
    round_number: int,
    rng: np.random.Generator | None = None,
    feature_sources=None,
) -> SpawnResult:
    """Split each parent's weight into ``pieces`` equal parts: the parent keeps one, its offspring the rest.

    Args:
        survey: the current survey (weights included).
        parent_ids: household ids of the parents.
        pieces: for each parent, the number of pieces (parent + offspring), at least 2.
        offspring_rows: flat feature rows with a ``parent_id`` column; exactly ``pieces - 1`` rows per
            parent, in any order.
        parent_features: the flat features the offspring were sampled near, one row per parent
            (index = the parent's household_id): the parents' own, or those of ``feature_sources``.
        spec: the :class:`features.FeatureSpec` the rows follow.
        round_number: recorded in ``offspring_round``.
        rng: draws the random-draw columns of offspring that do not copy them (required when the
            survey has such a column).
        feature_sources: for each parent, the household whose features ``parent_features`` holds and
            whose unmodelled columns offspring that agree with it copy (default: the parent itself).
            The loop passes each parent's root (:func:`root_households`), so an offspring's offspring
            are sampled near a real household rather than near a synthetic one.

    The pieces sum to the parent's weight exactly, so total weight is conserved by the split.
    """
    parent_ids = np.asarray(parent_ids)
    pieces = np.asarray(pieces, dtype=np.int64)
    counts = offspring_rows["parent_id"].value_counts()
    expected = pd.Series(pieces - 1, index=parent_ids)
    if not counts.reindex(parent_ids).fillna(0).astype(int).equals(expected.astype(int)):
        raise FeatureError("spawn: offspring_rows must hold exactly pieces-1 rows per parent")
    hh = survey.household.set_index("household_id")
    parent_weight = hh.loc[parent_ids, WEIGHT].to_numpy(dtype=float)
    share = pd.Series(parent_weight / pieces, index=parent_ids)

    rows = offspring_rows.sort_values("parent_id", kind="stable").reset_index(drop=True)
    new_ids = allocate_household_ids(survey, len(rows))
    built = F.build(rows[list(spec.columns())], spec, household_ids=new_ids,
                    weights=share.reindex(rows["parent_id"]).to_numpy(), time_period=survey.time_period)
    sources = parent_ids if feature_sources is None else np.asarray(feature_sources)
    if sources.shape != parent_ids.shape:
        raise FeatureError("spawn: feature_sources must give one household per parent")
    sources = pd.Series(sources, index=parent_ids)
    parents = parent_features.reindex(rows["parent_id"]).reset_index(drop=True)
    parents["household_id"] = sources.reindex(rows["parent_id"]).to_numpy()
    built, derived, copied, neutral, drawn = fill_unmodelled(built, survey, spec, rows, parents, rng)
    built.household[PARENT_COLUMN] = rows["parent_id"].to_numpy(dtype=np.int64)
    built.household[ROUND_COLUMN] = np.int64(round_number)
    # Recorded, not only derivable from the parent chain: the source survives the pruning of an
    # intermediate offspring (see weightreg.sources).
    built.household[SOURCE_COLUMN] = pd.Series(root_households(survey, parent_ids), index=parent_ids).reindex(
        rows["parent_id"]).to_numpy(dtype=np.int64)

    household = survey.household.copy()
    if PARENT_COLUMN not in household:
        household[PARENT_COLUMN] = np.int64(-1)
        household[ROUND_COLUMN] = np.int64(0)
    if SOURCE_COLUMN not in household:
        household[SOURCE_COLUMN] = np.int64(-1)
    # the parent keeps exactly what its offspring do not take, so the pieces sum to its weight
    keep = parent_weight - share.to_numpy() * (pieces - 1)
    household.loc[household["household_id"].isin(parent_ids), WEIGHT] = pd.Series(keep, index=parent_ids).reindex(
        household.loc[household["household_id"].isin(parent_ids), "household_id"]
    ).to_numpy()

    def stack(old, new):
        new = new.reindex(columns=old.columns)
        for col in old.columns:
            if new[col].isna().any() and not old[col].isna().any():
                raise FeatureError(f"offspring table lacks a value for column '{col}'")
            new[col] = new[col].astype(old[col].dtype)
        return pd.concat([old, new], ignore_index=True)

    out = Survey(
        stack(survey.person, built.person),
        stack(survey.benunit, built.benunit),
        stack(household, built.household),
        survey.time_period,
        survey.source,
    )
    return SpawnResult(out, new_ids, derived, copied, neutral, drawn)
