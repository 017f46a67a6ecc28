"""Tests of the household generator (weightreg.generator) on a tiny synthetic feature table."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from weightreg import features as F
from weightreg import generator as G
from weightreg.errors import GeneratorError
from weightreg.survey import COUNCIL_TAX_BANDS, REGIONS, RENTING_TENURES, TENURE_TYPES

TINY = {"epochs": 2, "batch_size": 100, "embedding_dim": 16, "compress_dims": (32, 32), "decompress_dims": (32, 32)}


def make_feature_table(spec: F.FeatureSpec, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` valid canonical feature rows with the contract's columns (region independent of the rest)."""
    cols = {}
    cols["region"] = rng.choice(REGIONS, n)
    tenure = rng.choice(TENURE_TYPES, n, p=[0.1, 0.1, 0.2, 0.3, 0.3])
    renter = np.isin(tenure, RENTING_TENURES)
    cols["tenure_type"] = tenure
    cols["rent"] = np.where(renter, np.round(rng.lognormal(8.8, 0.4, n), 2), 0.0)
    band = rng.integers(0, len(COUNCIL_TAX_BANDS) - 1, n)
    cols["council_tax"] = np.round(1200 + 250 * band + rng.normal(0, 60, n), 2)
    cols["council_tax_band"] = np.asarray(COUNCIL_TAX_BANDS)[band]
    layouts = list(spec.layouts)
    adults = spec.layout_adults()
    share = np.array([{1: 0.45, 2: 0.35}.get(adults[name], 0.2) for name in layouts])
    layout = rng.choice(layouts, n, p=share / share.sum())
    cols["n_adults"] = np.array([adults[name] for name in layout])
    cols["n_children"] = np.where(rng.random(n) < 0.35, rng.integers(1, spec.max_children + 1, n), 0)
    cols["layout"] = layout
    head_age = rng.integers(18, 90, n)
    for i in range(1, spec.max_adults + 1):
        age = head_age if i == 1 else np.clip(head_age + rng.integers(-10, 11, n), 16, 95)
        working = (age < 66) & (rng.random(n) < 0.7)
        pensioner = age >= 66
        values = {
            "age": age,
            "gender": rng.choice(["MALE", "FEMALE"], n),
            "employment_income": np.where(working, np.round(rng.lognormal(10.2, 0.6, n), 2), 0.0),
            "self_employment_income": np.where(rng.random(n) < 0.1, np.round(rng.normal(12000, 15000, n), 2), 0.0),
            "private_pension_income": np.where(pensioner & (rng.random(n) < 0.6), np.round(rng.lognormal(8.8, 0.8, n), 2), 0.0),
            "savings_interest_income": np.where(rng.random(n) < 0.4, np.round(rng.lognormal(5, 1, n), 2), 0.0),
            "dividend_income": np.where(rng.random(n) < 0.1, np.round(rng.lognormal(7, 1, n), 2), 0.0),
            "property_income": np.where(rng.random(n) < 0.05, np.round(rng.lognormal(8.5, 1, n), 2), 0.0),
            "hours_worked": np.where(working, np.round(rng.normal(35, 8, n).clip(1, 60)), 0.0),
            "state_pension_reported": np.where(pensioner, np.round(rng.normal(10000, 1500, n).clip(0), 2), 0.0),
            "universal_credit_reported": np.where(~working & ~pensioner & (rng.random(n) < 0.5), np.round(rng.lognormal(8.5, 0.5, n), 2), 0.0),
            "housing_benefit_reported": np.where(renter & pensioner & (rng.random(n) < 0.4), np.round(rng.lognormal(8.3, 0.3, n), 2), 0.0),
            "child_benefit_reported": np.where((i == 1) & (cols["n_children"] > 0), 1250.0 * cols["n_children"], 0.0),
            "pension_credit_reported": np.where(pensioner & (rng.random(n) < 0.1), np.round(rng.lognormal(7.5, 0.5, n), 2), 0.0),
            "is_disabled_for_benefits": rng.random(n) < 0.15,
        }
        for f in spec.adult_features:
            cols[f"adult{i}_{f}"] = values[f]
    for k in range(1, spec.max_adults + 1):
        for f, p in zip(("would_claim_uc", "would_claim_pc", "would_claim_child_benefit"), (0.8, 0.7, 0.9)):
            cols[f"bu{k}_{f}"] = rng.random(n) < p
    for j in range(1, spec.max_children + 1):
        cols[f"child{j}_age"] = rng.integers(0, 16, n)
        cols[f"child{j}_gender"] = rng.choice(["MALE", "FEMALE"], n)
        if "is_disabled_for_benefits" in spec.child_features:
            cols[f"child{j}_is_disabled_for_benefits"] = rng.random(n) < 0.05
    rows = pd.DataFrame(cols, index=pd.Index(np.arange(1, n + 1) * 10, name="household_id"))
    rows = F.normalise(rows, spec)
    assert F.valid_rows(rows, spec).all()
    return rows


