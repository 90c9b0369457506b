"""Stage parts on the flow's task runner: the `Map` the stage runtime submits parts to.

Threads by default; a Dask cluster with `flow.with_options(task_runner=DaskTaskRunner(
address="tcp://scheduler:8786"))` (or `cluster_kwargs={"n_workers": 8}` for a local one).
Every worker must see the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE


@task(cache_policy=NO_CACHE, persist_result=False, name="stage-part")
def stage_part_task(work: Callable[[Any], Any], part: Any) -> Any:
    return work(part)


def task_runner_map(work: Callable[[Any], Any], parts: Iterable[Any]) -> list[Any]:
    """`map(work, parts)` with one Prefect task per part, results in the parts' order."""
    futures = stage_part_task.map(unmapped(work), list(parts))
    return [future.result() for future in futures]
