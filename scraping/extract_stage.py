"""The extraction stage: a `fetches` version in, a `documents` version out.

For each fetched page (read back from the WARC by offset): main text and metadata
(`scraping.extract`), then the quality rules (`scraping.quality`). Kept pages become
rows of `documents/part-NNNNN.parquet` with the Reddit metadata of their link; every
other fetched page becomes a row of `rejected/part-NNNNN.parquet` with its reason, so
nothing is dropped unseen.

Pages are extracted in a pool of worker processes (pebble): a page that runs past
`page_timeout` has its worker killed and replaced; each worker may map at most
`page_memory_mb` more than it did at start, so a pathological page fails with a
MemoryError or a dead worker,
counted as `extract_failed`, and the stage goes on. Shards follow the fetches version's
parts and are committed one by one through the stage runtime (`webtext.stage`), so a
killed run resumes where it stopped, as the fetch stage does.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import multiprocessing.util
import os
import resource
import threading
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pebble import ProcessExpired, ProcessPool

from scraping.extract import ExtractSettings, extract_page
from scraping.quality import QUALITY_REASONS, QualityFilters
from scraping.urls import url_host
from scraping.warc_replay import WarcFile
from webtext.parquet import put_table, release_arrow_memory, without_huge_pages
from webtext.stage import (
    Map,
    NoProgress,
    PartResult,
    Progress,
    Stage,
    StageWrite,
    options_from,
    run_stage,
)
from webtext.store import Manifest, StageResult, Store, StoreError, VersionRef, VersionWriter
from webtext.tables import DOCUMENTS_SCHEMA

STAGE = Stage("documents", __name__)
log = logging.getLogger(__name__)

NO_TEXT = "no_text"
EXTRACT_TIMEOUT = "extract_timeout"
EXTRACT_FAILED = "extract_failed"
ANY_LANGUAGE = "any"
REJECT_REASONS = (NO_TEXT, EXTRACT_TIMEOUT, EXTRACT_FAILED, *QUALITY_REASONS)
_AUDIT_CHARS = 2_000

REJECTED_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("final_url", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("word_count", pa.int32()),
        ("text_sample", pa.string()),
    ]
)
_REDDIT_COLUMNS = ("karma", "submissions", "subreddits", "post_ids", "first_seen", "last_seen")
_LINKS_COLUMNS = ("url", "domain", *_REDDIT_COLUMNS)  # what a document takes from its link
_LINKS_BATCH_ROWS = 65_536  # links rows decoded at once while joining


def doc_id(url: str) -> str:
    """A stable id: 16 hex digits of the sha256 of the link's URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ExtractOptions:
    """Every setting of the extraction stage: the only place their defaults live. The CLI
    and the flows build it with `from_user`."""

    extract: ExtractSettings = field(default_factory=ExtractSettings)
    quality: QualityFilters = field(default_factory=QualityFilters)
    # Every page fetched so far (this fetches version and every earlier one it names), not
    # only this version's: to re-extract everything after the extractor or a filter changed.
    all_fetches: bool = False
    workers: int | None = None  # extraction processes; None: one per core
    page_timeout: float = 20.0  # seconds one page may take before its worker is killed
    page_memory_mb: int = 2_048  # memory a worker may add while extracting one page
    # Pages whose links rows this process joins at once, before their parts run: its
    # memory holds about 200 bytes a page of one group; each group is one pass over the
    # links version (docs/scale.md).
    join_pages: int = 100_000

    @property
    def processes(self) -> int:
        """The page pool's processes: `workers`, or one per core."""
        return self.workers or os.cpu_count() or 1

    @classmethod
    def from_user(cls, parameters: Mapping[str, Any]) -> ExtractOptions:
        """From an entry point's parameters, by name, as typed: `languages` None keeps the
        default, `[]` or `["any"]` keeps every language; other quality rules keep theirs."""
        quality = options_from(QualityFilters, parameters)
        languages = quality.get("languages")
        if languages is None:
            quality.pop("languages", None)
        else:
            quality["languages"] = () if list(languages) == [ANY_LANGUAGE] else tuple(languages)
        own = options_from(cls, parameters)
        own.pop("quality", None)
        return cls(quality=QualityFilters(**quality), **own)

    def parameters(self) -> dict[str, Any]:
        """What the output depends on (not `workers` or `join_pages`: any number gives the
        same bytes)."""
        return {
            "extract": self.extract.parameters(),
            "quality": self.quality.parameters(),
            "page_timeout": self.page_timeout,
            "page_memory_mb": self.page_memory_mb,
            "all_fetches": self.all_fetches,
        }


