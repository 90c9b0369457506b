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

Work is cut into shards of about `shard_size` URLs, each host in one shard
(`host_shards`), so politeness per host holds however many workers fetch. Each shard is a
task on the stage's `map` with its own page source and event loop, `in_flight` URLs at a
time, writing rows and WARC records in its URLs' order: its bytes do not depend on which
answer came first, nor on where it ran. A shard is committed through the stage runtime
(`webtext.stage`) when its task returns: a killed run, rerun, finds the committed shards
and fetches only the rest; a half-written shard's WARC files are never registered, so they
are dropped at publishing, and the shard is fetched again.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

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
from webtext.stage import Map, NoProgress, PartResult, Progress, Stage, StageWrite, run_stage
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


class _ShardWriter:
    """One shard being written: its WARC files, and the rows of its URLs, in order, in
    tables of at most `rows_per_file` rows (a shard holds a whole host, which may have
    many more URLs than `shard_size`: its tables, which extraction reads one at a time,
    stay that size)."""

    def __init__(
        self, out: VersionWriter, index: int, warc_file_bytes: int, rows_per_file: int
    ) -> None:
        self.out = out
        self.index = index
        self.rows_per_file = rows_per_file
        # Record ids drawn from the version id and the file name: the same shard of the same
        # version gets the same bytes wherever and however often it runs.
        self.warc = RotatingWarcWriter(out, _warc_prefix(index), warc_file_bytes, out.ref.version)
        self.rows: list[dict[str, Any]] = []
        self.files: dict[str, int | None] = {}  # tables written, then WARC files: rows
        self.pages: Counter[str] = Counter()  # pages per WARC file
        self.counts: Counter[str] = Counter()

    def add(self, result: FetchResult, fetch_runs: int) -> None:
        location: tuple[str | None, int | None, int | None] = (None, None, None)
        self.counts["attempted"] += 1
        if result.ok:
            location = self.warc.write(result)
            self.pages[location[0]] += 1
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
        if len(self.rows) == self.rows_per_file:
            self._write_table()

    def finish(self) -> PartResult:
        self.warc.close()
        if self.rows:
            self._write_table()
        files = {**self.files, **{name: self.pages[name] for name in self.warc.files}}
        return PartResult(files, dict(self.counts))

    def _write_table(self) -> None:
        name = f"fetches/part-{self.index:05d}-{len(self.files):03d}.parquet"
        put_table(self.out, name, pa.Table.from_pylist(self.rows, schema=FETCHES_SCHEMA))
        self.files[name] = len(self.rows)
        self.rows = []
        # The next table's pages start a new WARC file: a WARC belongs to one table, which
        # extraction copies and checks once for that table's part.
        self.warc.close()


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}"


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
    shards_at_once: int = 4  # by this process's threads, unless a task runner runs them
    # URLs in flight per shard; None: 4 per connection live (the source caps connections itself, so
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
    open_page_source: Callable[[], PageSource] | None = None,
    map: Map | None = None,
    progress: Progress | None = None,
) -> StageResult:
    """Fetch the URLs of `links` that no earlier version settled into a new version.

    Each shard is a task on `map` (a Prefect task runner's in the flows; by default
    `options.shards_at_once` threads of this process), fetching from a page source of its
    own: `open_page_source()` (it must pickle for other processes), by default the one
    `options` names. The source's `parameters()` (live settings, or the archives replayed)
    go into the version id with the stage's own settings and the earlier versions whose
    transient failures are retried. `progress` counts URLs, as shards finish.
    """
    options = options or FetchOptions()
    open_page_source = open_page_source or options.open_source
    source = open_page_source()  # here for its parameters and the archives' counts
    replaying = isinstance(source, ArchiveSource)
    progress = progress or NoProgress()
    earlier = store.versions(STAGE.name)
    plan = _plan(store, earlier, _link_urls(store, links), options)
    parameters = {
        "source": source.parameters(),
        "shard_size": options.shard_size,
        "warc_file_bytes": options.warc_file_bytes,
        # What is retried decides the output, so it is in the id; the retry settings are
        # not: with nothing (new) to retry they make the same version.
        "retrying": plan.retrying,
    }

    def build(work: StageWrite) -> None:
        if isinstance(source, ArchiveSource):  # what the archives held, which were unusable
            work.counts.update(asyncio.run(_archive_counts(source)))
        shards = host_shards(plan.todo, options.shard_size)
        names = [_shard_name(i) for i in range(len(shards))]
        inputs = {
            name: _ShardInput(i, urls, [plan.earlier_runs.get(url, 0) + 1 for url in urls])
            for i, (name, urls) in enumerate(zip(names, shards, strict=True))
        }
        settings = _ShardSettings(
            open_page_source, options.urls_in_flight(), options.warc_file_bytes, options.shard_size
        )
        task = partial(fetch_shard, store.root_url, work.out.tmp_dir, work.ref.version, settings)
        sizes = {name: len(urls) for name, urls in zip(names, shards, strict=True)}
        run_on = map or _thread_map(options.shards_at_once)
        work.run_parts(names, task, run_on, progress, inputs=inputs, weights=sizes)
        for name, count in plan.counts.items():
            work.counts.add(name, count)
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


