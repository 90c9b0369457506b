"""`extract-text`: a `fetches` version to a `documents` version (main text, filtered)."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import ProgressReporter, publish_version
from flows.runner import parts_map
from scraping.extract_stage import ExtractOptions, extract_documents
from webtext.config import open_store
from webtext.store import StageResult, Store, VersionRef


@task(cache_policy=NO_CACHE, persist_result=False)
def extract_documents_task(
    store: Store, fetches: VersionRef, options: ExtractOptions, task_runner: str
) -> StageResult:
    with ProgressReporter(f"Pages of {fetches} extracted") as progress:
        return extract_documents(
            store, fetches, options, map=parts_map(task_runner), progress=progress
        )


@flow(name="extract-text", log_prints=True)
def extract_text_flow(
    fetches_version: str = "latest",
    min_words: int = 50,
    languages: list[str] | None = None,
    workers: int | None = None,
    page_timeout: float = 20.0,
    all_fetches: bool = False,
    store_url: str | None = None,
    task_runner: str = "threads",
) -> VersionRef:
    """Extract the main text of every fetched page and keep the documents that pass the
    quality rules; `languages` defaults to English only, `["any"]` (or `[]`) keeps every
    language. `all_fetches` re-extracts every page fetched so far, not only this fetches
    version's: the next dedup then publishes a full dataset version. Each fetches part is
    a task on `task_runner` (`flows.runner`: threads, dask, dask://host:8786, ray), its
    pages in a pool of `workers` processes there."""
    options = ExtractOptions.from_user(locals())
    store = open_store(store_url)
    fetches = store.resolve("fetches", fetches_version)
    result = extract_documents_task(store, fetches, options, task_runner)
    publish_version(store, result.ref, result.stats["counts"], result.reused, "Text extraction")
    return result.ref
