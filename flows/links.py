"""`collect-links`: Reddit submissions to a `links` version."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import ProgressReporter, publish_version
from flows.runner import parts_map
from flows.secrets import reddit_credentials
from scraping.links import LinkOptions, collect_links
from scraping.reddit_api import ListingSpec
from webtext.config import open_store
from webtext.store import StageResult, Store, VersionRef


# The store makes reruns idempotent, so Prefect's own result cache stays off.
@task(cache_policy=NO_CACHE, persist_result=False)
def collect_links_task(
    store: Store,
    dumps: list[str],
    listings: list[str],
    options: LinkOptions,
    api_url: str | None,
    incremental: bool,
    task_runner: str,
) -> StageResult:
    specs = [ListingSpec.parse(text) for text in listings]
    with ProgressReporter("Dump bytes read") as progress:
        return collect_links(
            store,
            dumps,
            specs,
            options,
            credentials=reddit_credentials() if specs else None,
            api_url=api_url,
            previous=store.latest("links") if incremental else None,
            # Filtering is Python-bound: on "threads" the GIL would serialise the dumps, so
            # they go to `workers` processes instead.
            map=None if task_runner == "threads" else parts_map(task_runner),
            progress=progress,
        )


@flow(name="collect-links", log_prints=True)
def collect_links_flow(
    dumps: list[str] | None = None,
    listings: list[str] | None = None,
    min_karma: int = 3,
    keep_self_posts: bool = False,
    keep_nsfw: bool = False,
    keep_wikipedia: bool = False,
    created_after: str | None = None,
    created_before: str | None = None,
    subreddit_blocklist: str | None = None,
    domain_blocklist: str | None = None,
    extension_blocklist: str | None = None,
    incremental: bool = False,
    workers: int = 2,
    partitions: int = 16,
    api_url: str | None = None,
    store_url: str | None = None,
    task_runner: str = "threads",
) -> VersionRef:
    """Collect outbound links with at least `min_karma` from dumps and/or API listings.

    Listings look like `r/askreddit/top/all`; Reddit credentials come from REDDIT_*
    environment variables or the Secret blocks named in `flows.secrets`. Dates are ISO
    (UTC); a blocklist is a file path readable by the worker, one entry a line. Each dump
    is a task on `task_runner` (`flows.runner`; "threads": `workers` processes here), so
    the dumps' paths or URLs must be readable by every worker.
    """
    options = LinkOptions.from_user(locals())
    store = open_store(store_url)
    result = collect_links_task(
        store, dumps or [], listings or [], options, api_url, incremental, task_runner
    )
    stats = result.stats
    logger = get_run_logger()
    for line in stats.get("line_errors", []):
        logger.warning("skipped a bad line: %s", line)
    for line in stats.get("failed_files", []):
        logger.error("dump cut short: %s", line)
    for line in stats.get("failed_listings", []):
        logger.error("kept what was read: %s", line)
    publish_version(store, result.ref, stats.get("counts", {}), result.reused, "Link collection")
    return result.ref
