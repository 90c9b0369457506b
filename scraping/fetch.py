"""The live page source: a polite, safe HTTP client for URLs chosen by strangers.

- Safety: every hop's address is checked (`scraping.netsafety`); schemes other than
  http(s) are refused; redirects are followed by hand, at most `max_redirects`, and a URL
  seen twice in one chain is a loop.
- Politeness: robots.txt is obeyed for `user_agent`, as RFC 9309 says: a 4xx robots.txt
  allows everything; a 429/5xx one or a network error disallows everything for
  `robots_retry_after` seconds, then robots.txt is asked again (those pages fail as
  ROBOTS_UNREACHABLE, which a later run retries). Each host gets at most
  `per_host_connections` requests at a time and `per_host_delay` seconds (or its robots
  Crawl-delay, capped) between request starts.
- Bounded memory: robots.txt is read up to `robots_max_bytes` (RFC 9309's 500 KiB; the
  rest is ignored), parsed in a thread, not on the event loop, and the parsed rules live
  in an LRU cache of `robots_cache_bytes` (an evicted origin's robots.txt is fetched again).
- Robustness: connect/read timeouts per request, and `total_timeout` for one URL's whole
  network time (every redirect hop, retry and body; waiting for a host's turn or a
  backoff is not counted); connection errors, 429 and 5xx are retried with exponential
  backoff, honouring Retry-After (timeouts are not retried: a host that made us wait once
  will likely again); bodies are streamed and cut at `max_bytes`; only HTML content types
  are read; gzip/deflate are decoded here, in bounded steps, so a decompression bomb is
  stopped after `max_bytes`, never inflated into memory.
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
from cachetools import LRUCache
from protego import Protego

from scraping import page_source as errors
from scraping.netsafety import AddressPolicy, AddressRefused, SafeResolver, check_literal_host
from scraping.page_source import (
    REDIRECT_STATUSES,
    TRANSIENT_ERRORS,
    TRANSIENT_STATUSES,
    FetchFailure,
    FetchResult,
    binary_error,
    content_type_error,
    follow_redirects,
)
from scraping.payload import BodyDecoder, renamed_headers
from scraping.urls import UrlError, normalize_url

_READ_CHUNK = 64 * 1024
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 2.5: what a crawler must parse at least
# The least an origin weighs in the robots cache, so a small robots.txt (or none) still
# counts: the default cache holds at most 4,096 origins.
_ROBOTS_MIN_WEIGHT = 4096


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
    total_timeout: float = 60.0  # network seconds for one URL: all hops, retries, body
    retries: int = 2
    backoff: float = 1.0
    max_retry_after: float = 60.0
    max_bytes: int = 5 * 2**20
    max_redirects: int = 10
    robots_max_bytes: int = ROBOTS_MAX_BYTES
    robots_cache_bytes: int = 4096 * _ROBOTS_MIN_WEIGHT  # parsed robots.txt kept, by size
    robots_retry_after: float = 300.0  # an unreachable robots.txt is asked again after this
    allowed_types: tuple[str, ...] = errors.HTML_CONTENT_TYPES
    policy: AddressPolicy = field(default_factory=AddressPolicy)


@dataclass
class _Budget:
    """One URL's network time: each exchange may take what the earlier ones left."""

    total: float
    spent: float = 0.0

    def remaining(self) -> float:
        return self.total - self.spent


