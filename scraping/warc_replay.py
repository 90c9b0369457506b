"""Archive replay: the fetch stage's `PageSource` over existing WARC files.

`ArchiveSource(paths)` reads pages from WARC files (as Common Crawl, wget or pywb write
them: per-record gzip `.warc.gz` or plain `.warc`, local paths or fsspec URLs) instead of
the live web, and answers `fetch(url)` the way `scraping.fetch.LiveSource` does: the same
redirect rules, checks, error classes and `FetchResult` fields, with `fetched_at` the
capture's `WARC-Date` and `attempts` always 1.

Index rules (built once, on `__aenter__`, by scanning every file):
- the key is `normalize_url(WARC-Target-URI)` (wget's `<...>` wrapping removed); records
  whose URI does not normalise are counted in `stats` and skipped;
- several captures of one URL: the latest `WARC-Date` wins, whatever its status, as a live
  fetch now would see the page's latest state; on equal dates the record read last wins
  (files in the order given);
- a `revisit` record (profile `identical-payload-digest`, including webrecorder's
  `uri-agnostic-` variant, or `server-not-modified`) is a capture of its own URL and date
  whose body is the original response's, found by `WARC-Refers-To-Target-URI` +
  `WARC-Refers-To-Date`, else by `WARC-Payload-Digest`. Its HTTP head is its own when it
  has one, except a 304 (server-not-modified), which keeps the original's status and
  headers. A revisit whose original is not in these files is skipped;
- a `request` record gives `request_headers` to the capture of the same URL and date.

Bad input: a record that cannot be used (no or a bad `WARC-Target-URI` or `WARC-Date`, an
HTTP head that does not parse) is skipped and counted; a file that stops parsing part
way (a corrupt gzip member, a WARC head that does not parse) keeps the records before
that offset, and is counted as `archives_corrupt` and named in `failed_files`; a file
that is not a WARC file at all (no record readable at its start, or it cannot be opened)
is an `ArchiveError`, one line naming it. Header lines are bounded (`MAX_HEADER_LINE`):
warcio joins a long line block by block without a limit, so a 100 MB line took minutes.

Bodies are decoded here, in bounded steps (chunking, then gzip/deflate), rather than by
warcio's `content_stream()`: that one inflates each 16 KiB block or whole chunk at once, and
on a corrupt stream silently returns the raw bytes or stops early. `truncated` is also set
when the archive itself cut the payload (`WARC-Truncated`, e.g. Common Crawl's 1 MiB cap).

Memory: the index is one dict entry per captured URL (its key and up to three record
locations: about 0.5 KB, measured), and the scan briefly holds about as much again (dates,
digests, request locations). That suits the files of a shard: a Common Crawl WARC file
holds some 40,000 captures, about 20 MB of index, so a thousand files need some 20 GB and
a scan that decompresses every byte once. For all of Common Crawl, look URLs up in its CDX
index instead, which gives each capture's file, offset and length without any scan.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any, NamedTuple

import fsspec
from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import DecompressingBufferedReader
from warcio.exceptions import ArchiveLoadFailed
from warcio.limitreader import LimitReader
from warcio.recordloader import ArcWarcRecord
from warcio.statusandheaders import StatusAndHeaders, StatusAndHeadersParserException

from scraping import page_source as errors
from scraping.page_source import (
    HTML_CONTENT_TYPES,
    REDIRECT_STATUSES,
    FetchFailure,
    FetchResult,
    binary_error,
    content_type_error,
    follow_redirects,
)
from scraping.payload import BodyDecoder, renamed_headers
from scraping.urls import UrlError, normalize_url
from webtext.store import input_fingerprint

log = logging.getLogger(__name__)

REVISIT_PROFILES = ("identical-payload-digest", "server-not-modified")
# Far above any real header line (servers refuse requests with 8-64 KiB of headers);
# the bound keeps a malformed record from costing more than this to reject.
MAX_HEADER_LINE = 1 << 20
MAX_REPORTED_FAILURES = 100
# Why a record was left out of the index (`stats["skipped:<reason>"]`).
SKIP_REASONS = (
    "invalid_url",
    "invalid_date",
    "bad_http_head",
    "response_without_http",
    "revisit_profile",
    "revisit_without_original",
)
COUNT_NAMES = (
    "archive_records",
    "archive_urls",
    *(f"archive_skipped_{reason}" for reason in SKIP_REASONS),
    "archives_truncated",
    "archives_corrupt",
)
_READ_CHUNK = 64 * 1024
_MAX_CHUNK_LINE = 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ArchiveError(ValueError):
    """A file given as an archive that cannot be read as one at all."""


class HeaderLineTooLong(ArchiveLoadFailed):
    """A WARC or HTTP header line longer than `MAX_HEADER_LINE`."""


class _RecordCutShort(Exception):
    """A record whose file ends before its `Content-Length` (warcio says nothing)."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