def extract_documents(
    store: Store,
    fetches: VersionRef,
    options: ExtractOptions | None = None,
    *,
    map: Map = map,
    progress: Progress | None = None,
) -> StageResult:
    """Extract and filter every fetched page of `fetches` into a new `documents` version
    (with `options.all_fetches`, every page of every earlier fetches version too).

    One task per fetches part on `map` (the builtin, a process pool, a Prefect task
    runner); each part's pages run in a pool of `options.workers` processes. `progress`
    counts the parts' fetch rows (pages, and failures with nothing to extract), as parts
    finish.
    """
    options = options or ExtractOptions()
    sources = [store.manifest(fetches)]
    if options.all_fetches:
        sources += [store.manifest(p) for p in sources[0].parents if p.stage == "fetches"]
    # A part is named by its file, or by version and file when several versions are read.
    parts = {
        (f"{m.version}/{f.path}" if options.all_fetches else f.path): _FetchPart(
            m, f.path, f.rows or 0
        )
        for m in sources
        for f in m.files
        if f.path.startswith("fetches/")
    }

    def build(work: StageWrite) -> None:
        without_huge_pages()  # here and in the page workers forked from here
        pending = work.pending(sorted(parts))
        # Sized by the manifest's row counts: no read of the parts here before their group.
        pages = {name: parts[name].fetch_rows for name in pending}
        progress_started = _Started(progress or NoProgress(), sum(pages.values()))
        task = partial(extract_part, store.root_url, work.out.tmp_dir, options)
        # Each part's task reads its own pages; it gets their links rows, joined here one
        # group of parts at a time (one pass over the links version a group), so what this
        # process holds, and every page worker forked from it inherits, is one group's.
        try:
            for group in _join_groups(pending, pages, options.join_pages):
                inputs = _part_inputs(store, {name: parts[name] for name in group})
                release_arrow_memory()  # the join's buffers, before page workers fork
                work.run_parts(
                    group,
                    task,
                    map,
                    progress_started,
                    inputs=inputs,
                    weights=pages,
                )
                del inputs
        finally:
            _close_page_pools()  # those the parts started in this process

    return run_stage(
        store,
        STAGE,
        (fetches, sources[0].parents[0]),
        options.parameters(),
        build,
        parents=tuple(m.ref for m in sources[1:]),
        count_names=("pages", "documents", "words", *REJECT_REASONS),
        resumable=True,
        # A fetches version with no page fetched (every URL failed) adds no document.
        nothing_new=lambda: (
            not options.all_fetches
            and all((f.rows or 0) == 0 for f in sources[0].files if f.path.startswith("warc/"))
        ),
    )


@dataclass(frozen=True)
class _FetchPart:
    """One `fetches/part-*.parquet` of one fetches version."""

    fetches: Manifest
    path: str
    fetch_rows: int  # pages and failed fetches, as its manifest entry counts them

    @property
    def links(self) -> VersionRef:
        return self.fetches.parents[0]

    def rows(self, store: Store, columns: list[str] | None = None) -> pa.Table:
        """The rows of the pages fetched (failures have nothing to extract)."""
        with store.open_verified(self.fetches.ref, self.path) as handle:
            table = pq.read_table(handle, columns=None if columns is None else [*columns, "error"])
        return table.filter(pc.is_null(table["error"]))

    def urls(self, store: Store) -> pa.Array:
        return self.rows(store, ["url"])["url"].combine_chunks()


@dataclass(frozen=True)
class _PartInput:
    """What one part's task needs besides the settings: its fetches part, and the links
    rows of its URLs."""

    part: _FetchPart
    reddit: pa.Table


