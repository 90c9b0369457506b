"""Stage parts on a Prefect task runner: the `Map` the stage runtime submits parts to.

Every flow whose stage works in parts takes a `task_runner` parameter naming where its
parts run (`TASK_RUNNERS`):

- `threads` (the default): Prefect's thread pool in the flow's process, a part per core
  at a time;
- `dask`: a local Dask cluster started for the run, one single-threaded worker process
  per core;
- `dask://host:8786` (or `tcp://host:8786`): an existing Dask scheduler (docker compose's
  `dask-scheduler`, a Dask Kubernetes operator cluster);
- `ray` / `ray://host:10001`: a local Ray instance or an existing one (KubeRay), when
  `prefect-ray` is installed.

Every worker must see the store (a shared folder, or an object store URL). A part that
starts processes of its own (extraction's page pool) needs non-daemonic Dask workers:
local clusters get that here, a cluster's workers need `DASK_DISTRIBUTED__WORKER__DAEMON=False`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from webtext.stage import Map

TASK_RUNNERS = ("threads", "dask", "dask://HOST:PORT", "tcp://HOST:PORT", "ray", "ray://HOST:PORT")


@task(cache_policy=NO_CACHE, persist_result=False, name="stage-part")
def stage_part_task(work: Callable[[Any], Any], part: Any) -> Any:
    return work(part)


def let_dask_workers_start_processes() -> None:
    """Make the Dask workers this process starts non-daemonic: extraction runs its pages
    in a process pool inside the part's task, and a daemonic process may not start
    children. Read by the nannies of local clusters started after it."""
    import dask

    dask.config.set({"distributed.worker.daemon": False})


def task_runner(spec: str) -> TaskRunner:
    """The task runner `spec` names (one of TASK_RUNNERS); a clear error otherwise."""
    if spec == "threads":
        # A few parts at a time: each spreads its own work over processes (extraction's
        # page pool, the encoder's), and every part in flight holds its rows in memory.
        return ThreadPoolTaskRunner(max_workers=os.cpu_count() or 1)
    if spec == "dask" or spec.startswith(("dask://", "tcp://")):
        from prefect_dask import DaskTaskRunner

        if spec == "dask":
            let_dask_workers_start_processes()
            cluster = {"n_workers": os.cpu_count() or 1, "threads_per_worker": 1}
            return DaskTaskRunner(cluster_kwargs={**cluster, "processes": True})
        return DaskTaskRunner(address="tcp://" + spec.split("://", 1)[1])
    if spec == "ray" or spec.startswith("ray://"):
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise ValueError(f"task_runner={spec!r}: prefect-ray is not installed") from exc
        return RayTaskRunner(address=None if spec == "ray" else spec)
    raise ValueError(f"task_runner={spec!r}: not one of {', '.join(TASK_RUNNERS)}")


def parts_map(spec: str) -> Map:
    """A `Map` running one `stage-part` task per part on the task runner `spec` names,
    started for the call and closed after it. Results come in the parts' order, each as
    soon as it and those before it are done, so the stage commits parts as they finish."""
    runner = task_runner(spec)  # a bad name fails before any work

    def run(work: Callable[[Any], Any], parts: Iterable[Any]) -> Iterator[Any]:
        with runner.duplicate() as started:
            futures = started.map(stage_part_task, {"work": unmapped(work), "part": list(parts)})
            for future in futures:
                yield future.result()

    return run
