"""Tests for weightreg.influence: hand-computed ESS and influence, invariants, brute force."""

import numpy as np
import pytest
import scipy.stats

from weightreg.influence import (
    InfluenceTracker,
    WeightSummary,
    cell_influence,
    kish_by_group,
    kish_ess,
    weight_summary,
)


# ---- Kish ESS ------------------------------------------------------------------------------
def test_kish_ess_hand_cases():
    assert kish_ess([1, 1, 2]) == pytest.approx(16 / 6)  # (1+1+2)^2 / (1+1+4)
    assert kish_ess(np.full(7, 3.5)) == pytest.approx(7.0)  # equal weights: N
    assert kish_ess([0, 5, 0]) == pytest.approx(1.0)  # one record carries everything
    assert kish_ess([0.0, 0.0]) == 0.0
    assert kish_ess([]) == 0.0


def test_kish_by_group_with_empty_group_and_unassigned_records():
    w = np.array([1.0, 1.0, 2.0, 3.0, 10.0])
    codes = np.array([0, 0, 0, 2, -1])  # group 1 empty; the last record is in no group
    got = kish_by_group(w, codes, 3)
    np.testing.assert_allclose(got, [16 / 6, 0.0, 1.0])


def test_kish_by_group_rejects_out_of_range_codes():
    with pytest.raises(ValueError, match="codes must lie in"):
        kish_by_group([1.0, 2.0], [0, 3], 2)


# ---- weight summary --------------------------------------------------------------------------
def test_weight_summary_hand_and_scipy_skew():
    w = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    s = weight_summary(w)
    assert isinstance(s, WeightSummary)
    assert (s.n, s.n_positive) == (5, 4)
    assert s.mean == pytest.approx(16 / 5)
    assert s.median == pytest.approx(2.0)
    assert s.max == 10.0
    assert s.min_positive == 1.0
    # p90 by linear interpolation: position 0.9 * 4 = 3.6 between 3 and 10.
    assert s.p90 == pytest.approx(3 + 0.6 * 7)
    assert s.skewness == pytest.approx(scipy.stats.skew(w, bias=True))
    assert s.kish_ess == pytest.approx(16**2 / 114)
    assert s.kish_share == pytest.approx(s.kish_ess / 5)


def test_weight_summary_constant_and_empty_are_finite():
    s = weight_summary(np.full(4, 2.0))
    assert s.skewness == 0.0 and s.kish_share == pytest.approx(1.0)
    e = weight_summary([])
    assert all(np.isfinite(v) for v in e.as_dict().values())
    assert e.n == 0 and e.kish_ess == 0.0


# ---- cell influence -------------------------------------------------------------------------
def test_cell_influence_mixed_signs_empty_and_zero_mass_cells():
    values = np.array([100.0, -99.0, 5.0, 0.0, 7.0])
    weights = np.array([1.0, 1.0, 2.0, 3.0, 1.0])
    codes = np.array([0, 0, 1, 2, -1])  # cell 2 has zero mass, cell 3 is empty, record 4 in none
    got = cell_influence(values, weights, codes, 4)
    # Cell 0: absolute mass 100 + 99 = 199 (its net total is 1, which would give "influence" 100).
    np.testing.assert_allclose(got, [100 / 199, 99 / 199, 1.0, 0.0, 0.0])


def test_cell_influence_bounded_and_sums_to_one_per_cell():
    rng = np.random.default_rng(3)
    n, k = 500, 7
    values = rng.normal(0, 1, n) * rng.integers(0, 2, n)  # many zeros, both signs
    weights = rng.lognormal(0, 1, n)
    codes = rng.integers(-1, k, n)
    share = cell_influence(values, weights, codes, k)
    assert share.min() >= 0 and share.max() <= 1
    sums = np.bincount(codes[codes >= 0], weights=share[codes >= 0], minlength=k)
    mass = np.bincount(codes[codes >= 0], weights=np.abs(values * weights)[codes >= 0], minlength=k)
    np.testing.assert_allclose(sums, np.where(mass > 0, 1.0, 0.0))
    assert np.all(share[codes < 0] == 0)


def test_cell_influence_invariant_to_scaling_of_weights_and_values():
    rng = np.random.default_rng(4)
    v, w, c = rng.normal(size=50), rng.uniform(1, 2, 50), rng.integers(0, 3, 50)
    np.testing.assert_allclose(cell_influence(v, w, c, 3), cell_influence(-3 * v, 10 * w, c, 3))


def test_cell_influence_shape_errors():
    with pytest.raises(ValueError, match="same length"):
        cell_influence([1.0, 2.0], [1.0], [0, 0], 1)
    with pytest.raises(ValueError, match="one cell code per record"):
        cell_influence([1.0, 2.0], [1.0, 1.0], [0], 1)


# ---- running max ------------------------------------------------------------------------------
def test_tracker_equals_dense_brute_force():
    rng = np.random.default_rng(5)
    n, n_stats, thr = 60, 40, 0.1
    tracker = InfluenceTracker(n, threshold=thr)
    dense = np.zeros((n, n_stats))  # the test may materialise records x statistics; the library never does
    for sid in range(n_stats):
        share = rng.uniform(0, 0.3, n) * (rng.random(n) < 0.5)
        if sid == 7:
            share[:5] = 0.3  # exact ties with later equal values: the earliest must win
        if sid == 30:
            share[:5] = 0.3
        dense[:, sid] = share
        tracker.update(share, sid)
    np.testing.assert_array_equal(tracker.max_influence, dense.max(axis=1))
    expected_arg = np.where(dense.max(axis=1) > 0, dense.argmax(axis=1), -1)  # argmax: first maximum
    np.testing.assert_array_equal(tracker.argmax, expected_arg)
    np.testing.assert_array_equal(tracker.violations, (dense > thr).sum(axis=1))
    assert tracker.n_updates == n_stats
    # Memory does not grow with the number of statistics.
    for arr in (tracker.max_influence, tracker.argmax, tracker.violations):
        assert arr.shape == (n,)


def test_tracker_per_record_statistic_ids():
    tracker = InfluenceTracker(3, threshold=0.5)
    tracker.update(np.array([0.2, 0.6, 0.0]), np.array([10, 11, 12]))
    tracker.update(np.array([0.9, 0.1, 0.0]), 20)
    np.testing.assert_array_equal(tracker.argmax, [20, 11, -1])
    np.testing.assert_array_equal(tracker.violations, [1, 1, 0])
    with pytest.raises(ValueError, match="expected"):
        tracker.update(np.zeros(2), 0)
    with pytest.raises(ValueError, match="threshold"):
        InfluenceTracker(3, threshold=1.5)
