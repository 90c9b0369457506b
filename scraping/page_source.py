"""What every page source returns, live (`scraping.fetch`) or replayed (`scraping.warc_replay`).

The fetch stage only sees `PageSource.fetch(url) -> FetchResult`, so a run over Common
Crawl WARC files and a run over the live web write the same WARC and `fetches` outputs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urljoin

from scraping.urls import UrlError, normalize_url

# Error classes: a failed fetch carries exactly one of these in `FetchResult.error`.
INVALID_URL = "invalid_url"  # malformed, or not http(s)
REFUSED_ADDRESS = "refused_address"  # private, loopback, link-local, multicast, reserved
DNS_ERROR = "dns_error"
CONNECT_ERROR = "connect_error"
CONNECTION_RESET = "connection_reset"
TIMEOUT = "timeout"
TLS_ERROR = "tls_error"
ROBOTS_DISALLOWED = "robots_disallowed"
ROBOTS_UNREACHABLE = "robots_unreachable"  # robots.txt 429/5xx or network error: try later
HTTP_STATUS = "http_status"  # a final 4xx/5xx; the status column says which
TOO_MANY_REDIRECTS = "too_many_redirects"
REDIRECT_LOOP = "redirect_loop"
CONTENT_TYPE = "content_type"  # not on the allowlist (HTML)
BINARY_CONTENT = "binary_content"  # declared HTML, but the bytes are not text
DECOMPRESSION_BOMB = "decompression_bomb"
NOT_IN_ARCHIVE = "not_in_archive"  # replay: no capture of this URL
PROTOCOL_ERROR = "protocol_error"  # a malformed HTTP response
ERROR_CLASSES = (
    INVALID_URL,
    REFUSED_ADDRESS,
    DNS_ERROR,
    CONNECT_ERROR,
    CONNECTION_RESET,
    TIMEOUT,
    TLS_ERROR,
    ROBOTS_DISALLOWED,
    ROBOTS_UNREACHABLE,
    HTTP_STATUS,
    TOO_MANY_REDIRECTS,
    REDIRECT_LOOP,
    CONTENT_TYPE,
    BINARY_CONTENT,
    DECOMPRESSION_BOMB,
    NOT_IN_ARCHIVE,
    PROTOCOL_ERROR,
)

# Outcomes that may well differ tomorrow: a later fetch run tries these URLs again.
TRANSIENT_ERRORS = frozenset(
    {DNS_ERROR, CONNECT_ERROR, CONNECTION_RESET, TIMEOUT, ROBOTS_UNREACHABLE}
)
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})  # with HTTP_STATUS


def is_transient(error: str | None, status: int | None) -> bool:
    """Whether a failed fetch is worth trying again in a later run."""
    return error in TRANSIENT_ERRORS or (error == HTTP_STATUS and status in TRANSIENT_STATUSES)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FetchResult:
    """One input URL's outcome. `error is None` means `body` holds an HTML page.

    `body` is the decoded payload (transfer and content encodings removed), at most the
    configured size limit; `truncated` says it was cut there. `headers` are the final
    response's, with `Content-Encoding`/`Content-Length` renamed `X-Crawler-*` because
    the body no longer matches them (the convention Common Crawl's WARC files follow).
    """

    url: str
    final_url: str | None = None
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    truncated: bool = False
    content_type: str | None = None
    attempts: int = 0
    fetched_at: datetime | None = field(default_factory=utc_now)
    error: str | None = None
    error_detail: str | None = None
    ip_address: str | None = None
    http_version: str = "1.1"
    request_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class PageSource(Protocol):
    """Something that turns URLs into `FetchResult`s; used as an async context manager."""

    async def __aenter__(self) -> PageSource: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def fetch(self, url: str) -> FetchResult: ...

    def parameters(self) -> dict[str, Any]:
        """What identifies this source's output, for the version id (JSON-able)."""
        ...


HTML_CONTENT_TYPES = ("text/html", "application/xhtml+xml")
# Magic numbers of formats that are sometimes served as text/html by mistake.
_BINARY_MAGIC = (
    b"\x89PNG",
    b"GIF8",
    b"\xff\xd8\xff",
    b"%PDF",
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ",
    b"\x7fELF",
    b"MZ",
    b"RIFF",
    b"OggS",
    b"ID3",
    b"\x00\x00\x00",
)


def media_type(content_type: str | None) -> str:
    """`text/html; charset=utf-8` -> `text/html`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def content_type_error(
    content_type: str | None, allowlist: tuple[str, ...] = HTML_CONTENT_TYPES
) -> str | None:
    """CONTENT_TYPE when the declared type is not allowed; a missing type is let through
    to the byte check, as browsers sniff it."""
    declared = media_type(content_type)
    if declared and declared not in allowlist:
        return CONTENT_TYPE
    return None


def binary_error(head: bytes) -> str | None:
    """BINARY_CONTENT when the first bytes are a known binary format or full of NULs."""
    sample = head[:1024]
    if sample.startswith(_BINARY_MAGIC) or sample.count(b"\x00") > len(sample) // 100:
        return BINARY_CONTENT
    return None


class FetchFailure(Exception):
    """Why a URL yields no page: an error class from above, a detail, maybe a status.

    Page sources raise it internally and turn it into `FetchResult.error`; it never
    leaves `PageSource.fetch`.
    """

    def __init__(self, error: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.status = status

    def into(self, result: FetchResult) -> FetchResult:
        result.error = self.error
        result.error_detail = self.detail
        if self.status is not None:
            result.status = self.status
        result.body = b""
        return result


REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


async def follow_redirects(
    url: str,
    result: FetchResult,
    max_redirects: int,
    hop: Callable[[str], Awaitable[str | None]],
) -> None:
    """Run `hop(url)` along a redirect chain until it returns None (a final answer).

    Each URL is normalised first (a non-http(s) target is INVALID_URL) and recorded as
    `result.final_url`; a URL met twice is a loop.
    """
    seen: set[str] = set()
    current = url
    for _hop in range(max_redirects + 1):
        try:
            current = normalize_url(current)
        except UrlError as exc:
            raise FetchFailure(INVALID_URL, str(exc)) from exc
        if current in seen:
            raise FetchFailure(REDIRECT_LOOP, f"{current} was already visited")
        seen.add(current)
        result.final_url = current
        location = await hop(current)
        if location is None:
            return
        current = urljoin(current, location)
    raise FetchFailure(TOO_MANY_REDIRECTS, f"more than {max_redirects} redirects")
