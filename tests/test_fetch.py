"""The live fetcher against the demo web's misbehaving servers, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from protego import Protego

from scraping import page_source as errors
from scraping.fetch import ROBOTS_MAX_BYTES, FetchSettings, LiveSource
from scraping.netsafety import AddressPolicy, SafeResolver
from scraping.page_source import FetchResult, is_transient
from webtext_app.demo_web import DemoWeb, site_urls

LOOPBACK = AddressPolicy(allow_loopback=True)
FAST = FetchSettings(
    per_host_delay=0,
    per_host_connections=8,
    connect_timeout=2,
    read_timeout=2,
    total_timeout=3,
    backoff=0.05,
    max_retry_after=5,
    max_bytes=2**20,
    policy=LOOPBACK,
)


@pytest.fixture(scope="module")
def web():
    with DemoWeb() as server:
        yield server


@pytest.fixture(scope="module")
def urls(web) -> dict[str, list[str]]:
    return site_urls(web.base_url)


def fetch_all(urls: list[str], settings: FetchSettings = FAST) -> dict[str, FetchResult]:
    async def run() -> dict[str, FetchResult]:
        async with LiveSource(settings) as source:
            results = await asyncio.gather(*(source.fetch(url) for url in urls))
        return dict(zip(urls, results, strict=True))

    return asyncio.run(run())


def fetch_one(url: str, settings: FetchSettings = FAST) -> FetchResult:
    return fetch_all([url], settings)[url]


def test_articles_are_fetched_whole(web, urls) -> None:
    pages = urls["article"][:5]
    results = fetch_all(pages)
    for url in pages:
        result = results[url]
        assert result.ok, result.error_detail
        assert result.status == 200 and result.final_url == url
        assert result.ip_address == "127.0.0.1"
        with urllib.request.urlopen(url) as direct:
            assert result.body == direct.read()
        assert result.content_type.startswith("text/html")
        assert ("User-Agent", FAST.user_agent) in result.request_headers


def test_slowloris_is_cut_at_the_total_timeout_and_not_retried(urls) -> None:
    started = time.monotonic()
    result = fetch_one(urls["slowloris"][0])
    assert result.error == errors.TIMEOUT
    assert result.attempts == 1
    assert time.monotonic() - started < FAST.total_timeout + 2


def test_connection_reset_is_retried_then_reported(urls) -> None:
    result = fetch_one(urls["reset"][0])
    assert result.error == errors.CONNECTION_RESET
    assert result.attempts == FAST.retries + 1


def test_429_waits_for_retry_after_then_succeeds(urls) -> None:
    started = time.monotonic()
    result = fetch_one(urls["flaky_429"][0])
    assert result.ok and result.attempts == 2
    assert time.monotonic() - started >= 0.9  # Retry-After: 1


def test_a_retry_after_beyond_the_limit_is_not_waited_for(web) -> None:
    impatient = FetchSettings(**{**FAST.__dict__, "max_retry_after": 0.5})
    result = fetch_one(f"{web.base_url}/flaky/429/impatient", impatient)
    assert result.error == errors.HTTP_STATUS and result.status == 429
    assert result.attempts == 1


def test_redirects_are_followed_counted_and_loops_caught(urls) -> None:
    chain = fetch_one(urls["redirect_chain"][0])
    assert chain.ok and "/docs/" in chain.final_url
    short = FetchSettings(**{**FAST.__dict__, "max_redirects": 1})
    assert fetch_one(urls["redirect_chain"][0], short).error == errors.TOO_MANY_REDIRECTS
    assert fetch_one(urls["redirect_loop"][0]).error == errors.REDIRECT_LOOP


def test_redirects_to_private_addresses_and_other_schemes_are_refused(urls) -> None:
    private = fetch_one(urls["redirect_private"][0])
    assert private.error == errors.REFUSED_ADDRESS
    assert "10.255.255.1" in private.error_detail
    assert fetch_one(urls["redirect_ftp"][0]).error == errors.INVALID_URL


def test_a_huge_body_is_cut_at_the_size_limit(urls) -> None:
    result = fetch_one(urls["huge"][0])
    assert result.ok and result.truncated
    assert len(result.body) == FAST.max_bytes


def test_a_gzip_bomb_is_stopped_without_inflating_it(urls) -> None:
    started = time.monotonic()
    result = fetch_one(urls["gzip_bomb"][0])
    assert result.error == errors.DECOMPRESSION_BOMB
    assert time.monotonic() - started < 3


def test_wrong_declared_charset_keeps_the_bytes_as_sent(urls) -> None:
    url = urls["wrong_charset"][0]
    result = fetch_one(url)
    assert result.ok
    with urllib.request.urlopen(url) as direct:
        assert result.body == direct.read()
    with pytest.raises(UnicodeDecodeError):
        result.body.decode("utf-8")  # decoding is the extractor's job, not the fetcher's


def test_binary_and_non_html_content_are_refused(urls) -> None:
    assert fetch_one(urls["binary"][0]).error == errors.BINARY_CONTENT
    assert fetch_one(urls["image"][0]).error == errors.CONTENT_TYPE
    assert fetch_one(urls["no_content_type"][0]).ok  # sniffed as text


def test_robots_txt_is_fetched_once_and_obeyed(web, urls) -> None:
    before = web.hits["/robots.txt"]
    results = fetch_all(urls["private"][:3] + urls["article"][5:8])
    assert [r.error for r in results.values()][:3] == [errors.ROBOTS_DISALLOWED] * 3
    assert all(r.ok for r in list(results.values())[3:])
    assert web.hits["/robots.txt"] == before + 1
    assert all(web.hits[url.split(web.base_url)[1]] == 0 for url in urls["private"][:3])


def test_http_errors_carry_their_status(urls) -> None:
    for kind, status in (("status_404", 404), ("status_500", 500)):
        result = fetch_one(urls[kind][0])
        assert result.error == errors.HTTP_STATUS and result.status == status


def test_per_host_delay_spaces_requests(urls) -> None:
    polite = FetchSettings(**{**FAST.__dict__, "per_host_delay": 0.2})
    started = time.monotonic()
    results = fetch_all(urls["article"][10:15], polite)
    assert all(r.ok for r in results.values())
    assert time.monotonic() - started >= 0.8  # 5 starts, 4 gaps of 0.2 s


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://10.0.0.1/",
        "http://192.168.1.1/admin",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
    ],
)
def test_the_default_policy_refuses_non_public_addresses(url: str) -> None:
    strict = FetchSettings(**{**FAST.__dict__, "policy": AddressPolicy()})
    result = fetch_one(url, strict)
    assert result.error == errors.REFUSED_ADDRESS, result.error_detail


def test_allowing_loopback_allows_nothing_else() -> None:
    # The last two carry 10.0.0.1 inside IPv6 (6to4, and IPv4-mapped).
    private = ("10.1.2.3", "172.16.0.1", "169.254.1.1", "100.64.0.1", "fd00::1")
    for address in (*private, "2002:a00:1::", "::ffff:10.0.0.1"):
        assert LOOPBACK.refusal(ipaddress.ip_address(address)) is not None
    assert LOOPBACK.refusal(ipaddress.ip_address("127.0.0.5")) is None
    assert AddressPolicy().refusal(ipaddress.ip_address("93.184.216.34")) is None


def test_the_resolver_drops_refused_addresses_before_any_connection() -> None:
    class Fixed:
        async def resolve(self, host, port=0, family=0):
            return [
                {"hostname": host, "host": ip, "port": port, "family": 2, "proto": 0, "flags": 0}
                for ip in ("10.0.0.7", "93.184.216.34")
            ]

        async def close(self) -> None:
            return None

    resolver = SafeResolver(AddressPolicy(), Fixed())
    resolved = asyncio.run(resolver.resolve("mixed.example", 80))
    assert [r["host"] for r in resolved] == ["93.184.216.34"]


# Robots.txt and time limits, against servers scripted per test ---------------------------

PAGE = b"<html><body><p>a page</p></body></html>"


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = PAGE
    content_type: str = "text/html"
    delay: float = 0.0


class ScriptedWeb:
    """A loopback server answering each path with its script's answers in turn, the last
    one repeated; a path without a script is a 404. `hits` counts requests per path."""

    def __init__(self, script: Mapping[str, Sequence[Answer]]) -> None:
        self.script = {path: list(answers) for path, answers in script.items()}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a sleeping handler must not hold up the test
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> ScriptedWeb:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str) -> Answer:
        with self._lock:
            self.hits[path] += 1
            answers = self.script.get(path) or [Answer(404, b"no such page")]
            return answers[min(self.hits[path], len(answers)) - 1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer = web.answer(self.path)
                time.sleep(answer.delay)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                # The client may stop reading early (a robots.txt cut at its limit).
                with contextlib.suppress(ConnectionError):
                    self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def robots(text: str) -> list[Answer]:
    return [Answer(body=text.encode(), content_type="text/plain")]


def test_robots_txt_is_read_up_to_500_kib_and_the_rest_ignored() -> None:
    filler = "# " + "x" * 1000 + "\n"
    text = "User-agent: *\nDisallow: /early\n" + filler * 600 + "Disallow: /late\n"
    assert ROBOTS_MAX_BYTES < len(text) < FAST.max_bytes  # a page of this size is read whole
    pages = {"/early": [Answer()], "/late": [Answer()]}
    with ScriptedWeb({"/robots.txt": robots(text), **pages}) as web:
        results = fetch_all([f"{web.base_url}/early", f"{web.base_url}/late"])
    assert results[f"{web.base_url}/early"].error == errors.ROBOTS_DISALLOWED
    late = results[f"{web.base_url}/late"]
    assert late.ok, late.error_detail  # its rule lies past the 500 KiB read
    assert web.hits["/early"] == 0 and web.hits["/late"] == 1


def test_robots_txt_is_parsed_off_the_event_loop(
    urls: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    parse = Protego.parse
    parsed_on: list[int] = []

    def recording_parse(content: str) -> Protego:
        parsed_on.append(threading.get_ident())
        return parse(content)

    monkeypatch.setattr(Protego, "parse", recording_parse)

    async def run() -> tuple[int, FetchResult]:
        async with LiveSource(FAST) as source:
            return threading.get_ident(), await source.fetch(urls["article"][0])

    loop_thread, result = asyncio.run(run())
    assert result.ok
    assert parsed_on and loop_thread not in parsed_on


def test_parsed_robots_are_kept_in_a_bounded_lru() -> None:
    two_origins = replace(FAST, robots_cache_bytes=2 * 4096)
    with DemoWeb(addresses=5) as web:
        pages = [site_urls(base)["article"][0] for base in web.base_urls]

        async def run() -> tuple[list[FetchResult], int]:
            async with LiveSource(two_origins) as source:
                results = [await source.fetch(url) for url in [*pages, pages[0]]]
                return results, len(source.robots_cache)

        results, cached = asyncio.run(run())
        assert all(r.ok for r in results), [r.error_detail for r in results]
        assert cached == 2
        # The first origin was evicted by the others, so its robots.txt is asked again.
        assert web.hits["/robots.txt"] == len(pages) + 1
        fetch_all([*pages, pages[0]])  # the default cache keeps all five
        assert web.hits["/robots.txt"] == 2 * len(pages) + 1


def test_total_timeout_covers_every_redirect_hop_of_a_url() -> None:
    limited = replace(FAST, total_timeout=2.0, read_timeout=2.0)
    with DemoWeb(latency=0.5) as slow:  # each request takes 0.5 s; /redirect/9 makes 10
        started = time.monotonic()
        result = fetch_one(f"{slow.base_url}/redirect/9", limited)
        elapsed = time.monotonic() - started
    assert result.error == errors.TIMEOUT, (result.error, result.final_url)
    assert "/redirect/" in result.final_url
    # robots.txt, then the URL's 2 s (a limit per hop let all 10 requests through: 5 s).
    assert elapsed < 0.5 + limited.total_timeout + 1.5


def test_a_5xx_robots_txt_disallows_for_a_while_then_is_asked_again() -> None:
    flaky = {"/robots.txt": [Answer(503, b"down"), *robots("User-agent: *\nDisallow: /x\n")]}
    soon = replace(FAST, robots_retry_after=0.5)
    with ScriptedWeb({**flaky, "/page": [Answer()]}) as web:

        async def run() -> list[FetchResult]:
            async with LiveSource(soon) as source:
                first = await source.fetch(f"{web.base_url}/page")
                await asyncio.sleep(0.6)
                return [first, await source.fetch(f"{web.base_url}/page")]

        first, later = asyncio.run(run())
    assert first.error == errors.ROBOTS_UNREACHABLE, first.error_detail
    assert "503" in first.error_detail
    assert is_transient(first.error, first.status)
    assert later.ok, later.error_detail
    assert web.hits["/robots.txt"] == 2 and web.hits["/page"] == 1


def test_unreachable_robots_txt_is_transient_and_a_4xx_allows_everything() -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/page"
    hanging = {"/robots.txt": [Answer(delay=3)], "/page": [Answer()]}
    quick = replace(FAST, total_timeout=1.0, read_timeout=1.0)
    with ScriptedWeb(hanging) as slow, ScriptedWeb({"/page": [Answer()]}) as no_robots:
        results = fetch_all([closed, f"{slow.base_url}/page", f"{no_robots.base_url}/page"], quick)
    refused, timed_out, allowed = results.values()
    for result in (refused, timed_out):
        assert result.error == errors.ROBOTS_UNREACHABLE, (result.error, result.error_detail)
        assert is_transient(result.error, result.status)
    assert "Connect" in refused.error_detail
    assert allowed.ok and no_robots.hits["/robots.txt"] == 1
    assert not is_transient(errors.ROBOTS_DISALLOWED, None)
    assert not is_transient(errors.HTTP_STATUS, 404) and is_transient(errors.HTTP_STATUS, 503)


def test_a_cached_robots_failure_holds_no_page_traceback() -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{probe.getsockname()[1]}"

    async def run() -> tuple[list[FetchResult], BaseException]:
        async with LiveSource(FAST) as source:
            results = [await source.fetch(f"{origin}/page-{i}") for i in range(5)]
            rules = source.robots_cache[origin].rules
            assert isinstance(rules, BaseException)
            return results, rules

    results, cached = asyncio.run(run())
    assert {r.error for r in results} == {errors.ROBOTS_UNREACHABLE}
    # Raising the cached failure itself chained every page's frames onto it.
    assert cached.__traceback__ is None
