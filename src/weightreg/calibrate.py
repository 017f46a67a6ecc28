"""Entropy (KL) calibration of survey weights to population targets, solved on the dual.

Hard targets (``penalty=None``)::

    minimise   KL(w || w0) = sum_i w_i log(w_i / w0_i) - w_i + w0_i
    subject to A^T w = t,   lower_i <= w_i <= upper_i

Soft targets (``penalty > 0``)::

    minimise   penalty * KL(w || w0) / sum(w0) + sum_j ((a_j^T w - t_j) / d_j)^2

with ``d_j = t_j`` (relative error) or, for a zero target, the prior's absolute column
total ``sum_i |a_ij| w0_i`` (a zero target has no scale of its own); bounds as above.

With ``groups`` (e.g. the source household of every row: a parent and its offspring), ``cap`` bounds
each group's total, ``sum_{i in g} w_i <= cap``, instead of each row. The inner maximisation then
has a closed form per group: with ``u_i = w0_i exp(a_i . lam)`` and ``U_g = sum_{i in g} u_i``,
``w_i = u_i min(1, cap / U_g)``, the group's conjugate is ``U_g - W0_g`` below the cap and
``cap (1 + log(U_g / cap)) - W0_g`` above it, and a capped group's Hessian block is the within-group
covariance ``A_g^T (diag(w_g) - w_g w_g^T / cap) A_g`` (a capped group of one drops out, as a
capped row does).

Both are solved by damped (semismooth) Newton on the dual, which has one variable per
target: the weights are ``w_i(lam) = clip(w0_i * exp(a_i . lam), lower_i, upper_i)``,
the dual Hessian is the M x M matrix ``A^T diag(w_free) A`` (records at a bound drop
out), and for soft targets the conjugate of the quadratic penalty adds the ridge
``(mu / 2) diag(d^2)`` with ``mu = penalty / sum(w0)``. Each iteration costs one sparse
product A^T W A and a Cholesky factorisation of an M x M matrix, so N x M problems with
N in the millions are cheap; no dense N x M matrix is ever formed from a sparse input.

Records with a zero prior keep weight zero (KL with a zero prior forces w = 0). Callers
who want such records (e.g. synthetic "enhancement" households) to take weight must
give them a small positive prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from weightreg.errors import CalibrationError, InfeasibleError

__all__ = ["CalibrationResult", "calibrate", "kl_divergence"]

_RIDGE_MIN = 1e-10  # relative Levenberg ridge: keeps redundant targets solvable
_RIDGE_MAX = 1e6


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """Outcome of :func:`calibrate`, in the style of ``scipy.optimize.OptimizeResult``.

    Attributes:
        weights: Calibrated weights, shape (N,).
        success: Whether the solver converged (hard: every target met to ``tol``
            relative; soft: dual gradient below ``tol``).
        message: What happened; on failure, the five worst targets and what to try.
        nit: Newton iterations taken.
        max_rel_error: ``max_j |a_j^T w - t_j| / d_j``, with ``d_j = |t_j|`` or, for a
            zero target, the prior's absolute column total ``sum_i |a_ij| w0_i``.
        mean_rel_error: Mean of the same relative errors.
        kl: ``KL(w || w0)``, not normalised.
        multipliers: Dual variables in original target units, shape (M,). For hard
            targets ``multipliers[j] = d KL* / d t_j`` (marginal KL cost of target j);
            for soft targets it is the derivative of ``KL + loss * sum(w0) / penalty``.
            In both cases ``weights = clip(prior * exp(matrix @ multipliers))`` (with ``groups``,
            a capped group's rows are scaled down together to the cap instead of clipped).
        rel_errors: Signed relative errors ``(a_j^T w - t_j) / d_j``, shape (M,).
        target_names: The names passed in, or None.
        inequality_multipliers: With ``inequalities``: their multipliers (>= 0; 0 where an
            inequality holds with room to spare), shape (K,). Else None.
        inequality_values: With ``inequalities``: ``(G^T w)_k / sum_i |G_ik| w0_i``, at most
            ``tol`` when met (negative: room to spare), shape (K,). Else None.
    """

    weights: np.ndarray
    success: bool
    message: str
    nit: int
    max_rel_error: float
    mean_rel_error: float
    kl: float
    multipliers: np.ndarray
    rel_errors: np.ndarray
    target_names: list | None = None
    inequality_multipliers: np.ndarray | None = None
    inequality_values: np.ndarray | None = None

    @property
    def x(self) -> np.ndarray:
        """Alias of :attr:`weights` (scipy naming)."""
        return self.weights

    def check(self) -> CalibrationResult:
        """Return self if the solve succeeded, else raise :class:`InfeasibleError`."""
        if not self.success:
            raise InfeasibleError(self.message)
        return self


def kl_divergence(w, w0) -> float:
    """Generalised KL divergence ``sum w log(w/w0) - w + w0`` (0 log 0 = 0).

    Returns inf if some ``w_i > 0`` has ``w0_i == 0``.
    """
    return float(np.sum(_kl_terms(np.asarray(w, dtype=float), np.asarray(w0, dtype=float))))


def _kl_terms(w, w0):
    """Elementwise w log(w/w0) - w + w0 with 0 log 0 = 0 (inf where w > 0 = w0)."""
    pos = w > 0
    out = w0 - w
    with np.errstate(divide="ignore"):
        # log w - log w0, not log(w / w0): the ratio overflows for a tiny (e.g. 1e-300) positive prior
        out[pos] += w[pos] * (np.log(w[pos]) - np.log(w0[pos]))
    return out


def _name(j, names):
    return f"target {names[j]!r} (column {j})" if names is not None else f"target column {j}"


def _column_range(A, lower, upper):
    """Smallest and largest achievable a_j^T w for lower <= w <= upper (may be +-inf)."""
    inf_u = np.isinf(upper)
    u_fin = np.where(inf_u, 0.0, upper)
    if sp.issparse(A):
        Ap, An = A.maximum(0), A.minimum(0)  # sparse: no 0 * inf products
    else:
        Ap, An = np.maximum(A, 0), np.minimum(A, 0)
    hi = Ap.T @ u_fin + An.T @ lower
    lo = Ap.T @ lower + An.T @ u_fin
    if inf_u.any():
        hi[np.asarray(Ap.T @ inf_u.astype(float)).ravel() > 0] = np.inf
        lo[np.asarray(An.T @ inf_u.astype(float)).ravel() < 0] = -np.inf
    return np.asarray(lo).ravel(), np.asarray(hi).ravel()


def _check_group_reach(A, t, w0, codes, cap, names):
    """Hard targets no weights with group totals <= cap can reach: a_j^T w is at most
    cap * sum_g max_{i in g, w0_i > 0} max(a_ij, 0). Raise CalibrationError naming the first."""
    C = sp.coo_array(A) if sp.issparse(A) else sp.coo_array(np.asarray(A))
    keep = (C.data > 0) & (w0[C.row] > 0)
    row, col, val = C.row[keep], C.col[keep], C.data[keep]
    n_groups = int(codes.max()) + 1 if codes.size else 0
    keys, inverse = np.unique(col.astype(np.int64) * n_groups + codes[row], return_inverse=True)
    top = np.zeros(keys.size)
    np.maximum.at(top, inverse.ravel(), val)
    reach = cap * np.bincount((keys // max(n_groups, 1)).astype(np.int64), weights=top, minlength=A.shape[1])
    bad = np.flatnonzero(t > reach * (1 + 1e-12))
    if bad.size:
        j = bad[0]
        raise CalibrationError(
            f"{_name(j, names)} = {t[j]:.6g} is unreachable with cap={cap} on each group's total: at most "
            f"{reach[j]:.6g} (cap x the sum over groups of each group's largest entry in the column); "
            f"{bad.size} target(s) like this. Raise the cap, or pass penalty= for soft targets")


def _validate(matrix, targets, prior, penalty, cap, bounds, tol, max_iter, target_names):
    """Check the inputs; return (A, t, w0, lower, upper, names). Raise CalibrationError."""
    if sp.issparse(matrix):
        A = sp.csr_array(matrix, dtype=float, copy=True)  # canonicalising below is in place
        A.sum_duplicates()
        A.eliminate_zeros()
        if A.nnz < 2**31 - 1 and max(A.shape) < 2**31 - 1:  # int32 indices: faster products
            A.indices, A.indptr = A.indices.astype(np.int32), A.indptr.astype(np.int32)
        data = A.data
    else:
        A = np.asarray(matrix, dtype=float)
        data = A
    t = np.asarray(targets, dtype=float)
    w0 = np.asarray(prior, dtype=float)
    if A.ndim != 2 or t.ndim != 1 or w0.ndim != 1 or A.shape != (w0.shape[0], t.shape[0]):
        raise CalibrationError(
            f"shape mismatch: matrix is {A.shape}, targets {t.shape}, prior {w0.shape}; "
            "need matrix (N, M) with prior (N,) and targets (M,)")
    M = A.shape[1]
    names = None if target_names is None else [str(n) for n in target_names]
    if names is not None and len(names) != M:
        raise CalibrationError(f"target_names has {len(names)} names for {M} targets")
    for label, arr in (("prior", w0), ("targets", t)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            what = _name(bad[0], names) if label == "targets" else f"record {bad[0]}"
            raise CalibrationError(
                f"{label} has {bad.size} NaN/inf value(s); first: {what} = {arr[bad[0]]}")
    if not np.all(np.isfinite(data)):
        raise CalibrationError(f"matrix has {int(np.sum(~np.isfinite(data)))} NaN/inf entries")
    neg = np.flatnonzero(w0 < 0)
    if neg.size:
        raise CalibrationError(
            f"prior has {neg.size} negative weight(s); first: record {neg[0]} = {w0[neg[0]]}")
    neg = np.flatnonzero(t < 0)
    if neg.size:
        raise CalibrationError(
            f"targets has {neg.size} negative value(s); first: "
            f"{_name(neg[0], names)} = {t[neg[0]]:.6g}; negate the column and the target")
    if penalty is not None and not (np.isfinite(penalty) and penalty > 0):
        raise CalibrationError(f"penalty must be a positive finite number or None, got {penalty}")
    if not (tol > 0) or int(max_iter) < 1:
        raise CalibrationError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")

    lo, hi = 0.0, np.inf
    if bounds is not None:
        lo, hi = (float(b) for b in bounds)
        if np.isnan(lo) or np.isnan(hi) or lo < 0 or lo > hi or hi <= 0:
            raise CalibrationError(
                f"bounds=(lo, hi) must satisfy 0 <= lo <= hi and hi > 0, got ({lo}, {hi})")
    if cap is not None and not (cap > 0):  # also rejects NaN
        raise CalibrationError(f"cap must be positive, got {cap}")
    lower = lo * w0
    upper = hi * w0 if np.isfinite(hi) else np.where(w0 > 0, np.inf, 0.0)
    if cap is not None:
        upper = np.minimum(upper, cap)
        bad = np.flatnonzero(upper < lower)
        if bad.size:
            i = bad[0]
            raise CalibrationError(
                f"cap={cap} is below the lower bound lo*prior for {bad.size} record(s); "
                f"first: record {i}, lo={lo} * prior={w0[i]:.6g} = {lower[i]:.6g}")

    reach_lo, reach_hi = _column_range(A, lower, upper)
    unreachable = (t > reach_hi * (1 + 1e-12)) | (t < reach_lo * (1 - 1e-12))
    if penalty is not None:
        # Soft targets trade errors against KL: an unreachable target is simply missed, unless
        # nothing at all can move it (an all-zero column or only zero-prior records).
        col_abs = abs(A).T @ (w0 > 0).astype(float) if sp.issparse(A) else np.abs(A).T @ (w0 > 0)
        unreachable &= (np.asarray(col_abs).ravel() == 0) & (t != 0)
    for j in np.flatnonzero(unreachable):
        col = A[:, [j]].toarray().ravel() if sp.issparse(A) else A[:, j]
        nz = col != 0
        if not nz.any():
            raise CalibrationError(
                f"{_name(j, names)} = {t[j]:.6g} but its column is all zero")
        if not np.any(nz & (w0 > 0)):
            raise CalibrationError(
                f"{_name(j, names)} = {t[j]:.6g} but every record in its column "
                f"({int(nz.sum())}) has zero prior weight, so keeps weight zero")
        limits = ", ".join(x for x in (f"cap={cap}" if cap is not None else "",
                                       f"bounds=({lo}, {hi})" if bounds is not None else "") if x)
        amax = np.abs(col).max()
        if t[j] > reach_hi[j]:
            reach = f"at most {reach_hi[j]:.6g}"
        else:
            reach = f"at least {reach_lo[j]:.6g}"
        extra = f"; cap x records x max entry = {cap * nz.sum() * amax:.6g}" if cap is not None else ""
        raise CalibrationError(
            f"{_name(j, names)} = {t[j]:.6g} is unreachable: with {limits or 'no bounds'} "
            f"its column sums to {reach} ({int(nz.sum())} records with a nonzero entry, "
            f"max entry {amax:.6g}{extra})")
    return A, t, w0, lower, upper, names


class _Dual:
    """Dual objective, gradient and Hessian in target-scaled multipliers ``lam = d * lam_orig``.

    Scaling column j by d_j (|t_j|, or the prior's absolute column total for a zero target)
    makes every gradient entry a relative target error, so one tolerance fits all targets.
    """

    def __init__(self, A, t, d, w0, lower, upper, ridge, groups=None, group_cap=None):
        self.A, self.w0, self.d, self.ridge = A, w0, d, ridge
        # The ridge is the soft targets' penalty conjugate: it acts on the first n_ridge multipliers
        # (the targets), never on an inequality's (set by calibrate when there are inequalities).
        self.n_ridge = len(d)
        self.nonneg = None  # mask of multipliers held >= 0 (inequality constraints), or None
        self.groups = groups  # None, or the group code of every row (0..G-1) whose total is capped
        if groups is not None:
            self.n_groups = int(groups.max()) + 1 if groups.size else 0
            self.log_cap = float(np.log(group_cap))
            self.group_cap = float(group_cap)
            self.log_w0 = np.log(w0)
            self.w0_group = np.bincount(groups, weights=w0, minlength=self.n_groups)
        self.sparse = sp.issparse(A)
        self.At = A.T.tocsr() if self.sparse else A.T  # sparse M x N: fast A^T w, A^T W A
        if self.sparse:
            self.rows = np.repeat(np.arange(A.shape[0], dtype=A.indptr.dtype), np.diff(A.indptr))
            self.A2t = self.At.multiply(self.At).tocsr()
        self._absA = None
        self.lower, self.upper = lower, upper
        self.c = t / d
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # zero priors: log(x/0)
            self.zlo = np.log(lower / w0)  # -inf where lower == 0
            self.zhi = np.log(upper / w0)  # +inf where uncapped

    def value(self, lam):
        """g(lam) = sum_i phi_i(a_i . lam) - lam . c + ridge/2 |lam|^2 (min g = -optimum),
        with z = A lam_orig and the weights w(lam)."""
        z = self.A @ (lam / self.d)
        if self.groups is not None:
            return self._group_value(lam, z)
        zc = np.clip(z, self.zlo, self.zhi)
        with np.errstate(over="ignore", invalid="ignore"):
            # w0 exp(log(upper / w0)) can land an ulp above upper: clip so a bound holds exactly.
            w = np.clip(self.w0 * np.exp(zc), self.lower, self.upper)
            # phi_i = sup_{l<=w<=u} w z - KL_i(w); expm1 keeps w - w0 accurate near the prior
            phi = np.sum(self.w0 * np.expm1(zc)) + np.sum(w * (z - zc))
        g = phi - lam @ self.c + 0.5 * self.ridge * (lam[:self.n_ridge] @ lam[:self.n_ridge])
        return (g if np.isfinite(g) else np.inf), z, w

    def _group_log_totals(self, z):
        """log U_g = log sum_{i in g} w0_i exp(z_i), by a per-group log-sum-exp (no overflow)."""
        v = self.log_w0 + z
        top = np.full(self.n_groups, -np.inf)
        np.maximum.at(top, self.groups, v)
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = np.bincount(self.groups, weights=np.exp(v - top[self.groups]), minlength=self.n_groups)
            return v, top + np.log(scaled)

    def _group_value(self, lam, z):
        v, log_u = self._group_log_totals(z)
        over = log_u > self.log_cap  # groups whose unconstrained total exceeds the cap
        with np.errstate(over="ignore", invalid="ignore"):
            w = np.where(over[self.groups], np.exp(v - log_u[self.groups] + self.log_cap), self.w0 * np.exp(z))
            under = ~over[self.groups]
            phi = (np.sum(self.w0[under] * np.expm1(z[under]))
                   + np.sum(self.group_cap * (1.0 + log_u[over] - self.log_cap) - self.w0_group[over]))
        g = phi - lam @ self.c + 0.5 * self.ridge * (lam[:self.n_ridge] @ lam[:self.n_ridge])
        return (g if np.isfinite(g) else np.inf), z, w

    def grad(self, lam, w):
        grad = self.At @ w / self.d - self.c
        grad[:self.n_ridge] += self.ridge * lam[:self.n_ridge]
        return grad

    def unbounded(self, p):
        """True if g decreases without bound along the ray lam + s p (s -> inf).

        As s grows, phi_i tends to a constant where a_i . p <= 0 (with slope lower_i *
        a_i . p), grows linearly with slope upper_i * a_i . p where a_i . p > 0 and capped,
        and exponentially where a_i . p > 0 uncapped. So with no uncapped record rising and
        a negative asymptotic slope the dual is unbounded: a Farkas certificate that the
        hard targets are infeasible. Changes of a_i . p below 1e-9 of the step's largest
        possible change count as zero: along such a ray the objective falls by many orders
        of magnitude before those weights move, so the targets are contradictory at least
        to working precision (a near-singular system with inconsistent targets).
        """
        q = p / self.d
        dz = self.A @ q
        if self._absA is None:
            self._absA = abs(self.A)
        noise = 1e-9 * np.max(self._absA @ np.abs(q), initial=0.0)
        if self.groups is not None:
            # A capped group's conjugate grows like cap * max_{i in g} dz_i along the ray (its
            # fastest-rising row takes the whole cap) and tends to a constant if none rises.
            rise = np.zeros(self.n_groups)
            np.maximum.at(rise, self.groups, np.where(dz > noise, dz, 0.0))
            terms = self.group_cap * rise
            slope = terms.sum() - p @ self.c
            return slope < -1e-9 * (np.abs(terms).sum() + np.abs(p).sum())
        up, down = dz > noise, dz < -noise
        if np.any(up & np.isinf(self.upper)):
            return False
        terms = np.concatenate([self.upper[up] * dz[up], self.lower[down] * dz[down]])
        slope = terms.sum() - p @ self.c
        # |c_j| <= 1; the step's full size (zero targets included) sets the rounding scale
        return slope < -1e-9 * (np.abs(terms).sum() + np.abs(p).sum())

    def hess(self, w, free):
        """Scaled dual Hessian D^-1 A^T diag(w_free) A D^-1 + ridge I, and the same with
        every current weight (used to scale columns whose records all sit at a bound)."""
        wf = np.where(free, w, 0.0)
        if self.sparse:
            Aw = sp.csr_array((self.A.data * wf[self.rows], self.A.indices, self.A.indptr),
                              shape=self.A.shape)
            H = (self.At @ Aw).toarray()
            hall = self.A2t @ w
        else:
            H, hall = np.zeros((self.A.shape[1],) * 2), np.zeros(self.A.shape[1])
            for s in range(0, self.A.shape[0], 8192):  # chunks bound the N x M temporaries
                blk = self.A[s:s + 8192]
                H += blk.T @ (blk * wf[s:s + 8192, None])
                hall += (blk * blk).T @ w[s:s + 8192]
        if self.groups is not None:
            # minus sum over capped groups of (A_g^T w_g)(A_g^T w_g)^T / cap: the within-group covariance
            totals = np.bincount(self.groups, weights=w, minlength=self.n_groups)
            capped = totals >= self.group_cap * (1 - 1e-12)
            member = capped[self.groups]
            if member.any():
                rows = np.flatnonzero(member)
                code = np.cumsum(capped) - 1
                S = sp.csr_array((w[rows], (code[self.groups[rows]], rows)), shape=(int(capped.sum()), self.A.shape[0]))
                B = S @ self.A
                B = B.toarray() if sp.issparse(B) else np.asarray(B)
                H -= (B.T @ B) / self.group_cap
        H /= np.outer(self.d, self.d)
        ridge = np.zeros(len(self.d))
        ridge[:self.n_ridge] = self.ridge
        H[np.diag_indices_from(H)] += ridge
        return H, hall / self.d ** 2 + ridge


def _newton_step(H, hall, grad, rho):
    """Solve (S H S + rho I) q = -S grad, p = S q, with Jacobi scaling S (Levenberg ridge rho)."""
    diag = np.maximum(np.diag(H), 1e-12 * hall)
    s = np.where(diag > 0, 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 1.0)
    Hs = H * np.outer(s, s)
    while True:
        Hs[np.diag_indices_from(Hs)] += rho
        try:
            return s * scipy.linalg.cho_solve(scipy.linalg.cho_factor(Hs), -s * grad), rho
        except np.linalg.LinAlgError:  # numerically singular: raise the ridge and retry
            Hs[np.diag_indices_from(Hs)] -= rho
            if rho >= _RIDGE_MAX:
                q = scipy.linalg.lstsq(Hs, -s * grad, cond=1e-12)[0]
                return s * q, rho
            rho = min(rho * 100, _RIDGE_MAX)


def _newton(dual, lam, penalty, tol, max_iter, kl_max, w0_sum, names, cols):
    """Damped semismooth Newton on ``dual`` from ``lam``: ``(lam, g, z, w, nit, reason)``
    (``reason`` empty on convergence)."""
    g, z, w = dual.value(lam)
    rho, nit, reason = _RIDGE_MIN, 0, ""
    nonneg = dual.nonneg  # multipliers of inequalities G^T w <= 0: kept >= 0 (projected Newton)
    while True:
        grad = dual.grad(lam, w)
        # An inequality's multiplier at 0 whose gradient pushes it below 0 is held there: the
        # inequality is met with room to spare, so it is out of this step (and of the error).
        held = None if nonneg is None else nonneg & (lam <= 0) & (grad > 0)
        pgrad = grad if held is None else np.where(held, 0.0, grad)
        err = np.max(np.abs(pgrad)) if grad.size else 0.0
        if err <= tol:
            break
        if nit >= max_iter:
            reason = f"iteration limit max_iter={max_iter} reached"
            break
        if penalty is None and -g > kl_max * (1 + 1e-9) + 1e-12 * w0_sum:
            reason = (f"dual objective {-g:.6g} exceeds the largest KL any weights within "
                      f"the bounds can have ({kl_max:.6g}), which proves the targets infeasible")
            break
        nit += 1
        free = (z > dual.zlo) & (z < dual.zhi)
        H, hall = dual.hess(w, free)
        slack = 1e-12 * (np.sum(w) + np.sum(dual.w0) + abs(lam @ dual.c))
        accepted = unbounded = False
        if held is not None and held.any():
            keep = ~held
            H, hall, step_grad = H[np.ix_(keep, keep)], hall[keep], grad[keep]
        else:
            keep, step_grad = None, grad
        while True:  # backtracking line search; on failure, raise the Levenberg ridge
            p, rho = _newton_step(H, hall, step_grad, rho)
            if keep is not None:
                full = np.zeros_like(lam)
                full[keep] = p
                p = full
            unbounded = penalty is None and nonneg is None and dual.unbounded(p)
            if unbounded:
                break
            alpha, accepted = 1.0, False
            for _ in range(60):  # Armijo backtracking (projected onto lam[nonneg] >= 0)
                trial = lam + alpha * p
                if nonneg is not None:
                    trial[nonneg] = np.maximum(trial[nonneg], 0.0)
                g_new, z_new, w_new = dual.value(trial)
                if g_new <= g + 1e-4 * (grad @ (trial - lam)) + slack:
                    accepted = True
                    break
                alpha *= 0.5
            if accepted or rho >= _RIDGE_MAX:
                break
            rho *= 100
        if unbounded:
            order = np.argsort(-np.abs(p))[:5]
            top = np.flatnonzero(cols)[order[np.abs(p[order]) > 1e-3 * np.abs(p).max()]]
            reason = ("the targets are contradictory: the dual objective decreases without "
                      "bound, so no weights within the bounds meet them all "
                      "(targets involved: " + ", ".join(
                          repr(names[j]) if names is not None else f"column {j}"
                          for j in top) + ")")
            break
        if not accepted:
            reason = "the line search could not decrease the dual objective"
            break
        # Levenberg-Marquardt: a full step relaxes the ridge; a heavily damped one (rows at a bound
        # leave directions with almost no curvature, so Newton overshoots by orders of magnitude)
        # raises it, so the next step is shorter and nearer a gradient step.
        if alpha == 1.0:
            rho = max(rho / 10, _RIDGE_MIN)
        elif alpha < 0.1 and nonneg is None:  # (with inequalities the projection shortens steps anyway)
            rho = min(rho * 100, _RIDGE_MAX)
        lam = trial
        g, z, w = g_new, z_new, w_new

    return lam, g, z, w, nit, reason


def _check_inequalities(inequalities, n: int, w0: np.ndarray):
    """``inequalities`` as a CSR (N, K) matrix with finite entries, and each column's absolute
    mass at the prior, ``sum_i |G_ik| w0_i`` (its scale). Raise CalibrationError."""
    G = sp.csr_array(inequalities, dtype=float)
    if G.ndim != 2 or G.shape[0] != n:
        raise CalibrationError(f"inequalities has shape {G.shape}; need (N={n}, K): one row per record")
    if not np.all(np.isfinite(G.data)):
        raise CalibrationError(f"inequalities has {int(np.sum(~np.isfinite(G.data)))} NaN/inf entries")
    return G, np.asarray(abs(G).T @ w0).ravel()


def calibrate(matrix, targets, prior, *, penalty=None, cap=None, bounds=None, tol=1e-8,
              max_iter=200, target_names=None, groups=None, inequalities=None) -> CalibrationResult:
    """Reweight ``prior`` to meet ``targets`` with minimal KL divergence from the prior.

    Args:
        matrix: (N, M) target matrix: row i holds record i's contribution to each target.
            scipy.sparse (any format) or dense array.
        targets: (M,) non-negative target values ``t``.
        prior: (N,) non-negative prior weights ``w0``. Zero-prior records keep weight
            zero; give them a small positive prior if they should be used.
        penalty: None for hard targets (``A^T w = t`` exactly). A positive number for soft
            targets: minimise ``penalty * KL(w||w0) / sum(w0) + sum_j (rel error_j)^2``;
            larger penalties keep the weights closer to the prior.
        cap: Absolute upper bound on every weight.
        bounds: ``(lo, hi)`` bounds on the ratio ``w / w0`` (as R survey::calibrate);
            combined with ``cap`` the upper bound is ``min(hi * w0, cap)``.
        tol: Hard: largest allowed relative target error. Soft: dual gradient tolerance.
        max_iter: Newton iteration limit.
        target_names: Optional names used in messages and kept on the result.
        groups: Optional (N,) group labels (e.g. :func:`weightreg.sources.source_ids`: a parent
            and its offspring share one). With ``cap``, the cap bounds each group's total weight
            ``sum_{i in g} w_i`` (and so every row); without ``cap`` groups change nothing. Not
            combined with ``bounds``.
        inequalities: Optional (N, K) matrix G of linear inequalities ``G^T w <= 0`` (e.g. the
            influence bounds of :mod:`weightreg.influence_bounds`), each met to ``tol`` relative
            to its column's absolute mass at the prior, ``sum_i |G_ik| w0_i``. Their multipliers
            (``>= 0``) join the dual, solved by projected Newton.

    Returns:
        A :class:`CalibrationResult`. A hard problem that cannot be met (contradictory
        targets, bounds too tight) gives ``success=False`` with a message naming the worst
        targets; call ``result.check()`` to turn that into an :class:`InfeasibleError`.

    Raises:
        CalibrationError: input that cannot work (shapes, NaN/inf or negative values,
            bad bounds, a target its column cannot reach under the bounds).
    """
    A, t, w0, lower, upper, names = _validate(
        matrix, targets, prior, penalty, cap, bounds, tol, max_iter, target_names)
    N, M = A.shape
    codes = None
    if groups is not None:
        labels = np.asarray(groups)
        if labels.shape != (N,):
            raise CalibrationError(f"groups has shape {labels.shape}; need one label per record ({N},)")
        if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
            raise CalibrationError("groups has NaN/inf labels; give every record a group (its own id if alone)")
        if bounds is not None and cap is not None:
            raise CalibrationError("groups (a cap on each group's total) cannot be combined with bounds= yet; "
                                   "pass one of them")
        if cap is not None:
            codes = np.unique(labels, return_inverse=True)[1].ravel()
            if penalty is None:
                _check_group_reach(A, t, w0, codes, cap, names)
    d_all = t.copy()
    if np.any(t == 0):  # zero target: measure errors against the prior's absolute column total
        d_all[t == 0] = np.asarray(abs(A).T @ w0).ravel()[t == 0]
    rows = w0 > 0
    cols = d_all > 0  # a zero target whose column only meets zero-prior records is met
    As = A[rows][:, cols] if not (rows.all() and cols.all()) else A
    if sp.issparse(As):
        As = sp.csr_array(As)
    ridge = 0.0 if penalty is None else 0.5 * penalty / w0.sum()
    kept_codes = None
    if codes is not None:
        kept_codes = np.unique(codes[rows], return_inverse=True)[1].ravel()
        lower = np.zeros(N)
        upper = np.where(w0 > 0, np.inf, 0.0)  # no row bound: the group's total is bounded instead
    n_t = int(cols.sum())
    t_dual, d_dual, G, g_cols = t[cols], d_all[cols], None, None
    if inequalities is not None:
        G, d_g = _check_inequalities(inequalities, N, w0)
        # An inequality whose records all have zero prior weight holds at w = 0 already.
        g_cols = d_g > 0
        Gs = G[rows][:, g_cols] if not (rows.all() and g_cols.all()) else G
        As = sp.hstack([sp.csr_array(As), -Gs], format="csr") if Gs.shape[1] else As
        t_dual = np.concatenate([t_dual, np.zeros(int(g_cols.sum()))])
        d_dual = np.concatenate([d_dual, d_g[g_cols]])
    dual = _Dual(As, t_dual, d_dual, w0[rows], lower[rows], upper[rows], ridge, groups=kept_codes, group_cap=cap)
    if G is not None and g_cols.any():
        dual.nonneg = np.arange(len(t_dual)) >= n_t
        dual.n_ridge = n_t

    # Any feasible w has KL <= kl_max, and the dual value -g(lam) is a lower bound on the
    # optimum, so -g > kl_max proves a hard problem infeasible (finite only with bounds).
    kl_max = np.inf
    p0 = w0[rows]
    if kept_codes is not None:  # every row of a capped group lies in [0, cap]
        kl_max = float(np.sum(np.maximum(_kl_terms(np.zeros_like(p0), p0), _kl_terms(np.full_like(p0, cap), p0))))
    elif np.all(np.isfinite(dual.zhi)):
        kl_max = float(np.sum(np.maximum(_kl_terms(lower[rows], p0), _kl_terms(upper[rows], p0))))

    lam, _, _, w, nit, reason = _newton(dual, np.zeros(len(t_dual)), penalty, tol, max_iter, kl_max, w0.sum(),
                                        names, cols)
    if reason and penalty is not None and nit >= max_iter:
        # Soft targets some of which the bounds keep far off: their multipliers grow like
        # error / ridge, and with rows at a bound the dual is nearly piecewise linear, so Newton
        # from zero can stall. Continuation: solve with a 1000x, 100x, 10x larger penalty first
        # (better conditioned), each from the last solution, then the penalty asked for.
        lam_c, total = np.zeros(len(t_dual)), 0
        for factor in (1000.0, 100.0, 10.0, 1.0):
            dual.ridge = 0.5 * penalty * factor / w0.sum()
            lam_c, _, _, w_c, n_c, reason_c = _newton(dual, lam_c, penalty, tol, max_iter, kl_max, w0.sum(),
                                                          names, cols)
            total += n_c
            if reason_c:
                break
        dual.ridge = ridge
        if not reason_c:
            lam, w, reason = lam_c, w_c, ""
        nit += total

    weights = np.zeros(N)
    weights[rows] = w
    if codes is not None:  # exp(v - log U + log cap) can sum an ulp above the cap: scale it back
        totals = np.bincount(codes, weights=weights)
        over = totals > cap
        weights[over[codes]] *= (cap / totals[over])[np.cumsum(over)[codes[over[codes]]] - 1]
    lam_orig = np.zeros(M)
    lam_orig[cols] = lam[:n_t] / dual.d[:n_t]
    ineq = {}
    if G is not None:
        nu = np.zeros(G.shape[1])
        nu[g_cols] = lam[n_t:] / dual.d[n_t:]
        scale = np.where(g_cols, abs(G).T @ w0, 1.0)
        ineq = {"inequality_multipliers": nu, "inequality_values": np.asarray(G.T @ weights).ravel() / scale}
    achieved = np.asarray(A.T @ weights).ravel()
    denom = np.where(d_all > 0, d_all, 1.0)
    rel = (achieved - t) / denom
    abs_rel = np.abs(rel)
    max_rel = float(abs_rel.max(initial=0.0))
    success = not reason
    kind = "hard" if penalty is None else f"soft (penalty={penalty:g})"
    if ineq:
        values = ineq["inequality_values"]
        kind += (f", {len(values)} inequalities ({int((ineq['inequality_multipliers'] > 0).sum())} binding, "
                 f"largest value {values.max(initial=-np.inf):.3g})")
    if success:
        message = (f"converged: {kind} targets, {nit} Newton iteration(s), "
                   f"max relative target error {max_rel:.3g}")
    else:
        worst = np.argsort(-abs_rel)[:5]
        lines = "; ".join(
            f"{names[j] if names is not None else f'column {j}'}: achieved {achieved[j]:.6g} "
            f"vs target {t[j]:.6g} (rel error {rel[j]:+.3g})" for j in worst)
        hint = ("the targets may be contradictory or the bounds too tight; pass penalty= "
                "(e.g. penalty=1e-2) for soft targets that trade off errors against KL"
                if penalty is None else "raise max_iter or the penalty")
        message = (f"{kind} calibration failed after {nit} Newton iteration(s): {reason}; "
                   f"max relative target error {max_rel:.3g}. Largest residuals: {lines}. "
                   f"{hint[0].upper() + hint[1:]}.")
    return CalibrationResult(
        weights=weights, success=success, message=message, nit=nit, max_rel_error=max_rel,
        mean_rel_error=float(abs_rel.mean()) if M else 0.0, kl=kl_divergence(weights, w0),
        multipliers=lam_orig, rel_errors=rel, target_names=names, **ineq)
