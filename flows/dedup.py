"""`dedup`: a `documents` version to a published `webtext` version.

The MinHash signatures are computed one documents part per task, so they spread over
whatever task runner the flow runs with: threads by default, a Dask cluster with
`dedup_flow.with_options(task_runner=DaskTaskRunner(address="tcp://scheduler:8786"))`
(or `cluster_kwargs={"n_workers": 8}` for a local one). Every worker must see the store.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE

from dedup.minhash import MinHashSettings
from dedup.signatures import compute_minhash
from dedup.stage import PublishSettings, deduplicate
from flows.artifacts import publish_version
from webtext.config import open_store
from webtext.store import VersionRef


@task(cache_policy=NO_CACHE, persist_result=False, name="minhash-part")
def minhash_part_task(compute: Callable[[str], str], part: str) -> str:
    return compute(part)


def _map_on_task_runner(compute: Callable[[str], str], parts: list[str]) -> list[str]:
    futures = minhash_part_task.map(unmapped(compute), parts)
    return [future.result() for future in futures]


@flow(name="dedup", log_prints=True)
def dedup_flow(
    documents_version: str = "latest",
    rows_per_shard: int = 100_000,
    store_url: str | None = None,
) -> VersionRef:
    """Deduplicate a documents version against itself and every published version, and
    publish what is left as a new `webtext` version."""
    store = open_store(store_url)
    documents = store.resolve("documents", documents_version)
    settings = MinHashSettings()
    minhash = compute_minhash(store, documents, settings, map_parts=_map_on_task_runner)
    result = deduplicate(
        store, documents, minhash.ref, settings, PublishSettings(rows_per_shard=rows_per_shard)
    )
    publish_version(store, result.ref, result.stats["counts"], result.reused, "Deduplication")
    return result.ref
