"""The fetch stage: one row per URL, readable WARC, incremental, resumable after a kill."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
from test_extract_stage import StaticSource, article
from warcio.archiveiterator import ArchiveIterator

from scraping import page_source as errors
from scraping.fetch_stage import FetchOptions, _InOrder, fetch_pages, host_shards, open_source
from scraping.page_source import FetchResult
from scraping.warc_replay import ArchiveError
from webtext.store import Store, VersionRef
from webtext_app.demo_web import DemoWeb, gen_urls, site_urls

REPO_ROOT = Path(__file__).resolve().parent.parent
FAST = {
    "connections": 16,
    "per_host_connections": 8,
    "per_host_delay": 0.0,
    "total_timeout": 3.0,
    "read_timeout": 2.0,
    "backoff": 0.05,
    "max_bytes": 2**20,
    "allow_loopback": True,
}


@pytest.fixture(scope="module")
def web():
    with DemoWeb() as server:
        yield server


def links_version(store: Store, urls: list[str], params: dict | None = None) -> VersionRef:
    """A `links` version holding `urls`, written as the link stage would."""
    import pyarrow as pa

    with store.write("links", params or {"urls": urls}, "test") as out:
        with out.open("links/part-00000.parquet", rows=len(urls)) as handle:
            pq.write_table(pa.table({"url": urls}), handle)
        return out.ref


def fetch(store: Store, links: VersionRef, shard_size: int = 8, retry_after=3600.0, **overrides):
    settings = {**FAST, **overrides}
    options = FetchOptions(
        shard_size=shard_size,
        in_flight=4 * settings["connections"],
        retry_transient_after=retry_after,
    )
    return fetch_pages(store, links, options, open_page_source=partial(open_source, [], **settings))


def rows(store: Store, ref: VersionRef) -> list[dict]:
    return pq.read_table(store.url(ref, "fetches")).to_pylist()


def test_every_url_gets_one_row_and_pages_are_in_the_warc(tmp_path, web) -> None:
    urls = site_urls(web.base_url)
    inputs = (
        urls["article"][:12]
        + urls["status_404"]
        + urls["redirect_loop"]
        + urls["binary"]
        + urls["private"][:2]
        + urls["redirect_private"]
    )
    store = Store(str(tmp_path / "store"))
    result = fetch(store, links_version(store, inputs))
    table = rows(store, result.ref)
    assert sorted(r["url"] for r in table) == sorted(inputs)
    counts = result.stats["counts"]
    assert counts["attempted"] == len(inputs) and counts["fetched"] == 12
    assert counts[errors.HTTP_STATUS] == 1 and counts[errors.REDIRECT_LOOP] == 1
    assert counts[errors.ROBOTS_DISALLOWED] == 2 and counts[errors.REFUSED_ADDRESS] == 1
    assert counts[errors.BINARY_CONTENT] == 1

    for row in table:
        if row["error"] is not None:
            assert row["warc_file"] is None
            continue
        path = f"{store.version_dir(result.ref)}/{row['warc_file']}"
        with store.fs.open(path, "rb") as handle:
            handle.seek(row["warc_offset"])
            record = next(iter(ArchiveIterator(handle)))
            body = record.content_stream().read()
        assert record.rec_type == "response"
        assert record.rec_headers.get_header("WARC-Target-URI") == row["final_url"]
        assert len(body) == row["bytes"] > 0
        assert b"<html" in body.lower()

    manifest = store.manifest(result.ref)
    assert manifest.parents[0].stage == "links"
    warc_rows = {f.path: f.rows for f in manifest.files if f.path.startswith("warc/")}
    assert sum(warc_rows.values()) == 12


def test_same_links_again_is_reused_and_new_links_fetch_only_new_urls(tmp_path, web) -> None:
    urls = site_urls(web.base_url)["article"]
    store = Store(str(tmp_path / "store"))
    first_links = links_version(store, urls[20:26])
    first = fetch(store, first_links)
    again = fetch(store, first_links)
    assert again.reused and again.ref == first.ref

    hits_before = {url: web.hits[url.removeprefix(web.base_url)] for url in urls[20:30]}
    second = fetch(store, links_version(store, urls[20:30]))
    fetched = [r["url"] for r in rows(store, second.ref)]
    assert sorted(fetched) == sorted(urls[26:30])
    assert second.stats["counts"]["fetched_before"] == 6
    assert first.ref in store.manifest(second.ref).parents
    for url in urls[20:26]:  # not requested again
        assert web.hits[url.removeprefix(web.base_url)] == hits_before[url]


def test_archive_replay_writes_the_same_outputs(tmp_path, test_data) -> None:
    archive = test_data / "warc" / "cc-main-2020-34.resiliparse.warc.gz"
    with archive.open("rb") as handle:
        captured = [
            r.rec_headers.get_header("WARC-Target-URI")
            for r in ArchiveIterator(handle)
            if r.rec_type == "response"
        ]
    store = Store(str(tmp_path / "store"))
    inputs = [*captured, "http://not-captured.example/"]
    links = links_version(store, inputs)
    result = fetch_pages(store, links, FetchOptions(archives=(str(archive),)))
    counts = result.stats["counts"]
    assert counts["attempted"] == len(inputs)
    assert counts["fetched"] == len(captured) == 16
    assert counts[errors.NOT_IN_ARCHIVE] == 1
    assert store.manifest(result.ref).parameters["source"]["kind"] == "archive"
    assert counts["archive_records"] == 50 and counts["archive_urls"] == 16
    assert counts["archives_truncated"] == counts["archive_skipped_invalid_url"] == 0


def test_bad_archive_records_are_counted_and_a_foreign_file_refused(tmp_path, test_data):
    archive = test_data / "warc" / "cc-main-2020-34.resiliparse.warc.gz"
    # A copy cut inside a record: before, the cut record was indexed with the bytes it
    # had and nothing said so; now the records before it replay, and the cut is counted.
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 9 // 10])
    store = Store(str(tmp_path / "store"))
    links = links_version(store, ["http://not-captured.example/"])
    result = fetch_pages(store, links, FetchOptions(archives=(str(cut),)))
    counts = result.stats["counts"]
    assert counts["archives_truncated"] == 1 and counts["archive_urls"] == 13
    foreign = tmp_path / "page.warc"
    foreign.write_text("<html>not an archive</html>\n")
    more = links_version(store, ["http://another.example/"])
    with pytest.raises(ArchiveError, match=f"^{foreign}: no WARC record readable"):
        fetch_pages(store, more, FetchOptions(archives=(str(archive), str(foreign))))
    assert len(store.versions("fetches")) == 1


KILLABLE = """
import sys
from scraping.fetch_stage import FetchOptions, fetch_pages, open_source
from scraping.warc_replay import ArchiveError
from webtext.store import Store, VersionRef
store = Store(sys.argv[1])
source = lambda: open_source([], **{options})
options = FetchOptions(shard_size=4, in_flight=4 * {options}["connections"])
fetch_pages(store, VersionRef("links", sys.argv[2]), options, open_page_source=source)
"""


def test_a_killed_fetch_resumes_without_refetching_finished_shards(tmp_path) -> None:
    with DemoWeb(latency=0.3, addresses=6) as slow:
        urls = gen_urls(slow.base_urls, 24)  # 6 hosts: 6 shards of 4
        store = Store(str(tmp_path / "store"))
        links = links_version(store, urls)
        options = {**FAST, "connections": 2, "per_host_connections": 2}
        process = subprocess.Popen(
            [sys.executable, "-c", KILLABLE.format(options=options), store.root, links.version],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        staging = Path(store.root) / "fetches"
        deadline = time.monotonic() + 30
        while len(list(staging.glob(".staging-*/.parts/*.json"))) < 2:
            assert process.poll() is None and time.monotonic() < deadline, "no shard committed"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert store.versions("fetches") == []
        done = []  # the URLs of the shards committed (a marker each) before the kill
        for marker in staging.glob(".staging-*/.parts/shard-*.json"):
            index = marker.stem.removeprefix("shard-")
            for part in marker.parent.parent.glob(f"fetches/part-{index}-*.parquet"):
                done += pq.read_table(part).column("url").to_pylist()
        hits_after_kill = dict(slow.hits)

        result = fetch(store, links, shard_size=4, **options)
    table = rows(store, result.ref)
    assert sorted(r["url"] for r in table) == sorted(urls)  # nothing lost, nothing doubled
    assert all(r["error"] is None for r in table)
    assert len(done) >= 8
    for url in done:  # finished shards were not fetched again
        path = urlsplit(url).path
        assert slow.hits[path] == hits_after_kill[path]
    assert json.loads(store.manifest(result.ref).to_json())["stats"]["counts"]["fetched"] == 24


def test_transient_failures_are_retried_by_later_runs_up_to_the_limit(tmp_path, web) -> None:
    flaky = f"{web.base_url}/flaky/500/retried-by-the-next-run"  # a 500 once, then the page
    down = f"{web.base_url}/status/503"  # a 503 every time
    gone = f"{web.base_url}/status/404"  # not transient: never asked again
    page = site_urls(web.base_url)["article"][40]
    store = Store(str(tmp_path / "store"))
    links = links_version(store, [flaky, down, gone, page])
    paths = [url.removeprefix(web.base_url) for url in (flaky, down, gone, page)]
    hits_before = [web.hits[path] for path in paths]  # the server is the module's

    def outcomes(ref: VersionRef) -> dict[str, tuple[int | None, str | None, int]]:
        return {r["url"]: (r["status"], r["error"], r["fetch_runs"]) for r in rows(store, ref)}

    first = fetch(store, links, retries=0)  # no retry within a run: only later runs retry
    assert outcomes(first.ref) == {
        flaky: (500, errors.HTTP_STATUS, 1),
        down: (503, errors.HTTP_STATUS, 1),
        gone: (404, errors.HTTP_STATUS, 1),
        page: (200, None, 1),
    }
    # A rerun at once retries nothing yet: transient outcomes wait retry_transient_after.
    again = fetch(store, links, retries=0)
    assert again.reused and again.ref == first.ref

    second = fetch(store, links, retry_after=0, retries=0)
    assert not second.reused
    assert outcomes(second.ref) == {flaky: (200, None, 2), down: (503, errors.HTTP_STATUS, 2)}
    assert store.manifest(second.ref).parameters["retrying"] == [first.ref.version]
    counts = second.stats["counts"]
    assert (counts["urls"], counts["fetched_before"], counts["retried"]) == (4, 2, 2)

    third = fetch(store, links, retry_after=0, retries=0)
    assert outcomes(third.ref) == {down: (503, errors.HTTP_STATUS, 3)}
    assert store.manifest(third.ref).parameters["retrying"] == [second.ref.version]

    # Three runs tried the 503: the limit. Nothing is left to retry, so the run finds the
    # version made with nothing to retry.
    fourth = fetch(store, links, retry_after=0, retries=0)
    assert fourth.reused and fourth.ref == first.ref
    requests = [web.hits[path] - before for path, before in zip(paths, hits_before, strict=True)]
    assert requests == [2, 3, 1, 1]  # flaky, down, gone, page


def test_shards_hold_each_host_whole_and_come_out_balanced() -> None:
    urls = [f"http://big.example/{i}" for i in range(25)]
    urls += [f"http://h{h}.example/{i}" for h in range(30) for i in range(3)]
    shards = host_shards(urls, 20)
    assert len(shards) == 6  # 115 URLs, 20 a shard
    assert sorted(url for shard in shards for url in shard) == sorted(urls)
    hosts = [{urlsplit(url).hostname for url in shard} for shard in shards]
    assert sum(len(h) for h in hosts) == len(set().union(*hosts)) == 31  # each host once
    assert sorted(len(shard) for shard in shards) == [18, 18, 18, 18, 18, 25]
    assert host_shards(urls[::-1], 20) == shards  # the links' order does not matter
    assert [len(s) for s in host_shards(urls[:30], 2)] == [25, 3, 2]  # 3 hosts: 3 shards


class ShuffledSource(StaticSource):
    """Answers after a random delay, so pages arrive in no fixed order; dated as a
    capture is, so two runs fetch the same results."""

    async def fetch(self, url: str) -> FetchResult:
        await asyncio.sleep(random.uniform(0, 0.005))
        result = await super().fetch(url)
        result.fetched_at = datetime(2019, 2, 14, tzinfo=UTC)
        return result


def test_a_version_has_the_same_bytes_whatever_order_its_pages_arrive_in(tmp_path) -> None:
    """Before: rows and WARC records were written as answers came, with random record ids
    and a warcinfo dated at writing: no two runs had the same bytes."""
    pages = {f"http://h{i % 5}.example/{i}": article(f"Story {i}", 3) for i in range(40)}
    published = []
    for in_flight, threads in ((1, 1), (16, 4)):
        store = Store(str(tmp_path / f"in-flight-{in_flight}"))
        options = FetchOptions(
            shard_size=10, in_flight=in_flight, shards_at_once=threads, warc_file_bytes=8_000
        )
        links = links_version(store, sorted(pages))
        ref = fetch_pages(
            store, links, options, open_page_source=partial(ShuffledSource, pages)
        ).ref
        published.append({f.path: f.sha256 for f in store.manifest(ref).files})
        for row in rows(store, ref):  # every pointer reads back its page
            with store.fs.open(store.url(ref, row["warc_file"]), "rb") as handle:
                handle.seek(row["warc_offset"])
                assert (
                    next(iter(ArchiveIterator(handle))).content_stream().read() == pages[row["url"]]
                )
    assert published[0] == published[1]
    assert sum(name.startswith("warc/") for name in published[0]) > 4  # files rotated
    # 5 hosts of 8 URLs in 4 shards: one shard holds two hosts, in two tables of <= 10 rows.
    tables = {f.path: f.rows for f in store.manifest(ref).files if f.path.startswith("fetches/")}
    assert max(tables.values()) <= 10 and "fetches/part-00000-001.parquet" in tables
    table_of_warc: dict[str, set[str]] = {}  # a WARC file's pages are in one table
    for table in tables:
        for row in pq.read_table(store.url(ref, table)).to_pylist():
            table_of_warc.setdefault(row["warc_file"], set()).add(table)
    assert all(len(names) == 1 for names in table_of_warc.values())


def test_pages_that_arrive_early_wait_within_a_byte_budget() -> None:
    """The earliest URL answers last; past the budget no new URL starts before it."""
    events: list[str] = []

    class Slow:
        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc_info):
            return None

        async def fetch(self, url: str) -> FetchResult:
            events.append(f"start {url}")
            await asyncio.sleep(0.05 if url == "u0" else 0)
            events.append(f"done {url}")
            return FetchResult(url=url, status=200, body=b"x" * 100)

    taken: list[str] = []
    in_order = _InOrder(lambda result: taken.append(result.url), max_held_bytes=250)
    asyncio.run(in_order.fetch(Slow(), [f"u{i}" for i in range(10)], in_flight=8))
    assert taken == [f"u{i}" for i in range(10)]
    # u1-u7 start with u0; three of them held (300 bytes) close the budget: u8 had passed
    # it and waited on the window, u9 waits for u0.
    assert events.index("start u8") < events.index("done u0") < events.index("start u9")
