"""The live page source: a polite, safe HTTP client for URLs chosen by strangers.

- Safety: every hop's address is checked (`scraping.netsafety`); schemes other than
  http(s) are refused; redirects are followed by hand, at most `max_redirects`, and a URL
  seen twice in one chain is a loop.
- Politeness: robots.txt is fetched once per origin and obeyed for `user_agent`
  (RFC 9309: a 4xx robots.txt allows everything, an unreachable or 5xx one disallows
  everything); each host gets at most `per_host_connections` requests at a time and
  `per_host_delay` seconds (or its robots Crawl-delay, capped) between request starts.
- Robustness: connect/read/total timeouts; connection errors, 429 and 5xx are retried
  with exponential backoff, honouring Retry-After (timeouts are not retried: a host that
  made us wait once will likely again); bodies are streamed and cut at `max_bytes`;
  only HTML content types are read; gzip/deflate are decoded here, in bounded steps, so a
  decompression bomb is stopped after `max_bytes`, never inflated into memory.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from protego import Protego

from scraping import page_source as errors
from scraping.netsafety import AddressPolicy, AddressRefused, SafeResolver, check_literal_host
from scraping.page_source import (
    REDIRECT_STATUSES,
    FetchFailure,
    FetchResult,
    binary_error,
    content_type_error,
    follow_redirects,
)
from scraping.payload import BodyDecoder, renamed_headers
from scraping.urls import UrlError, normalize_url

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchSettings:
    """Every knob of the live fetcher; all of them are part of the output's version id."""

    user_agent: str = "webtext/0.1 (+https://github.com/webtext/webtext)"
    max_connections: int = 64
    per_host_connections: int = 2
    per_host_delay: float = 1.0
    max_crawl_delay: float = 10.0
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0
    retries: int = 2
    backoff: float = 1.0
    max_retry_after: float = 60.0
    max_bytes: int = 5 * 2**20
    max_redirects: int = 10
    allowed_types: tuple[str, ...] = errors.HTML_CONTENT_TYPES
    policy: AddressPolicy = field(default_factory=AddressPolicy)


class _Retry(Exception):
    def __init__(self, failure: FetchFailure, wait: float | None) -> None:
        super().__init__(failure.detail)
        self.failure = failure
        self.wait = wait


class _Host:
    """Per-host politeness: a connection cap and a minimum gap between request starts."""

    def __init__(self, connections: int) -> None:
        self.slots = asyncio.Semaphore(connections)
        self.next_start = 0.0
        self.lock = asyncio.Lock()

    async def wait_turn(self, delay: float) -> None:
        async with self.lock:
            now = time.monotonic()
            if self.next_start > now:
                await asyncio.sleep(self.next_start - now)
            self.next_start = time.monotonic() + delay