@pytest.fixture(scope="module")
def spec():
    return F.FeatureSpec()


@pytest.fixture(scope="module")
def table(spec):
    return make_feature_table(spec, 300, np.random.default_rng(42))


@pytest.fixture(scope="module")
def weights(table):
    w = np.random.default_rng(1).lognormal(0, 1, len(table))
    w[::7] = 0.0  # every seventh household has zero weight
    return w


@pytest.fixture(scope="module")
def model(table, spec, weights):
    return G.train_generator(table, spec, kind="tvae", hyperparameters=TINY, weights=weights, seed=0)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "model.pkl"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def rare_parent(table, spec):
    """A valid parent with a rare combination and an exact float rent no pool row will have."""
    row = table[table["n_adults"] == 3].iloc[[0]].copy()
    row["layout"] = "three_singles"
    row["region"] = "NORTHERN_IRELAND"
    row["tenure_type"] = "RENT_FROM_COUNCIL"
    row["rent"] = 134312.93
    row["council_tax_band"] = "I"
    row["n_children"] = spec.max_children
    for j in range(1, spec.max_children + 1):
        row[f"child{j}_age"] = j + 2
        row[f"child{j}_gender"] = "FEMALE"
    row[[f"bu{k}_would_claim_uc" for k in (1, 2, 3)]] = True
    row.index = pd.Index([999_999], name="household_id")
    row = F.normalise(row, spec)
    assert F.valid_rows(row, spec).all()
    return row


# ---- metadata and model space -------------------------------------------------------------------
def test_metadata_is_built_from_the_column_kinds(spec):
    md = G.sdv_metadata(spec)
    cols = md["tables"][G.TABLE_NAME]["columns"]
    kinds = spec.column_kinds()
    assert list(cols) == spec.columns()
    for col, kind in kinds.items():
        expected = {"integer": {"sdtype": "numerical", "decimal_places": 0}}.get(kind, {"sdtype": kind})
        assert cols[col] == expected, col
    imputed = G.sdv_metadata(spec, G.DERIVED_COLUMNS)["tables"][G.TABLE_NAME]["columns"]
    assert "n_adults" not in imputed and len(imputed) == len(cols) - 1


def test_model_space_round_trip_changes_only_discarded_values(table, spec):
    model_rows = G.to_model_space(table, spec, np.random.default_rng(0))
    assert "n_adults" not in model_rows
    # Unused slots now hold real values (no NONE gender, no zero age), non-renters a rent.
    single = (table["n_adults"] == 1).to_numpy()
    assert (model_rows.loc[single, "adult2_gender"] != "NONE").all()
    assert (model_rows.loc[single, "adult2_age"] >= 16).all()
    renter = table["tenure_type"].isin(RENTING_TENURES).to_numpy()
    assert (model_rows.loc[~renter, "rent"] > 0).all()
    back = G.from_model_space(model_rows, spec)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), table.reset_index(drop=True))


# ---- training rows ------------------------------------------------------------------------------
def test_weighted_resampling_never_draws_zero_weight_rows():
    w = np.array([0.0, 1.0, 0.0, 3.0, 0.0])
    pos = G.training_positions(5, w, "weighted", 40_000, np.random.default_rng(0))
    assert set(np.unique(pos)) == {1, 3}
    # Probability proportional to weight: row 3 three times as often as row 1.
    share = np.mean(pos == 3)
    assert abs(share - 0.75) < 0.01


