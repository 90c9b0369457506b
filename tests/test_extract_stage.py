"""The extraction stage: documents with Reddit metadata, every page accounted for,
pathological pages contained, a failed run resumed."""

from __future__ import annotations

import html
import shutil
import time
from functools import partial
from pydoc_data.topics import topics

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import status_after

from scraping import extract_stage
from scraping.extract_stage import ExtractOptions, extract_documents
from scraping.fetch_stage import FetchOptions, fetch_pages
from scraping.page_source import FetchResult
from scraping.quality import QualityFilters
from webtext.store import Store, VersionRef

ARTICLE = (
    "<html><head><title>{title}</title></head><body><nav>Home | About | Contact</nav>"
    "<article><h1>{title}</h1>{paragraphs}</article><footer>Copyright 2019</footer></body></html>"
)


def article(title: str, paragraphs: int = 30) -> bytes:
    """An article of real prose (CPython's reference text) in page boilerplate."""
    prose = [p for p in topics["assignment"].split("\n\n") if len(p.split()) > 12]
    body = "".join(f"<p>{html.escape(' '.join(p.split()))}</p>" for p in prose[:paragraphs])
    return ARTICLE.format(title=title, paragraphs=body).encode()


class StaticSource:
    """A page source serving fixed bodies: the real fetch stage writes the WARC."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages

    async def __aenter__(self) -> StaticSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def parameters(self) -> dict:
        return {"kind": "static", "urls": sorted(self.pages)}

    async def fetch(self, url: str) -> FetchResult:
        return FetchResult(
            url=url,
            final_url=url,
            status=200,
            headers=[("Content-Type", "text/html; charset=utf-8")],
            body=self.pages[url],
            content_type="text/html; charset=utf-8",
            attempts=1,
        )


def fetched(store: Store, pages: dict[str, bytes], shard_size: int = 4) -> VersionRef:
    urls = sorted(pages)
    links_table = pa.table(
        {
            "url": urls,
            "domain": [u.split("/")[2] for u in urls],
            "karma": list(range(3, 3 + len(urls))),
            "submissions": [1] * len(urls),
            "subreddits": [["news"]] * len(urls),
            "post_ids": [[f"p{i}"] for i in range(len(urls))],
            "first_seen": pa.array([1_500_000_000] * len(urls), pa.timestamp("s", tz="UTC")),
            "last_seen": pa.array([1_500_000_000] * len(urls), pa.timestamp("s", tz="UTC")),
        }
    )
    with store.write("links", {"urls": urls}, "test") as out:
        with out.open("links/part-00000.parquet", rows=len(urls)) as handle:
            pq.write_table(links_table, handle)
        links = out.ref
    return fetch_pages(
        store,
        links,
        FetchOptions(shard_size=shard_size),
        open_page_source=partial(StaticSource, pages),
    ).ref


def tables(store: Store, ref: VersionRef) -> tuple[list[dict], list[dict]]:
    documents = pq.read_table(store.url(ref, "documents")).to_pylist()
    rejected = pq.read_table(store.url(ref, "rejected")).to_pylist()
    return documents, rejected


def test_documents_carry_text_and_reddit_metadata(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    pages = {f"http://news.example/story-{i}": article(f"Story {i}") for i in range(5)}
    pages["http://news.example/tiny"] = b"<html><body><p>Just a line.</p></body></html>"
    result = extract_documents(store, fetched(store, pages), ExtractOptions(workers=2))
    documents, rejected = tables(store, result.ref)
    assert sorted(d["url"] for d in documents) == [
        f"http://news.example/story-{i}" for i in range(5)
    ]
    story = next(d for d in documents if d["url"].endswith("story-2"))
    assert "assignment statement" in story["text"].lower() and "Copyright" not in story["text"]
    assert story["title"] == "Story 2" and story["language"] == "en"
    assert story["karma"] == 5 and story["subreddits"] == ["news"] and story["post_ids"]
    assert story["domain"] == "news.example" and story["word_count"] > 300
    assert [(r["url"], r["reason"], r["detail"]) for r in rejected] == [
        ("http://news.example/tiny", "too_short", "3 words < 50")  # the audit says why
    ]
    counts = result.stats["counts"]
    assert counts["pages"] == 6 and counts["documents"] == 5 and counts["too_short"] == 1
    assert store.manifest(result.ref).parents[1].stage == "links"


class RecordedProgress:
    def __init__(self) -> None:
        self.starts: list[int] = []
        self.advanced = 0

    def start(self, total: int) -> None:
        self.starts.append(total)

    def advance(self, n: int = 1) -> None:
        self.advanced += n


def test_links_rows_are_joined_a_group_of_parts_at_a_time_into_the_same_bytes(
    tmp_path, monkeypatch
) -> None:
    """The stage's process holds the links rows of at most `join_pages` pages (a part
    bigger than that alone); the version is the one a single join makes, byte for byte."""
    pages = {f"http://g.example/{i}": article(f"G{i}", paragraphs=4) for i in range(8)}
    whole = Store(str(tmp_path / "whole"))
    fetches = fetched(whole, pages, shard_size=3)  # parts of 3, 3 and 2 pages
    shutil.copytree(tmp_path / "whole", tmp_path / "grouped")  # the same fetches, twice
    expected = extract_documents(whole, fetches, ExtractOptions(workers=1))
    joined: list[int] = []
    original = extract_stage._reddit_metadata

    def recorded(store, links, parts_urls):
        joined.append(sum(len(urls) for urls in parts_urls))
        return original(store, links, parts_urls)

    monkeypatch.setattr(extract_stage, "_reddit_metadata", recorded)
    grouped = Store(str(tmp_path / "grouped"))
    progress = RecordedProgress()
    result = extract_documents(
        grouped, fetches, ExtractOptions(workers=1, join_pages=4), progress=progress
    )
    assert joined == [3, 3, 2]  # 3 + 3 pages is over 4: each part joined on its own
    assert progress.starts == [8] and progress.advanced == 8
    assert result.ref == expected.ref
    files = {f.path: f.sha256 for f in grouped.manifest(result.ref).files}
    assert files == {f.path: f.sha256 for f in whole.manifest(expected.ref).files}
    assert len([name for name in files if name.startswith("documents/")]) == 3


def test_the_extraction_stage_runs_without_huge_pages(tmp_path) -> None:
    # Huge pages under pyarrow's mimalloc kept what each part freed resident, part after
    # part; page workers are forked from the stage's process and inherit its setting.
    store = Store(str(tmp_path / "store"))
    fetches = fetched(store, {"http://h.example/a": article("A", paragraphs=4)})
    code = (
        "import sys; from scraping.extract_stage import ExtractOptions, extract_documents; "
        "from webtext.store import Store, VersionRef; "
        "extract_documents(Store(sys.argv[1]), VersionRef('fetches', sys.argv[2]), "
        "ExtractOptions(workers=1))"
    )
    assert "THP_enabled:\t0" in status_after(code, store.root_url, fetches.version)


def test_pathological_pages_are_counted_and_never_sink_the_stage(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    pages = {
        "http://odd.example/one-line": b"<html><body><p>"
        + b"word " * 2_000_000
        + b"</p></body></html>",
        "http://odd.example/nested": b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000,
        "http://odd.example/binary": bytes(range(256)) * 400,
        "http://odd.example/empty": b"",
        "http://odd.example/broken": "<p>caf\u00e9 na\u00efve</p>".encode("cp1252") * 300,
        "http://odd.example/fine": article("Fine"),
    }
    options = ExtractOptions(workers=2, page_timeout=10, page_memory_mb=1_024)
    result = extract_documents(store, fetched(store, pages), options)
    documents, rejected = tables(store, result.ref)
    assert {d["url"] for d in documents} | {r["url"] for r in rejected} == set(pages)
    assert "http://odd.example/fine" in {d["url"] for d in documents}
    assert result.stats["counts"]["pages"] == len(pages)


def test_a_slow_page_times_out_alone(tmp_path, monkeypatch) -> None:
    store = Store(str(tmp_path / "store"))
    pages = {"http://slow.example/a": article("A"), "http://slow.example/slow": article("Slow")}
    fetches = fetched(store, pages)
    monkeypatch.setattr(extract_stage, "_process_page", _sleep_on_slow)
    result = extract_documents(store, fetches, ExtractOptions(workers=2, page_timeout=5))
    documents, rejected = tables(store, result.ref)
    assert [d["url"] for d in documents] == ["http://slow.example/a"]
    assert [(r["url"], r["reason"]) for r in rejected] == [
        ("http://slow.example/slow", extract_stage.EXTRACT_TIMEOUT)
    ]


REAL_PROCESS_PAGE = extract_stage._process_page


def _sleep_on_slow(body, url, content_type, settings, filters):
    """Runs in a worker: hangs on one page as a pathological one would."""
    if url.endswith("/slow"):
        time.sleep(30)
    return REAL_PROCESS_PAGE(body, url, content_type, settings, filters)


def _hog_on_big(body, url, content_type, settings, filters):
    """Runs in a worker: wants far more memory than a page should."""
    if url.endswith("/big"):
        bytearray(1 << 30)
    return REAL_PROCESS_PAGE(body, url, content_type, settings, filters)


def test_a_page_over_the_memory_limit_fails_alone(tmp_path, monkeypatch) -> None:
    store = Store(str(tmp_path / "store"))
    pages = {"http://mem.example/a": article("A"), "http://mem.example/big": article("Big")}
    fetches = fetched(store, pages)
    monkeypatch.setattr(extract_stage, "_process_page", _hog_on_big)
    result = extract_documents(store, fetches, ExtractOptions(workers=1, page_memory_mb=256))
    documents, rejected = tables(store, result.ref)
    assert [d["url"] for d in documents] == ["http://mem.example/a"]
    (failed,) = rejected
    assert failed["reason"] == extract_stage.EXTRACT_FAILED and "MemoryError" in failed["detail"]


def test_a_failed_run_resumes_without_redoing_finished_shards(tmp_path, monkeypatch) -> None:
    store = Store(str(tmp_path / "store"))
    pages = {f"http://r.example/{i}": article(f"R{i}") for i in range(8)}
    fetches = fetched(store, pages, shard_size=4)  # two shards
    original = extract_stage._Extraction.shard
    done: list[str] = []

    def fail_on_second(self, pool, out, name, part, rows):
        if done:
            raise RuntimeError("killed")
        result = original(self, pool, out, name, part, rows)
        done.append(name)
        return result

    monkeypatch.setattr(extract_stage._Extraction, "shard", fail_on_second)
    with pytest.raises(RuntimeError):
        extract_documents(store, fetches, ExtractOptions(workers=1))
    assert store.versions("documents") == []

    redone: list[str] = []

    def count(self, pool, out, name, part, rows):
        redone.append(name)
        return original(self, pool, out, name, part, rows)

    monkeypatch.setattr(extract_stage._Extraction, "shard", count)
    result = extract_documents(store, fetches, ExtractOptions(workers=1))
    assert redone and done[0] not in redone
    documents, _ = tables(store, result.ref)
    assert sorted(d["url"] for d in documents) == sorted(pages)


def test_quality_settings_change_the_version(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    fetches = fetched(store, {"http://q.example/a": article("A", paragraphs=3)})
    strict = extract_documents(
        store, fetches, ExtractOptions(quality=QualityFilters(min_words=500), workers=1)
    )
    lenient = extract_documents(
        store, fetches, ExtractOptions(quality=QualityFilters(min_words=10), workers=1)
    )
    assert strict.ref != lenient.ref
    assert strict.stats["counts"]["too_short"] == 1 and lenient.stats["counts"]["documents"] == 1
    assert extract_documents(
        store, fetches, ExtractOptions(quality=QualityFilters(min_words=10))
    ).reused


def test_a_rebuild_re_extracts_every_fetched_page_into_a_full_dataset(tmp_path) -> None:
    """After two incremental months, extraction changes (here: a stricter filter): every page
    fetched so far is extracted again, without fetching, into a full `webtext` version that
    stands alone; the next month's increment builds on it."""
    from dedup.stage import publish_dataset
    from webtext.dataset import dataset_versions

    store = Store(str(tmp_path / "store"))
    month1 = {"http://a.example/1": article("One"), "http://b.example/short": article("S", 3)}
    month2 = {**month1, "http://c.example/2": article("Two", 20)}
    month2["http://mirror.example/1"] = month1["http://a.example/1"]
    options = ExtractOptions(workers=1)
    first = publish_dataset(store, extract_documents(store, fetched(store, month1), options).ref)
    fetches2 = fetched(store, month2)
    second = publish_dataset(store, extract_documents(store, fetches2, options).ref)
    assert store.manifest(second.ref).parents[2:] == (first.ref,)
    assert second.stats["counts"]["duplicates_of_earlier_versions"] == 1  # the mirror

    strict = ExtractOptions(quality=QualityFilters(min_words=200), all_fetches=True, workers=1)
    documents = extract_documents(store, fetches2, strict)
    assert documents.stats["counts"]["pages"] == 4  # both months' pages, none fetched again
    assert documents.stats["counts"]["too_short"] == 1
    assert len(store.versions("fetches")) == 2
    full = publish_dataset(store, documents.ref)
    assert dataset_versions(store, full.ref) == [full.ref]  # no earlier version in it
    published = pq.read_table(store.url(full.ref, "data")).to_pylist()
    # One of the twins, by the survivor rule (the mirror's link has more karma).
    assert sorted(d["url"] for d in published) == ["http://c.example/2", "http://mirror.example/1"]

    # The next month: new pages only, deduplicated against the full version alone.
    month3 = {**month2, "http://d.example/3": article("Three", 25)}
    third = publish_dataset(store, extract_documents(store, fetched(store, month3), options).ref)
    assert store.manifest(third.ref).parents[2:] == (full.ref,)
    assert dataset_versions(store, third.ref) == [full.ref, third.ref]
