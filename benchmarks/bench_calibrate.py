"""Benchmark weightreg.calibrate against cvxpy+Clarabel and PolicyEngine-style Adam reweighting.

Run by hand (one thread per BLAS is what the package defaults to; set it before numpy loads)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        PYTHONPATH=src python benchmarks/bench_calibrate.py [--quick] [--npz FILE]

Problems: (a) 53,508 records x 300 targets with a binding cap (survey-like: region x age
counts and regional income totals); (b) 500,000 records x 1,000 sparse targets, about a dozen
per record; (c) optionally a problem read from ``--npz`` (``matrix`` dense, or the CSR parts
``data``/``indices``/``indptr``/``shape`` as written by ``scipy.sparse.save_npz``; optional
``targets``, ``prior``, ``cap``). Targets of (a) and (b) are ``A^T w_true`` for a perturbed
prior, so the hard problems are feasible. Each method runs on the same problem in the same
process; figures go to ``benchmarks/results/calibrate.json`` and a table is printed.

cvxpy is skipped above ``--cvxpy-max-records`` (default 100,000): on (b) it took about 8
minutes. To add it to the results file in a separate run::

    python benchmarks/bench_calibrate.py --only b --methods cvxpy \
        --cvxpy-max-records 10000000 --merge
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from weightreg.calibrate import calibrate, kl_divergence

RESULTS = Path(__file__).resolve().parent / "results" / "calibrate.json"


# ------------------------------------------------------------------ problems

def survey_like(n, n_regions=12, n_ages=18, n_incomes=7, seed=0):
    """Households with 1-5 people: counts by region x age band, income totals by region x type."""
    rng = np.random.default_rng(seed)
    region = rng.integers(0, n_regions, n)
    size = rng.integers(1, 6, n)
    rows, cols, vals = [], [], []
    for k in range(5):  # person k of each household that has one
        has = size > k
        age = rng.integers(0, n_ages, n)
        rows.append(np.flatnonzero(has))
        cols.append((region * n_ages + age)[has])
        vals.append(np.ones(has.sum()))
    base = n_regions * n_ages
    for k in range(n_incomes):  # each household has each income type with prob 0.3
        has = rng.random(n) < 0.3
        rows.append(np.flatnonzero(has))
        cols.append(base + region[has] * n_incomes + k)
        vals.append(rng.lognormal(9, 1, has.sum()))
    m = base + n_regions * n_incomes
    A = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, m))
    A.sum_duplicates()
    w0 = rng.uniform(200, 1000, n)
    w_true = w0 * np.exp(rng.normal(0, 0.3, n))
    cap = float(np.quantile(w_true, 0.99))
    w_true = np.minimum(w_true, cap)
    return {"name": f"(a) survey-like {n:,} x {m} with cap", "A": A, "t": A.T @ w_true, "w0": w0, "cap": cap}


def random_sparse(n, m, per_row=12, seed=1):
    """Each record in ~per_row targets (popular targets more often); half counts, half amounts."""
    rng = np.random.default_rng(seed)
    popularity = rng.pareto(1.5, m) + 1
    cols = rng.choice(m, size=(n, per_row), p=popularity / popularity.sum())
    amounts = np.where(np.arange(m) % 2 == 0, 1.0, 0.0)[cols]
    vals = np.where(amounts == 1.0, 1.0, rng.lognormal(8, 1, (n, per_row)))
    A = sp.csr_array((vals.ravel(), (np.repeat(np.arange(n), per_row), cols.ravel())), shape=(n, m))
    A.sum_duplicates()
    w0 = rng.uniform(20, 100, n)
    w_true = w0 * np.exp(rng.normal(0, 0.3, n))
    return {"name": f"(b) random sparse {n:,} x {m}", "A": A, "t": A.T @ w_true, "w0": w0, "cap": None}


def from_npz(path, cap=None):
    z = np.load(path, allow_pickle=False)
    if "matrix" in z:
        A = z["matrix"]
    else:
        A = sp.csr_array((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    w0 = z["prior"] if "prior" in z else np.ones(A.shape[0])
    t = z["targets"] if "targets" in z else A.T @ w0
    if cap is None and "cap" in z:
        cap = float(z["cap"])
    return {"name": f"(c) {Path(path).name} {A.shape[0]:,} x {A.shape[1]}", "A": A, "t": np.asarray(t, float),
            "w0": np.asarray(w0, float), "cap": cap}


# ------------------------------------------------------------------ methods

def ours(p):
    res = calibrate(p["A"], p["t"], p["w0"], cap=p["cap"])
    return res.weights, {"iterations": res.nit, "success": bool(res.success)}


def cvxpy_clarabel(p):
    """KL(w||w0) with w = w0 * r (ratios near 1 help the conic solver), relative constraints."""
    import cvxpy as cp

    A, t, w0 = sp.csr_array(p["A"]), p["t"], p["w0"]
    B = (A.multiply(w0[:, None]) / t[None, :]).T.tocsr()  # (A/t)^T diag(w0): B r = 1
    r = cp.Variable(len(w0))
    cons = [B @ r == 1]
    if p["cap"] is not None:
        cons.append(r <= p["cap"] / w0)
    prob = cp.Problem(cp.Minimize(w0 @ cp.kl_div(r, 1)), cons)
    prob.solve(solver=cp.CLARABEL)
    stats = prob.solver_stats
    return w0 * np.maximum(r.value, 0), {"iterations": stats.num_iters, "success": prob.status == "optimal",
                                         "solver_seconds": stats.solve_time, "status": prob.status}


def adam_policyengine(p, epochs=2000, lr=0.1):
    """PolicyEngine's reweighting: Adam on log-weights, mean squared relative error, fixed epochs.
    A cap, if any, is enforced by clamping the log-weights after each step."""
    A, t, w0 = p["A"], p["t"], p["w0"]
    At = A.T.tocsr() if sp.issparse(A) else A.T
    keep = w0 > 0
    logw = np.where(keep, np.log(np.where(keep, w0, 1.0)), -np.inf)
    hi = np.log(p["cap"]) if p["cap"] is not None else np.inf
    m1, m2 = np.zeros_like(logw), np.zeros_like(logw)
    b1, b2, eps, M = 0.9, 0.999, 1e-8, len(t)
    for k in range(1, epochs + 1):
        w = np.exp(logw)
        r = (At @ w - t) / t
        g = (A @ (2 * r / (t * M))) * w
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        step = lr * (m1 / (1 - b1**k)) / (np.sqrt(m2 / (1 - b2**k)) + eps)
        logw = np.minimum(np.where(keep, logw - step, -np.inf), hi)
    return np.exp(logw), {"iterations": epochs, "success": None}


# ------------------------------------------------------------------ measurement

def _proc_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def measure(fn, p, **kw):
    """Run fn(p); return weights, wall time and the peak resident memory above the start."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to current RSS
        rss0 = _proc_kb("VmRSS")
    except OSError:
        rss0 = None
    t0 = time.perf_counter()
    w, info = fn(p, **kw)
    seconds = time.perf_counter() - t0
    peak = (_proc_kb("VmHWM") - rss0) / 1024 if rss0 is not None else None
    A, t, w0 = p["A"], p["t"], p["w0"]
    rel = np.abs(A.T @ w - t) / np.abs(t)
    return {**info, "_weights": w, "seconds": round(seconds, 3), "peak_mem_mb": None if peak is None else round(peak, 1),
            "max_rel_error": float(rel.max()), "mean_rel_error": float(rel.mean()),
            "kl": kl_divergence(w, w0), "kish_ess": float(w.sum() ** 2 / (w @ w)),
            "max_weight": float(w.max()),
            "cap_violation": None if p["cap"] is None else float(max(w.max() - p["cap"], 0.0)),
            "records_at_cap": None if p["cap"] is None else int(np.sum(w >= p["cap"] * (1 - 1e-9)))}


