"""The live fetcher against the demo web's misbehaving servers, on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import time
import urllib.request

import pytest

from scraping import page_source as errors
from scraping.fetch import FetchSettings, LiveSource
from scraping.netsafety import AddressPolicy, SafeResolver
from scraping.page_source import FetchResult
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
