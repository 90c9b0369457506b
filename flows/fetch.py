"""`fetch-pages`: a `links` version to a `fetches` version (WARC files + Parquet table)."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import ProgressReporter, publish_version
from flows.runner import parts_map
from scraping.fetch_stage import FetchOptions, fetch_pages
from webtext.config import open_store
from webtext.stage import options_from
from webtext.store import StageResult, Store, VersionRef


@task(cache_policy=NO_CACHE, persist_result=False)
def fetch_pages_task(
    store: Store, links: VersionRef, options: FetchOptions, task_runner: str
) -> StageResult:
    with ProgressReporter(f"Pages of {links} fetched or failed") as progress:
        return fetch_pages(store, links, options, map=parts_map(task_runner), progress=progress)


@flow(name="fetch-pages", log_prints=True)
def fetch_pages_flow(
    links_version: str = "latest",
    archives: list[str] | None = None,
    user_agent: str | None = None,
    connections: int = 64,
    per_host_connections: int = 2,
    per_host_delay: float = 1.0,
    total_timeout: float = 60.0,
    max_bytes: int = 5 * 2**20,
    allow_loopback: bool = False,
    shard_size: int = 1_000,
    max_fetch_runs: int = 3,
    retry_transient_after: float = 3600.0,
    store_url: str | None = None,
    task_runner: str = "threads",
) -> VersionRef:
    """Fetch every URL of a links version that no earlier fetch version holds, and those
    whose earlier outcome was transient (at least `retry_transient_after` seconds ago, and
    tried by fewer than `max_fetch_runs` runs).

    With `archives` (WARC paths or URLs, e.g. Common Crawl files) pages are replayed
    from them instead of fetched live. `allow_loopback` is for demos and tests only.
    Each shard (`shard_size` URLs, every host in one shard) is a task on `task_runner`
    (`flows.runner`: threads, dask, dask://host:8786, ray) with `connections` of its own.
    """
    options = FetchOptions(**options_from(FetchOptions, locals()))
    store = open_store(store_url)
    links = store.resolve("links", links_version)
    result = fetch_pages_task(store, links, options, task_runner)
    publish_version(store, result.ref, result.stats["counts"], result.reused, "Page fetching")
    return result.ref