def extract_part(
    store_url: str, staging_dir: str, options: ExtractOptions, item: tuple[str, _PartInput]
) -> PartResult:
    """Extract one fetches part into the staging folder: a plain function of plain
    arguments, so any executor runs it on any worker that sees the store. Its pages run in
    a pool of `options.workers` processes of its own, for the page time and memory limits."""
    name, given = item
    if multiprocessing.current_process().daemon:
        raise RuntimeError(
            f"extracting {name}: this worker is a daemonic process, which may not start the "
            "page pool; run Dask workers with DASK_DISTRIBUTED__WORKER__DAEMON=False"
        )
    without_huge_pages()  # this may be a fresh worker process
    store = Store(store_url)
    out = VersionWriter(store.fs, staging_dir, VersionRef(STAGE.name, "staging"))
    pool = page_pool(options)
    # 4 pages in flight per worker keep every worker busy while results come back.
    reddit = {row["url"]: row for row in given.reddit.to_pylist()}
    extraction = _Extraction(store, options, reddit, 4 * options.processes)
    result = extraction.shard(pool, out, name, given.part, given.part.rows(store))
    release_arrow_memory()  # one part's peak, not the sum of what every part left cached
    return result


# This process's page pools, by (processes, memory limit): started by its first part and
# kept for the next ones, so a part does not pay the workers' start (a Dask worker runs
# many parts); the stage's caller closes its own at the end (`_close_page_pools`), other
# processes' close when they exit.
_PAGE_POOLS: dict[tuple[int, int], ProcessPool] = {}
_PAGE_POOLS_LOCK = threading.Lock()
# A page of prose: extracting it once before the workers fork loads the extractor's lazy
# parts (the language model, htmldate) in the parent, so every worker starts warm.
_WARM_UP_PAGE = (
    "<html><head><title>Warm up</title></head><body><article><p>"
    + "The quick brown fox jumps over the lazy dog near the quiet river bank. " * 8
    + "</p></article></body></html>"
).encode()


def page_pool(options: ExtractOptions) -> ProcessPool:
    """This process's page pool for `options`, started by the first call (a worker's first
    part, or a warm-up before it: `benchmarks/dask_speedup.py`)."""
    with _PAGE_POOLS_LOCK:  # parts run in threads (Prefect's default runner) share it
        return _started_page_pool(options.processes, options.page_memory_mb << 20)


def _started_page_pool(processes: int, memory_bytes: int) -> ProcessPool:
    key = (processes, memory_bytes)
    pool = _PAGE_POOLS.get(key)
    if pool is None or not pool.active:
        if not _PAGE_POOLS:
            # At this process's exit, before multiprocessing waits for its children: a
            # Dask worker is a multiprocessing child, which never runs atexit handlers.
            multiprocessing.util.Finalize(None, _close_page_pools, exitpriority=10)
        extract_page(_WARM_UP_PAGE, "http://warm.up/", "text/html", ExtractSettings())
        pool = _PAGE_POOLS[key] = ProcessPool(
            max_workers=processes,
            max_tasks=500,  # recycle workers: lxml and friends keep memory
            initializer=_limit_memory,
            initargs=(memory_bytes,),
            # Forked, never spawned, even where spawn is the default (a Dask worker): a
            # spawned worker imports everything again and starts cold, seconds each time
            # one is started or recycled.
            context=multiprocessing.get_context("fork"),
        )
    return pool


def _close_page_pools() -> None:
    while _PAGE_POOLS:
        _, pool = _PAGE_POOLS.popitem()
        pool.stop()
        pool.join()


