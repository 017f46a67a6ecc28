"""Influence bounds inside the calibration (weightreg.influence_bounds) against a reference conic solver."""

import numpy as np
import pandas as pd
import pytest

from weightreg.calibrate import calibrate
from weightreg.diagnose import Slice, SurfaceData, evaluate_surface
from weightreg.errors import CalibrationError
from weightreg.influence_bounds import bound_matrix, calibrate_influence, influence_violations


def small_problem(seed=0, n=40, sources=None, reforms=1):
    """Records in 2 cells with two metrics and a reform; a few records with large prior weights and
    values dominate. The targets are those of equal weights (2 each), at which every share is small, so
    the hard problem with every bound is feasible."""
    rng = np.random.default_rng(seed)
    cell = rng.integers(0, 2, n)
    income = rng.lognormal(3, 0.3, n)
    income[:3] *= 2.5  # value-heavy records
    benefit = np.where(rng.random(n) < 0.7, rng.uniform(2, 4, n), 0.0)
    baseline = np.vstack([income, benefit])
    deltas = np.stack([baseline * rng.uniform(0.05, 0.1, (2, n)) for _ in range(reforms)])
    w0 = rng.uniform(1.0, 3.0, n)
    w0[:3] *= 6
    data = SurfaceData(household_id=np.arange(n), weights=w0, metrics=("income", "benefit"), baseline=baseline,
                       deltas=deltas, slices=(Slice("cell", cell, ("a", "b")),),
                       source_id=None if sources is None else np.asarray(sources))
    A = np.column_stack([np.ones(n), (cell == 0).astype(float), income])
    t = A.T @ np.full(n, 2.0)
    return data, A, t, w0


def all_pairs(data, threshold):
    """Every (statistic, source) pair of every statistic that is not thin: the whole constraint set."""
    return influence_violations(data, np.ones(data.n_records), threshold, margin=-np.inf)


def clarabel(A, t, w0, G, penalty=None):
    cp = pytest.importorskip("cvxpy")
    w = cp.Variable(len(w0))
    kl = cp.sum(cp.kl_div(w, w0))
    cons = [w >= 0, G.T @ w <= 0]
    if penalty is None:
        prob = cp.Problem(cp.Minimize(kl), cons + [A.T @ w == t])
    else:
        prob = cp.Problem(cp.Minimize(penalty * kl / w0.sum() + cp.sum_squares(cp.multiply(A.T @ w - t, 1 / t))), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, max_iter=500)
    assert prob.status == "optimal", prob.status
    return w.value


