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
parts and are committed one by one (the documents part written last marks a shard done),
so a killed run resumes where it stopped, as the fetch stage does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
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
from webtext.config import code_version
from webtext.parquet import put_table
from webtext.store import StageResult, Store, VersionRef, VersionWriter

STAGE = "documents"
log = logging.getLogger(__name__)

NO_TEXT = "no_text"
EXTRACT_TIMEOUT = "extract_timeout"
EXTRACT_FAILED = "extract_failed"
REJECT_REASONS = (NO_TEXT, EXTRACT_TIMEOUT, EXTRACT_FAILED, *QUALITY_REASONS)
_AUDIT_CHARS = 2_000

DOCUMENTS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("url", pa.string()),
        ("final_url", pa.string()),
        ("domain", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float32()),
        ("word_count", pa.int32()),
        ("published", pa.string()),
        ("fetched_at", pa.timestamp("ms", tz="UTC")),
        ("karma", pa.int64()),
        ("submissions", pa.int64()),
        ("subreddits", pa.list_(pa.string())),
        ("post_ids", pa.list_(pa.string())),
        ("first_seen", pa.timestamp("s", tz="UTC")),
        ("last_seen", pa.timestamp("s", tz="UTC")),
        ("extraction", pa.string()),
    ]
)
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


def doc_id(url: str) -> str:
    """A stable id: 16 hex digits of the sha256 of the link's URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def extract_documents(
    store: Store,
    fetches: VersionRef,
    settings: ExtractSettings | None = None,
    filters: QualityFilters | None = None,
    *,
    workers: int | None = None,
    page_timeout: float = 20.0,
    page_memory_mb: int = 2_048,
    on_start: Callable[[int], None] | None = None,
    on_page: Callable[[], None] | None = None,
) -> StageResult:
    """Extract and filter every fetched page of `fetches` into a new `documents` version."""
    settings = settings or ExtractSettings()
    filters = filters or QualityFilters()
    fetch_manifest = store.manifest(fetches)
    links = fetch_manifest.parents[0]
    parameters = {
        "extract": settings.parameters(),
        "quality": filters.parameters(),
        "page_timeout": page_timeout,
        "page_memory_mb": page_memory_mb,
    }
    version = code_version("scraping")
    parents = (fetches, links)
    ref = store.ref_for(STAGE, parameters, version, parents)
    if store.exists(ref):
        return StageResult(ref, True, store.manifest(ref).stats)

    parts = sorted(f.path for f in fetch_manifest.files if f.path.startswith("fetches/"))
    with store.write(STAGE, parameters, version, parents, resumable=True) as out:
        pending = [part for part in parts if not _resume(out, part)]
        tables = {part: _fetched_rows(store, fetches, part) for part in pending}
        if on_start:
            on_start(sum(t.num_rows for t in tables.values()))
        if pending:
            reddit = _reddit_metadata(store, links, tables.values())
            workers = workers or os.cpu_count() or 1
            # 4 pages in flight per worker keep every worker busy while results come back.
            work = _Extraction(
                store, fetches, settings, filters, reddit, page_timeout, 4 * workers, on_page
            )
            with ProcessPool(
                max_workers=workers,
                max_tasks=500,  # recycle workers: lxml and friends keep memory
                initializer=_limit_memory,
                initargs=(page_memory_mb << 20,),
            ) as pool:
                for part in pending:
                    work.shard(pool, out, part, tables[part])
        out.stats["counts"] = _count(out, parts)
        ref = out.ref
    return StageResult(ref, False, store.manifest(ref).stats)


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
    reason, words = filters.check(page.text, page.language)
    return {
        "reason": reason,
        "word_count": words,
        "text": page.text,
        "title": page.title,
        "published": page.date,
        "language": page.language,
        "language_score": page.language_score,
        "extraction": page.method,
    }


class _Extraction:
    """Runs the shards of one stage run through the worker pool."""

    def __init__(
        self,
        store: Store,
        fetches: VersionRef,
        settings: ExtractSettings,
        filters: QualityFilters,
        reddit: dict[str, dict[str, Any]],
        timeout: float,
        window: int,
        on_page: Callable[[], None] | None,
    ) -> None:
        self.store = store
        self.fetches = fetches
        self.settings = settings
        self.filters = filters
        self.reddit = reddit
        self.timeout = timeout
        self.window = window
        self.on_page = on_page
        self._warcs: dict[str, WarcFile] = {}

    def shard(self, pool: ProcessPool, out: VersionWriter, part: str, rows: pa.Table) -> None:
        documents: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for row, outcome in self._outcomes(pool, rows):
            if outcome.get("reason") is None:
                documents.append(self._document(row, outcome))
            else:
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
            if self.on_page:
                self.on_page()
        documents_name, rejected_name = _outputs(part)
        put_table(out, rejected_name, pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA))
        # Last: its presence marks the shard done.
        put_table(out, documents_name, pa.Table.from_pylist(documents, schema=DOCUMENTS_SCHEMA))
        for warc in self._warcs.values():
            warc.close()
        self._warcs.clear()

    def _outcomes(
        self, pool: ProcessPool, rows: pa.Table
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(fetch row, outcome) for each page, in order, with a bounded window in flight."""
        window: deque[tuple[dict[str, Any], Any]] = deque()
        for row in rows.to_pylist():
            try:
                body = self._body(row)
            except Exception as exc:  # a torn WARC record or a missing file: this page only
                log.warning("cannot read %s from its WARC: %r", row["url"], exc)
                yield row, {"reason": EXTRACT_FAILED, "detail": f"WARC record: {exc!r}"[:500]}
                continue
            future = pool.schedule(
                _process_page,
                args=(body, row["url"], row["content_type"], self.settings, self.filters),
                timeout=self.timeout,
            )
            window.append((row, future))
            if len(window) >= self.window:
                yield _resolve(*window.popleft())
        while window:
            yield _resolve(*window.popleft())

    def _body(self, row: dict[str, Any]) -> bytes:
        name = row["warc_file"]
        if name not in self._warcs:
            self._warcs[name] = WarcFile(self.store.url(self.fetches, name))
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