def test_weighted_resampling_with_trailing_zero_weights_and_default_size():
    w = np.r_[np.full(10, 1e-300), np.zeros(5)]
    pos = G.training_positions(15, w, "weighted", None, np.random.default_rng(3))
    assert len(pos) == 15 and pos.max() < 10


def test_unweighted_rows_are_the_rows_as_they_are():
    assert np.array_equal(G.training_positions(7, None, "unweighted", None, np.random.default_rng(0)), np.arange(7))
    sub = G.training_positions(7, None, "unweighted", 4, np.random.default_rng(0))
    assert len(np.unique(sub)) == 4


def test_training_info_records_the_fit(model, table, weights):
    info = model.info
    assert info.kind == "tvae" and info.training_rows == "weighted"
    assert info.n_feature_rows == len(table) and info.n_training_rows == len(table)
    # Resampled with replacement and never a zero-weight row: fewer distinct rows than positive weights.
    assert info.n_distinct_rows <= int((weights > 0).sum())
    assert len(info.loss) == TINY["epochs"] and info.final_loss == info.loss[-1]
    assert info.fit_seconds > 0 and info.hyperparameters["enable_gpu"] is False
    assert info.slot_imputation and info.decoding == "sample"


def test_bad_arguments_raise_generator_error(table, spec, weights):
    with pytest.raises(GeneratorError, match="kind"):
        G.train_generator(table, spec, kind="vae", seed=0, weights=weights)
    with pytest.raises(GeneratorError, match="needs weights"):
        G.train_generator(table, spec, seed=0)
    bad = weights.copy()
    bad[3] = -1.0
    with pytest.raises(GeneratorError, match="negative"):
        G.train_generator(table, spec, seed=0, weights=bad)
    with pytest.raises(GeneratorError, match="hyperparameters"):
        G.train_generator(table, spec, kind="gaussian_copula", hyperparameters={"epochs": 1},
                          training_rows="unweighted", seed=0)


# ---- sampling, files ----------------------------------------------------------------------------
def test_save_load_sample_round_trip(model, saved, spec):
    loaded = G.load_generator(saved)
    assert loaded.kind == model.kind and loaded.spec == spec and loaded.metadata == model.metadata
    assert loaded.info.loss == model.info.loss
    md_file = G.metadata_path(saved)
    assert md_file.name == "model.metadata.json"
    assert json.loads(md_file.read_text()) == model.metadata
    a = model.sample(120, np.random.default_rng(5))
    b = loaded.sample(120, np.random.default_rng(5))
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == spec.columns() and len(a) == 120
    assert F.valid_rows(a, spec).all()
    pd.testing.assert_frame_equal(F.normalise(a, spec), a.astype(F.normalise(a, spec).dtypes))
    assert loaded.zero_floor == model.zero_floor
    assert 0 < model.valid_share <= 1
    c = model.sample(120, np.random.default_rng(6))
    assert not a.equals(c)


def test_zero_floors_hand_case_and_sampled_amounts_respect_them(model, table, spec):
    rows = table.copy()
    col = "adult1_employment_income"
    rows[col] = np.r_[np.zeros(len(rows) - 100), np.arange(1.0, 101.0)]
    floors = G.zero_floors(rows, spec)
    # 1st percentile of 1..100 (numpy's linear interpolation): 1 + 0.01 x 99.
    assert floors[col] == pytest.approx(1.99)
    assert set(floors) <= {c for c, k in spec.column_kinds().items() if k == "numerical"}
    assert model.zero_floor and all(v > 0 for v in model.zero_floor.values())
    sampled = model.sample(300, np.random.default_rng(9))
    for c, floor in model.zero_floor.items():
        v = np.abs(sampled[c].to_numpy(dtype=float))
        assert ((v == 0) | (v >= floor)).all(), c