def host_shards(urls: Sequence[str], shard_size: int) -> list[list[str]]:
    """`urls` cut into about len/shard_size shards (at most one a host) with each host in
    exactly one shard, so a host's politeness limits hold however many workers fetch
    shards at once.

    Hosts go, largest first, to the shard with the fewest URLs so far (a host with more
    than `shard_size` URLs makes a bigger shard). Inside a shard, URLs are in crc32 order:
    hosts interleave, so its connections are not all waiting on one host's turn.
    """
    by_host: dict[str, list[str]] = {}
    for url in urls:
        by_host.setdefault(urlsplit(url).hostname or "", []).append(url)
    count = -(-len(urls) // shard_size)
    sizes = [(0, i) for i in range(count)]  # a heap of (URLs so far, shard)
    shards: list[list[str]] = [[] for _ in range(count)]
    for host in sorted(by_host, key=lambda h: (-len(by_host[h]), zlib.crc32(h.encode()), h)):
        size, index = heapq.heappop(sizes)
        shards[index].extend(by_host[host])
        heapq.heappush(sizes, (size + len(by_host[host]), index))
    # Fewer hosts than shards leave some empty: none is written.
    return [
        sorted(shard, key=lambda url: (zlib.crc32(url.encode()), url)) for shard in shards if shard
    ]


def _thread_map(threads: int) -> Map:
    """A `Map` over a pool of `threads`: each shard runs its own event loop in its thread."""

    def run(work: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch") as pool:
            yield from pool.map(work, items)

    return run


async def _archive_counts(source: ArchiveSource) -> dict[str, int]:
    async with source:  # builds the index, kept for this process's shards
        return source.counts()


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


@dataclass(frozen=True)
class _ShardSettings:
    """What every shard's task needs: plain data and a picklable source opener."""

    open_page_source: Callable[[], PageSource]
    in_flight: int
    warc_file_bytes: int
    rows_per_file: int


@dataclass(frozen=True)
class _ShardInput:
    """One shard: its index, its URLs (in fetch order) and each URL's `fetch_runs`."""

    index: int
    urls: list[str]
    fetch_runs: list[int]


def fetch_shard(
    store_url: str,
    staging_dir: str,
    version: str,
    settings: _ShardSettings,
    item: tuple[str, _ShardInput],
) -> PartResult:
    """Fetch one shard into the staging folder: a plain function of plain arguments, so any
    executor runs it on any worker that sees the store."""
    _, shard = item
    store = Store(store_url)
    out = VersionWriter(store.fs, staging_dir, VersionRef(STAGE.name, version))
    writer = _ShardWriter(out, shard.index, settings.warc_file_bytes, settings.rows_per_file)
    runs = iter(shard.fetch_runs)
    source = settings.open_page_source()
    in_order = _InOrder(lambda result: writer.add(result, next(runs)))
    asyncio.run(in_order.fetch(source, shard.urls, settings.in_flight))
    return writer.finish()


class _InOrder:
    """Fetches URLs concurrently and hands the results on in the URLs' order, so a shard's
    rows and WARC records do not depend on which answer came first.

    Results that arrive before an earlier URL's wait here; past `max_held_bytes` of them
    no new URL starts until the earliest one is done."""

    def __init__(self, take: Callable[[FetchResult], None], max_held_bytes: int = 256 << 20):
        self.take = take
        self.max_held_bytes = max_held_bytes
        self._held: dict[int, FetchResult] = {}
        self._held_bytes = 0
        self._next = 0
        self._room = asyncio.Event()

    async def fetch(self, source: PageSource, urls: Sequence[str], in_flight: int) -> None:
        window = asyncio.Semaphore(in_flight)
        self._room.set()

        async def fetch_one(position: int, url: str) -> None:
            try:
                result = await source.fetch(url)
            except Exception as exc:  # a source bug must not sink hours of fetching
                log.exception("page source failed on %s", url)
                result = FetchResult(url=url, error=errors.PROTOCOL_ERROR, error_detail=repr(exc))
            finally:
                window.release()
            self._arrived(position, result)

        async with source, asyncio.TaskGroup() as tasks:
            for position, url in enumerate(urls):
                await self._room.wait()
                await window.acquire()
                tasks.create_task(fetch_one(position, url))

    def _arrived(self, position: int, result: FetchResult) -> None:
        self._held[position] = result
        self._held_bytes += len(result.body)
        while self._next in self._held:
            done = self._held.pop(self._next)
            self._held_bytes -= len(done.body)
            self.take(done)
            self._next += 1
        if self._held_bytes > self.max_held_bytes:
            self._room.clear()
        else:
            self._room.set()


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