class LiveSource:
    """`PageSource` over the live web. Use as `async with LiveSource(settings) as source`."""

    def __init__(self, settings: FetchSettings | None = None) -> None:
        self.settings = settings or FetchSettings()
        self._session: aiohttp.ClientSession | None = None
        self._addresses: dict[str, str] = {}
        self._connections: asyncio.Semaphore | None = None
        self._hosts: dict[str, _Host] = {}
        self._robots: dict[str, asyncio.Future[Protego | FetchFailure]] = {}

    async def __aenter__(self) -> LiveSource:
        s = self.settings
        self._connections = asyncio.Semaphore(s.max_connections)
        resolver = SafeResolver(s.policy)  # needs the running loop
        self._addresses = resolver.addresses
        connector = aiohttp.TCPConnector(
            limit=s.max_connections,
            limit_per_host=s.per_host_connections,
            resolver=resolver,
            ttl_dns_cache=300,
        )
        timeout = aiohttp.ClientTimeout(
            total=s.total_timeout, sock_connect=s.connect_timeout, sock_read=s.read_timeout
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            headers={
                "User-Agent": s.user_agent,
                "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
                "Accept-Encoding": "gzip, deflate",
            },
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, url: str) -> FetchResult:
        """Fetch one page, following redirects; never raises for a bad URL or server."""
        result = FetchResult(url=url)
        for attempt in range(self.settings.retries + 1):
            result.attempts = attempt + 1
            try:
                return await self._follow(url, result)
            except _Retry as retry:
                if attempt == self.settings.retries:
                    return retry.failure.into(result)
                await asyncio.sleep(retry.wait or self._backoff(attempt))
            except FetchFailure as failure:
                return failure.into(result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        return self.settings.backoff * 2**attempt * random.uniform(0.5, 1.5)

    async def _follow(self, url: str, result: FetchResult) -> FetchResult:
        async def hop(current: str) -> str | None:
            await self._check_robots(current)
            return await self._request(current, result)

        await follow_redirects(url, result, self.settings.max_redirects, hop)
        return result

    async def _check_robots(self, url: str) -> None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            self._robots[origin] = asyncio.ensure_future(self._load_robots(origin))
        rules = await self._robots[origin]
        if isinstance(rules, FetchFailure):
            raise rules
        if not rules.can_fetch(url, self.settings.user_agent):
            raise FetchFailure(errors.ROBOTS_DISALLOWED, f"{origin}/robots.txt disallows it")

    async def _load_robots(self, origin: str) -> Protego | FetchFailure:
        """The origin's rules, or why the origin cannot be crawled at all.

        A host we cannot reach fails every page with that reason (refused address, DNS,
        timeout...); a 5xx robots.txt disallows everything, a 4xx allows everything.
        """
        probe = FetchResult(url=f"{origin}/robots.txt")
        target = probe.url
        location = None
        try:
            for _hop in range(5):
                location = await self._request(target, probe, robots=True)
                if location is None:
                    break
                target = normalize_url(urljoin(target, location))
        except FetchFailure as failure:
            return failure
        except _Retry as retry:
            return retry.failure
        except UrlError as exc:
            return FetchFailure(errors.ROBOTS_DISALLOWED, f"robots.txt redirects badly: {exc}")
        if probe.status is not None and probe.status >= 500:
            return FetchFailure(errors.ROBOTS_DISALLOWED, f"robots.txt answers {probe.status}")
        if probe.status is None or probe.status >= 400 or location is not None:
            return Protego.parse("")  # no robots.txt: everything is allowed
        return Protego.parse(probe.body.decode("utf-8", "replace"))

    async def _request(self, url: str, result: FetchResult, robots: bool = False) -> str | None:
        """One HTTP exchange into `result`; the redirect target, or None when final."""
        assert self._session is not None, "use LiveSource as an async context manager"
        host = urlsplit(url).hostname or ""
        try:
            check_literal_host(host, self.settings.policy)
        except AddressRefused as exc:
            raise FetchFailure(errors.REFUSED_ADDRESS, str(exc)) from exc
        politeness = self._hosts.setdefault(host, _Host(self.settings.per_host_connections))
        async with politeness.slots:
            if not robots:
                await politeness.wait_turn(self._delay_for(url))
            # Taken only now, so a URL waiting on its host never holds a connection slot,
            # and outside the request, so waiting for one never counts against its timeout.
            assert self._connections is not None
            async with self._connections:
                return await self._exchange(url, result, robots)

    async def _exchange(self, url: str, result: FetchResult, robots: bool) -> str | None:
        assert self._session is not None
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                return await self._read(url, response, result, robots)
        except (FetchFailure, _Retry):
            raise
        except Exception as exc:  # every client failure has a class of its own
            failure = _classify(exc)
            if failure.error in (errors.CONNECT_ERROR, errors.CONNECTION_RESET):
                raise _Retry(failure, None) from exc
            raise failure from exc

    def _delay_for(self, url: str) -> float:
        parts = urlsplit(url)
        rules = self._robots[f"{parts.scheme}://{parts.netloc}"].result()  # checked already
        requested = rules.crawl_delay(self.settings.user_agent) if isinstance(rules, Protego) else 0
        delay = max(self.settings.per_host_delay, requested or 0)
        return min(delay, self.settings.max_crawl_delay)

    def parameters(self) -> dict[str, Any]:
        """The settings, for the output's version id."""
        return {"kind": "live", **asdict(self.settings)}

    async def _read(
        self, url: str, response: aiohttp.ClientResponse, result: FetchResult, robots: bool
    ) -> str | None:
        s = self.settings
        result.status = response.status
        result.http_version = f"{response.version.major}.{response.version.minor}"
        result.request_headers = list(response.request_info.headers.items())
        result.content_type = response.headers.get("Content-Type")
        result.fetched_at = datetime.now(UTC)
        transport = response.connection.transport if response.connection else None
        peer = transport.get_extra_info("peername") if transport else None
        host = response.url.host or ""
        result.ip_address = peer[0] if peer else self._addresses.get(host, host)
        location = response.headers.get("Location")
        if response.status in REDIRECT_STATUSES and location:
            return location
        if 300 <= response.status < 400 and not robots:  # a redirect that leads nowhere
            raise FetchFailure(
                errors.HTTP_STATUS, f"HTTP {response.status} without a Location", response.status
            )
        if response.status in RETRY_STATUSES and not robots:
            failure = FetchFailure(errors.HTTP_STATUS, f"HTTP {response.status}", response.status)
            wait = _retry_after(response.headers.get("Retry-After"))
            if wait is not None and wait > s.max_retry_after:
                raise failure
            raise _Retry(failure, wait)
        if response.status >= 400:
            if robots:
                return None
            raise FetchFailure(errors.HTTP_STATUS, f"HTTP {response.status}", response.status)
        if not robots and (problem := content_type_error(result.content_type, s.allowed_types)):
            raise FetchFailure(problem, f"content type {result.content_type!r}")
        decoder = BodyDecoder(response.headers.get("Content-Encoding"), s.max_bytes)
        async for chunk in _chunks(response.content):
            if decoder.feed(chunk):
                break
        if not robots and (problem := binary_error(decoder.body)):
            raise FetchFailure(problem, "the body is binary")
        result.body = decoder.body
        result.truncated = decoder.truncated
        # aiohttp always removes chunked transfer coding, so the raw-payload headers move.
        result.headers = renamed_headers(response.headers.items(), decoded=True)
        return None


async def _chunks(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await stream.read(_READ_CHUNK):
        yield chunk


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _classify(exc: BaseException) -> FetchFailure:
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, AddressRefused) or isinstance(
        getattr(exc, "os_error", None), AddressRefused
    ):
        return FetchFailure(errors.REFUSED_ADDRESS, str(getattr(exc, "os_error", exc)))
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return FetchFailure(errors.TIMEOUT, detail or "timed out")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return FetchFailure(errors.DNS_ERROR, detail)
    if isinstance(exc, aiohttp.ClientSSLError):
        return FetchFailure(errors.TLS_ERROR, detail)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FetchFailure(errors.CONNECT_ERROR, detail)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionError):
        return FetchFailure(errors.CONNECTION_RESET, detail)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError | zlib.error):
        return FetchFailure(errors.PROTOCOL_ERROR, detail)
    if isinstance(exc, aiohttp.InvalidURL | ValueError):
        return FetchFailure(errors.INVALID_URL, detail)
    return FetchFailure(errors.PROTOCOL_ERROR, detail)
