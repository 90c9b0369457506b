"""The link stage end to end: filters, karma aggregation, incremental runs, API source."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import status_after
from fake_reddit import FakeReddit

from scraping import link_filters as rules
from scraping import links as links_stage
from scraping.dumps import CommentDumpError, RedditRecord
from scraping.link_filters import LinkFilters, Submission, SubmissionFilter, utc_timestamp
from scraping.links import LinkOptions, collect_links
from scraping.reddit_api import ListingSpec, RedditCredentials
from webtext.store import Store

CREDENTIALS = RedditCredentials("client-id", "never-shown-secret", "webtext-tests/0.1")
# Per-submission drop reasons: with "passed", they partition the records read.
SUBMISSION_REASONS = [r for r in rules.DROP_REASONS if r != rules.KARMA_BELOW_MIN]


def read_links(store: Store, ref) -> list[dict]:
    return pq.read_table(store.url(ref, "links")).to_pylist()


def assert_counts_add_up(counts: dict[str, int]) -> None:
    dropped = sum(counts.get(reason, 0) for reason in SUBMISSION_REASONS)
    unread = counts.get(rules.MALFORMED_LINE, 0) + counts.get(rules.LINE_TOO_LONG, 0)
    assert counts["records"] + unread == dropped + counts["passed"]


def write_dump(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def post(post_id: str, url: str, score: int, **fields) -> dict:
    return {
        "id": post_id,
        "url": url,
        "score": score,
        "created_utc": 1_500_000_000,
        "subreddit": "news",
        "is_self": False,
        "over_18": False,
        **fields,
    }


def test_real_sample_keeps_the_2005_articles(tmp_path, sample_dump) -> None:
    store = Store(str(tmp_path))
    result = collect_links(store, [str(sample_dump)])
    links = read_links(store, result.ref)
    raw = [json.loads(line) for line in sample_dump.read_text().splitlines()]
    # Independent of the code under test: posts with score >= 3 that are link posts,
    # safe for work and off blocked hosts.
    expected = {
        r["url"]
        for r in raw
        if r["score"] >= 3 and not r["is_self"] and not r["over_18"] and "redgifs" not in r["url"]
    }
    assert {link["url"] for link in links} == {
        "http://www.downingstreetmemo.com/",
        "http://www.paulgraham.com/nerds.html",
        "http://www.wired.com/news/culture/0,1284,67982,00.html?tw=wn_tophead_4",
        expected_wsj := next(u for u in expected if "wsj" in u),
    }
    assert len(expected) == 4 and expected_wsj.startswith("http://online.wsj.com/")
    counts = result.stats["counts"]
    assert counts["records"] == 31
    assert counts[rules.SELF_POST] == 12 and counts[rules.NSFW] == 4
    assert counts["links"] == 4 and counts[rules.KARMA_BELOW_MIN] == 9
    assert_counts_add_up(counts)
    graham = next(link for link in links if "paulgraham" in link["url"])
    assert graham["karma"] == 26 and graham["post_ids"] == ["89"]
    assert graham["subreddits"] == ["reddit.com"] and graham["domain"] == "www.paulgraham.com"
    assert graham["first_seen"].year == 2005
    manifest = store.manifest(result.ref)
    assert {f.path: f.rows for f in manifest.files} == {
        "links/part-00000.parquet": 4,
        "submissions/part-00000.parquet": 13,
    }


def test_karma_is_summed_over_distinct_submissions_of_a_normalised_url(tmp_path) -> None:
    dump = write_dump(
        tmp_path / "RS_a.ndjson",
        [
            post("a1", "http://site.org/story", 1, subreddit="news"),
            post("a2", "HTTP://SITE.org/story?utm_source=reddit#top", 1, subreddit="world"),
            post("a3", "http://site.org:80/story", 1, subreddit="news", created_utc=1_600_000_000),
            # The same post seen again (a later dump, higher score) counts once, at its best.
            post("a3", "http://site.org/story", 0, created_utc=1_600_000_000),
            post("b1", "http://site.org/other", 2),
            post("c1", "http://site.org/story/", 5),  # a different page: trailing slash
        ],
    )
    store = Store(str(tmp_path / "store"))
    result = collect_links(store, [str(dump)])
    by_url = {link["url"]: link for link in read_links(store, result.ref)}
    assert set(by_url) == {"http://site.org/story", "http://site.org/story/"}
    story = by_url["http://site.org/story"]
    assert story["karma"] == 3 and story["submissions"] == 3
    assert sorted(story["post_ids"]) == ["a1", "a2", "a3"]
    assert sorted(story["subreddits"]) == ["news", "world"]
    assert story["last_seen"].year == 2020 and story["first_seen"].year == 2017
    counts = result.stats["counts"]
    assert counts["duplicate_submissions"] == 1
    assert counts[rules.KARMA_BELOW_MIN] == 1  # site.org/other, 2 karma


def test_every_filter_is_configurable_and_counted(tmp_path) -> None:
    records = [
        post("ok", "http://news.example/a", 10),
        post("self", "https://www.reddit.com/r/x/comments/1/", 10, is_self=True),
        post("nsfw", "http://news.example/b", 10, over_18=True),
        post("sub", "http://news.example/c", 10, subreddit="Pics"),
        post("wiki", "https://en.m.wikipedia.org/wiki/Reddit", 10),
        post("img", "https://i.imgur.com/x.png", 10),
        post("ext", "http://news.example/report.PDF", 10),
        post("ftp", "ftp://news.example/file", 10),
        post("old", "http://news.example/d", 10, created_utc="1100000000"),
        post("noscore", "http://news.example/e", None),
        post("low", "http://news.example/f", 2),
    ]
    dump = write_dump(tmp_path / "RS_f.ndjson", records)
    store = Store(str(tmp_path / "store"))
    strict = LinkFilters(created_after=utc_timestamp("2005-01-01"))
    counts = collect_links(store, [str(dump)], options=LinkOptions(strict)).stats["counts"]
    assert {reason: counts.get(reason, 0) for reason in rules.DROP_REASONS} == {
        rules.MALFORMED_LINE: 0,
        rules.LINE_TOO_LONG: 0,
        rules.MALFORMED_RECORD: 1,
        rules.OUT_OF_TIME_RANGE: 1,
        rules.SELF_POST: 1,
        rules.NSFW: 1,
        rules.SUBREDDIT_BLOCKLIST: 1,
        rules.INVALID_URL: 1,
        rules.WIKIPEDIA: 1,
        rules.DOMAIN_BLOCKLIST: 1,
        rules.EXTENSION_BLOCKLIST: 1,
        rules.KARMA_BELOW_MIN: 1,
    }
    assert counts["links"] == 1
    assert_counts_add_up(counts)

    lenient = LinkFilters(
        min_karma=1,
        keep_self_posts=True,
        keep_nsfw=True,
        keep_wikipedia=True,
        subreddit_blocklist=(),
        domain_blocklist=(),
        extension_blocklist=(),
    )
    result = collect_links(store, [str(dump)], options=LinkOptions(lenient))
    assert result.stats["counts"]["links"] == 9  # all but the ftp URL and the scoreless post


def test_filter_checks_single_records() -> None:
    check = SubmissionFilter(LinkFilters(created_before=utc_timestamp("2018-01-01")))
    kept = check(RedditRecord(id=5, url="http://a.org/x?fbclid=1", score="4", created_utc=1e9))
    assert kept == Submission("5", "http://a.org/x", "a.org", 4, "", 1_000_000_000, "")
    late = RedditRecord(id="z", url="http://a.org/", score=9, created_utc=1_514_764_800)
    assert check(late) == rules.OUT_OF_TIME_RANGE
    assert check(RedditRecord(id="y", url="http://a.org/", score=True, created_utc=1)) == (
        rules.MALFORMED_RECORD
    )


def test_bad_lines_are_counted_and_the_file_goes_on(tmp_path, sample_dump) -> None:
    lines = sample_dump.read_text().splitlines()
    lines.insert(11, '{"id": "cut", "url": "http://')
    dump = tmp_path / "RS_bad.ndjson"
    dump.write_text("\n".join(lines))
    result = collect_links(Store(str(tmp_path / "store")), [str(dump)])
    assert result.stats["counts"][rules.MALFORMED_LINE] == 1
    assert result.stats["line_errors"][0].startswith(f"{dump}:12: ")
    assert result.stats["counts"]["links"] == 4


# Values no Reddit record holds, each of which crashed the spill (OverflowError or
# ValueError in `_Spill._flush` or the filter) before it was counted as malformed.
OUT_OF_RANGE = {
    "score 1e308": '"score": 1e308',
    "score 2**63+5": f'"score": {2**63 + 5}',
    "score inf": '"score": "inf"',
    "score nan": '"score": "nan"',
    "created_utc 1e20": '"created_utc": 1e20',
}


@pytest.mark.parametrize("field", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_a_value_out_of_range_is_a_malformed_record(tmp_path, field) -> None:
    good = json.dumps(post("g1", "http://a.org/kept", 5))
    bad = json.dumps(post("b1", "http://a.org/bad", 5))[:-1] + ", " + field + "}"
    dump = tmp_path / "RS_range.ndjson"
    dump.write_text(f"{good}\n{bad}\n{good.replace('g1', 'g2')}\n")
    result = collect_links(Store(str(tmp_path / "store")), [str(dump)])
    counts = result.stats["counts"]
    assert counts[rules.MALFORMED_RECORD] == 1 and counts["passed"] == 2
    assert counts["links"] == 1
    assert_counts_add_up(counts)
    [error] = result.stats["line_errors"]
    assert error.startswith(f"{dump}:2: malformed record") and "b1" in error


def test_invalid_utf8_in_a_field_is_counted_not_fatal(tmp_path) -> None:
    # Before: UnicodeDecodeError from msgspec aborted the stage, naming no file or line.
    good = json.dumps(post("g1", "http://a.org/kept", 5)).encode()
    bad = json.dumps(post("b1", "http://a.org/bad", 5, title="caf")).encode()
    bad = bad.replace(b'"caf"', b'"caf\xe9"')  # Latin-1, not UTF-8
    dump = tmp_path / "RS_latin1.ndjson"
    dump.write_bytes(b"\n".join([good, bad, good.replace(b"g1", b"g2")]))
    result = collect_links(Store(str(tmp_path / "store")), [str(dump)])
    counts = result.stats["counts"]
    assert counts[rules.MALFORMED_LINE] == 1 and counts["passed"] == 2
    assert_counts_add_up(counts)
    assert result.stats["line_errors"][0].startswith(f"{dump}:2: ")


@pytest.mark.parametrize("where", ["first chunk", "after the first chunk"])
def test_a_dump_cut_short_keeps_what_came_before_and_is_named(tmp_path, where) -> None:
    # Before: a cut inside the first MiB failed the whole run from the comment-dump
    # check, while a later cut kept the lines before it.
    lines = [json.dumps(post(f"p{i}", f"http://a.org/{i}", 5)) for i in range(40_000)]
    if where == "first chunk":
        lines = lines[:2_000]  # about 250 kB of text: one read chunk
    data = lzma.compress("\n".join(lines).encode())
    dump = tmp_path / "RS_cut.xz"
    dump.write_bytes(data[: len(data) * 3 // 4])
    other = write_dump(tmp_path / "RS_other.ndjson", [post("o1", "http://b.org/", 5)])
    result = collect_links(Store(str(tmp_path / "store")), [str(dump), str(other)])
    counts = result.stats["counts"]
    assert counts["dumps_truncated"] == 1 and counts["dumps_corrupt"] == 0
    assert 1 < counts["records"] < len(lines)
    assert counts["links"] == counts["records"]
    [failed] = result.stats["failed_files"]
    assert failed.startswith(f"{dump}: truncated compressed data after line ")


def test_a_flipped_bit_is_reported_as_corruption(tmp_path) -> None:
    lines = [json.dumps(post(f"p{i}", f"http://a.org/{i}", 5)) for i in range(40_000)]
    data = bytearray(lzma.compress("\n".join(lines).encode()))
    data[len(data) * 3 // 4] ^= 0x10
    dump = tmp_path / "RS_flip.xz"
    dump.write_bytes(bytes(data))
    result = collect_links(Store(str(tmp_path / "store")), [str(dump)])
    counts = result.stats["counts"]
    assert counts["dumps_corrupt"] == 1 and counts["dumps_truncated"] == 0
    assert result.stats["failed_files"][0].startswith(f"{dump}: corrupt compressed data")
    assert 1 < counts["records"] < len(lines)


def test_comment_dump_fails_before_any_work(tmp_path, sample_dump, test_data) -> None:
    comments = str(test_data / "reddit/pushshift/test_comments.ndjson")
    store = Store(str(tmp_path / "store"))
    with pytest.raises(CommentDumpError):
        collect_links(store, [str(sample_dump), comments])
    assert store.versions("links") == []


def test_parallel_workers_give_the_same_links(tmp_path, sample_dump) -> None:
    second = write_dump(tmp_path / "RS_b.ndjson", [post("n1", "http://paulgraham.com/x", 4)])
    store = Store(str(tmp_path / "store"))
    serial = collect_links(store, [str(sample_dump), str(second)], options=LinkOptions(workers=1))
    parallel = collect_links(
        store, [str(sample_dump), str(second)], options=LinkOptions(workers=2, partitions=3)
    )
    key = lambda rows: sorted(rows, key=lambda r: r["url"])  # noqa: E731
    assert key(read_links(store, serial.ref)) == key(read_links(store, parallel.ref))
    assert len(read_links(store, parallel.ref)) == 5


def test_the_spill_batch_size_leaves_the_version_bytes_alone(
    tmp_path, sample_dump, monkeypatch
) -> None:
    # A batch of 2 writes each partition's spill as many small row groups; the aggregate
    # reads them back as many chunks. The published files must not depend on that.
    files = []
    for batch in (2, 100_000):
        monkeypatch.setattr(links_stage, "_SPILL_BATCH", batch)
        store = Store(str(tmp_path / f"batch-{batch}"))
        result = collect_links(store, [str(sample_dump)], options=LinkOptions(partitions=2))
        files.append({entry.path: entry.sha256 for entry in store.manifest(result.ref).files})
    assert files[0] == files[1]
    assert len(files[0]) == 2


def test_the_link_stage_runs_without_huge_pages(tmp_path, sample_dump) -> None:
    # Huge pages under pyarrow's mimalloc made the stage's peak grow with its input.
    code = (
        "import sys; from scraping.links import collect_links; from webtext.store import Store; "
        "collect_links(Store(sys.argv[1]), [sys.argv[2]])"
    )
    assert "THP_enabled:\t0" in status_after(code, str(tmp_path / "store"), str(sample_dump))


def test_incremental_run_reads_only_new_dumps_and_lifts_old_urls(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    month1 = write_dump(
        tmp_path / "RS_1.ndjson",
        [post("p1", "http://blog.example/post", 2), post("p2", "http://big.example/", 50)],
    )
    first = collect_links(store, [str(month1)])
    assert [link["url"] for link in read_links(store, first.ref)] == ["http://big.example/"]

    month2 = write_dump(tmp_path / "RS_2.ndjson", [post("p3", "http://blog.example/post", 1)])
    second = collect_links(store, [str(month1), str(month2)], previous=first.ref)
    assert store.manifest(second.ref).parents == (first.ref,)
    counts = second.stats["counts"]
    assert counts["records"] == 1 and counts["previous_submissions"] == 2  # month1 not re-read
    links = {link["url"]: link for link in read_links(store, second.ref)}
    assert links["http://blog.example/post"]["karma"] == 3
    assert len(second.stats["all_sources"]) == 2

    again = collect_links(store, [str(month1), str(month2)], previous=second.ref)
    assert again.reused and again.ref == second.ref

    # A rule tightened later applies to what earlier versions kept, too.
    month3 = write_dump(tmp_path / "RS_3.ndjson", [post("p4", "http://new.example/", 9)])
    stricter = LinkFilters(domain_blocklist=("big.example",))
    third = collect_links(store, [str(month3)], options=LinkOptions(stricter), previous=second.ref)
    assert third.stats["counts"]["previous_dropped"] == 1
    assert sorted(link["url"] for link in read_links(store, third.ref)) == [
        "http://blog.example/post",
        "http://new.example/",
    ]


def test_same_inputs_reuse_the_version(tmp_path, sample_dump) -> None:
    store = Store(str(tmp_path / "store"))
    first = collect_links(store, [str(sample_dump)])
    again = collect_links(store, [str(sample_dump)])
    assert again.reused and again.ref == first.ref
    lenient = LinkOptions(LinkFilters(min_karma=1))
    assert not collect_links(store, [str(sample_dump)], options=lenient).reused


def test_api_listings_go_through_the_same_filters(tmp_path, test_data) -> None:
    listings = test_data / "reddit" / "api-listings"
    store = Store(str(tmp_path / "store"))
    # spez's top items, 11 pages chained by `after`: his link posts among his comments.
    spec = ListingSpec.parse("user/spez/top/all")
    with FakeReddit(listings) as fake:
        default = collect_links(store, listings=[spec], credentials=CREDENTIALS, api_url=fake.url)
        with_wiki = collect_links(
            store,
            listings=[spec],
            options=LinkOptions(LinkFilters(keep_wikipedia=True)),
            credentials=CREDENTIALS,
            api_url=fake.url,
        )
    cassette = json.loads((listings / "TestListingGenerator.test_exhaust_items.json").read_text())
    posts = [
        child["data"]
        for interaction in cassette["interactions"][1:]
        for child in json.loads(interaction["response"]["body"]["string"])["data"]["children"]
        if child["kind"] == "t3"
    ]
    link_posts = [p for p in posts if not p["is_self"] and p["score"] >= 3]
    wikipedia = [p for p in link_posts if "wikipedia.org" in p["url"]]
    counts = default.stats["counts"]
    assert counts["api_submissions"] == counts["records"] == len(posts) > 0
    assert counts["not_a_submission"] > 0
    assert counts[rules.WIKIPEDIA] == len(wikipedia) > 0
    assert_counts_add_up(counts)
    links = read_links(store, with_wiki.ref)
    assert {link["url"]: link["karma"] for link in links} == {
        p["url"]: p["score"] for p in wikipedia
    }
    assert links[0]["post_ids"] == [wikipedia[0]["id"]]
    assert "never-shown-secret" not in store.manifest(with_wiki.ref).to_json()


def test_a_killed_links_run_resumes_without_reading_its_filtered_dumps_again(tmp_path) -> None:
    dumps = [
        str(write_dump(tmp_path / f"RS_{n}.ndjson", [post(f"{n}0", f"http://s{n}.org/0", 4)]))
        for n in "abc"
    ]
    store = Store(str(tmp_path / "store"))
    read: list[str] = []

    def dies_on_the_third(work, items):
        for name, path in items:
            if path == dumps[2]:
                raise KeyboardInterrupt("killed")
            read.append(path)
            yield work((name, path))

    with pytest.raises(KeyboardInterrupt):
        collect_links(store, dumps, map=dies_on_the_third)
    assert read == dumps[:2] and store.versions("links") == []

    def counting(work, items):
        for item in items:
            read.append(item[1])
            yield work(item)

    resumed = collect_links(store, dumps, map=counting)
    assert read == [*dumps[:2], dumps[2]]  # the first two were not read again
    assert resumed.ref == collect_links(Store(str(tmp_path / "fresh")), dumps).ref
    assert sorted(link["url"] for link in read_links(store, resumed.ref)) == [
        "http://sa.org/0",
        "http://sb.org/0",
        "http://sc.org/0",
    ]
    assert resumed.stats["counts"]["records"] == 3
    assert not [p for p in Path(store.root).rglob("*") if "spill" in p.parts]  # not published