@pytest.mark.parametrize("penalty", [None, 0.5])
def test_working_set_gives_the_weights_of_the_whole_constraint_set(penalty):
    threshold = 0.2
    data, A, t, w0 = small_problem()
    res = calibrate_influence(data, A, t, w0, threshold=threshold, penalty=penalty, tol=1e-11)
    assert res.success, res.message
    assert res.n_bounds > 0 and res.n_binding > 0  # the bounds bind, so the test means something
    # the reference poses every pair of every statistic that is not thin at once (the cells are fixed)
    pairs = all_pairs(data, threshold)
    assert len(pairs) > res.n_bounds
    ref = clarabel(A, t, w0, bound_matrix(data, w0, pairs, threshold).toarray(), penalty)
    np.testing.assert_allclose(res.weights, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("penalty", [None, 0.5])
def test_every_bound_reported_met_holds(penalty):
    threshold = 0.2
    data, A, t, w0 = small_problem(1)
    before = evaluate_surface(data, calibrate(A, t, w0, penalty=penalty).weights, threshold)
    res = calibrate_influence(data, A, t, w0, threshold=threshold, penalty=penalty)
    assert res.success and not len(res.violations)
    after = evaluate_surface(data, res.weights, threshold)
    # diagnose's own count of sources above the threshold on statistics that are not thin
    assert before.n_above_not_thin_sources > 0
    assert after.n_above_not_thin_sources == 0
    assert (res.bounds["share_after"] <= threshold * (1 + 1e-6)).all()
    if penalty is None:
        np.testing.assert_allclose(A.T @ res.weights, t, rtol=1e-7)


def test_a_source_is_bounded_as_a_whole():
    threshold = 0.2
    n = 40
    sources = np.arange(n)
    sources[1:3] = 0  # records 0, 1, 2 are one sampled household and its two offspring
    data, A, t, w0 = small_problem(2, n=n, sources=sources)
    res = calibrate_influence(data, A, t, w0, threshold=threshold)
    assert res.success, res.message
    shares = influence_violations(data, res.weights, threshold, margin=-np.inf)
    assert shares["share"].max() <= threshold * (1 + 1e-6)
    # the source's combined share, by hand, on the baseline income total over everyone
    x = np.abs(data.baseline[0]) * res.weights
    assert x[:3].sum() / x.sum() <= threshold * (1 + 1e-6)


def test_tighter_threshold_never_lowers_kl():
    data, A, t, w0 = small_problem(3)
    kls = []
    for threshold in (0.5, 0.3, 0.25, 0.2):
        res = calibrate_influence(data, A, t, w0, threshold=threshold)
        assert res.success, res.message
        kls.append(res.calibration.kl)
    assert all(b >= a * (1 - 1e-9) for a, b in zip(kls, kls[1:]))
    assert kls[-1] > kls[0]


def test_bounds_against_hard_targets_are_reported_infeasible():
    # one record carries most of a target it alone can meet: the bound and the target conflict
    n = 12
    baseline = np.vstack([np.r_[100.0, np.ones(n - 1)]])
    data = SurfaceData(household_id=np.arange(n), weights=np.ones(n), metrics=("income",), baseline=baseline,
                       deltas=np.zeros((0, 1, n)), slices=())
    A = np.column_stack([np.ones(n), baseline[0]])
    t = np.array([12.0, 111.0])  # the income target needs record 0 at share 100/111 > 0.1
    res = calibrate_influence(data, A, t, np.ones(n), threshold=0.1)
    assert not res.success
    assert "did not converge" in res.message
    soft = calibrate_influence(data, A, t, np.ones(n), threshold=0.1, penalty=1e-2)
    assert soft.success, soft.message
    x = baseline[0] * soft.weights
    assert x[0] / x.sum() <= 0.1 * (1 + 1e-6)


def test_rejects_bad_input():
    data, A, t, w0 = small_problem()
    with pytest.raises(CalibrationError, match="threshold"):
        calibrate_influence(data, A, t, w0, threshold=1.5)
    with pytest.raises(CalibrationError, match="records"):
        calibrate_influence(data, A[:-1], t, w0[:-1], threshold=0.2)


def test_no_bound_needed_is_the_plain_calibration():
    data, A, t, w0 = small_problem(4)
    res = calibrate_influence(data, A, t, w0, threshold=0.9)
    plain = calibrate(A, t, w0)
    assert res.success and res.rounds == 1 and res.n_bounds == 0
    np.testing.assert_array_equal(res.weights, plain.weights)
    assert isinstance(res.bounds, pd.DataFrame)


def test_max_new_adds_the_worst_first_and_still_ends_feasible():
    threshold = 0.2
    data, A, t, w0 = small_problem(5)
    full = calibrate_influence(data, A, t, w0, threshold=threshold, tol=1e-11)
    step = calibrate_influence(data, A, t, w0, threshold=threshold, tol=1e-11, max_new=1, max_rounds=50)
    assert full.success and step.success, (full.message, step.message)
    assert (step.bounds.groupby("round").size() == 1).all() and step.rounds > 2
    # the first bound posed is the pair with the largest share at the unbounded weights
    first = influence_violations(data, calibrate(A, t, w0, tol=1e-11).weights, threshold)
    assert step.bounds.loc[0, "statistic"] == first.loc[first["share"].idxmax(), "statistic"]
    np.testing.assert_allclose(step.weights, full.weights, rtol=1e-6, atol=1e-8)  # one optimum either way
