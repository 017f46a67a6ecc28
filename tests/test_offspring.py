"""Offspring households: consistency with their sampled rows, weight splitting, id allocation, conservation."""

import numpy as np
import pandas as pd
import pytest

from weightreg import features as F
from weightreg.errors import FeatureError
from weightreg.diagnose import simulate_surface
from weightreg.offspring import allocate_household_ids, pieces_needed, spawn
from weightreg.survey import PARENT_COLUMN, ROUND_COLUMN, Survey
from weightreg.targets import build_target_matrix


@pytest.fixture(scope="module")
def extraction(world):
    return F.extract(world.survey, F.FeatureSpec.from_survey(world.survey))


def test_pieces_needed_hand_cases():
    # m = 0.5 (a = R): k >= 1 x (1 - 0.04)/0.04 = 24 with margin 0.8 and threshold 0.05
    assert pieces_needed([0.5], 0.05, 100).tolist() == [24]
    assert pieces_needed([0.5], 0.05, 10).tolist() == [10]  # capped
    assert pieces_needed([1.0, 0.01], 0.05, 21).tolist() == [21, 2]  # whole cell -> max; tiny -> at least 2
    # after splitting into k pieces the parent's own share is below margin x threshold
    m, t = 0.3, 0.05
    k = pieces_needed([m], t, 1000)[0]
    a, r = m, 1 - m
    assert (a / k) / (a / k + r) <= 0.8 * t + 1e-12


def test_new_ids_never_collide_and_follow_the_scheme(world):
    s = world.survey
    ids = allocate_household_ids(s, 5)
    assert ids.min() > s.household["household_id"].max()
    assert ids.min() * 1000 > s.person["person_id"].max()
    assert ids.min() * 100 > s.benunit["benunit_id"].max()
    assert np.array_equal(ids, np.arange(ids[0], ids[0] + 5))


def _multi_earner_parent(extraction):
    f = extraction.features
    both = f[(f["adult1_employment_income"] > 0) & (f["adult2_employment_income"] > 0)]
    assert len(both), "the test world has no two-earner household"
    return both.index[0]


def test_offspring_are_built_from_their_rows_alone(world, extraction):
    """The invariant: a built offspring extracts back to exactly its sampled row; per-adult incomes,
    no parent income survives, nothing is added onto the head."""
    s = world.survey
    spec = extraction.spec
    parent = _multi_earner_parent(extraction)
    donors = extraction.features.drop(index=parent).sample(6, random_state=0)  # rows unlike the parent
    rows = donors.reset_index(drop=True)
    rows["parent_id"] = parent
    parent_features = extraction.features.loc[[parent]]
    result = spawn(s, [parent], [7], rows, parent_features, spec, round_number=1)
    out = result.survey
    out.validate()
    new = out.household["household_id"].isin(result.new_household_ids).to_numpy()
    offspring = out.select_households(new)
    back = F.extract(offspring, spec).features.reset_index(drop=True)
    pd.testing.assert_frame_equal(back, F.normalise(rows[spec.columns()], spec).reset_index(drop=True))
    # each adult carries exactly its slot's employment income; children none; totals match the rows
    slots = F.person_slots(offspring, spec)
    hh_pos = offspring.person_household_index()
    for i in (1, 2, 3):
        mine = slots == f"adult{i}"
        expected = rows[f"adult{i}_employment_income"].to_numpy()[hh_pos[mine]]
        assert np.array_equal(offspring.person["employment_income"].to_numpy()[mine], expected)
    per_household = np.bincount(hh_pos, weights=offspring.person["employment_income"].to_numpy(), minlength=6)
    assert np.allclose(per_household, rows[[f"adult{i}_employment_income" for i in (1, 2, 3)]].sum(axis=1))
    # the parent's own members' incomes appear in no offspring unless a donor row happens to carry them
    parent_incomes = set(s.person.loc[s.person["person_household_id"] == parent, "employment_income"]) - {0.0}
    donor_incomes = set(rows[[f"adult{i}_employment_income" for i in (1, 2, 3)]].to_numpy().ravel())
    assert not (parent_incomes - donor_incomes) & set(offspring.person["employment_income"])
    assert (offspring.household[PARENT_COLUMN] == parent).all()
    assert (offspring.household[ROUND_COLUMN] == 1).all()


