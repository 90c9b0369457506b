"""Writing fetched pages as WARC: one gzip member per record, files rotated by size.

Each page becomes a `request` and a `response` record (as Common Crawl writes them); the
response's file, offset and length go into the `fetches` table, so a reader can seek
straight to it. Each file starts with a `warcinfo` record naming the software, dated as its
first page. Record ids are drawn from a seed (the version id) and the file's name and
record number, not at random: a shard's WARC bytes depend only on the pages written.
"""

from __future__ import annotations

import http
import io
import uuid
from typing import Any
from urllib.parse import urlsplit

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from scraping.page_source import FetchResult
from webtext import __version__
from webtext.store import VersionWriter


class _SeededWarcWriter(WARCWriter):
    """warcio's writer with record ids from `seed` and a record counter, and the dates of
    records that carry none (the warcinfo) from `date`."""

    def __init__(self, handle: Any, seed: str, date: str) -> None:
        super().__init__(handle, gzip=True)
        self.seed = seed
        self.date = date
        self.records = 0

    def _make_warc_id(self) -> str:  # type: ignore[override]  # warcio: a classmethod
        self.records += 1
        return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{self.seed}#{self.records}')}>"

    def curr_warc_date(self) -> str:
        return self.date


class RotatingWarcWriter:
    """Writes `<prefix>-NNN.warc.gz` files of about `max_file_bytes` into a version;
    `seed` (the version id) makes their record ids unique to it."""

    def __init__(self, version: VersionWriter, prefix: str, max_file_bytes: int, seed: str) -> None:
        self.version = version
        self.prefix = prefix
        self.max_file_bytes = max_file_bytes
        self.seed = seed
        self.files: list[str] = []
        self._handle: Any = None
        self._writer: WARCWriter | None = None

    def write(self, result: FetchResult) -> tuple[str, int, int]:
        """Write a successful fetch; (file name, offset, length) of its response record."""
        assert result.fetched_at is not None  # a page fetched has a time
        date = result.fetched_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self._handle is None or self._handle.tell() >= self.max_file_bytes:
            self._open_next(date)
        assert self._writer is not None
        url = result.final_url or result.url
        self._writer.write_record(self._request_record(url, result, date))
        offset = self._handle.tell()
        self._writer.write_record(self._response_record(url, result, date))
        return self.files[-1], offset, self._handle.tell() - offset

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open_next(self, date: str) -> None:
        self.close()
        name = f"{self.prefix}-{len(self.files):03d}.warc.gz"
        self._handle = self.version.fs.open(self.version.path(name), "wb")
        self.files.append(name)
        self._writer = _SeededWarcWriter(self._handle, f"{self.seed}/{name}", date)
        info = self._writer.create_warcinfo_record(
            name.rsplit("/", 1)[-1],
            {"software": f"webtext/{__version__}", "format": "WARC File Format 1.1"},
        )
        self._writer.write_record(info)

    def _request_record(self, url: str, result: FetchResult, date: str) -> Any:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = StatusAndHeaders(
            f"GET {target} HTTP/{result.http_version}",
            result.request_headers or [("Host", parts.netloc)],
            is_http_request=True,
        )
        return self._writer.create_warc_record(
            url,
            "request",
            payload=io.BytesIO(b""),
            http_headers=headers,
            warc_headers_dict={"WARC-Date": date},
        )

    def _response_record(self, url: str, result: FetchResult, date: str) -> Any:
        status = result.status or 200
        headers = StatusAndHeaders(
            f"{status} {_reason(status)}",
            result.headers,
            protocol=f"HTTP/{result.http_version}",
        )
        warc_headers = {"WARC-Date": date}
        if result.ip_address:
            warc_headers["WARC-IP-Address"] = result.ip_address
        if result.truncated:
            warc_headers["WARC-Truncated"] = "length"
        return self._writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(result.body),
            http_headers=headers,
            warc_headers_dict=warc_headers,
        )


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
