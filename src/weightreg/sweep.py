"""The reform sweep as independent Dask tasks.

Simulating K reforms is K independent jobs: each needs the survey's inputs and one parameter set,
and returns one array per household metric. :func:`map_reforms` runs such jobs on Dask and gives
their results back in reform order:

* on a local cluster by default, of ``workers`` *processes* (so the memory a reform used is
  returned to the system with its worker, which matters for PolicyEngine UK: about 40 MB more per
  reform inside one process), or
* on any running scheduler, ``scheduler: "tcp://host:8786"``, so a user with a cluster runs 50
  reforms in the time of a few.

The shared payload (the survey's inputs) is sent to each worker once (``scatter(broadcast=True)``),
not once per reform. Each task computes exactly what the in-process loop computes, with the same
code on the same inputs, and float arrays travel by pickle bit for bit, so the results are
identical whatever the number of workers (``tests/test_sweep.py`` checks 1 and 2 workers against
the in-process loop).

Settings come from the ``dask:`` section of ``params.yaml`` (:func:`settings_from_params`); they
change how fast a sweep runs, never its results, so no DVC stage lists them as params. The builtin
simulator runs in process unless the settings ask for Dask (:attr:`SweepSettings.distributed`): on
the embedded world its 32 reforms take about 2 s in process, less than a local cluster takes to
start.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .errors import ParameterError

__all__ = [
    "SweepSettings",
    "settings_from_params",
    "dask_client",
    "map_reforms",
    "builtin_reform_results",
]


@dataclass(frozen=True)
class SweepSettings:
    """How to run a reform sweep.

    Attributes:
        enabled: run the sweep on Dask even with one local worker.
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); ``None`` starts a
            local cluster for the duration of the sweep.
        workers: worker processes of the local cluster (ignored with ``scheduler``).
        threads_per_worker: threads per local worker (1: the simulators are single-threaded numpy).
        memory_limit: per-worker memory limit of the local cluster (``"auto"``, ``"4GB"``, ...).
        reforms_per_task: reforms one task simulates in turn, for simulators that batch them
            (PolicyEngine UK builds one simulation per task); ``None``: one task per worker.
    """

    enabled: bool = False
    scheduler: str | None = None
    workers: int = 1
    threads_per_worker: int = 1
    memory_limit: str | float | None = "auto"
    reforms_per_task: int | None = None

    def __post_init__(self):
        for name in ("workers", "threads_per_worker", "reforms_per_task"):
            value = getattr(self, name)
            if name == "reforms_per_task" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ParameterError(f"dask.{name} = {value!r} must be a positive integer")
        if self.scheduler is not None and (not isinstance(self.scheduler, str) or not self.scheduler.strip()):
            raise ParameterError(
                f"dask.scheduler = {self.scheduler!r} must be a scheduler address such as 'tcp://host:8786' or null"
            )

    @property
    def distributed(self) -> bool:
        """Whether the sweep runs on Dask: enabled, a scheduler given, or more than one worker."""
        return bool(self.enabled) or self.scheduler is not None or self.workers > 1


def settings_from_params(params: Mapping | None) -> SweepSettings:
    """:class:`SweepSettings` from the ``dask:`` section of params (all keys optional).

    Raises:
        ParameterError: an unknown key or a bad value, naming it.
    """
    section = (params or {}).get("dask") or {}
    if not isinstance(section, Mapping):
        raise ParameterError(f"params 'dask' must be a mapping (enabled, scheduler, workers, ...), got {section!r}")
    known = {"enabled", "scheduler", "workers", "threads_per_worker", "memory_limit", "reforms_per_task"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ParameterError(f"unknown param(s) dask.{', dask.'.join(unknown)}; known: {', '.join(sorted(known))}")
    enabled = section.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ParameterError(f"dask.enabled = {enabled!r} must be true or false")
    return SweepSettings(
        enabled=enabled,
        scheduler=section.get("scheduler"),
        workers=section.get("workers", 1) if section.get("workers") is not None else 1,
        threads_per_worker=section.get("threads_per_worker", 1) if section.get("threads_per_worker") is not None else 1,
        memory_limit=section.get("memory_limit", "auto"),
        reforms_per_task=section.get("reforms_per_task"),
    )


@contextlib.contextmanager
def dask_client(settings: SweepSettings) -> Iterator:
    """A ``distributed.Client``: connected to ``settings.scheduler``, else to a local cluster of
    ``settings.workers`` processes that is closed on exit."""
    from dask.distributed import Client, LocalCluster

    if settings.scheduler is not None:
        client = Client(settings.scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    # Dask's statistical profiler walks every running task's stack every 10 ms; PolicyEngine's
    # stacks are deep: turning it off took 7% off a 1-worker PolicyEngine sweep (README).
    # The workers take the config they were started under.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(
            n_workers=int(settings.workers),
            threads_per_worker=int(settings.threads_per_worker),
            processes=True,
            memory_limit=settings.memory_limit,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def map_reforms(
    func: Callable,
    shared,
    items: Sequence,
    *,
    settings: SweepSettings | None = None,
    client=None,
    progress: bool = False,
    desc: str = "reforms",
    item_size: Callable | None = None,
) -> list:
    """``[func(shared, item) for item in items]``, each call a Dask task; results in item order.

    Args:
        func: a module-level (picklable) function of ``(shared, item)``.
        shared: what every task needs (the survey's inputs); sent to each worker once.
        items: one per task (a parameter set, a reform).
        settings: where to run (a local cluster of ``settings.workers`` processes by default).
        client: an existing ``distributed.Client`` to use instead of ``settings``.
        progress: a progress bar over completed tasks.
        desc: the progress bar's label.
        item_size: what one item counts for on the progress bar (``len`` for a batch of reforms);
            1 each by default.

    Raises:
        whatever a task raised (the first failure, in item order); the remaining tasks are cancelled.
    """
    items = list(items)
    if not items:
        return []
    if client is None:
        with dask_client(settings or SweepSettings(enabled=True)) as own:
            return map_reforms(func, shared, items, client=own, progress=progress, desc=desc, item_size=item_size)
    from dask.distributed import as_completed

    token = uuid.uuid4().hex[:12]
    # A one-element list so a tuple or dict payload is scattered whole, not item by item.
    [payload] = client.scatter([shared], broadcast=True, hash=False)
    futures = [
        client.submit(func, payload, item, key=f"weightreg-{desc}-{k}-{token}", pure=False)
        for k, item in enumerate(items)
    ]
    sizes = {future.key: (1 if item_size is None else int(item_size(item))) for future, item in zip(futures, items)}
    try:
        with tqdm(total=sum(sizes.values()), desc=desc, disable=not progress) as bar:
            for future in as_completed(futures):
                if future.status == "error":
                    break  # raised below, in item order
                bar.update(sizes[future.key])
        return [future.result() for future in futures]
    finally:
        client.cancel(futures + [payload])


# ---- the builtin simulator -------------------------------------------------------------------
def _builtin_task(shared, parameters) -> dict[str, np.ndarray]:
    """One reform of the builtin simulator: ``{metric: per-household values}``."""
    from .simulate import simulate

    inputs, columns = shared
    household = simulate(inputs, parameters=parameters).household
    return {name: household[name].to_numpy(dtype=float) for name in columns}


def builtin_reform_results(
    inputs,
    parameter_sets: Sequence,
    columns: Sequence[str],
    *,
    settings: SweepSettings | None = None,
    client=None,
    progress: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Simulate ``inputs`` (:func:`weightreg.simulate.prepare_inputs`) under each parameter set as
    Dask tasks; per set, ``{column: household values}`` for the household ``columns``."""
    return map_reforms(
        _builtin_task, (inputs, tuple(columns)), list(parameter_sets),
        settings=settings, client=client, progress=progress, desc="reforms",
    )
