"""The fetch stage: a `links` version in, a `fetches` version out (WARC + Parquet table).

Every input URL ends with exactly one row in `fetches/part-*.parquet`: the page's WARC
location when it was fetched, its error class when not. URLs that any earlier `fetches`
version holds a row for are not fetched again; those versions are recorded as parents.

Work is cut into shards of `shard_size` URLs, fetched concurrently by `concurrency`
workers pulling from one queue in shard order. A shard is committed when its last URL
finishes: its Parquet part is written last, under its final name, so it marks the shard
as done. The version is staged under a folder named by its id (`Store.write(...,
resumable=True)`): a killed run, rerun, finds the finished shards and fetches only the
rest; a half-written shard's WARC files are discarded and the shard is fetched again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scraping import page_source as errors
from scraping.fetch import FetchSettings, LiveSource
from scraping.netsafety import AddressPolicy
from scraping.page_source import FetchResult, PageSource
from scraping.warc_replay import ArchiveSource
from scraping.warc_writer import RotatingWarcWriter
from webtext.config import code_version
from webtext.parquet import put_table
from webtext.store import Manifest, StageResult, Store, VersionRef, VersionWriter

STAGE = "fetches"
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
    ]
)


@dataclass
class _Shard:
    """One shard in flight: its WARC writer and the rows of its finished URLs."""

    index: int
    expected: int
    warc: RotatingWarcWriter
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def part(self) -> str:
        return _part_name(self.index)

    def add(self, result: FetchResult) -> None:
        location: tuple[str | None, int | None, int | None] = (None, None, None)
        if result.ok:
            location = self.warc.write(result)
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
            }
        )

    def commit(self, out: VersionWriter) -> None:
        self.warc.close()
        for name in self.warc.files:
            out.set_rows(name, sum(row["warc_file"] == name for row in self.rows))
        table = pa.Table.from_pylist(self.rows, schema=FETCHES_SCHEMA)
        put_table(out, self.part, table)  # last: its presence marks the shard done


def _part_name(index: int) -> str:
    return f"fetches/part-{index:05d}.parquet"


def _warc_prefix(index: int) -> str:
    return f"warc/shard-{index:05d}"


def fetch_pages(
    store: Store,
    links: VersionRef,
    source: PageSource,
    *,
    concurrency: int = 256,
    shard_size: int = 1_000,
    warc_file_bytes: int = 2**30,
    on_start: Callable[[int], None] | None = None,
    on_page: Callable[[FetchResult], None] | None = None,
) -> StageResult:
    """Fetch the URLs of `links` not fetched by any earlier version into a new version.

    `concurrency` URLs are in flight at once; the source caps connections itself, so
    more URLs than connections keep every connection busy while some wait on their host.

    The source's `parameters()` (live settings, or the archives replayed) go into the
    version id with the stage's own settings.
    """
    parameters = {
        "source": source.parameters(),
        "shard_size": shard_size,
        "warc_file_bytes": warc_file_bytes,
    }
    version = code_version("scraping")
    earlier = store.versions(STAGE)
    for manifest in earlier:  # the same inputs were fetched already
        if _same_inputs(manifest, links, parameters, version):
            return StageResult(manifest.ref, True, manifest.stats)

    urls = _link_urls(store, links)
    already = _fetched_before(store, earlier, urls)
    todo = urls.filter(pc.invert(already))
    # Spread hosts over the queue, so workers are not all waiting on one host's limits.
    order = sorted(todo.to_pylist(), key=lambda url: (zlib.crc32(url.encode()), url))
    shards = [order[i : i + shard_size] for i in range(0, len(order), shard_size)]
    parents = (links, *(m.ref for m in earlier))
    with store.write(STAGE, parameters, version, parents, resumable=True) as out:
        pending = [i for i in range(len(shards)) if not _resume_shard(out, i)]
        if on_start:
            on_start(sum(len(shards[i]) for i in pending))
        if pending:
            asyncio.run(
                _fetch_shards(shards, pending, source, out, concurrency, warc_file_bytes, on_page)
            )
        counts = _count(out, len(shards))
        counts["urls"] = len(urls)
        counts["fetched_before"] = pc.sum(already).as_py() or 0
        out.stats["counts"] = counts
        ref = out.ref
    return StageResult(ref, False, store.manifest(ref).stats)


def _same_inputs(manifest: Manifest, links: VersionRef, parameters: dict, version: str) -> bool:
    as_stored = json.loads(json.dumps(parameters))  # tuples read back as lists
    return (
        manifest.parents[:1] == (links,)
        and manifest.parameters == as_stored
        and manifest.code_version == version
    )


def _link_urls(store: Store, links: VersionRef) -> pa.ChunkedArray:
    tables = []
    for entry in store.manifest(links).files:
        if entry.path.startswith("links/"):
            with store.fs.open(f"{store.version_dir(links)}/{entry.path}", "rb") as handle:
                tables.append(pq.read_table(handle, columns=["url"]))
    if not tables:
        return pa.chunked_array([], pa.string())
    return pa.concat_tables(tables)["url"]


def _fetched_before(
    store: Store, earlier: Sequence[Manifest], urls: pa.ChunkedArray
) -> pa.ChunkedArray:
    """A mask over `urls`: True where an earlier version has a row for the URL.

    Memory: the candidate URLs plus one earlier part file at a time.
    """
    already = pc.is_in(urls, value_set=pa.array([], pa.string()))
    for manifest in earlier:
        for entry in manifest.files:
            if entry.path.startswith("fetches/"):
                path = f"{store.version_dir(manifest.ref)}/{entry.path}"
                with store.fs.open(path, "rb") as handle:
                    seen = pq.read_table(handle, columns=["url"])["url"].combine_chunks()
                already = pc.or_(already, pc.is_in(urls, value_set=seen))
    return already


def _resume_shard(out: VersionWriter, index: int) -> bool:
    """Register a shard an earlier try finished; clear what it left half-done."""
    shard_files = [n for n in out.listdir("warc") if n.startswith(_warc_prefix(index) + "-")]
    if not out.exists(_part_name(index)):
        for name in shard_files:
            out.remove(name)
        return False
    with out.fs.open(out.path(_part_name(index)), "rb") as handle:
        files = pq.read_table(handle, columns=["warc_file"])["warc_file"].to_pylist()
    out.set_rows(_part_name(index), len(files))
    for name in shard_files:
        out.set_rows(name, files.count(name))
    return True


async def _fetch_shards(
    shards: list[list[str]],
    pending: list[int],
    source: PageSource,
    out: VersionWriter,
    in_flight: int,
    warc_file_bytes: int,
    on_page: Callable[[FetchResult], None] | None,
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
            writer = RotatingWarcWriter(out, _warc_prefix(index), warc_file_bytes)
            shard = open_shards[index] = _Shard(index, len(shards[index]), writer)
        shard.add(result)
        if on_page:
            on_page(result)
        if len(shard.rows) == shard.expected:
            shard.commit(out)
            del open_shards[index]

    async with source, asyncio.TaskGroup() as tasks:
        for index in pending:
            for url in shards[index]:
                await window.acquire()
                tasks.create_task(fetch_one(index, url))


def _count(out: VersionWriter, shards: int) -> dict[str, int]:
    """Counts over every committed part: pages, bytes, and failures by error class."""
    counts: Counter[str] = Counter()
    for index in range(shards):
        with out.fs.open(out.path(_part_name(index)), "rb") as handle:
            table = pq.read_table(handle, columns=["error", "bytes", "truncated"])
        counts["attempted"] += table.num_rows
        errors_column = table["error"].to_pylist()
        counts["fetched"] += errors_column.count(None)
        counts["bytes"] += pc.sum(table["bytes"]).as_py() or 0
        counts["truncated"] += pc.sum(table["truncated"]).as_py() or 0
        counts.update(e for e in errors_column if e is not None)
    ordered = {name: counts.get(name, 0) for name in ("attempted", "fetched", "bytes", "truncated")}
    ordered.update({name: counts.get(name, 0) for name in errors.ERROR_CLASSES})
    return ordered


def open_source(
    archives: Sequence[str],
    *,
    connections: int = 64,
    allow_loopback: bool = False,
    user_agent: str | None = None,
    **settings: Any,
) -> tuple[PageSource, int]:
    """The page source for these options, and how many URLs to keep in flight.

    With `archives`, pages are replayed from those WARC files; otherwise fetched live
    with `FetchSettings` (`settings` are its fields).
    """
    if archives:
        replay = {k: v for k, v in settings.items() if k in ("max_bytes", "max_redirects")}
        return ArchiveSource(list(archives), **replay), 16
    if user_agent:
        settings["user_agent"] = user_agent
    policy = AddressPolicy(allow_loopback=allow_loopback)
    live = FetchSettings(max_connections=connections, policy=policy, **settings)
    return LiveSource(live), connections * 4
