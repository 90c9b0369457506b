"""`dedup`: a `documents` version to a published `webtext` version.

The MinHash signatures are computed one documents part per task, on the task runner the
`task_runner` parameter names (`flows.runner`).
"""

from __future__ import annotations

from prefect import flow

from dedup.stage import DedupOptions, PublishSettings, publish_dataset
from flows.artifacts import ProgressReporter, publish_version
from flows.runner import parts_map
from webtext.config import open_store
from webtext.store import VersionRef


@flow(name="dedup", log_prints=True)
def dedup_flow(
    documents_version: str = "latest",
    rows_per_shard: int = 100_000,
    skip_versions: list[str] | None = None,
    store_url: str | None = None,
    task_runner: str = "threads",
) -> VersionRef:
    """Deduplicate a documents version against itself and every published version, and
    publish what is left as a new `webtext` version. A corrupt earlier version stops the
    run unless its id is in `skip_versions`. The signatures of each documents part are a
    task on `task_runner` (threads, dask, dask://host:8786, ray)."""
    store = open_store(store_url)
    documents = store.resolve("documents", documents_version)
    options = DedupOptions(
        publish=PublishSettings(rows_per_shard=rows_per_shard),
        skip_versions=tuple(skip_versions or ()),
    )
    with ProgressReporter(f"Parts of {documents} signed") as progress:
        parts = parts_map(task_runner)
        result = publish_dataset(store, documents, options, map=parts, progress=progress)
    publish_version(store, result.ref, result.stats["counts"], result.reused, "Deduplication")
    return result.ref