def test_sampled_categoricals_are_not_collapsed(model):
    # Region is independent of everything in the table (about 1/12 each); argmax decoding of an
    # undertrained TVAE writes one region for nearly every row. Sampling the softmax does not.
    rows = model.sample(600, np.random.default_rng(8))
    assert rows["region"].nunique() >= 8
    assert rows["region"].value_counts(normalize=True).iloc[0] < 0.4


@pytest.mark.parametrize("kind,hp", [("gaussian_copula", {}), ("ctgan", {"epochs": 1, "batch_size": 100,
                                                                          "generator_dim": (32,), "discriminator_dim": (32,)})])
def test_other_kinds_train_and_sample(table, spec, kind, hp):
    gen = G.train_generator(table, spec, kind=kind, hyperparameters=hp, training_rows="unweighted", seed=1)
    rows = gen.sample(50, np.random.default_rng(0))
    assert len(rows) == 50 and F.valid_rows(rows, spec).all()
    assert len(gen.info.loss) == hp.get("epochs", 0)


def test_load_generator_rejects_other_files(tmp_path):
    csv = tmp_path / "features.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(GeneratorError, match="features.csv"):
        G.load_generator(csv)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"not": "a generator"}))
    with pytest.raises(GeneratorError, match="other.pkl"):
        G.load_generator(other)
    with pytest.raises(GeneratorError, match="missing.pkl"):
        G.load_generator(tmp_path / "missing.pkl")


# ---- offspring ----------------------------------------------------------------------------------
def _held_equal_parent(off: pd.DataFrame, parents: pd.DataFrame) -> bool:
    by_id = parents.copy()
    by_id.index = parents.index
    for _, row in off.iterrows():  # a few hundred rows: clarity over speed
        parent = by_id.loc[row["parent_id"]]
        for col in filter(None, row["held_columns"].split(";")):
            if row[col] != parent[col]:
                return False
    return True


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_held_features_equal_the_parent_exactly(model, table, spec, fraction):
    parents = table.iloc[:12]
    off = G.sample_offspring(model, parents, 4, [fraction], np.random.default_rng(2), pool_size=300)
    assert len(off) == 48
    assert (off["conditioning_fraction"] == fraction).all()
    assert _held_equal_parent(off, parents)
    lay = G._column_layout(spec)
    meaningful = G._meaningful(parents.reset_index(drop=True), spec, lay)
    m = np.repeat(meaningful.sum(axis=1), 4)
    held = off["held_columns"].map(lambda s: len([c for c in s.split(";") if c])).to_numpy()
    # At least round(f x meaningful columns) are held (more when a unit or a completion adds some).
    assert (held >= np.floor(fraction * m + 0.5)).all()
    if fraction == 1.0:
        cols = spec.columns()
        expected = parents[cols].loc[off["parent_id"]].reset_index(drop=True)
        pd.testing.assert_frame_equal(off[cols].reset_index(drop=True), expected, check_dtype=False)
    if fraction == 0.0:
        assert (off["held_columns"] == "").all()


def test_always_hold_columns_equal_the_parent_in_every_offspring(model, table, spec):
    parents = table.iloc[:10]
    hold = ["region", "tenure_type", "adult1_age"]
    off = G.sample_offspring(model, parents, 6, [0.0], np.random.default_rng(5), pool_size=300, always_hold=hold)
    expected = parents.loc[off["parent_id"], hold].reset_index(drop=True)
    pd.testing.assert_frame_equal(off[hold].reset_index(drop=True), expected, check_dtype=False)
    # With fraction 0 nothing else is held (unless a completion needed it).
    assert set(";".join(off["held_columns"]).split(";")) >= set(hold)
    with pytest.raises(GeneratorError, match="not_a_column"):
        G.sample_offspring(model, parents, 1, [0.5], np.random.default_rng(5), always_hold=["not_a_column"])