def _limit_memory(extra: int) -> None:
    """Cap the worker's address space at what it maps now plus `extra` bytes.

    Relative, because a forked worker inherits its parent's mappings (pyarrow alone
    reserves hundreds of MB of address space it may never touch).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            limit = int(line.split()[1]) * 1024 + extra
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            return


def _process_page(
    body: bytes,
    url: str,
    content_type: str | None,
    settings: ExtractSettings,
    filters: QualityFilters,
) -> dict[str, Any]:
    """In a worker: extract, then judge. A dict, so it pickles cheaply."""
    page = extract_page(body, url, content_type, settings)
    if page is None:
        return {"reason": NO_TEXT, "word_count": 0, "text": ""}
    verdict = filters.check(page.text, page.language, page.language_score, page.title)
    return {
        "reason": verdict.reason,
        "detail": verdict.detail,
        "word_count": verdict.words,
        "text": page.text,
        "title": page.title,
        "published": page.date,
        "language": page.language,
        "language_score": page.language_score,
        "extraction": page.method,
    }


class _Extraction:
    """Runs one part's pages through the worker pool."""

    def __init__(
        self,
        store: Store,
        options: ExtractOptions,
        reddit: dict[str, dict[str, Any]],
        window: int,
    ) -> None:
        self.store = store
        self.options = options
        self.reddit = reddit
        self.window = window
        self._warcs: dict[str, WarcFile] = {}
        self._verified = ExitStack()  # the verified copies of the current shard's WARCs

    def shard(
        self, pool: ProcessPool, out: VersionWriter, name: str, part: _FetchPart, rows: pa.Table
    ) -> PartResult:
        with ExitStack() as self._verified:
            try:
                return self._shard(pool, out, name, part, rows)
            finally:
                self._warcs.clear()

    def _shard(
        self, pool: ProcessPool, out: VersionWriter, name: str, part: _FetchPart, rows: pa.Table
    ) -> PartResult:
        documents: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        counts: Counter[str] = Counter()
        for row, outcome in self._outcomes(pool, part.fetches.ref, rows):
            counts["pages"] += 1
            if outcome.get("reason") is None:
                documents.append(self._document(row, outcome))
                counts["documents"] += 1
                counts["words"] += outcome["word_count"]
            else:
                counts[outcome["reason"]] += 1
                rejected.append(
                    {
                        "url": row["url"],
                        "final_url": row["final_url"],
                        "reason": outcome["reason"],
                        "detail": outcome.get("detail"),
                        "word_count": outcome.get("word_count"),
                        "text_sample": (outcome.get("text") or "")[:_AUDIT_CHARS],
                    }
                )
        documents_name, rejected_name = _outputs(name)
        put_table(out, rejected_name, pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA))
        put_table(out, documents_name, pa.Table.from_pylist(documents, schema=DOCUMENTS_SCHEMA))
        return PartResult({documents_name: len(documents), rejected_name: len(rejected)}, counts)

    def _outcomes(
        self, pool: ProcessPool, fetches: VersionRef, rows: pa.Table
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(fetch row, outcome) for each page, in order, with a bounded window in flight."""
        window: deque[tuple[dict[str, Any], Any]] = deque()
        for row in rows.to_pylist():
            try:
                body = self._body(fetches, row)
            except (StoreError, OSError):  # the WARC missing, altered or unreadable: the
                raise  # stage's input is broken, not this page; nothing is published
            except Exception as exc:  # a torn record in a verified WARC: this page only
                log.warning("cannot read %s from its WARC: %r", row["url"], exc)
                yield row, {"reason": EXTRACT_FAILED, "detail": f"WARC record: {exc!r}"[:500]}
                continue
            options = self.options
            future = pool.schedule(
                _process_page,
                args=(body, row["url"], row["content_type"], options.extract, options.quality),
                timeout=options.page_timeout,
            )
            window.append((row, future))
            if len(window) >= self.window:
                yield _resolve(*window.popleft())
        while window:
            yield _resolve(*window.popleft())

    def _body(self, fetches: VersionRef, row: dict[str, Any]) -> bytes:
        name = row["warc_file"]
        if name not in self._warcs:
            # Records are read by offset, so the whole WARC is checked as it is copied
            # (once per shard: a WARC belongs to one fetches part), then read locally.
            verified = self._verified.enter_context(self.store.open_verified(fetches, name))
            self._warcs[name] = WarcFile(self.store.url(fetches, name), verified)
        with self._warcs[name].record_at(row["warc_offset"], row["warc_length"]) as record:
            return record.raw_stream.read()

    def _document(self, row: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
        url = row["url"]
        reddit = self.reddit.get(url, {})
        final_url = row["final_url"] or url
        return {
            "doc_id": doc_id(url),
            "url": url,
            "final_url": final_url,
            "domain": reddit.get("domain") or url_host(final_url),
            "title": outcome.get("title"),
            "text": outcome["text"],
            "language": outcome.get("language"),
            "language_score": outcome.get("language_score"),
            "word_count": outcome["word_count"],
            "published": outcome.get("published"),
            "fetched_at": row["fetched_at"],
            "extraction": outcome.get("extraction"),
            **{name: reddit.get(name) for name in _REDDIT_COLUMNS},
        }


def _resolve(row: dict[str, Any], future: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return row, future.result()
    except FutureTimeout:
        return row, {"reason": EXTRACT_TIMEOUT, "detail": "the page took too long"}
    except ProcessExpired as exc:  # the worker died: out of memory, or a crash in C
        return row, {"reason": EXTRACT_FAILED, "detail": f"worker died: {exc}"}
    except Exception as exc:  # MemoryError and any extractor bug: this page only
        log.warning("extraction failed on %s: %r", row["url"], exc)
        return row, {"reason": EXTRACT_FAILED, "detail": repr(exc)[:500]}


def _join_groups(parts: list[str], pages: Mapping[str, int], limit: int) -> Iterator[list[str]]:
    """`parts` in order, cut into runs of at most `limit` pages (a bigger part alone)."""
    group: list[str] = []
    total = 0
    for part in parts:
        if group and total + pages[part] > limit:
            yield group
            group, total = [], 0
        group.append(part)
        total += pages[part]
    if group:
        yield group


def _part_inputs(store: Store, parts: Mapping[str, _FetchPart]) -> dict[str, _PartInput]:
    """Each part with the links rows of its pages: one pass over each links version."""
    urls = {name: part.urls(store) for name, part in parts.items()}
    inputs = {}
    for links in {part.links for part in parts.values()}:
        mine = [name for name, part in parts.items() if part.links == links]
        rows = _reddit_metadata(store, links, [urls[name] for name in mine])
        for name, part_rows in zip(mine, rows, strict=True):
            inputs[name] = _PartInput(parts[name], part_rows)
    return inputs


def _reddit_metadata(store: Store, links: VersionRef, parts_urls: list[pa.Array]) -> list[pa.Table]:
    """For each part's URLs, the links rows of those URLs (its metadata columns). The links
    files are read in batches, so a big file is never decoded whole."""
    wanted = pa.concat_arrays(parts_urls or [pa.array([], pa.string())])
    found = []
    for entry in store.manifest(links).files:
        if entry.path.startswith("links/"):
            with store.open_verified(links, entry) as handle:
                file = pq.ParquetFile(handle)
                columns = [c for c in _LINKS_COLUMNS if c in file.schema_arrow.names]
                for batch in file.iter_batches(_LINKS_BATCH_ROWS, columns=columns):
                    found.append(batch.filter(pc.is_in(batch["url"], value_set=wanted)))
    rows = (
        pa.Table.from_batches(found).combine_chunks()
        if found
        else pa.table({"url": pa.array([], pa.string())})
    )
    at = pc.index_in(wanted, value_set=rows["url"])  # each page's links row, or null
    tables, start = [], 0
    for urls in parts_urls:
        tables.append(rows.take(at.slice(start, len(urls)).drop_null()))
        start += len(urls)
    return tables


class _Started:
    """A progress started once with the stage's total, which each group's `run_parts`
    advances (its own `start` would restart it at the group's total)."""

    def __init__(self, progress: Progress, total: int) -> None:
        self._progress = progress
        progress.start(total)

    def start(self, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        self._progress.advance(n)


def _outputs(part: str) -> tuple[str, str]:
    """The documents and rejected files made from one fetches part: `fetches/part-N.parquet`
    gives `part-N.parquet`, `<version>/fetches/part-N.parquet` `<version>-part-N.parquet`."""
    name = part.replace("/fetches/", "-").removeprefix("fetches/")
    return f"documents/{name}", f"rejected/{name}"