def test_split_conserves_weight_and_clones_conserve_every_target_and_slice_total(world, extraction):
    s = world.survey
    spec = extraction.spec
    parents = extraction.features.index[:3].to_numpy()
    pieces = np.array([2, 5, 9])
    # offspring holding every feature of the parent (conditioning fraction 1): exact clones
    rows = extraction.features.loc[np.repeat(parents, pieces - 1)].reset_index()
    rows = rows.rename(columns={"household_id": "parent_id"})
    result = spawn(s, parents, pieces, rows, extraction.features.loc[parents], spec, round_number=1)
    out = result.survey
    assert out.weights.sum() == pytest.approx(s.weights.sum(), rel=1e-14)
    for p, k in zip(parents, pieces):
        family = (out.household["household_id"] == p) | (out.household[PARENT_COLUMN] == p)
        assert family.sum() == k
        assert out.household.loc[family, "household_weight"].sum() == pytest.approx(
            s.household.set_index("household_id").loc[p, "household_weight"], rel=1e-14)
    before = build_target_matrix(s, world.targets)
    after = build_target_matrix(out, world.targets)
    np.testing.assert_allclose(after.matrix.T @ out.weights, before.matrix.T @ s.weights, rtol=1e-12)
    # slice totals of every metric on the reporting surface (baseline) are unchanged too
    sb = simulate_surface(s)
    sa = simulate_surface(out)
    for dim_b, dim_a in zip(sb.slices, sa.slices):
        if dim_b.name == "income_decile":
            continue  # cut points move with weights of tied incomes; checked through region/age/tenure
        for m in range(len(sb.metrics)):
            tb = np.bincount(dim_b.codes + 1, weights=sb.baseline[m] * s.weights, minlength=len(dim_b.labels) + 1)
            ta = np.bincount(dim_a.codes + 1, weights=sa.baseline[m] * out.weights, minlength=len(dim_a.labels) + 1)
            np.testing.assert_allclose(ta, tb, rtol=1e-10, atol=1e-6)


def test_spawn_rejects_wrong_offspring_counts(world, extraction):
    parent = extraction.features.index[0]
    rows = extraction.features.iloc[:2].reset_index(drop=True)
    rows["parent_id"] = parent
    with pytest.raises(Exception, match="pieces-1 rows per parent"):
        spawn(world.survey, [parent], [4], rows, extraction.features.loc[[parent]], extraction.spec, 1)


def _clone_and_other(extraction):
    """The first household as parent, with two offspring rows: its exact clone and another household's row."""
    parent = extraction.features.index[0]
    clone = extraction.features.loc[[parent]].reset_index().rename(columns={"household_id": "parent_id"})
    other = extraction.features.iloc[[5]].reset_index(drop=True)
    other["parent_id"] = parent
    return parent, pd.concat([clone, other], ignore_index=True)


def test_unmodelled_columns_are_derived_copied_or_neutral(world, extraction):
    s = world.survey.copy()
    s.person["employment_status"] = "OTHER_INACTIVE"
    s.person["some_person_code"] = np.arange(len(s.person), dtype=np.int64)
    s.household["some_household_flag"] = True
    spec = extraction.spec
    parent, rows = _clone_and_other(extraction)
    result = spawn(s, [parent], [3], rows, extraction.features.loc[[parent]], spec, 1)
    out = result.survey
    new = out.select_households(out.household["household_id"].isin(result.new_household_ids).to_numpy())
    assert "employment_status" in result.derived_columns["person"]
    clone_id, other_id = result.new_household_ids
    p_new = new.person
    parent_codes = s.person.loc[s.person["person_household_id"] == parent, "some_person_code"].to_numpy()
    # the exact clone agrees with the parent on every feature: its persons copy the parent's code
    assert sorted(p_new.loc[p_new["person_household_id"] == clone_id, "some_person_code"]) == sorted(parent_codes)
    # the other offspring differs from the parent: it carries nothing of the parent's
    assert (p_new.loc[p_new["person_household_id"] == other_id, "some_person_code"] == 0).all()
    assert new.household["some_household_flag"].tolist() == [True, False]


