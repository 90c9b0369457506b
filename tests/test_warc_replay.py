"""Archive replay (`scraping.warc_replay`) over real WARC files and small synthetic ones,
and over bad ones: records without a target, huge header lines, corrupt or foreign files."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import os
import time
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from scraping import page_source as errors
from scraping import warc_replay
from scraping.page_source import FetchResult
from scraping.urls import normalize_url
from scraping.warc_replay import ArchiveError, ArchiveSource

HTML = b"<html><head><title>t</title></head><body>hello</body></html>"
SERVER_NOT_MODIFIED = "http://netpreserve.org/warc/1.1/revisit/server-not-modified"


def replay(
    paths: Sequence[str | Path], urls: Sequence[str], **options: Any
) -> tuple[list[FetchResult], ArchiveSource]:
    async def run() -> tuple[list[FetchResult], ArchiveSource]:
        async with ArchiveSource([str(path) for path in paths], **options) as source:
            # All at once: the worker threads share each file's handle.
            return list(await asyncio.gather(*map(source.fetch, urls))), source

    return asyncio.run(run())


def fetch_one(paths: Sequence[str | Path], url: str, **options: Any) -> FetchResult:
    return replay(paths, [url], **options)[0][0]


def warcio_captures(path: Path) -> list[dict[str, Any]]:
    """Every response as warcio itself reads and decodes it, in file order."""
    captures = []
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            if record.rec_type == "response":
                headers = record.rec_headers
                captures.append(
                    {
                        "uri": headers.get_header("WARC-Target-URI"),
                        "date": datetime.fromisoformat(headers.get_header("WARC-Date")),
                        "ip": headers.get_header("WARC-IP-Address"),
                        "body": record.content_stream().read(),
                    }
                )
    return captures


# Synthetic archives: each record is built by a function of the writer.
Record = Callable[[WARCWriter], Any]


def write_warc(path: Path, *records: Record) -> Path:
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=path.suffix == ".gz")
        for build in records:
            writer.write_record(build(writer))
    return path


def http_message(status: str, headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def response(
    url: str,
    body: bytes = HTML,
    *,
    status: str = "200 OK",
    headers: Sequence[tuple[str, str]] = (("Content-Type", "text/html; charset=utf-8"),),
    date: str = "2021-01-01T00:00:00Z",
    warc_headers: Sequence[tuple[str, str]] = (),
    without: Sequence[str] = (),
) -> Record:
    """A response record; `warc_headers` are added to its WARC head, `without` removed."""
    message = http_message(status, headers, body)

    def build(writer: WARCWriter) -> Any:
        record = writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(message),
            length=len(message),
            warc_headers_dict={"WARC-Date": date, "WARC-IP-Address": "192.0.2.1"},
        )
        for name, value in warc_headers:
            record.rec_headers.add_header(name, value)
        for name in without:
            record.rec_headers.remove_header(name)
        return record

    return build


def redirect(url: str, location: str, status: str = "301 Moved Permanently") -> Record:
    return response(url, b"", status=status, headers=[("Location", location)])


@pytest.fixture
def warc_dir(test_data: Path) -> Path:
    return test_data / "warc"


def test_common_crawl_excerpt_replays_every_response(warc_dir: Path) -> None:
    path = warc_dir / "cc-main-2020-34.resiliparse.warc.gz"
    captures = warcio_captures(path)
    assert len(captures) == 16
    results, source = replay([path], [capture["uri"] for capture in captures])
    for capture, result in zip(captures, results, strict=True):
        assert result.ok, (capture["uri"], result.error, result.error_detail)
        assert result.status == 200
        assert result.final_url == normalize_url(capture["uri"])
        assert result.fetched_at == capture["date"]
        assert result.fetched_at.utcoffset() is not None
        assert result.ip_address == capture["ip"]
        assert result.body == capture["body"]
        lowered = result.body.lower()
        assert b"<html" in lowered or b"<title" in lowered
        assert any(
            name == "User-Agent" and "CCBot" in value for name, value in result.request_headers
        )
    assert source.stats["responses"] == 16
    assert source.stats["urls"] == 16
    assert source.stats["records"] == 50  # warcinfo, 17 requests, 16 responses, 16 metadata


def test_wget_samples_reachable_by_unwrapped_url(warc_dir: Path) -> None:
    paths = [warc_dir / "dolma-sample-0000.warc.gz", warc_dir / "dolma-sample-0001.warc.gz"]
    for path in paths:  # the quirk is really there, and warcio hides it
        assert b"WARC-Target-URI: <https://" in gzip.decompress(path.read_bytes())
    captures = [capture for path in paths for capture in warcio_captures(path)]
    assert len(captures) == 37
    latest: dict[str, dict[str, Any]] = {}
    for capture in captures:  # every date differs, so file order breaks no tie
        held = latest.get(capture["uri"])
        if held is None or capture["date"] >= held["date"]:
            latest[capture["uri"]] = capture
    results, source = replay(paths, [capture["uri"] for capture in captures])
    for capture, result in zip(captures, results, strict=True):
        expected = latest[capture["uri"]]
        assert result.ok, (capture["uri"], result.error, result.error_detail)
        assert result.status == 200
        assert result.body == expected["body"]
        assert result.fetched_at == expected["date"]
    assert source.stats["urls"] == len(latest) == 35  # allenai.org/ was captured 3 times
    assert source.stats["superseded"] == 2
    # wget kept the chunked framing; the body we return is de-chunked.
    chunked = next(r for r in results if r.url == "https://creativecommons.org/")
    assert ("X-Crawler-Transfer-Encoding", "chunked") in chunked.headers


def test_revisit_replays_the_original_payload(warc_dir: Path) -> None:
    path = warc_dir / "warcio-example.warc.gz"
    (original,) = warcio_captures(path)
    result, source = replay([f"file://{path}"], ["http://example.com/"])  # an fsspec URL
    (page,) = result
    assert page.ok
    assert page.body == original["body"]
    assert b"Example Domain" in page.body
    # The capture is the revisit's: its date, its own HTTP headers (gzip, decoded here).
    assert page.fetched_at == datetime(2017, 3, 6, 4, 3, 48, tzinfo=UTC)
    assert ("Date", "Mon, 06 Mar 2017 04:03:48 GMT") in page.headers
    assert ("X-Crawler-Content-Encoding", "gzip") in page.headers
    assert not any(name.lower() == "content-encoding" for name, _ in page.headers)
    assert ("Host", "example.com") in page.request_headers
    assert source.stats["revisits"] == 1
    assert source.stats["superseded"] == 1


def test_missing_and_invalid_urls(warc_dir: Path) -> None:
    urls = ["http://example.com/elsewhere", "ftp://example.com/", "not a url"]
    missing, ftp, garbage = replay([warc_dir / "warcio-example.warc.gz"], urls)[0]
    assert missing.error == errors.NOT_IN_ARCHIVE
    assert missing.error_detail is not None and "example.com/elsewhere" in missing.error_detail
    assert ftp.error == errors.INVALID_URL
    assert garbage.error == errors.INVALID_URL


def test_redirects_are_followed_inside_the_archive(tmp_path: Path) -> None:
    warc = write_warc(
        tmp_path / "redirects.warc.gz",
        redirect("http://site.test/a", "/b"),
        redirect("http://site.test/b", "https://site.test/c?utm_source=feed", "302 Found"),
        response("https://site.test/c"),
        redirect("http://site.test/loop1", "/loop2"),
        redirect("http://site.test/loop2", "/loop1"),
        redirect("http://site.test/dangling", "/gone"),
    )
    urls = ["HTTP://Site.test/a", "http://site.test/loop1", "http://site.test/dangling"]
    (chain, loop, dangling), _ = replay([warc], urls)
    assert chain.ok and chain.body == HTML
    assert chain.url == "HTTP://Site.test/a"
    assert chain.final_url == "https://site.test/c"
    assert loop.error == errors.REDIRECT_LOOP
    assert dangling.error == errors.NOT_IN_ARCHIVE
    assert dangling.error_detail is not None and "http://site.test/gone" in dangling.error_detail
    too_far = fetch_one([warc], "http://site.test/a", max_redirects=1)
    assert too_far.error == errors.TOO_MANY_REDIRECTS


def test_status_and_content_checks(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    warc = write_warc(
        tmp_path / "checks.warc.gz",
        response("http://site.test/missing", b"<html>gone</html>", status="404 Not Found"),
        response("http://site.test/logo.png", png, headers=[("Content-Type", "image/png")]),
        response("http://site.test/fake.html", png),
    )
    urls = ["http://site.test/missing", "http://site.test/logo.png", "http://site.test/fake.html"]
    (missing, image, fake), _ = replay([warc], urls)
    assert (missing.error, missing.status) == (errors.HTTP_STATUS, 404)
    assert image.error == errors.CONTENT_TYPE
    assert fake.error == errors.BINARY_CONTENT
    assert missing.body == image.body == fake.body == b""


def test_content_and_transfer_encodings_are_decoded(tmp_path: Path) -> None:
    page = HTML * 50
    packed = gzip.compress(page)
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(packed[i : i + 100]), packed[i : i + 100])
        for i in range(0, len(packed), 100)
    )
    html = ("Content-Type", "text/html")
    warc = write_warc(
        tmp_path / "encodings.warc.gz",
        response(
            "http://site.test/gzip",
            packed,
            headers=[html, ("Content-Encoding", "gzip"), ("Content-Length", str(len(packed)))],
        ),
        response(
            "http://site.test/chunked-gzip",
            chunked + b"0\r\n\r\n",
            headers=[html, ("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")],
        ),
        response(
            "http://site.test/deflate",
            zlib.compress(page),
            headers=[html, ("Content-Encoding", "deflate")],
        ),
        response(
            "http://site.test/corrupt",
            packed[:20] + bytes(100),
            headers=[html, ("Content-Encoding", "gzip")],
        ),
    )
    urls = [f"http://site.test/{name}" for name in ("gzip", "chunked-gzip", "deflate", "corrupt")]
    (plain, chunked_result, deflated, corrupt), _ = replay([warc], urls)
    for result in (plain, chunked_result, deflated):
        assert result.ok and result.body == page and not result.truncated
    assert ("X-Crawler-Content-Encoding", "gzip") in plain.headers
    assert ("X-Crawler-Content-Length", str(len(packed))) in plain.headers
    assert not any(name in ("Content-Encoding", "Content-Length") for name, _ in plain.headers)
    assert ("X-Crawler-Transfer-Encoding", "chunked") in chunked_result.headers
    assert corrupt.error == errors.PROTOCOL_ERROR


def test_large_payload_is_cut_at_max_bytes(tmp_path: Path) -> None:
    max_bytes = 2**20
    warc = write_warc(tmp_path / "big.warc.gz", response("http://site.test/big", HTML * 60_000))
    result = fetch_one([warc], "http://site.test/big", max_bytes=max_bytes)
    assert result.ok and result.truncated
    assert len(result.body) == max_bytes
    assert result.body == (HTML * 60_000)[:max_bytes]


def test_gzip_bomb_is_not_inflated(tmp_path: Path) -> None:
    bomb = gzip.compress(bytes(50 * 2**20), compresslevel=9)
    warc = write_warc(
        tmp_path / "bomb.warc.gz",
        response(
            "http://site.test/bomb",
            bomb,
            headers=[("Content-Type", "text/html"), ("Content-Encoding", "gzip")],
        ),
    )
    max_bytes = 2**20
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = fetch_one([warc], "http://site.test/bomb", max_bytes=max_bytes)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 2
    assert peak < 16 * 2**20  # inflating it all would take 50 MiB at least
    assert result.error == errors.DECOMPRESSION_BOMB or (
        result.truncated and len(result.body) == max_bytes
    )


def test_latest_capture_wins_across_files(tmp_path: Path) -> None:
    url = "http://site.test/page"
    newer = write_warc(
        tmp_path / "newer.warc.gz",
        response(url, b"<html>2021</html>", date="2021-06-01T00:00:00Z"),
    )
    older = write_warc(  # plain, uncompressed WARC
        tmp_path / "older.warc",
        response(url, b"<html>2020</html>", date="2020-06-01T00:00:00Z"),
        response(
            "http://site.test/only-old", b"<html>old only</html>", date="2020-06-01T00:00:00Z"
        ),
    )
    for order in ([newer, older], [older, newer]):
        (page, only_old), source = replay(order, [url, "http://site.test/only-old"])
        assert page.body == b"<html>2021</html>"
        assert page.fetched_at == datetime(2021, 6, 1, tzinfo=UTC)
        assert only_old.body == b"<html>old only</html>"
        assert source.stats["superseded"] == 1
    same_time = write_warc(tmp_path / "same-time.warc.gz", response(url, b"<html>again</html>"))
    first = write_warc(tmp_path / "first.warc.gz", response(url, b"<html>first</html>"))
    assert fetch_one([first, same_time], url).body == b"<html>again</html>"  # tie: read last


def test_synthetic_revisits(tmp_path: Path) -> None:
    original_url = "http://site.test/original"
    writer = WARCWriter(io.BytesIO(), gzip=True)
    digest = response(original_url)(writer).rec_headers.get_header("WARC-Payload-Digest")

    def not_modified(writer: WARCWriter) -> Any:
        record = writer.create_revisit_record(
            original_url,
            "sha1:DOESNOTMATCHANYTHING",
            original_url,
            "2021-01-01T00:00:00Z",
            http_headers=StatusAndHeaders("304 Not Modified", [], protocol="HTTP/1.1"),
            warc_headers_dict={"WARC-Date": "2022-01-01T00:00:00Z"},
        )
        record.rec_headers.replace_header("WARC-Profile", SERVER_NOT_MODIFIED)
        return record

    def by_digest_only(writer: WARCWriter) -> Any:
        return writer.create_revisit_record(
            "http://mirror.test/copy", digest, "http://unknown.test/", "2019-01-01T00:00:00Z"
        )

    def orphan(writer: WARCWriter) -> Any:
        return writer.create_revisit_record(
            "http://site.test/orphan",
            "sha1:NOWHERE",
            "http://unknown.test/",
            "2019-01-01T00:00:00Z",
        )

    # The revisits come first: the originals they point to are read later.
    warc = write_warc(
        tmp_path / "revisits.warc.gz", not_modified, by_digest_only, orphan, response(original_url)
    )
    urls = [original_url, "http://mirror.test/copy", "http://site.test/orphan"]
    (refreshed, copy, orphaned), source = replay([warc], urls)
    assert refreshed.ok and refreshed.status == 200 and refreshed.body == HTML
    assert refreshed.fetched_at == datetime(2022, 1, 1, tzinfo=UTC)
    assert ("Content-Type", "text/html; charset=utf-8") in refreshed.headers
    assert copy.ok and copy.body == HTML  # no HTTP head of its own: the original's
    assert ("Content-Type", "text/html; charset=utf-8") in copy.headers
    assert orphaned.error == errors.NOT_IN_ARCHIVE
    assert source.stats["revisits"] == 2
    assert source.stats["skipped:revisit_without_original"] == 1


def test_fetch_outside_the_context_is_an_error(warc_dir: Path) -> None:
    source = ArchiveSource([str(warc_dir / "warcio-example.warc.gz")])
    with pytest.raises(RuntimeError, match="context manager"):
        asyncio.run(source.fetch("http://example.com/"))


# Bad input: each of these ended the whole replay, or took unbounded time and memory.


def page(n: int) -> Record:
    return response(f"http://site.test/{n}", f"<html>page {n}</html>".encode())


def replays_pages(paths: Sequence[Path], numbers: Sequence[int]) -> ArchiveSource:
    """Every page `numbers` names replays with its own body; the source, for its counts."""
    urls = [f"http://site.test/{n}" for n in numbers]
    results, source = replay(paths, urls)
    assert [r.body for r in results] == [f"<html>page {n}</html>".encode() for n in numbers]
    return source


@pytest.mark.parametrize("suffix", [".warc.gz", ".warc"])
def test_a_response_without_target_uri_is_skipped(tmp_path: Path, suffix: str) -> None:
    # Before: AttributeError inside warcio (it calls .startswith on the missing URI).
    nameless = response("http://site.test/gone", without=["WARC-Target-URI"])
    path = write_warc(tmp_path / f"nameless{suffix}", page(1), nameless, page(2))
    source = replays_pages([path], [1, 2])
    assert source.stats["skipped:invalid_url"] == 1 and source.stats["records"] == 3
    assert source.counts()["archive_skipped_invalid_url"] == 1


def test_a_huge_http_header_line_skips_its_record_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: warcio joined the line block by block (a 100 MB line: 150 s, 480 MB).
    # Scaled down: a 64 KiB bound, a 2 MiB line (incompressible, so gzip does not hide it).
    monkeypatch.setattr(warc_replay, "MAX_HEADER_LINE", 64 << 10)
    line = base64.b64encode(os.urandom(3 << 19)).decode()
    huge = response("http://site.test/huge", headers=[("X-Huge", line)])
    for suffix in (".warc", ".warc.gz"):
        path = write_warc(tmp_path / f"huge{suffix}", page(1), huge, page(2))
        tracemalloc.start()
        try:
            source = replays_pages([path], [1, 2])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert source.stats["skipped:bad_http_head"] == 1
        [failure] = source.failures
        assert failure.startswith(f"{path}@") and failure.endswith(
            "response of http://site.test/huge: a header line longer than 65,536 bytes"
        )
        assert peak < 1 << 20, peak


def test_a_huge_warc_header_line_keeps_the_records_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warc_replay, "MAX_HEADER_LINE", 64 << 10)
    line = base64.b64encode(os.urandom(3 << 19)).decode()
    huge = response("http://site.test/huge", warc_headers=[("X-Huge", line)])
    path = write_warc(tmp_path / "huge-warc-head.warc", page(1), huge, page(2))
    source = replays_pages([path], [1])
    assert source.stats["archives_corrupt"] == 1 and source.stats["urls"] == 1
    [failure] = source.failures
    assert failure.startswith(f"{path}@") and "the 1 records before kept" in failure
    assert fetch_one([path], "http://site.test/2").error == errors.NOT_IN_ARCHIVE


def test_a_corrupt_gzip_member_keeps_the_records_before(tmp_path: Path) -> None:
    path = write_warc(tmp_path / "flipped.warc.gz", page(1), page(2), page(3))
    data = bytearray(path.read_bytes())
    second = data.index(b"\x1f\x8b", 10)  # where the second record's gzip member starts
    data[second + 40] ^= 0xFF
    path.write_bytes(bytes(data))
    source = replays_pages([path], [1])
    assert source.stats["archives_corrupt"] == 1
    assert source.failures[0].startswith(f"{path}@")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.warc.gz", b"\x00garbage" * 100),
        ("page.warc", b"<html>not a warc</html>\n"),
        ("headless.warc.gz", gzip.compress(http_message("200 OK", [], HTML))),
        ("folder.warc", None),
        ("missing.warc", "missing"),
    ],
    ids=["garbage", "html", "headless", "folder", "missing"],  # same ids on every xdist worker
)
def test_a_file_that_is_no_archive_is_one_line_naming_it(
    tmp_path: Path, name: str, content: bytes | str | None
) -> None:
    # Before: warcio's ArchiveLoadFailed (a multi-line message), or an OSError, as a
    # traceback from the fetch stage.
    good = write_warc(tmp_path / "good.warc.gz", page(1))
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ArchiveError) as raised:
        replay([good, path], ["http://site.test/1"])
    message = str(raised.value)
    assert str(path) in message and "\n" not in message
