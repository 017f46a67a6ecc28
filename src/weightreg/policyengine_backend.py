"""PolicyEngine UK as the simulator behind the reporting surface (``simulator: policyengine``).

Needs the optional extra: ``pip install "weightreg[policyengine]"`` (policyengine-uk 2.162.10).
Without it, :func:`require_policyengine` raises :class:`~weightreg.errors.OptionalDependencyError`
saying so; nothing else in weightreg imports policyengine_uk.

How the surface is computed:

* the survey in memory becomes a ``policyengine_uk.data.UKSingleYearDataset`` (its three tables
  and its year, as :func:`weightreg.policyengine_format.write_survey` would write them), and a
  ``policyengine_uk.Microsimulation`` runs over it;
* each metric is ``calculate(metric, year, map_to="household", unweighted=True)``: PolicyEngine's
  own variable of that name, one unweighted value per household in the survey's household order.
  A metric PolicyEngine does not know falls back, as with the builtin model, to a household or
  person column of the survey (not responding to reforms); the income deciles use
  ``equiv_household_net_income``;
* reforms are dicts over PolicyEngine's own parameter paths (``gov.hmrc.income_tax.rates.uk[0].rate``)
  with the same entries as builtin reforms: a new value, ``{"multiply": m}``, ``{"add": a}`` or
  ``{"value": v}``, taken against the baseline value for the survey's year. They become
  PolicyEngine reform dicts ``{path: {"2025": value}}`` (that fiscal year only) before anything
  is simulated, so an unknown path fails at once, naming it. The random reforms scale paths drawn
  from ``policyengine.reform_paths`` in params (:func:`reforms_from_params`);
* in this process, one ``Microsimulation`` gives the baseline and then each reform in turn, its
  parameters reset and reformed in place (:func:`simulate_in_place`: bit-identical to a fresh
  reform simulation, and cheaper since building a simulation is a large part of its cost); on Dask
  (:mod:`weightreg.sweep`) the baseline and reforms run as batches, one simulation per task, with
  identical results whatever the number of workers.

Two properties of PolicyEngine UK that users of the surface must know (ARCHITECTURE.md):

* some random draws (take-up of benefits and the like) are hashed from entity ids, so an exact
  copy of a household under new ids (an offspring) can get different draws unless the draw
  variables are stored in the file as inputs;
* some household net income components (business rates, corporate SDLT incidence) are shared out
  by the weighted totals of all households, so a household's metric changes when *other*
  households' weights change: a surface computed under one set of weights is exact only for those
  weights, and a loop that changes weights must re-simulate to stay exact.

Measured on a 2-core machine (policyengine-uk 2.162.10, offline), as the issue reported it: a
53,508-household baseline takes about 21 s and a reform 31-37 s applied in place on one simulation
(46-67 s as a separate reform simulation), peak memory 3.3 GB, growing about 40 MB per reform
inside one process. On the embedded world, ``benchmarks/bench_policyengine_sweep.py`` measures
this module's sweep (README).
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from types import SimpleNamespace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import OptionalDependencyError, ParameterError

__all__ = [
    "INSTALL_HINT",
    "DECILE_VARIABLE",
    "DEFAULT_REFORM_PATHS",
    "policyengine_available",
    "require_policyengine",
    "reforms_from_params",
    "to_policyengine_reform",
    "survey_dataset",
    "calculate_metrics",
    "simulate_in_place",
    "calculate_batch",
    "simulate_surface_policyengine",
]

INSTALL_HINT = 'pip install "weightreg[policyengine]"'
#: The household variable whose baseline values cut the income deciles.
DECILE_VARIABLE = "equiv_household_net_income"
#: Reform paths used when params give none (valid in policyengine-uk 2.162.10).
DEFAULT_REFORM_PATHS: tuple[str, ...] = (
    "gov.hmrc.income_tax.allowances.personal_allowance.amount",
    "gov.hmrc.income_tax.rates.uk[0].rate",
    "gov.hmrc.income_tax.rates.uk[1].rate",
    "gov.hmrc.income_tax.rates.uk[2].rate",
    "gov.hmrc.income_tax.rates.uk[1].threshold",
    "gov.hmrc.national_insurance.class_1.rates.employee.main",
    "gov.hmrc.national_insurance.class_1.rates.employee.additional",
    "gov.hmrc.child_benefit.amount.eldest",
    "gov.hmrc.child_benefit.amount.additional",
    "gov.dwp.universal_credit.means_test.reduction_rate",
    "gov.dwp.universal_credit.standard_allowance.amount.SINGLE_OLD",
    "gov.dwp.universal_credit.standard_allowance.amount.COUPLE_OLD",
    "gov.dwp.universal_credit.elements.child.amount",
    "gov.dwp.pension_credit.guarantee_credit.minimum_guarantee.SINGLE",
    "gov.dwp.pension_credit.guarantee_credit.minimum_guarantee.COUPLE",
)


def policyengine_available() -> bool:
    """Whether ``policyengine_uk`` can be imported here."""
    return importlib.util.find_spec("policyengine_uk") is not None


def require_policyengine() -> None:
    """Raise :class:`OptionalDependencyError` (with the install command) unless policyengine_uk imports."""
    if not policyengine_available():
        raise OptionalDependencyError(
            "simulator: policyengine needs PolicyEngine UK, which is not installed. Install the extra with "
            f"`{INSTALL_HINT}` (policyengine-uk 2.162.10, about 1 GB with its dependencies), or use "
            "simulator: builtin."
        )
    try:
        import policyengine_uk  # noqa: F401
    except Exception as exc:  # installed but broken: say so rather than fail deep inside
        raise OptionalDependencyError(
            f"simulator: policyengine: policyengine_uk is installed but fails to import "
            f"({type(exc).__name__}: {exc}); reinstall it with `{INSTALL_HINT}`."
        ) from exc


# ---- reforms ----------------------------------------------------------------------------------
def reforms_from_params(params: Mapping, seed: int | None = None, count: int | None = None) -> list[dict]:
    """The random reforms the params describe, over ``policyengine.reform_paths``.

    ``reforms.count`` reforms drawn with ``reforms.seed`` (``count`` and ``seed`` override them, as
    for evaluate's fresh reforms), each scaling 2-4 distinct paths (fewer
    when fewer are listed) by multipliers from U(``reforms.low``, ``reforms.high``), as for the
    builtin model.
    Validity of the paths is checked against PolicyEngine's parameters when they are applied.
    """
    from .parameters import random_reforms

    section = params.get("reforms") or {}
    paths = ((params.get("policyengine") or {}).get("reform_paths")) or DEFAULT_REFORM_PATHS
    if isinstance(paths, str) or not all(isinstance(p, str) and p for p in paths):
        raise ParameterError(f"policyengine.reform_paths = {paths!r} must be a list of PolicyEngine parameter paths")
    paths = list(dict.fromkeys(paths))
    return random_reforms(
        int(section.get("count", 32) if count is None else count),
        np.random.default_rng(int(section.get("seed", 0) if seed is None else seed)),
        low=float(section.get("low", 0.8)),
        high=float(section.get("high", 1.2)),
        n_params=(min(2, len(paths)), min(4, len(paths))),
        paths=paths,
        valid_paths=paths,
    )


def _parameter(root, path: str):
    from policyengine_core.parameters import Parameter

    try:
        node = root.get_child(path)
    except Exception:
        node = None
    if node is None:
        raise ParameterError(
            f"unknown PolicyEngine UK parameter path {path!r}; give a path of policyengine_uk's parameter "
            "tree such as 'gov.hmrc.income_tax.rates.uk[0].rate' (policyengine.reform_paths in params)"
        )
    if not isinstance(node, Parameter):
        children = list(getattr(node, "children", {}) or {})[:12]
        raise ParameterError(
            f"PolicyEngine UK path {path!r} is a parameter group, not a parameter; its children include "
            f"{', '.join(children)}"
        )
    return node


def to_policyengine_reform(reform: Mapping, year, root=None) -> dict:
    """A weightreg reform over PolicyEngine paths as a PolicyEngine reform dict for fiscal ``year``.

    ``{"gov.hmrc.income_tax.rates.uk[0].rate": {"multiply": 1.1}}`` with year 2025 becomes
    ``{"gov.hmrc.income_tax.rates.uk[0].rate": {"2025": 0.22}}``.

    Raises:
        ParameterError: an unknown path or a group (naming it), or a malformed entry.
    """
    from .parameters import _reformed_value

    if not isinstance(reform, Mapping):
        raise ParameterError(f"a reform must be a mapping of PolicyEngine parameter paths, got {type(reform).__name__}")
    if root is None:
        root = _parameter_root()
    year = str(year)[:4]
    out = {}
    for path, change in reform.items():
        node = _parameter(root, str(path))
        base = node(f"{year}-01-01")
        if isinstance(base, (bool, np.bool_)) or not isinstance(base, (int, float, np.integer, np.floating)):
            raise ParameterError(f"PolicyEngine UK parameter {path!r} is {base!r}, not a number; it cannot be scaled")
        out[str(path)] = {year: _reformed_value(str(path), float(base), change)}
    return out


def _parameter_root():
    require_policyengine()
    from policyengine_uk import CountryTaxBenefitSystem

    return CountryTaxBenefitSystem().parameters


# ---- simulation -------------------------------------------------------------------------------
def survey_dataset(person, benunit, household, year):
    """A ``UKSingleYearDataset`` over copies of the three tables for fiscal ``year``."""
    from policyengine_uk.data import UKSingleYearDataset

    if person.attrs.get("employment_income_name") == "employment_income_before_lsr":
        person = person.rename(columns={"employment_income": "employment_income_before_lsr"})
    return UKSingleYearDataset(
        person=person.copy(), benunit=benunit.copy(), household=household.copy(), fiscal_year=int(str(year)[:4])
    )


def calculate_metrics(shared, pe_reform: Mapping | None) -> dict[str, np.ndarray]:
    """One fresh simulation: ``{variable: unweighted household values}`` under ``pe_reform``.

    ``shared`` is ``(person, benunit, household, year, variables)``; ``pe_reform`` a PolicyEngine
    reform dict or ``None`` for the baseline. The sweep itself uses :func:`simulate_in_place`,
    which gives the same arrays bit for bit (``tests/test_policyengine_backend.py``) in a fraction
    of the time; this is the reference it is checked against.
    """
    from policyengine_uk import Microsimulation

    person, benunit, household, year, variables = shared
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PolicyEngine warns about inputs it does not use
        sim = Microsimulation(dataset=survey_dataset(person, benunit, household, year), reform=pe_reform or None)
        return _calculate(sim, variables, int(str(year)[:4]))


def _calculate(sim, variables, period: int) -> dict[str, np.ndarray]:
    return {
        name: np.asarray(sim.calculate(name, period, map_to="household", unweighted=True), dtype=float)
        for name in variables
    }


def simulate_in_place(shared, pe_reforms: Sequence[Mapping | None]) -> Iterator[dict[str, np.ndarray]]:
    """Per reform in turn (``None``: the baseline), ``{variable: unweighted household values}``,
    from one simulation whose parameters are reset and reformed in place.

    Building a ``Microsimulation`` (reading the dataset, uprating, the construction-time reforms)
    is most of a fresh reform simulation's cost, so each reform is applied to the one simulation
    instead: its parameter tree is reset to a copy taken right after construction, and
    ``apply_reform`` applies the reform and drops every computed value. Reforms therefore never
    stack, and each result equals a fresh ``Microsimulation(dataset, reform=...)``'s bit for bit.
    Only numeric parameter changes are applied this way (:func:`to_policyengine_reform` admits
    nothing else), so no construction-time structural reform is skipped.

    Memory grows about 40 MB per reform in one process (PolicyEngine's own caches); a Dask task
    runs one batch and its worker returns the memory.
    """
    from policyengine_uk import Microsimulation

    person, benunit, household, year, variables = shared
    period = int(str(year)[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = Microsimulation(dataset=survey_dataset(person, benunit, household, year))
    system = sim.tax_benefit_system
    pristine = system.parameters.clone()
    reformed = False
    for pe_reform in pe_reforms:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if pe_reform or reformed:
                system.parameters = pristine.clone()
                system._parameters_at_instant_cache = {}
                sim.apply_reform(dict(pe_reform or {}))  # an empty reform still drops computed values
                reformed = bool(pe_reform)
            yield _calculate(sim, variables, period)


def calculate_batch(shared, pe_reforms: Sequence[Mapping | None]) -> list[dict[str, np.ndarray]]:
    """A Dask task: :func:`simulate_in_place` over one batch of reforms, as a list."""
    return list(simulate_in_place(shared, pe_reforms))


def _batches(items: list, n_batches: int) -> list[list]:
    """``items`` cut into ``n_batches`` contiguous runs of near-equal length (order kept)."""
    n_batches = max(1, min(int(n_batches), len(items)))
    edges = np.linspace(0, len(items), n_batches + 1).round().astype(int)
    return [items[a:b] for a, b in zip(edges[:-1], edges[1:])]


def simulate_surface_policyengine(
    survey,
    metrics: Sequence[str] | None = None,
    reforms: Sequence[Mapping] = (),
    *,
    dimensions: Sequence[str] | None = None,
    age_bands: Sequence[int] | None = None,
    n_deciles: int = 10,
    progress: bool = False,
    sweep=None,
):
    """:func:`weightreg.diagnose.simulate_surface` with PolicyEngine UK as the simulator.

    Args:
        survey: the survey.
        metrics: household metrics (PolicyEngine variable names, else survey columns).
        reforms: reforms over PolicyEngine parameter paths (see :func:`to_policyengine_reform`).
        dimensions, age_bands, n_deciles: the slices, as for the builtin model.
        progress: a progress bar over reforms.
        sweep: a :class:`~weightreg.sweep.SweepSettings` or ``distributed.Client`` to run the
            reforms as Dask tasks; ``None`` runs them in this process.

    Raises:
        OptionalDependencyError: policyengine_uk is not installed.
        ParameterError: an unknown PolicyEngine path in a reform (naming it and the reform).
    """
    import importlib

    D = importlib.import_module("weightreg.diagnose")  # the module: weightreg.diagnose is the function
    require_policyengine()
    from policyengine_uk import CountryTaxBenefitSystem

    start = time.perf_counter()
    metrics = list(D.DEFAULT_METRICS if metrics is None else metrics)
    dimensions = tuple(D.DEFAULT_DIMENSIONS if dimensions is None else dimensions)
    age_bands = D._check_age_bands(D.DEFAULT_AGE_BANDS if age_bands is None else age_bands)
    if len(set(metrics)) != len(metrics):
        dup = sorted({m for m in metrics if metrics.count(m) > 1})
        raise ParameterError(f"metrics lists {dup} more than once; give each metric once")
    if isinstance(n_deciles, bool) or not isinstance(n_deciles, (int, np.integer)) or n_deciles < 1:
        raise ParameterError(f"n_deciles={n_deciles!r} must be a positive integer (10 for deciles)")
    system = CountryTaxBenefitSystem()
    year = str(survey.time_period)
    reforms = [dict(r) for r in reforms]
    pe_reforms = []
    for k, reform in enumerate(reforms):  # translate every reform before simulating anything
        try:
            pe_reforms.append(to_policyengine_reform(reform, year, system.parameters))
        except ParameterError as exc:
            raise ParameterError(f"reform {k} ({reform!r}) failed to apply: {exc}") from None

    known = set(system.variables)
    simulated = [m for m in metrics if m in known and _input_present(m, survey, D)]
    shared = (survey.person, survey.benunit, survey.household, year, tuple(simulated) + (DECILE_VARIABLE,))
    # The baseline, then each reform: in process on one simulation, reformed in place; on Dask as
    # batches, one simulation per task, the baseline heading the first batch. Every item costs the same
    # there, so one simulation is built per batch and none in this process.
    items = [None] + (pe_reforms if simulated else [])
    if sweep is not None and len(items) > 1:
        outcomes = iter(_sweep_on_dask(shared, items, sweep, progress))
    else:
        outcomes = iter(tqdm(simulate_in_place(shared, items), total=len(items), desc="simulations",
                             disable=not progress))
    base = next(outcomes)
    result = SimpleNamespace(household=pd.DataFrame({k: base[k] for k in simulated}), missing_inputs=())
    ph = survey.person_household_index()
    used, rows, is_sim, dropped = [], [], [], {}
    for name in metrics:
        values, sim, reason = D._metric_values(name, result, survey, ph)
        if reason is not None:
            warnings.warn(f"diagnose: dropping metric {name!r}: {reason}", D.MetricDroppedWarning, stacklevel=2)
            dropped[name] = reason
            continue
        D._check_finite(name, values, survey, "baseline metric")
        used.append(name)
        rows.append(values)
        is_sim.append(sim)
    if not used:
        raise ParameterError(f"no metric can be computed on this survey (dropped: {dropped})")
    decile_income = base[DECILE_VARIABLE]
    slices, dropped_dims = D._build_slices(survey, dimensions, age_bands, decile_income, int(n_deciles))

    n, m = survey.n_households, len(used)
    baseline = np.vstack(rows)
    deltas = np.zeros((len(reforms), m, n))
    sim_rows = [i for i, s in enumerate(is_sim) if s]
    for k, values_by_name in enumerate(outcomes):
        for i in sim_rows:
            values = values_by_name[used[i]]
            D._check_finite(used[i], values, survey, f"reform {k} metric")
            np.subtract(values, baseline[i], out=deltas[k, i])
    return D.surface_data(survey, used, baseline, deltas, reforms, slices, decile_income, n_deciles, dropped,
                          dropped_dims, start)


def _sweep_on_dask(shared, pe_reforms: list, sweep, progress: bool) -> list[dict[str, np.ndarray]]:
    """``pe_reforms`` (``None``: the baseline) as Dask tasks of :func:`calculate_batch`, results
    flattened back into their order.

    ``sweep`` is a :class:`~weightreg.sweep.SweepSettings` (a local cluster or a scheduler) or a
    ``distributed.Client``. Reforms are cut into ``reforms_per_task``-sized batches, by default one
    batch per worker, since each batch pays for building one simulation.
    """
    from .sweep import SweepSettings, dask_client, map_reforms

    def run(client, settings):
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        per_task = getattr(settings, "reforms_per_task", None) or -(-len(pe_reforms) // workers)
        batches = _batches(pe_reforms, -(-len(pe_reforms) // per_task))
        results = map_reforms(calculate_batch, shared, batches, client=client, progress=progress,
                              desc="simulations", item_size=len)
        return [values for batch in results for values in batch]

    if isinstance(sweep, SweepSettings):
        with dask_client(sweep) as client:
            return run(client, sweep)
    return run(sweep, None)


def _input_present(name: str, survey, D) -> bool:
    """Whether a metric that needs a person input column (``D.METRIC_INPUTS``) has it."""
    required = D.METRIC_INPUTS.get(name)
    return required is None or required in survey.person.columns