def _fetched_rows(store: Store, fetches: VersionRef, part: str) -> pa.Table:
    with store.fs.open(f"{store.version_dir(fetches)}/{part}", "rb") as handle:
        table = pq.read_table(handle)
    return table.filter(pc.is_null(table["error"]))


def _reddit_metadata(store: Store, links: VersionRef, tables: Any) -> dict[str, dict[str, Any]]:
    """The links rows of the URLs about to be extracted, by URL."""
    wanted = pa.concat_arrays(
        [t["url"].combine_chunks() for t in tables] or [pa.array([], pa.string())]
    )
    found: dict[str, dict[str, Any]] = {}
    for entry in store.manifest(links).files:
        if entry.path.startswith("links/"):
            with store.fs.open(f"{store.version_dir(links)}/{entry.path}", "rb") as handle:
                table = pq.read_table(handle)
            table = table.filter(pc.is_in(table["url"], value_set=wanted))
            found.update((row["url"], row) for row in table.to_pylist())
    return found


def _outputs(part: str) -> tuple[str, str]:
    """The documents and rejected files made from one fetches part."""
    name = part.rsplit("/", 1)[-1]
    return f"documents/{name}", f"rejected/{name}"


def _resume(out: VersionWriter, part: str) -> bool:
    """Register a shard an earlier try finished (both its tables are in the staging)."""
    documents, rejected = _outputs(part)
    if not out.exists(documents):
        return False
    for name in (documents, rejected):
        with out.fs.open(out.path(name), "rb") as handle:
            out.set_rows(name, pq.ParquetFile(handle).metadata.num_rows)
    return True


def _count(out: VersionWriter, parts: list[str]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for part in parts:
        documents_name, rejected_name = _outputs(part)
        with out.fs.open(out.path(documents_name), "rb") as handle:
            documents = pq.read_table(handle, columns=["word_count"])
        with out.fs.open(out.path(rejected_name), "rb") as handle:
            reasons = pq.read_table(handle, columns=["reason"])["reason"].to_pylist()
        counts["documents"] += documents.num_rows
        counts["words"] += pc.sum(documents["word_count"]).as_py() or 0
        counts.update(reasons)
    counts["pages"] = counts["documents"] + sum(counts[r] for r in REJECT_REASONS)
    ordered = {name: counts[name] for name in ("pages", "documents", "words")}
    ordered.update({reason: counts[reason] for reason in REJECT_REASONS})
    return ordered