def test_random_draw_columns_are_copied_or_drawn_afresh_and_reproducible(world, extraction):
    from weightreg.errors import FeatureError

    s = world.survey.copy()
    rng0 = np.random.default_rng(0)
    s.household["warm_home_discount_random_draw"] = rng0.random(len(s.household))
    s.benunit["uc_deduction_random_draw"] = rng0.random(len(s.benunit))
    spec = extraction.spec
    parent, rows = _clone_and_other(extraction)
    args = (s, [parent], [3], rows, extraction.features.loc[[parent]], spec, 1)
    with pytest.raises(FeatureError, match="random-draw column .*pass rng="):
        spawn(*args)
    a = spawn(*args, rng=np.random.default_rng(4))
    b = spawn(*args, rng=np.random.default_rng(4))
    assert a.drawn_columns == {"benunit": ["uc_deduction_random_draw"], "household": ["warm_home_discount_random_draw"]}
    assert "household" not in a.neutral_columns
    hh = a.survey.household.set_index("household_id")["warm_home_discount_random_draw"]
    clone_id, other_id = a.new_household_ids
    parent_draw = s.household.set_index("household_id").loc[parent, "warm_home_discount_random_draw"]
    assert hh[clone_id] == parent_draw  # the exact clone keeps the parent's draw
    assert 0.0 <= hh[other_id] < 1.0 and hh[other_id] != parent_draw  # the other gets its own
    # Benefit units: the clone's units copy the parent's draws (this path once failed on benunit columns).
    bu = a.survey.benunit.set_index("benunit_id")["uc_deduction_random_draw"]
    clone_bu = bu[(bu.index // 100) == clone_id].sort_values().to_numpy()
    parent_bu = s.benunit.set_index("benunit_id")["uc_deduction_random_draw"]
    parent_units = s.person.loc[s.person["person_household_id"] == parent, "person_benunit_id"].unique()
    np.testing.assert_array_equal(clone_bu, np.sort(parent_bu[parent_units].to_numpy()))
    # Same seed, same draws: the file simulates the same way every time.
    pd.testing.assert_frame_equal(a.survey.household, b.survey.household)
    pd.testing.assert_frame_equal(a.survey.benunit, b.survey.benunit)


def test_root_households_follow_the_parent_chain_by_hand():
    from weightreg.errors import FeatureError
    from weightreg.offspring import root_households

    s = Survey(pd.DataFrame({"person_id": [1000], "person_household_id": [1], "person_benunit_id": [101]}),
               pd.DataFrame({"benunit_id": [101]}),
               pd.DataFrame({"household_id": [1, 2, 7, 8, 9], "household_weight": 1.0,
                             PARENT_COLUMN: [-1, -1, 1, 7, 2]}), "2025")
    # 8 -> 7 -> 1 (two generations), 9 -> 2, originals are their own roots; order and repeats kept.
    assert root_households(s, [8, 9, 1, 7, 2, 8]).tolist() == [1, 2, 1, 1, 2, 1]
    plain = Survey(s.person, s.benunit, s.household.drop(columns=[PARENT_COLUMN]), "2025")
    assert root_households(plain, [7, 8]).tolist() == [7, 8]
    looped = Survey(s.person, s.benunit, s.household.assign(**{PARENT_COLUMN: [2, 1, 1, 7, 2]}), "2025")
    with pytest.raises(FeatureError, match="cycle"):
        root_households(looped, [1])


def test_second_generation_offspring_copy_from_the_root_they_were_sampled_near(world, extraction):
    from weightreg.offspring import root_households

    s = world.survey.copy()
    s.person["some_person_code"] = np.arange(1, len(s.person) + 1, dtype=np.int64)
    spec = extraction.spec
    parent, rows = _clone_and_other(extraction)
    first = spawn(s, [parent], [3], rows, extraction.features.loc[[parent]], spec, 1)
    other_id = first.new_household_ids[1]  # synthetic: another household's row, nothing of the parent's
    assert root_households(first.survey, [other_id]).tolist() == [parent]
    # Its offspring, sampled near the root: an exact clone of the root's row.
    clone = extraction.features.loc[[parent]].reset_index(drop=True).assign(parent_id=other_id)
    args = (first.survey, [other_id], [2], clone, extraction.features.loc[[parent]].set_axis([other_id]), spec, 2)
    with pytest.raises(FeatureError, match="feature_sources"):
        spawn(*args, feature_sources=[parent, parent])
    second = spawn(*args, feature_sources=[parent])
    (grandchild,) = second.new_household_ids
    out = second.survey
    assert root_households(out, [grandchild]).tolist() == [parent]
    hh = out.household.set_index("household_id")
    assert hh.loc[grandchild, PARENT_COLUMN] == other_id and hh.loc[grandchild, ROUND_COLUMN] == 2
    # The grandchild agrees with the root on every feature, so it copies the root's person codes,
    # not the (neutral, 0) codes of the synthetic household whose weight it took.
    codes = out.person.groupby("person_household_id")["some_person_code"].apply(sorted)
    assert codes[grandchild] == codes[parent] and min(codes[parent]) > 0
    assert set(codes[other_id]) == {0}
    # Weight: the synthetic parent's weight was split in two, nothing else moved.
    w1 = first.survey.household.set_index("household_id")["household_weight"]
    assert hh.loc[[other_id, grandchild], "household_weight"].sum() == pytest.approx(w1[other_id], rel=1e-15)
    assert hh["household_weight"].sum() == pytest.approx(w1.sum(), rel=1e-12)
