"""Source households: a parent and its offspring are one sampled household (hand-computed cases)."""

import numpy as np
import pandas as pd
import pytest

from weightreg.diagnose import Slice, SurfaceData, evaluate_surface
from weightreg.influence import kish_ess
from weightreg.sources import Sources, source_ids, source_kish_by_group, source_kish_ess
from weightreg.survey import PARENT_COLUMN, SOURCE_COLUMN

from surveys import random_survey


def _surface(ids, w, x, cells, labels=("a", "b"), source_id=None):
    n = len(ids)
    return SurfaceData(np.asarray(ids), np.asarray(w, dtype=float), ("x",), np.asarray(x, dtype=float)[None, :],
                       np.zeros((0, 1, n)), (), (Slice("cell", np.asarray(cells, dtype=np.int64), labels),),
                       source_id=None if source_id is None else np.asarray(source_id))


def test_a_household_split_into_equal_pieces_keeps_its_source_ess_and_influence():
    # Five households in cell a (values 10, 1, 1, 1, 1 at weights 4, 1, 1, 1, 1), five in cell b.
    w = np.array([4.0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    x = np.array([10.0, 1, 1, 1, 1, 3, 3, 3, 3, 3])
    cells = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    ids = np.arange(1, 11)
    before = evaluate_surface(_surface(ids, w, x, cells), threshold=0.5)
    # By hand: household 1 carries 40 / (40 + 4) of cell a and of the whole 40 / 74.
    assert before.max_influence == pytest.approx(40 / 44)
    assert before.max_influence_source == pytest.approx(40 / 44)
    assert before.source_kish.kish_ess == pytest.approx(kish_ess(w))
    assert before.kish.kish_ess == pytest.approx(18.0**2 / 40.0)  # (sum w)^2 / sum w^2 = 324 / 40

    # Split household 1 into k = 4 pieces of weight 1 that keep its values (ids 11, 12, 13 are its offspring).
    k = 4
    w2 = np.r_[1.0, w[1:], np.ones(k - 1)]
    x2 = np.r_[x, np.full(k - 1, 10.0)]
    cells2 = np.r_[cells, np.zeros(k - 1, dtype=np.int64)]
    ids2 = np.r_[ids, [11, 12, 13]]
    src2 = np.r_[ids, [1, 1, 1]]
    after = evaluate_surface(_surface(ids2, w2, x2, cells2, source_id=src2), threshold=0.5)
    # Rows: each piece has 10 / 44 of cell a; row ESS rises from 8.1 to 18^2 / 28.
    assert after.max_influence == pytest.approx(10 / 44)
    assert after.kish.kish_ess == pytest.approx(324 / 28)
    assert after.kish.kish_ess > before.kish.kish_ess
    assert after.n_above == 0 and before.n_above == 1
    # Sources: exactly as before the split.
    assert after.source_kish.kish_ess == pytest.approx(before.source_kish.kish_ess)
    assert after.max_influence_source == pytest.approx(before.max_influence_source)
    assert after.n_above_sources == before.n_above_sources == 1
    assert after.worst_source_id == 1
    src_table = after.sources.set_index("source_id")
    assert src_table.loc[1, "rows"] == 4 and src_table.loc[1, "weight"] == pytest.approx(4.0)
    assert after.records.loc[after.records["source_id"] == 1, "source_max_influence"].tolist() == pytest.approx(
        [40 / 44] * 4)
    # Per-slice source ESS of cell a: totals 4, 1, 1, 1, 1 -> 64 / 20; row ESS there 8^2 / 8.
    ess = after.ess_by_slice.set_index(["dimension", "cell"])
    assert ess.loc[("cell", "a"), "source_ess"] == pytest.approx(64 / 20)
    assert ess.loc[("cell", "a"), "ess"] == pytest.approx(8.0)
    assert ess.loc[("cell", "a"), "n_sources"] == 5 and ess.loc[("cell", "a"), "n_records"] == 8
    m = after.to_metrics()
    assert m["source_ess"] == pytest.approx(before.to_metrics()["source_ess"])
    assert list(m)[0] == "sources"  # the source figures come first


def test_source_share_adds_its_rows_shares_and_thin_counts_sources():
    # One source (id 1) with two rows in cell a; threshold 0.2 needs 5 contributors.
    w = np.array([1.0, 1, 1, 1, 1, 1])
    x = np.array([3.0, 3, 2, 1, 1, 1])
    cells = np.zeros(6, dtype=np.int64)
    data = _surface(np.arange(1, 7), w, x, cells, labels=("a",), source_id=[1, 1, 3, 4, 5, 6])
    d = evaluate_surface(data, threshold=0.2, equal_weights=True)
    assert d.max_influence == pytest.approx(3 / 11)
    assert d.max_influence_source == pytest.approx(6 / 11)
    # Six contributing rows but five contributing sources: not thin either way at 1/0.2 = 5.
    assert d.n_thin_statistics == 0 and d.n_thin_statistics_sources == 0
    data = _surface(np.arange(1, 7), w, x, cells, labels=("a",), source_id=[1, 1, 1, 4, 5, 6])
    d = evaluate_surface(data, threshold=0.2, equal_weights=True)
    # Four contributing sources: the cell (and the whole population, one statistic each) is thin by source.
    assert d.n_thin_statistics == 0 and d.n_thin_statistics_sources == 2
    assert d.n_above_sources == 1 and d.n_above_thin_only_sources == 1
    # Every statistic is thin by source, so nothing counts on statistics that are not thin.
    assert d.sources.set_index("source_id").loc[1, "max_influence_equal_weights"] == 0.0
    assert d.sources.set_index("source_id").loc[1, "max_influence"] == pytest.approx(8 / 11)


def test_equal_weight_pass_gives_each_source_one_total():
    w = np.array([2.0, 2, 1, 1, 1, 1, 1, 1])
    x = np.array([5.0, 5, 1, 1, 1, 1, 1, 1])
    data = _surface(np.arange(1, 9), w, x, np.zeros(8, dtype=np.int64), labels=("a",),
                    source_id=[1, 1, 3, 4, 5, 6, 7, 8])
    d = evaluate_surface(data, threshold=0.2, equal_weights=True)
    # Source 1 at total weight 1 (two rows of 1/2 at value 5): mass 5 of 5 + 6 = 11.
    assert d.sources.set_index("source_id").loc[1, "max_influence_equal_weights"] == pytest.approx(5 / 11)
    assert d.n_above_value_driven_sources == 1
    assert d.n_above_weight_driven_sources == 0


def test_source_ids_follow_the_recorded_source_then_the_parent_chain():
    s = random_survey(6, np.random.default_rng(0))
    h = s.household
    h[PARENT_COLUMN] = [-1, -1, 1, 3, 2, 99]  # 4 <- 3 <- 1; 5 <- 2; 6's parent was pruned
    assert source_ids(s).tolist() == [1, 2, 1, 1, 2, 99]
    h[SOURCE_COLUMN] = [-1, -1, 1, 1, -1, 7]  # a recorded source wins over the chain
    assert source_ids(s).tolist() == [1, 2, 1, 1, 2, 7]
    assert source_ids(s, [4, 5]).tolist() == [1, 2]


def test_source_kish_by_group_counts_a_source_in_each_cell_its_rows_are_in():
    src = Sources.from_ids([1, 1, 2, 3])
    w = np.array([1.0, 2.0, 3.0, 1.0])
    codes = np.array([0, 1, 0, -1])
    # Cell 0: source 1 with 1, source 2 with 3 -> 16 / 10; cell 1: source 1 with 2 -> 1.
    assert source_kish_by_group(w, codes, 2, src) == pytest.approx([1.6, 1.0])
    assert source_kish_ess(w, src) == pytest.approx(49 / (9 + 9 + 1))
    assert Sources.from_ids([5, 6, 7]).trivial and not src.trivial