def test_held_set_sizes_reach_the_target_by_whole_units(table, spec):
    lay = G._column_layout(spec)
    meaningful = G._meaningful(table.reset_index(drop=True), spec, lay)
    f = np.random.default_rng(0).random(len(table))
    held = G._held_sets(meaningful, f, lay, np.random.default_rng(1))
    target = np.floor(f * meaningful.sum(axis=1) + 0.5)
    count = held.sum(axis=1)
    # The last unit added is at most the structure (3 columns): never short, at most 2 over.
    assert (count >= target).all() and (count <= target + 2).all()
    assert not (held & ~meaningful).any()


def test_structure_is_held_whenever_a_slot_column_is(model, table):
    off = G.sample_offspring(model, table.iloc[:30], 5, (0.1, 0.6), np.random.default_rng(4), pool_size=300)
    for held in off["held_columns"]:
        cols = set(filter(None, held.split(";")))
        if any(c.startswith(("adult", "bu", "child")) for c in cols):
            assert {"n_adults", "n_children", "layout"} <= cols
        if "rent" in cols:
            assert "tenure_type" in cols


def test_offspring_are_valid_and_normalised(model, table, spec):
    off = G.sample_offspring(model, table.iloc[:40], 6, (0.2, 0.8), np.random.default_rng(7), pool_size=300)
    cols = spec.columns()
    assert list(off.columns) == ["parent_id", "conditioning_fraction", "held_columns"] + cols
    assert F.valid_rows(off[cols], spec).all()
    normal = F.normalise(off[cols], spec)
    pd.testing.assert_frame_equal(off[cols], normal, check_dtype=False)
    assert np.array_equal(off["parent_id"].to_numpy(), np.repeat(table.index[:40].to_numpy(), 6))
    assert off["conditioning_fraction"].between(0.2, 0.8).all()
    # Offspring differ from their parents (free columns come from the pool).
    parents = table[cols].loc[off["parent_id"]].reset_index(drop=True)
    same = (off[cols].reset_index(drop=True) == parents).all(axis=1)
    assert same.mean() < 0.2


def test_rare_combination_and_exact_float_parent_get_n_offspring(model, table, rare_parent, spec):
    parents = pd.concat([rare_parent, table.iloc[:3]])
    off = G.sample_offspring(model, parents, 20, (0.2, 0.8), np.random.default_rng(11), pool_size=300)
    mine = off[off["parent_id"] == 999_999]
    assert len(mine) == 20 and len(off) == 80
    assert F.valid_rows(off[spec.columns()], spec).all()
    assert _held_equal_parent(off, parents)
    with_rent = mine[mine["held_columns"].str.split(";").map(lambda c: "rent" in c)]
    assert len(with_rent) > 0 and (with_rent["rent"] == 134312.93).all()
    # Holding everything reproduces the exact float too.
    full = G.sample_offspring(model, rare_parent, 3, [1.0], np.random.default_rng(0), pool_size=300)
    assert (full["rent"] == 134312.93).all() and (full["layout"] == "three_singles").all()


def test_offspring_counts_may_differ_per_parent(model, table):
    off = G.sample_offspring(model, table.iloc[:3], [1, 0, 4], (0.2, 0.8), np.random.default_rng(0), pool_size=300)
    assert off["parent_id"].tolist() == [table.index[0]] + [table.index[2]] * 4


def test_same_saved_model_and_seed_give_the_same_offspring(saved, table):
    a = G.sample_offspring(G.load_generator(saved), table.iloc[:10], 5, (0.2, 0.8), np.random.default_rng(3), pool_size=300)
    b = G.sample_offspring(G.load_generator(saved), table.iloc[:10], 5, (0.2, 0.8), np.random.default_rng(3), pool_size=300)
    pd.testing.assert_frame_equal(a, b)
    c = G.sample_offspring(G.load_generator(saved), table.iloc[:10], 5, (0.2, 0.8), np.random.default_rng(4), pool_size=300)
    assert not a.equals(c)