@dataclass(frozen=True)
class _Robots:
    """An origin's parsed rules, or why none of its pages may be fetched now."""

    rules: Protego | FetchFailure
    weight: int = _ROBOTS_MIN_WEIGHT
    retry_at: float | None = None  # monotonic time to ask robots.txt again (unreachable)


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
        self.robots_cache: LRUCache[str, _Robots] = LRUCache(
            self.settings.robots_cache_bytes, getsizeof=lambda robots: robots.weight
        )
        self._robots_loading: dict[str, asyncio.Future[_Robots]] = {}
        self._parsing: asyncio.Semaphore | None = None

    async def __aenter__(self) -> LiveSource:
        s = self.settings
        self._connections = asyncio.Semaphore(s.max_connections)
        # One robots.txt parse at a time: a parsing thread holds the GIL most of the time,
        # and each one more takes more of it from the loop serving every other URL.
        self._parsing = asyncio.Semaphore(1)
        resolver = SafeResolver(s.policy)  # needs the running loop
        self._addresses = resolver.addresses
        connector = aiohttp.TCPConnector(
            limit=s.max_connections,
            limit_per_host=s.per_host_connections,
            resolver=resolver,
            ttl_dns_cache=300,
        )
        # Timeouts are set per request: each gets what its URL's total_timeout has left.
        self._session = aiohttp.ClientSession(
            connector=connector,
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
        budget = _Budget(self.settings.total_timeout)
        for attempt in range(self.settings.retries + 1):
            result.attempts = attempt + 1
            try:
                return await self._follow(url, result, budget)
            except _Retry as retry:
                if attempt == self.settings.retries or budget.remaining() <= 0:
                    return retry.failure.into(result)
                await asyncio.sleep(retry.wait or self._backoff(attempt))
            except FetchFailure as failure:
                return failure.into(result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        return self.settings.backoff * 2**attempt * random.uniform(0.5, 1.5)

    async def _follow(self, url: str, result: FetchResult, budget: _Budget) -> FetchResult:
        async def hop(current: str) -> str | None:
            rules = await self._check_robots(current)
            return await self._request(current, result, budget, self._delay(rules))

        await follow_redirects(url, result, self.settings.max_redirects, hop)
        return result

    async def _check_robots(self, url: str) -> Protego:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        robots = self.robots_cache.get(origin)
        if robots is None or (robots.retry_at is not None and time.monotonic() >= robots.retry_at):
            loading = self._robots_loading.get(origin)
            if loading is None:
                loading = asyncio.ensure_future(self._load_robots(origin))
                self._robots_loading[origin] = loading
                loading.add_done_callback(lambda done: self._robots_loaded(origin, done))
            robots = await asyncio.shield(loading)  # one URL cancelled stops no other's wait
        if isinstance(robots.rules, FetchFailure):  # a copy: a cached one would collect
            failure = robots.rules  # the traceback of every page it was raised for
            raise FetchFailure(failure.error, failure.detail, failure.status)
        if not robots.rules.can_fetch(url, self.settings.user_agent):
            raise FetchFailure(errors.ROBOTS_DISALLOWED, f"{origin}/robots.txt disallows it")
        return robots.rules

    def _robots_loaded(self, origin: str, done: asyncio.Future[_Robots]) -> None:
        del self._robots_loading[origin]
        if done.cancelled() or done.exception() is not None:
            return
        robots = done.result()
        if robots.weight <= self.robots_cache.maxsize:  # else it is used once, not kept
            self.robots_cache[origin] = robots

    async def _load_robots(self, origin: str) -> _Robots:
        """The origin's rules, or why its pages cannot be fetched (for now).

        RFC 9309: a 4xx robots.txt allows everything; a 429/5xx one, or a network error,
        disallows everything until `robots_retry_after` has passed. A refused address or
        a TLS failure stands for the run.
        """
        probe = FetchResult(url=f"{origin}/robots.txt")
        target = probe.url
        location = None
        budget = _Budget(self.settings.total_timeout)
        try:
            for _hop in range(5):
                location = await self._request(target, probe, budget, robots=True)
                if location is None:
                    break
                target = normalize_url(urljoin(target, location))
        except (FetchFailure, _Retry) as exc:
            failure = exc.failure if isinstance(exc, _Retry) else exc
            if failure.error in TRANSIENT_ERRORS:
                return self._unreachable(origin, failure.detail)
            return _Robots(failure)
        except UrlError as exc:
            return _Robots(
                FetchFailure(errors.ROBOTS_DISALLOWED, f"robots.txt redirects badly: {exc}")
            )
        if probe.status in TRANSIENT_STATUSES or (probe.status or 0) >= 500:
            return self._unreachable(origin, f"robots.txt answers {probe.status}")
        if probe.status is None or probe.status >= 400 or location is not None:
            return _Robots(Protego.parse(""))  # no robots.txt: everything is allowed
        body = probe.body
        if probe.truncated:  # the rest is ignored, and so is the line cut in two
            body = body[: body.rfind(b"\n") + 1]
        # Parsing a big robots.txt takes seconds of CPU: not on the loop serving every URL.
        assert self._parsing is not None
        async with self._parsing:
            rules = await asyncio.to_thread(Protego.parse, body.decode("utf-8", "replace"))
        return _Robots(rules, weight=max(len(body), _ROBOTS_MIN_WEIGHT))

    def _unreachable(self, origin: str, reason: str) -> _Robots:
        wait = self.settings.robots_retry_after
        failure = FetchFailure(
            errors.ROBOTS_UNREACHABLE,
            f"{origin}/robots.txt is unreachable ({reason}): its pages wait {wait:g} s",
        )
        return _Robots(failure, retry_at=time.monotonic() + wait)

    async def _request(
        self,
        url: str,
        result: FetchResult,
        budget: _Budget,
        delay: float = 0.0,
        robots: bool = False,
    ) -> str | None:
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
                await politeness.wait_turn(delay)
            # Taken only now, so a URL waiting on its host never holds a connection slot,
            # and outside the request, so waiting for one never counts against its timeout.
            assert self._connections is not None
            async with self._connections:
                return await self._exchange(url, result, budget, robots)

    async def _exchange(
        self, url: str, result: FetchResult, budget: _Budget, robots: bool
    ) -> str | None:
        assert self._session is not None
        s = self.settings
        remaining = budget.remaining()
        if remaining <= 0:
            raise FetchFailure(errors.TIMEOUT, f"total_timeout ({s.total_timeout:g} s) ran out")
        timeout = aiohttp.ClientTimeout(
            total=remaining, sock_connect=s.connect_timeout, sock_read=s.read_timeout
        )
        started = time.monotonic()
        try:
            async with self._session.get(url, allow_redirects=False, timeout=timeout) as response:
                return await self._read(url, response, result, robots)
        except (FetchFailure, _Retry):
            raise
        except Exception as exc:  # every client failure has a class of its own
            failure = _classify(exc)
            if failure.error in (errors.CONNECT_ERROR, errors.CONNECTION_RESET):
                raise _Retry(failure, None) from exc
            raise failure from exc
        finally:
            budget.spent += time.monotonic() - started

    def _delay(self, rules: Protego) -> float:
        requested = rules.crawl_delay(self.settings.user_agent)
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
        if response.status in TRANSIENT_STATUSES and not robots:
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
        limit = s.robots_max_bytes if robots else s.max_bytes
        decoder = BodyDecoder(response.headers.get("Content-Encoding"), limit)
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
        return FetchFailure(errors.TIMEOUT, detail if str(exc) else "total_timeout ran out")
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
