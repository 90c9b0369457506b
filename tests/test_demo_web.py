"""The demo's offline web: real text amid boilerplate, every fault endpoint, the demo dump."""

from __future__ import annotations

import asyncio
import difflib
import html
import http.client
import inspect
import json
import re
import socket
import struct
import time
import zlib
from collections import defaultdict
from pydoc_data.topics import topics

import aiohttp
import pytest

from scraping.dumps import zstd
from webtext_app.demo import demo_records, write_demo_dump
from webtext_app.demo_web import (
    BOMB_BYTES,
    BOMB_PREFIX,
    GEN_NEAR_DUPLICATE_EVERY,
    HUGE_BYTES,
    MIRRORED_TOPICS,
    REDIRECT_TARGET,
    TOPICS,
    DemoWeb,
    gen_urls,
    site_urls,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def web():
    with DemoWeb() as served:
        yield served


def get(
    web: DemoWeb, path: str, host: str = "127.0.0.1", timeout: float = 5
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One GET with no redirects followed and no decoding: what the server really sent."""
    connection = http.client.HTTPConnection(host, web.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def text_of(page: bytes, element: str = "body") -> str:
    """The visible text inside the first `element`, whitespace collapsed."""
    inner = re.search(rf"<{element}[^>]*>(.*)</{element}>", page.decode(), re.S)
    assert inner is not None, f"no <{element}>"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inner.group(1))).split())


def first_sentence(text: str) -> str:
    """The first sentence of the first unindented paragraph after a title line."""
    paragraphs = [p for p in text.split("\n\n")[1:] if p.strip() and not p.startswith(" ")]
    return " ".join(paragraphs[0].split()).split(". ")[0]


@pytest.mark.parametrize("topic", [TOPICS[0], "exceptions", "typesseq", TOPICS[-1]])
def test_article_pages_hold_the_topic_text_amid_boilerplate(web, topic) -> None:
    status, headers, page = get(web, f"/docs/{topic}.html")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert first_sentence(topics[topic]) in text_of(page, "article")
    markup = page.decode()
    for boilerplate in ("<header", 'class="breadcrumbs"', 'class="cookie-banner"', "<h1>",
                        'class="byline"', 'class="sidebar"', 'class="comment"',
                        'class="newsletter"', "<footer"):  # fmt: skip
        assert boilerplate in markup
    assert markup.count("<article>") == 1 and markup.startswith("<!DOCTYPE html>")


def test_code_samples_stay_preformatted(web) -> None:
    page = get(web, "/docs/assert.html")[2].decode()
    assert "<pre>if __debug__:\n    if not expression: raise AssertionError</pre>" in page


def test_mirrors_share_the_article_text_but_not_the_page(web) -> None:
    assert len(MIRRORED_TOPICS) >= 40
    for topic in MIRRORED_TOPICS[:10]:
        original = get(web, f"/docs/{topic}.html")[2]
        mirror = get(web, f"/mirror/docs/{topic}.html")[2]
        a, b = text_of(original, "article"), text_of(mirror, "article")
        assert a != b
        assert difflib.SequenceMatcher(None, a.split(), b.split()).ratio() > 0.9
        assert text_of(original) != text_of(mirror)
        assert b"DevMirror" in mirror and b"DevMirror" not in original


def test_generated_pages_are_distinct_but_every_tenth_is_a_near_duplicate(web) -> None:
    """The scale benchmark's pages: each its own text, except the known share of mirror
    copies, which the dedup stage's MinHash must see as near duplicates."""
    from dedup.minhash import MinHashSettings, signatures
    from scraping.extract import extract_page

    urls = gen_urls([web.base_url], 20)
    assert len(set(urls)) == 20 and urls[9].endswith("/gen/9.html")
    texts = []
    for url in urls:
        status, _, body = get(web, url.removeprefix(web.base_url))
        assert status == 200 and b"cookie" in body.lower()
        texts.append(extract_page(body, url, "text/html; charset=utf-8").text)
    assert len(set(texts)) == 20
    matrix = signatures(texts, MinHashSettings())
    similarity = (matrix[:, None, :] == matrix[None, :, :]).mean(axis=2)
    threshold = MinHashSettings().threshold
    copies = {(n - 1, n) for n in range(20) if n % GEN_NEAR_DUPLICATE_EVERY == 9}
    near = {(a, b) for a in range(20) for b in range(a + 1, 20) if similarity[a, b] >= threshold}
    assert near == copies == {(8, 9), (18, 19)}
    assert get(web, "/gen/x.html")[0] == 404


def test_library_pages_hold_module_docstrings(web) -> None:
    status, _, page = get(web, "/lib/json.html")
    assert status == 200
    assert first_sentence("title\n\n" + inspect.getdoc(json)) in text_of(page, "article")


def test_index_links_every_page(web) -> None:
    page = get(web, "/")[2].decode()
    for kind in ("article", "mirror", "library", "private"):
        for path in site_urls("")[kind]:
            assert f'href="{path}"' in page


def test_robots_disallows_private_pages_that_exist(web) -> None:
    status, _, body = get(web, "/robots.txt")
    assert status == 200 and body.decode().splitlines() == ["User-agent: *", "Disallow: /private/"]
    private = site_urls(web.base_url)["private"]
    assert private and all(url.startswith(f"{web.base_url}/private/") for url in private)
    assert get(web, private[0].removeprefix(web.base_url))[0] == 200


@pytest.mark.parametrize("code", [404, 500, 503])
def test_status_pages(web, code) -> None:
    status, headers, body = get(web, f"/status/{code}")
    assert status == code and headers["Content-Type"].startswith("text/html")
    assert str(code).encode() in body


@pytest.mark.parametrize("code", [429, 500])
def test_flaky_pages_fail_once_per_name(web, code) -> None:
    status, headers, _ = get(web, f"/flaky/{code}/test-once")
    assert status == code
    if code == 429:
        assert headers["Retry-After"] == "1"
    status, headers, body = get(web, f"/flaky/{code}/test-once")
    assert status == 200 and b"<article>" in body
    assert get(web, f"/flaky/{code}/another-name")[0] == code


def test_slow_page_waits(web) -> None:
    start = time.monotonic()
    status, _, body = get(web, "/slow/0.3")
    assert status == 200 and b"<article>" in body and time.monotonic() - start >= 0.3


def test_slowloris_sends_headers_at_once_then_drips(web) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=3)
    try:
        start = time.monotonic()
        connection.request("GET", "/slowloris")
        response = connection.getresponse()
        assert response.status == 200 and time.monotonic() - start < 0.5
        assert int(response.headers["Content-Length"]) == 120  # 60 s of drip
        assert response.read(2) == b"<!"
        assert 0.4 < time.monotonic() - start < 2
    finally:
        connection.close()


def test_reset_aborts_the_connection(web) -> None:
    with pytest.raises(ConnectionError):
        get(web, "/reset")

    async def with_aiohttp() -> None:
        async with aiohttp.ClientSession() as session, session.get(f"{web.base_url}/reset") as r:
            await r.read()

    with pytest.raises(aiohttp.ClientError):
        asyncio.run(with_aiohttp())


def test_redirect_chain_ends_on_an_article(web) -> None:
    path, hops = "/redirect/3", []
    status, headers, _ = get(web, path)
    while status == 302:
        path = headers["Location"]
        hops.append(path)
        status, headers, _ = get(web, path)
    assert hops == ["/redirect/2", "/redirect/1", REDIRECT_TARGET] and status == 200


def test_redirect_loop_and_refused_targets(web) -> None:
    assert get(web, "/redirect-loop/a")[1]["Location"] == "/redirect-loop/b"
    assert get(web, "/redirect-loop/b")[1]["Location"] == "/redirect-loop/a"
    status, headers, _ = get(web, "/redirect-private")
    assert status == 302 and headers["Location"] == "http://10.255.255.1/secret.html"
    status, headers, _ = get(web, "/redirect-ftp")
    assert status == 302 and headers["Location"] == "ftp://127.0.0.1/file"


def test_binary_served_as_html_and_as_image(web) -> None:
    _, headers, binary = get(web, "/binary.html")
    assert headers["Content-Type"] == "text/html" and binary.startswith(PNG_SIGNATURE)
    assert 15_000 < len(binary) < 30_000
    with pytest.raises(UnicodeDecodeError):
        binary.decode()
    width, height = struct.unpack(">II", binary[16:24])  # IHDR comes first
    assert (width, height) == (96, 72)
    _, headers, image = get(web, "/image.png")
    assert headers["Content-Type"] == "image/png" and image == binary


def test_huge_page_is_20_mib_of_html(web) -> None:
    status, headers, body = get(web, "/huge.html")
    assert status == 200 and "Content-Length" not in headers
    assert len(body) == HUGE_BYTES and body.startswith(b"<!DOCTYPE html>")
    assert body.endswith(b"</html>\n")


def test_gzip_bomb_is_small_on_the_wire(web) -> None:
    status, headers, body = get(web, "/gzip-bomb.html")
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("text/html")
    assert len(body) < 5 * 2**20 and int(headers["Content-Length"]) == len(body)
    head = zlib.decompressobj(wbits=31).decompress(body, len(BOMB_PREFIX) + 100)
    assert head == BOMB_PREFIX + b" " * 100
    # gzip's trailer holds the inflated size (mod 2**32): the full GiB is in there.
    assert struct.unpack("<I", body[-4:])[0] == len(BOMB_PREFIX) + BOMB_BYTES


def test_wrong_charset_page_is_cp1252(web) -> None:
    _, headers, body = get(web, "/wrong-charset.html")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    text = body.decode("cp1252")
    assert all(word in text for word in ("café", "naïve", "—", "€"))


def test_no_content_type_header_at_all(web) -> None:
    status, headers, body = get(web, "/no-content-type.html")
    assert status == 200 and "Content-Type" not in headers and b"<article>" in body


def test_hits_count_paths_without_query(web) -> None:
    before = web.hits["/docs/async.html"]
    get(web, "/docs/async.html")
    get(web, "/docs/async.html?utm_source=reddit")
    assert web.hits["/docs/async.html"] == before + 2
    assert web.hits.copy()["/docs/async.html"] == before + 2


def test_every_listed_url_answers(web) -> None:
    """Pages are 200; nothing listed falls through to a plain 404 by mistake."""
    urls = site_urls(web.base_url)
    for kind in ("article", "mirror", "library", "private"):
        for url in urls[kind]:
            assert get(web, url.removeprefix(web.base_url))[0] == 200, url
    assert get(web, "/docs/no-such-topic.html")[0] == 404


def test_several_addresses_latency_and_a_quick_exit() -> None:
    with DemoWeb(addresses=3, latency=0.1) as web:
        assert web.base_urls == [f"http://127.0.0.{i}:{web.port}" for i in (1, 2, 3)]
        for host in ("127.0.0.2", "127.0.0.3"):
            start = time.monotonic()
            assert get(web, "/robots.txt", host=host)[0] == 200
            assert time.monotonic() - start >= 0.1
        # A slowloris still dripping must not hold the server open.
        drip = socket.create_connection(("127.0.0.1", web.port))
        drip.sendall(b"GET /slowloris HTTP/1.1\r\nHost: x\r\n\r\n")
        drip.settimeout(2)
        assert drip.recv(100).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
    assert time.monotonic() - start < 1
    drip.close()
    with pytest.raises(OSError):  # the port is free again: nothing listens
        socket.create_connection(("127.0.0.1", web.port), timeout=1)


def test_a_taken_port_fails_at_start(web) -> None:
    with pytest.raises(OSError), DemoWeb(port=web.port):
        pass


def test_demo_dump_posts_every_url(web, tmp_path) -> None:
    dump = write_demo_dump(tmp_path, web.base_url)
    lines = zstd.decompress(dump.read_bytes()).decode().splitlines()
    records, broken = [], []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            broken.append(line)
    assert len(broken) == 1 and 0 < lines.index(broken[0]) < len(lines) - 1
    assert records == json.loads(json.dumps(demo_records(web.base_url)))
    posted = {r["url"] for r in records}
    for kind, urls in site_urls(web.base_url).items():
        assert set(urls) <= posted, kind
    scores = [r["score"] for r in records]
    assert any(s < 3 for s in scores) and sum(s >= 3 for s in scores) > len(scores) / 2
    assert all(isinstance(r["created_utc"], str) for r in records[::7])
    # Some page clears the karma bar only once its tracking-parameter reposts are summed.
    karma = defaultdict(list)
    for r in records:
        karma[r["url"].split("?")[0]].append(r["score"])
    assert any(len(s) > 1 and max(s) < 3 <= sum(s) for s in karma.values())