def test_offspring_argument_errors(model, table, spec):
    with pytest.raises(GeneratorError, match="method"):
        G.sample_offspring(model, table.iloc[:2], 2, rng=np.random.default_rng(0), method="sdv")
    with pytest.raises(GeneratorError, match="fractions"):
        G.sample_offspring(model, table.iloc[:2], 2, (0.5, 1.5), np.random.default_rng(0))
    with pytest.raises(GeneratorError, match="rng"):
        G.sample_offspring(model, table.iloc[:2], 2)
    bad = table.iloc[:2].copy()
    bad["layout"] = "single"  # disagrees with n_adults for multi-adult rows
    bad["n_adults"] = 2
    with pytest.raises(GeneratorError, match="not valid"):
        G.sample_offspring(model, bad, 2, rng=np.random.default_rng(0))


# ---- quality ------------------------------------------------------------------------------------
def test_tv_distance_hand_computed():
    # p: A .5, B .5; q: A .75, C .25 -> 0.5 x (.25 + .5 + .25) = 0.5
    assert G.tv_distance(["A", "A", "B", "B"], ["A", "A", "A", "C"]) == pytest.approx(0.5)
    assert G.tv_distance(["A", "B"], ["B", "A"]) == 0.0


def _numbers(d):
    for v in d.values():
        if isinstance(v, dict):
            yield from _numbers(v)
        else:
            yield v


def test_quality_report_numbers_in_unit_interval(model, table):
    rows = model.sample(200, np.random.default_rng(9))
    rep = G.quality_report(model, table, rows)
    values = list(_numbers(rep))
    assert values and all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values)
    assert set(rep["tv_distance"]) == {c for c, k in model.spec.column_kinds().items() if k in ("categorical", "boolean")}
    same = G.quality_report(model, table, table)
    assert same["column_shapes"] == pytest.approx(1.0) and same["column_pair_trends"] == pytest.approx(1.0)
    assert same["max_tv_distance"] == 0.0 and same["valid_share"] == 1.0


def test_banded_matching_prefers_candidates_in_the_parents_band():
    # One parent, six candidates, nothing held: only the band decides (ties broken at random).
    pool_codes = np.zeros((6, 1), dtype=np.int32)
    par_codes = np.zeros((1, 1), dtype=np.int32)
    pool_z = np.zeros((6, 1), dtype=np.float32)
    par_z = np.zeros((1, 1), dtype=np.float32)
    held = np.zeros((4, 2), dtype=bool)
    ages = np.array([23.0, 51.0, 70.0, 58.0, 55.0, 44.0])
    near = G._nearest_candidates(
        pool_codes, par_codes, pool_z, par_z, np.array([0]), np.array([1]), held, np.zeros(4, dtype=np.int64),
        np.array([4]), 3, np.random.default_rng(0), G._band(ages)[:, None], G._band([52.0])[:, None],
    )
    # The 50-59 band holds candidates 1, 3 and 4: every offspring's 3 nearest are exactly those.
    assert all(sorted(row) == [1, 3, 4] for row in near.tolist())
    assert G._band([0.0, 9.99, 10.0, 45.0]).tolist() == [0, 0, 1, 4]


def test_saved_file_holds_nothing_that_varies_run_to_run(model, saved, table, spec, weights, tmp_path):
    # dvc.lock hashes the model file: its bytes must not carry the fit's timings or SDV's per-run stamps
    # (a random uuid4 id, today's date), or every refit would rerun every later stage.
    import pickle

    payload = pickle.loads(saved.read_bytes())
    assert all(payload["info"][k] == 0.0 for k in G.RUN_TIMINGS)
    synth = payload["synthesizer"]
    assert synth._synthesizer_id == f"{type(model.synthesizer).__name__}_seed0"
    assert synth._creation_date is None and synth._fitted_date is None
    assert model.info.fit_seconds > 0  # the live generator keeps its own timings, only the file drops them
    assert model.synthesizer._synthesizer_id != synth._synthesizer_id  # and SDV's own id is left alone
    # a second fit with the same data, params and seed saves the same timings-free payload fields
    again = G.train_generator(table, spec, kind="tvae", hyperparameters=TINY, weights=weights, seed=0)
    path = tmp_path / "again.pkl"
    again.save(path)
    other = pickle.loads(path.read_bytes())
    assert other["info"] == payload["info"] and other["synthesizer"]._synthesizer_id == synth._synthesizer_id