# What reading a malformed record raises: warcio's own errors, and the plain ones from
# deeper down (a corrupt gzip member is a zlib.error; a truncated head an EOFError).
_BAD_RECORD = (ArchiveLoadFailed, StatusAndHeadersParserException, zlib.error, EOFError, ValueError)


def _bounded_readline(readline: Callable[[int], bytes], length: int | None) -> bytes:
    """A line read through `readline(limit)`, at most `MAX_HEADER_LINE` bytes of it:
    warcio's own `readline` joins a long line block by block (quadratic) and reads to the
    newline however far away it is. Raises `HeaderLineTooLong` after taking one byte more
    (so a caller counting what was read stays right)."""
    if length is not None and length <= MAX_HEADER_LINE + 1:
        return readline(length)
    parts: list[bytes] = []
    size = 0
    while size <= MAX_HEADER_LINE:
        # warcio may stop short of the limit without a newline: ask again.
        part = readline(MAX_HEADER_LINE + 1 - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
        if part.endswith(b"\n"):
            break
    else:
        raise HeaderLineTooLong(f"a header line longer than {MAX_HEADER_LINE:,} bytes")
    return b"".join(parts)


class _BoundedLines(DecompressingBufferedReader):
    """warcio's reader of a whole file, its lines bounded (its WARC heads are read here)."""

    def readline(self, length: int | None = None) -> bytes:
        return _bounded_readline(super().readline, length)


class _BoundedHead:
    """One record's stream (a `LimitReader`) as the HTTP head parser reads it, its lines
    bounded above the limit reader, so that the limit counts every byte taken even when
    a line is refused, and the next record starts where it should."""

    def __init__(self, stream: LimitReader) -> None:
        self._stream = stream

    def readline(self, length: int | None = None) -> bytes:
        return _bounded_readline(self._stream.readline, length)


class _Records(ArchiveIterator):
    """warcio's `ArchiveIterator`, reading through `_BoundedLines`."""

    def __init__(self, stream: IO[bytes], **options: Any) -> None:
        super().__init__(stream, **options)
        # Replaced before the first record is read: iteration starts on the first next().
        self.reader = _BoundedLines(self.fh, block_size=self.reader.block_size)


class _Location(NamedTuple):
    """Where one record lies: an index into the source's files, its offset and length."""

    file: int
    offset: int
    length: int


class _Capture(NamedTuple):
    head: _Location  # the response or revisit record: WARC and HTTP headers
    payload: _Location  # the record holding the body: `head` itself, or a revisit's original
    request: _Location | None = None


class _Revisit(NamedTuple):
    url: str
    rank: tuple[datetime, int]
    location: _Location
    refers_to: tuple[str, datetime] | None
    digest: str | None


# This process's archive indexes, by the archives' paths and sizes: every shard of a fetch
# stage opens its own source, and the index of the same archives is built once per process.
_INDEXES: dict[
    tuple[tuple[str, int], ...], tuple[dict[str, _Capture], Counter[str], list[str]]
] = {}
_INDEXES_KEPT = 2


class ArchiveSource:
    """`PageSource` over WARC files. Use as `async with ArchiveSource(paths) as source`.

    `stats` counts the index build: `records`, `responses`, `revisits` (resolved),
    `requests`, `urls` (index size), `superseded` (older captures of a URL),
    `skipped:<reason>` and `archives_corrupt`; `failures` lists the first bad records and
    files with their file@offset. An unreadable file raises `ArchiveError`.
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        max_bytes: int = 5 * 2**20,
        max_redirects: int = 10,
        allowed_types: tuple[str, ...] = HTML_CONTENT_TYPES,
    ) -> None:
        self.paths = list(paths)
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.allowed_types = allowed_types
        self.stats: Counter[str] = Counter()
        self.failures: list[str] = []
        self._files = [WarcFile(path) for path in self.paths]
        self._index: dict[str, _Capture] | None = None

    async def __aenter__(self) -> ArchiveSource:
        built = _INDEXES.get(key := self._index_key())
        if built is None:
            index = await asyncio.to_thread(self._build_index)
            built = _INDEXES[key] = (index, Counter(self.stats), list(self.failures))
            while len(_INDEXES) > _INDEXES_KEPT:
                del _INDEXES[next(iter(_INDEXES))]
        self._index, stats, failures = built
        self.stats, self.failures = Counter(stats), list(failures)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for archive in self._files:
            archive.close()

    def _index_key(self) -> tuple[tuple[str, int], ...]:
        key = []
        for path in self.paths:
            fs, fs_path = fsspec.url_to_fs(path)
            try:
                key.append((path, fs.size(fs_path)))
            except OSError as exc:
                raise ArchiveError(f"cannot read archive {path}: {exc}") from exc
        return tuple(key)

    def counts(self) -> dict[str, int]:
        """The index build's counts under `COUNT_NAMES`, for the fetch stage's manifest."""
        counts = {"archive_records": self.stats["records"], "archive_urls": self.stats["urls"]}
        counts |= {f"archive_skipped_{r}": self.stats[f"skipped:{r}"] for r in SKIP_REASONS}
        counts["archives_truncated"] = self.stats["archives_truncated"]
        counts["archives_corrupt"] = self.stats["archives_corrupt"]
        return counts

    def parameters(self) -> dict[str, Any]:
        """The archives replayed and the limits applied, for the output's version id."""
        return {
            "kind": "archive",
            "archives": [input_fingerprint(path) for path in self.paths],
            "max_bytes": self.max_bytes,
            "max_redirects": self.max_redirects,
            "allowed_types": list(self.allowed_types),
        }

    async def fetch(self, url: str) -> FetchResult:
        """Replay one page, following redirects inside the archive; never raises for a
        bad URL or a bad capture."""
        # Replayed, a page's time is its capture's; a URL with no capture has none.
        result = FetchResult(url=url, attempts=1, fetched_at=None)
        try:
            await self._follow(url, result)
        except FetchFailure as failure:
            failure.into(result)
        return result

    async def _follow(self, url: str, result: FetchResult) -> None:
        if self._index is None:
            raise RuntimeError("use ArchiveSource as an async context manager")
        index = self._index

        async def hop(current: str) -> str | None:
            capture = index.get(current)
            if capture is None:
                raise FetchFailure(errors.NOT_IN_ARCHIVE, f"no capture of {current}")
            return await asyncio.to_thread(self._replay, capture, result)

        await follow_redirects(url, result, self.max_redirects, hop)

    # Everything below runs in a worker thread: it is blocking file I/O and decompression.

    def _build_index(self) -> dict[str, _Capture]:
        self.stats.clear()
        self.failures.clear()
        builder = _IndexBuilder(self.stats, self.failures)
        for file_number, archive in enumerate(self._files):
            try:
                opened = fsspec.open(archive.path, "rb").open()
            except OSError as exc:
                raise ArchiveError(f"cannot read archive {archive.path}: {exc}") from exc
            with opened as stream:
                builder.scan(file_number, archive.path, stream)
        return builder.finish()

    def _replay(self, capture: _Capture, result: FetchResult) -> str | None:
        """One capture into `result`; the redirect target, or None when final.

        Records are read one after another, never nested: a file serves one at a time.
        """
        is_revisit = capture.payload != capture.head
        with self._record(capture.head) as record:
            result.fetched_at = _warc_date(record)
            result.ip_address = record.rec_headers.get_header("WARC-IP-Address")
            http = record.http_headers
            if not is_revisit:
                location = self._answer(http, record, result)
        if is_revisit:
            with self._record(capture.payload) as original:
                if http is None or http.get_statuscode() == "304":
                    http = original.http_headers  # not modified: the original answer stands
                location = self._answer(http, original, result)
        if location is None and capture.request is not None:
            with self._record(capture.request) as request:
                if request.http_headers is not None:
                    result.request_headers = [
                        (name, value) for name, value in request.http_headers.headers
                    ]
        return location

    def _answer(
        self, http: StatusAndHeaders | None, payload: ArcWarcRecord, result: FetchResult
    ) -> str | None:
        """Checks and body of a response whose body is `payload`'s; as `_replay`."""
        if http is None:
            raise FetchFailure(errors.PROTOCOL_ERROR, "the capture has no HTTP response")
        status = _status(http)
        result.status = status
        result.http_version = _http_version(http.protocol)
        result.content_type = http.get_header("Content-Type")
        location = http.get_header("Location")
        if status in REDIRECT_STATUSES and location:
            return location
        if status >= 400:
            raise FetchFailure(errors.HTTP_STATUS, f"HTTP {status}", status)
        if problem := content_type_error(result.content_type, self.allowed_types):
            raise FetchFailure(problem, f"content type {result.content_type!r}")
        body, truncated, decoded = _read_body(payload, self.max_bytes)
        if problem := binary_error(body):
            raise FetchFailure(problem, "the body is binary")
        result.body = body
        result.truncated = truncated or payload.rec_headers.get_header("WARC-Truncated") is not None
        result.headers = renamed_headers(http.headers, decoded)
        return None

    @contextmanager
    def _record(self, location: _Location) -> Iterator[ArcWarcRecord]:
        with self._files[location.file].record_at(location.offset, location.length) as record:
            yield record


class WarcFile:
    """One WARC file, opened on first use and shared by worker threads, one at a time.
    `handle`, when given, is the file already open (its owner closes it); `path` names it."""

    def __init__(self, path: str, handle: IO[bytes] | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle = handle

    @contextmanager
    def record_at(self, offset: int, length: int) -> Iterator[ArcWarcRecord]:
        with self._lock:
            if self._handle is None:
                self._handle = fsspec.open(self.path, "rb").open()
            self._handle.seek(offset)
            # The limit keeps warcio from reading past this record into the next one.
            records = _Records(LimitReader(self._handle, length))
            try:
                record = next(records, None)
            except _BAD_RECORD as exc:
                detail = f"{self.path}@{offset}: {_first_line(exc)}"
                raise FetchFailure(errors.PROTOCOL_ERROR, detail) from exc
            if record is None:
                raise FetchFailure(errors.PROTOCOL_ERROR, f"{self.path}@{offset}: no record")
            try:
                yield record
            except _BAD_RECORD as exc:  # a body that does not decompress, say
                detail = f"{self.path}@{offset}: {_first_line(exc)}"
                raise FetchFailure(errors.PROTOCOL_ERROR, detail) from exc
            finally:
                records.close()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


class _IndexBuilder:
    """The scan's state; only `finish()`'s dict outlives it."""

    def __init__(self, stats: Counter[str], failures: list[str]) -> None:
        self.stats = stats
        self.failures = failures
        self.captures: dict[str, _Capture] = {}
        self.ranks: dict[str, tuple[datetime, int]] = {}  # (WARC-Date, scan order)
        self.responses: dict[tuple[str, datetime], _Location] = {}
        self.by_digest: dict[str, _Location] = {}
        self.requests: dict[tuple[str, datetime], _Location] = {}
        self.revisits: list[_Revisit] = []
        self.order = 0

    def scan(self, file_number: int, path: str, stream: IO[bytes]) -> None:
        """Index one file's records. HTTP heads are parsed here, one record at a time, so
        that a bad one skips its record only: warcio's own parsing would end the file."""
        records = _Records(stream, no_record_parse=True)
        read = 0
        while True:
            try:
                record = next(records, None)
                if record is None:
                    return
                self._add(record, records, file_number, path)
                _record_location(records, file_number)  # a record not indexed may be cut too
            except _RecordCutShort as cut:
                self.stats["archives_truncated"] += 1
                self._report(
                    f"{path}@{cut.offset}: the file ends inside this record, the {read} "
                    "records before kept"
                )
                return
            except _BAD_RECORD as exc:
                # The iterator cannot go on: warcio has lost its place in the file.
                if read == 0:
                    raise ArchiveError(
                        f"{path}: no WARC record readable: {_first_line(exc)}"
                    ) from exc
                self.stats["archives_corrupt"] += 1
                self._report(
                    f"{path}@{records.offset}: unreadable from here, the {read} records "
                    f"before kept: {_first_line(exc)}"
                )
                return
            read += 1

    def _add(self, record: ArcWarcRecord, records: _Records, file_number: int, path: str) -> None:
        self.stats["records"] += 1
        kind = record.rec_type
        if kind not in ("response", "revisit", "request"):
            return
        headers = record.rec_headers
        try:
            url = normalize_url(_unwrapped(headers.get_header("WARC-Target-URI")))
        except UrlError:
            self.stats["skipped:invalid_url"] += 1
            return
        try:
            date = _warc_date(record)
        except ValueError:
            self.stats["skipped:invalid_date"] += 1
            return
        try:
            head = _BoundedHead(record.raw_stream)
            http = records.loader.load_http_headers(kind, url, head, record.length)
        except _BAD_RECORD as exc:
            self.stats["skipped:bad_http_head"] += 1
            self._report(f"{path}@{records.offset}: {kind} of {url}: {_first_line(exc)}")
            return
        location = _record_location(records, file_number)
        self.order += 1
        if kind == "request":
            self.stats["requests"] += 1
            self.requests[(url, date)] = location
        elif kind == "response":
            if http is None:
                self.stats["skipped:response_without_http"] += 1
                return
            self.stats["responses"] += 1
            self.responses[(url, date)] = location
            if digest := headers.get_header("WARC-Payload-Digest"):
                self.by_digest.setdefault(digest, location)
            self._offer(url, (date, self.order), _Capture(location, location))
        elif (headers.get_header("WARC-Profile") or "").endswith(REVISIT_PROFILES):
            # Resolved in finish(): the original may lie further on, or in a later file.
            self.revisits.append(
                _Revisit(
                    url,
                    (date, self.order),
                    location,
                    _refers_to(record),
                    headers.get_header("WARC-Payload-Digest"),
                )
            )
        else:
            self.stats["skipped:revisit_profile"] += 1

    def _report(self, failure: str) -> None:
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(failure)
            log.warning("archive: %s", failure)

    def finish(self) -> dict[str, _Capture]:
        for revisit in self.revisits:
            original = self.responses.get(revisit.refers_to) if revisit.refers_to else None
            if original is None and revisit.digest:
                original = self.by_digest.get(revisit.digest)
            if original is None:
                self.stats["skipped:revisit_without_original"] += 1
                continue
            self.stats["revisits"] += 1
            self._offer(revisit.url, revisit.rank, _Capture(revisit.location, original))
        for url, capture in self.captures.items():
            request = self.requests.get((url, self.ranks[url][0]))
            if request is not None:
                self.captures[url] = capture._replace(request=request)
        self.stats["urls"] = len(self.captures)
        return self.captures

    def _offer(self, url: str, rank: tuple[datetime, int], capture: _Capture) -> None:
        held = self.ranks.get(url)
        if held is not None:
            self.stats["superseded"] += 1
            if held > rank:
                return
        self.ranks[url] = rank
        self.captures[url] = capture


def _record_location(records: _Records, file_number: int) -> _Location:
    """Where the current record lies; raises `_RecordCutShort` if the file ends inside it.
    warcio knows a record's length only once it has read past it."""
    offset, length = records.get_record_offset(), records.get_record_length()
    if getattr(records.record.raw_stream, "limit", 0) > 0:  # Content-Length not reached
        raise _RecordCutShort(offset)
    return _Location(file_number, offset, length)


def _first_line(error: BaseException) -> str:
    """warcio's messages run over several lines and quote whole header lines."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _unwrapped(uri: str | None) -> str:
    """wget writes `<http://...>` (WARC 1.0 drafts did); warcio unwraps only the target."""
    uri = (uri or "").strip()
    return uri[1:-1] if uri.startswith("<") and uri.endswith(">") else uri


def _refers_to(record: ArcWarcRecord) -> tuple[str, datetime] | None:
    headers = record.rec_headers
    uri = headers.get_header("WARC-Refers-To-Target-URI")
    date = headers.get_header("WARC-Refers-To-Date")
    if not uri or not date:
        return None
    try:
        return normalize_url(_unwrapped(uri)), _parse_date(date)
    except ValueError:  # UrlError is one; the digest may still find the original
        return None


def _warc_date(record: ArcWarcRecord) -> datetime:
    return _parse_date(record.rec_headers.get_header("WARC-Date") or "")


def _parse_date(value: str) -> datetime:
    """A WARC date (W3C ISO 8601, `Z`, seconds or finer) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.strip())
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _status(http: StatusAndHeaders) -> int:
    code = http.get_statuscode()
    if not code.isdigit():
        raise FetchFailure(errors.PROTOCOL_ERROR, f"bad status line {http.statusline!r}")
    return int(code)


def _http_version(protocol: str) -> str:
    version = protocol.upper().removeprefix("HTTP/")
    return version if re.fullmatch(r"\d(\.\d)?", version) else "1.1"


def _read_body(record: ArcWarcRecord, max_bytes: int) -> tuple[bytes, bool, bool]:
    """The payload decoded, at most `max_bytes`: (body, cut there, anything removed)."""
    http = record.http_headers
    decoder = BodyDecoder(http.get_header("Content-Encoding"), max_bytes)
    chunked = "chunked" in (http.get_header("Transfer-Encoding") or "").lower()
    for piece in _dechunked(record.raw_stream) if chunked else _pieces(record.raw_stream):
        if decoder.feed(piece):
            break
    return decoder.body, decoder.truncated, chunked or decoder.decoded


def _pieces(stream: Any) -> Iterator[bytes]:
    while piece := stream.read(_READ_CHUNK):
        yield piece


def _dechunked(stream: Any) -> Iterator[bytes]:
    """The body with `Transfer-Encoding: chunked` removed, a bounded piece at a time.

    A body that does not start with a chunk size is passed through as it is: some
    archivers store the payload de-chunked but keep the header. A capture cut off
    mid-chunk ends there.
    """
    first = True
    while line := stream.readline(_MAX_CHUNK_LINE):
        size_field = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_field):
            if first:
                yield line
                yield from _pieces(stream)
                return
            raise FetchFailure(errors.PROTOCOL_ERROR, f"bad chunk size line {line[:40]!r}")
        first = False
        remaining = int(size_field, 16)
        if remaining == 0:
            return
        while remaining > 0:
            piece = stream.read(min(remaining, _READ_CHUNK))
            if not piece:
                return
            remaining -= len(piece)
            yield piece
        if stream.readline(_MAX_CHUNK_LINE).strip():
            raise FetchFailure(errors.PROTOCOL_ERROR, "chunk data longer than its size")
