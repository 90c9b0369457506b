"""The fetch stage: a `links` version in, a `fetches` version out (WARC + Parquet table).

Every input URL ends with exactly one row in `fetches/part-*.parquet`: the page's WARC
location when it was fetched, its error class when not. URLs that any earlier `fetches`
version holds a row for are not fetched again (those versions are recorded as parents),
unless that row's outcome was transient (`page_source.is_transient`: a timeout, a 429/5xx,
an unreachable robots.txt...), is at least `retry_transient_after` seconds old, and fewer
than `max_fetch_runs` runs have tried the URL (`fetch_runs` column): then it is fetched
again. The versions whose rows are retried are named in the parameters (`retrying`), so
a run that retries is a new version, and a run with nothing to retry finds the version
it made before.

Work is cut into shards of `shard_size` URLs, fetched concurrently by `concurrency`
workers pulling from one queue in shard order. A shard is committed through the stage
runtime (`webtext.stage`) when its last URL finishes: a killed run, rerun, finds the
committed shards and fetches only the rest; a half-written shard's WARC files are never
registered, so they are dropped at publishing, and the shard is fetched again.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scraping import page_source as errors
from scraping import warc_replay as replay
from scraping.fetch import FetchSettings, LiveSource
from scraping.netsafety import AddressPolicy
from scraping.page_source import FetchResult, PageSource
from scraping.warc_replay import ArchiveSource
from scraping.warc_writer import RotatingWarcWriter
from webtext.parquet import put_table
from webtext.stage import NoProgress, PartResult, Progress, Stage, StageWrite, run_stage
from webtext.store import FileEntry, Manifest, StageResult, Store, VersionRef, VersionWriter

STAGE = Stage("fetches", __name__)
log = logging.getLogger(__name__)

FETCHES_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("final_url", pa.string()),
        ("status", pa.int32()),
        ("content_type", pa.string()),
        ("bytes", pa.int64()),
        ("truncated", pa.bool_()),
        ("fetched_at", pa.timestamp("ms", tz="UTC")),
        ("attempts", pa.int32()),
        ("ip_address", pa.string()),
        ("warc_file", pa.string()),
        ("warc_offset", pa.int64()),
        ("warc_length", pa.int64()),
        ("error", pa.string()),
        ("error_detail", pa.string()),
        ("fetch_runs", pa.int32()),  # fetch runs that tried this URL, this one included
    ]
)


@dataclass
class _Shard:
    """One shard in flight: its WARC writer and the rows of its finished URLs."""

    index: int
    expected: int
    warc: RotatingWarcWriter
    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def part(self) -> str:
        return _part_name(self.index)

    def add(self, result: FetchResult, fetch_runs: int) -> None:
        location: tuple[str | None, int | None, int | None] = (None, None, None)
        self.counts["attempted"] += 1
        if result.ok:
            location = self.warc.write(result)
            self.counts["fetched"] += 1
            self.counts["bytes"] += len(result.body)
        else:
            self.counts[result.error] += 1
        self.counts["truncated"] += bool(result.truncated)
        self.rows.append(
            {
                "url": result.url,
                "final_url": result.final_url,
                "status": result.status,
                "content_type": result.content_type,
                "bytes": len(result.body) if result.ok else None,
                "truncated": result.truncated,
                "fetched_at": result.fetched_at,
                "attempts": result.attempts,
                "ip_address": result.ip_address,
                "warc_file": location[0],
                "warc_offset": location[1],
                "warc_length": location[2],
                "error": result.error,
                "error_detail": result.error_detail,
                "fetch_runs": fetch_runs,
            }
        )

    def finish(self, out: VersionWriter) -> PartResult:
        self.warc.close()
        table = pa.Table.from_pylist(self.rows, schema=FETCHES_SCHEMA)
        put_table(out, self.part, table)
        files: dict[str, int | None] = {self.part: len(self.rows)}
        for name in self.warc.files:
            files[name] = sum(row["warc_file"] == name for row in self.rows)
        return PartResult(files, self.counts)


def _part_name(index: int) -> str:
    return f"fetches/part-{index:05d}.parquet"


def _warc_prefix(index: int) -> str:
    return f"warc/shard-{index:05d}"


_LIVE = FetchSettings()


@dataclass(frozen=True)
class FetchOptions:
    """Every setting of the fetch stage as the CLI and the flows take it: the only place
    their defaults live (the live client's come from `FetchSettings`)."""

    archives: tuple[str, ...] = ()  # replay pages from these WARC files, not the live web
    connections: int = _LIVE.max_connections
    per_host_connections: int = _LIVE.per_host_connections
    per_host_delay: float = _LIVE.per_host_delay  # seconds between a host's requests
    total_timeout: float = _LIVE.total_timeout  # network seconds for one URL, all hops
    max_bytes: int = _LIVE.max_bytes  # bodies are cut at this size
    user_agent: str | None = None  # also the robots.txt agent; None: FetchSettings'
    allow_loopback: bool = False  # fetch from 127.0.0.0/8: demos and tests only
    shard_size: int = 1_000  # URLs per committed shard
    max_fetch_runs: int = 3  # runs that may try a URL whose outcome stays transient
    # A transient outcome is retried by runs at least this long after it (a rerun at once
    # would mostly meet the same outage; the nightly run retries).
    retry_transient_after: float = 3600.0
    warc_file_bytes: int = 2**30
    # URLs in flight; None: 4 per connection live (the source caps connections itself, so
    # more URLs than connections keep each busy while some wait on their host), 16 replaying.
    in_flight: int | None = None

    def __post_init__(self) -> None:  # a list from the CLI or a flow, kept as a tuple
        object.__setattr__(self, "archives", tuple(self.archives or ()))

    def open_source(self) -> PageSource:
        return open_source(
            self.archives,
            connections=self.connections,
            per_host_connections=self.per_host_connections,
            per_host_delay=self.per_host_delay,
            total_timeout=self.total_timeout,
            max_bytes=self.max_bytes,
            user_agent=self.user_agent,
            allow_loopback=self.allow_loopback,
        )

    def urls_in_flight(self) -> int:
        if self.in_flight is not None:
            return self.in_flight
        return 16 if self.archives else 4 * self.connections


def fetch_pages(
    store: Store,
    links: VersionRef,
    options: FetchOptions | None = None,
    *,
    source: PageSource | None = None,
    progress: Progress | None = None,
) -> StageResult:
    """Fetch the URLs of `links` that no earlier version settled into a new version.

    The page source is the one `options` name, unless `source` is given. Its
    `parameters()` (live settings, or the archives replayed) go into the version id with
    the stage's own settings and the earlier versions whose transient failures are
    retried. `progress` counts URLs.
    """
    options = options or FetchOptions()
    source = source or options.open_source()
    replaying = isinstance(source, ArchiveSource)
    progress = progress or NoProgress()
    shard_size, in_flight = options.shard_size, options.urls_in_flight()
    earlier = store.versions(STAGE.name)
    plan = _plan(store, earlier, _link_urls(store, links), options)
    parameters = {
        "source": source.parameters(),
        "shard_size": shard_size,
        "warc_file_bytes": options.warc_file_bytes,
        # What is retried decides the output, so it is in the id; the retry settings are
        # not: with nothing (new) to retry they make the same version.
        "retrying": plan.retrying,
    }

    def build(work: StageWrite) -> None:
        # Spread hosts over the queue, so workers are not all waiting on one host's limits.
        order = sorted(plan.todo, key=lambda url: (zlib.crc32(url.encode()), url))
        shards = [order[i : i + shard_size] for i in range(0, len(order), shard_size)]
        names = [_part_name(i) for i in range(len(shards))]
        pending = set(work.pending(names))
        indices = [i for i, name in enumerate(names) if name in pending]
        progress.start(sum(len(shards[i]) for i in indices))
        if indices:
            asyncio.run(
                _fetch_shards(
                    shards,
                    indices,
                    plan.earlier_runs,
                    source,
                    work,
                    in_flight,
                    options.warc_file_bytes,
                    progress,
                )
            )
        for name, count in plan.counts.items():
            work.counts.add(name, count)
        if isinstance(source, ArchiveSource):  # what the archives held, which were unusable
            work.counts.update(source.counts())
        work.stats["retry"] = {
            "max_fetch_runs": options.max_fetch_runs,
            "retry_transient_after": options.retry_transient_after,
        }

    return run_stage(
        store,
        STAGE,
        (links,),
        parameters,
        build,
        parents=tuple(m.ref for m in earlier),
        count_names=(
            *("attempted", "fetched", "bytes", "truncated", *errors.ERROR_CLASSES),
            *(replay.COUNT_NAMES if replaying else ()),
        ),
        resumable=True,
        nothing_new=lambda: not plan.todo,  # every URL was settled before
    )


def _link_urls(store: Store, links: VersionRef) -> pa.ChunkedArray:
    tables = []
    for entry in store.manifest(links).files:
        if entry.path.startswith("links/"):
            with store.open_verified(links, entry) as handle:
                tables.append(pq.read_table(handle, columns=["url"]))
    if not tables:
        return pa.chunked_array([], pa.string())
    return pa.concat_tables(tables)["url"]


@dataclass(frozen=True)
class _Plan:
    """What a run fetches: URLs never fetched, and those whose outcome was transient."""

    todo: list[str]
    earlier_runs: dict[str, int]  # a retried URL: the runs that tried it before
    retrying: list[str]  # the earlier versions whose rows are retried, by id
    counts: dict[str, int]


def _plan(
    store: Store, earlier: Sequence[Manifest], urls: pa.ChunkedArray, options: FetchOptions
) -> _Plan:
    """Each URL's newest row in the earlier versions decides whether it is fetched.

    Memory: the candidate URLs, four numbers per URL, and one earlier part at a time.
    """
    urls = urls.combine_chunks()
    due_before = datetime.now(UTC) - timedelta(seconds=options.retry_transient_after)
    newest = np.full(len(urls), -1)  # index in `earlier` of the newest row, -1: none
    runs = np.zeros(len(urls), np.int32)
    transient = np.zeros(len(urls), bool)
    due = np.zeros(len(urls), bool)
    for index, manifest in enumerate(earlier):  # oldest first: newer rows override
        for entry in manifest.files:
            if not entry.path.startswith("fetches/"):
                continue
            rows = _outcomes(store, manifest.ref, entry, due_before)
            # Each URL's row in the part, or -1.
            position = pc.fill_null(pc.index_in(urls, value_set=rows["url"]), -1).to_numpy()
            hit = position >= 0
            newest[hit] = index
            for name, column in (("fetch_runs", runs), ("transient", transient), ("due", due)):
                column[hit] = rows[name][position[hit]]
    seen = newest >= 0
    tries_left = seen & transient & (runs < options.max_fetch_runs)
    retry = tries_left & due
    todo = urls.filter(pa.array(~seen | retry))
    retried = urls.filter(pa.array(retry)).to_pylist()
    return _Plan(
        todo=todo.to_pylist(),
        earlier_runs=dict(zip(retried, runs[retry].tolist(), strict=True)),
        retrying=sorted({earlier[i].ref.version for i in newest[retry]}),
        counts={
            "urls": len(urls),
            "fetched_before": int((seen & ~retry).sum()),
            "retried": int(retry.sum()),
            "retry_later": int((tries_left & ~due).sum()),  # too recent to retry yet
            "retries_exhausted": int((seen & transient & ~tries_left).sum()),
        },
    )


def _outcomes(
    store: Store, version: VersionRef, entry: FileEntry, due_before: datetime
) -> dict[str, Any]:
    """One earlier part's URLs, whether each outcome was transient, whether it was
    fetched before `due_before`, and its fetch runs (1 in parts older than the column)."""
    with store.open_verified(version, entry) as handle:
        part = pq.ParquetFile(handle)
        has_runs = "fetch_runs" in part.schema_arrow.names
        columns = ["url", "error", "status", "fetched_at", *(["fetch_runs"] if has_runs else [])]
        table = part.read(columns=columns)
    failed = table["error"]
    transient = pc.or_kleene(
        pc.is_in(failed, value_set=pa.array(sorted(errors.TRANSIENT_ERRORS))),
        pc.and_kleene(
            pc.equal(failed, errors.HTTP_STATUS),
            pc.is_in(table["status"], value_set=pa.array(sorted(errors.TRANSIENT_STATUSES))),
        ),
    )
    runs = pc.fill_null(table["fetch_runs"], 1).to_numpy() if has_runs else 1
    return {
        "url": table["url"].combine_chunks(),
        "transient": pc.fill_null(transient, False).to_numpy(),
        "due": pc.fill_null(pc.less(table["fetched_at"], due_before), True).to_numpy(),
        "fetch_runs": np.broadcast_to(np.asarray(runs, np.int32), table.num_rows),
    }


async def _fetch_shards(
    shards: list[list[str]],
    pending: list[int],
    earlier_runs: dict[str, int],
    source: PageSource,
    work: StageWrite,
    in_flight: int,
    warc_file_bytes: int,
    progress: Progress,
) -> None:
    """Fetch the pending shards' URLs, at most `in_flight` at once, committing each shard
    when its last URL is done. The source enforces its own connection limits."""
    window = asyncio.Semaphore(in_flight)
    open_shards: dict[int, _Shard] = {}

    async def fetch_one(index: int, url: str) -> None:
        try:
            result = await source.fetch(url)
        except Exception as exc:  # a source bug must not sink hours of fetching
            log.exception("page source failed on %s", url)
            result = FetchResult(url=url, error=errors.PROTOCOL_ERROR, error_detail=repr(exc))
        finally:
            window.release()
        shard = open_shards.get(index)
        if shard is None:
            writer = RotatingWarcWriter(work.out, _warc_prefix(index), warc_file_bytes)
            shard = open_shards[index] = _Shard(index, len(shards[index]), writer)
        shard.add(result, earlier_runs.get(url, 0) + 1)
        progress.advance(1)
        if len(shard.rows) == shard.expected:
            work.commit(shard.part, shard.finish(work.out))
            del open_shards[index]

    async with source, asyncio.TaskGroup() as tasks:
        for index in pending:
            for url in shards[index]:
                await window.acquire()
                tasks.create_task(fetch_one(index, url))


def open_source(
    archives: Sequence[str],
    *,
    connections: int = _LIVE.max_connections,
    allow_loopback: bool = False,
    user_agent: str | None = None,
    **settings: Any,
) -> PageSource:
    """With `archives`, pages replayed from those WARC files; otherwise fetched live with
    `FetchSettings` (`settings` are its fields)."""
    if archives:
        replay = {k: v for k, v in settings.items() if k in ("max_bytes", "max_redirects")}
        return ArchiveSource(list(archives), **replay)
    if user_agent:
        settings["user_agent"] = user_agent
    policy = AddressPolicy(allow_loopback=allow_loopback)
    return LiveSource(FetchSettings(max_connections=connections, policy=policy, **settings))