def run_problem(p, args, cvxpy_ok, cvxpy_skip_reason=None):
    A = p["A"]
    row = {"problem": p["name"], "records": A.shape[0], "targets": A.shape[1],
           "nnz": int(A.nnz if sp.issparse(A) else np.count_nonzero(A)), "cap": p["cap"], "methods": {}}
    print(f"\n== {p['name']}  (nnz {row['nnz']:,})", flush=True)
    row["methods"]["weightreg"] = r = measure(ours, p)
    print(f"  weightreg done in {r['seconds']} s", flush=True)
    if cvxpy_ok and "cvxpy" in args.methods:
        try:
            row["methods"]["cvxpy_clarabel"] = r = measure(cvxpy_clarabel, p)
            print(f"  cvxpy done in {r['seconds']} s", flush=True)
        except Exception as exc:  # noqa: BLE001 - report the baseline's failure, keep benchmarking
            row["methods"]["cvxpy_clarabel"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    else:
        reason = cvxpy_skip_reason or ("not in --methods" if "cvxpy" not in args.methods
                                       else "cvxpy not installed")
        row["methods"]["cvxpy_clarabel"] = {"skipped": reason}
    if "adam" in args.methods:
        row["methods"]["adam_policyengine"] = r = measure(adam_policyengine, p, epochs=args.adam_epochs)
        print(f"  adam done in {r['seconds']} s", flush=True)
    else:
        row["methods"]["adam_policyengine"] = {"skipped": "not in --methods"}
    cv, me = row["methods"]["cvxpy_clarabel"], row["methods"]["weightreg"]
    if "seconds" in cv:
        row["speedup_vs_cvxpy"] = round(cv["seconds"] / me["seconds"], 1)
        # how far apart the two KL optima are, as a ratio to the prior weight
        row["max_weight_diff_vs_cvxpy"] = float(np.max(np.abs(me["_weights"] - cv["_weights"]) / p["w0"]))
    for r in row["methods"].values():
        r.pop("_weights", None)
    return row


def print_table(rows):
    head = f"{'problem':44} {'method':18} {'seconds':>9} {'iters':>6} {'max rel err':>12} {'KL':>12} {'Kish ESS':>10} {'peak MB':>8}"
    print("\n" + head + "\n" + "-" * len(head))
    for row in rows:
        for name, r in row["methods"].items():
            if "skipped" in r:
                print(f"{row['problem'][:44]:44} {name:18} skipped: {r['skipped']}")
                continue
            print(f"{row['problem'][:44]:44} {name:18} {r['seconds']:9.2f} {r['iterations']:6d} "
                  f"{r['max_rel_error']:12.2e} {r['kl']:12.5g} {r['kish_ess']:10.0f} "
                  f"{r['peak_mem_mb'] if r['peak_mem_mb'] is not None else float('nan'):8.1f}")
        if "speedup_vs_cvxpy" in row:
            print(f"{'':44} weightreg is {row['speedup_vs_cvxpy']}x faster than cvxpy+Clarabel; "
                  f"weights differ by at most {row['max_weight_diff_vs_cvxpy']:.1e} x prior")


def merge(old, rows, how):
    """Put the measured (not skipped) methods of rows into old's matching problems."""
    by_name = {r["problem"]: r for r in old["problems"]}
    for row in rows:
        target = by_name.get(row["problem"])
        if target is None:
            old["problems"].append(row)
            continue
        for name, r in row["methods"].items():
            if "skipped" not in r:
                target["methods"][name] = {**r, "run": f"separate run: {how}"}
        cv, me = target["methods"].get("cvxpy_clarabel", {}), target["methods"]["weightreg"]
        if "seconds" in cv:
            target["speedup_vs_cvxpy"] = round(cv["seconds"] / me["seconds"], 1)
            if "max_weight_diff_vs_cvxpy" in row:
                target["max_weight_diff_vs_cvxpy"] = row["max_weight_diff_vs_cvxpy"]
    return old


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script works")
    ap.add_argument("--npz", help="also run on this targets matrix (see module docstring)")
    ap.add_argument("--cap", type=float, help="cap for the --npz problem")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these problems")
    ap.add_argument("--methods", default="weightreg,cvxpy,adam",
                    help="baselines to run besides weightreg (comma-separated: cvxpy, adam)")
    ap.add_argument("--cvxpy-max-records", type=int, default=100_000,
                    help="skip cvxpy above this many records (500k records take Clarabel too long)")
    ap.add_argument("--adam-epochs", type=int, default=2000)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--merge", action="store_true",
                    help="merge into an existing --out file: measured methods replace that problem's "
                         "entries (e.g. a separate run of the slow cvxpy baseline on (b))")
    args = ap.parse_args(argv)
    args.methods = set(args.methods.split(","))
    try:
        import cvxpy  # noqa: F401
        have_cvxpy = True
    except ImportError:
        have_cvxpy = False

    problems = []
    only = set(args.only or ["a", "b", "c"])
    if "a" in only:
        problems.append(lambda: survey_like(5_000 if args.quick else 53_508, n_regions=4 if args.quick else 12))
    if "b" in only:
        problems.append(lambda: random_sparse(20_000 if args.quick else 500_000, 200 if args.quick else 1_000))
    if args.npz and "c" in only:
        problems.append(lambda: from_npz(args.npz, args.cap))

    rows = []
    for make in problems:
        p = make()
        n = p["A"].shape[0]
        ok = have_cvxpy and n <= args.cvxpy_max_records
        why = None if ok or not have_cvxpy else (
            f"{n:,} records > --cvxpy-max-records={args.cvxpy_max_records:,}: Clarabel needs one "
            "exponential cone per record; on (b) it takes minutes (add it with --merge, see docstring)")
        rows.append(run_problem(p, args, ok, why))
    print_table(rows)
    out = {"quick": args.quick, "python": platform.python_version(), "numpy": np.__version__,
           "threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(), "problems": rows}
    if args.merge and Path(args.out).exists():
        out = merge(json.loads(Path(args.out).read_text()), rows, " ".join(sys.argv[1:]))
        print_table(out["problems"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
