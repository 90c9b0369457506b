"""Concurrent writers of one version (stage, id): one writes, the other waits and reuses
its version, or takes over the lock of a dead writer and resumes from its committed parts.
Every race here runs 20 times in one test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from test_extract_stage import StaticSource, article, fetched
from warcio.archiveiterator import ArchiveIterator

from dedup.stage import publish_dataset
from scraping.extract_stage import ExtractOptions, extract_documents
from scraping.fetch_stage import FetchOptions, fetch_pages
from scraping.page_source import FetchResult
from webtext.stage import PartResult, Stage, StageWrite, run_stage
from webtext.store import LockSettings, Store, StoreError, VersionRef, put_atomic

REPO = Path(__file__).resolve().parent.parent
RACES = 20
# Short enough for tests; the defaults are minutes (docs/reliability.md).
QUICK = LockSettings(heartbeat_s=0.2, stale_after_s=2.0, wait_s=20.0, poll_s=0.02, settle_s=0.1)


def race(*runs: Callable[[], object]) -> list[object]:
    """Run each callable in its own thread, all started together; their results, in order
    (an exception is returned, not raised, so every run is waited for)."""
    start = threading.Barrier(len(runs))
    results: list[object] = [None] * len(runs)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = runs[i]()
        except Exception as exc:  # the test asserts on it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def leftovers(store: Store, stage: str) -> list[str]:
    """Hidden entries of a stage folder: staging, temp folders, locks."""
    names = [
        p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(f"{store.root}/{stage}", detail=False)
    ]
    return sorted(n for n in names if n.startswith("."))


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path: Path):
    """For the tests that are no race: fsspec's memory filesystem checks an exclusive
    create, then creates, so two threads may both succeed (the races run on a local folder,
    where the create is O_EXCL, and on S3, a conditional PUT: tests/test_store_s3.py)."""
    if request.param == "local":
        yield Store(str(tmp_path / "store"), locking=QUICK)
        return
    if request.param == "s3":
        yield Store(request.getfixturevalue("s3_store_url"), locking=QUICK)
        return
    root = f"memory://webtext-{uuid.uuid4().hex}"
    yield Store(root, locking=QUICK)
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)


def test_two_writers_finishing_together_publish_one_whole_version(tmp_path: Path) -> None:
    """Reproduces issue 14: `_publish` removed the other writer's folder and renamed over
    it, publishing a manifest whose files were missing (7 runs of 20 before the lock)."""
    store = Store(str(tmp_path / "store"), locking=QUICK)
    for attempt in range(RACES):
        params = {"attempt": attempt}
        finish = threading.Barrier(2)

        def write(tag: str, params: dict = params, finish: threading.Barrier = finish) -> str:
            with store.write("links", params, "1.0") as out:
                for i in range(3):
                    out.put(f"data/part-{i}.txt", f"{tag} {i}".encode(), rows=1)
                # Both inside `with` at once, when the store lets them; else the other
                # writer waits for the lock, and this one finishes alone.
                with contextlib.suppress(threading.BrokenBarrierError):
                    finish.wait(timeout=0.1)
                return out.ref.version

        results = race(lambda: write("first"), lambda: write("second"))
        assert not [r for r in results if isinstance(r, Exception)], results
        ref = VersionRef("links", results[0])
        store.verify(ref)
        texts = {store.fs.cat_file(store.url(ref, f"data/part-{i}.txt")) for i in range(3)}
        assert len({t.split()[0] for t in texts}) == 1, texts  # all of one writer's files
        assert leftovers(store, "links") == []


THIS = Stage("numbers", "webtext.stage")


def test_the_loser_of_a_resumable_stage_race_reuses_the_winners_version(tmp_path: Path) -> None:
    """Reproduces issue 14: two runs of one resumable stage shared `.staging-<id>/`; the
    first published it and the other failed with `[Errno 2] .../.staging-...`, leaving
    staging behind. Now the second waits and returns the first's version, built once."""
    store = Store(str(tmp_path / "store"), locking=QUICK)
    for attempt in range(RACES):
        built: list[str] = []

        def build(work: StageWrite, built: list[str] = built) -> None:
            built.append(work.ref.version)
            for part in work.pending(["a", "b", "c"]):
                work.out.put(f"data/{part}.txt", part.encode())
                time.sleep(0.002)
                work.commit(part, PartResult({f"data/{part}.txt": 1}, {"parts": 1}))

        def run(attempt: int = attempt, build=build) -> object:
            return run_stage(store, THIS, (), {"attempt": attempt}, build, resumable=True)

        first, second = race(run, run)
        assert not isinstance(first, Exception) and not isinstance(second, Exception), (
            first,
            second,
        )
        assert first.ref == second.ref and len(built) == 1
        assert sorted([first.reused, second.reused]) == [False, True]
        assert second.stats["counts"] == first.stats["counts"] == {"parts": 3}
        store.verify(first.ref)
        assert leftovers(store, "numbers") == []


class InterleavingSource(StaticSource):
    """A static source that yields to the event loop on every fetch, as a network does."""

    async def fetch(self, url: str) -> FetchResult:
        await asyncio.sleep(0.001)
        return await super().fetch(url)


def test_two_fetch_runs_of_the_same_links_publish_readable_pointers(tmp_path: Path) -> None:
    """Reproduces issue 14: both runs staged into one `.staging-<id>/` and reopened the same
    WARC files with "wb"; the version published pointed into overwritten WARCs."""
    pages = {f"http://news.example/story-{i}": article(f"Story {i}", 3) for i in range(24)}
    for attempt in range(RACES):
        store = Store(str(tmp_path / f"store-{attempt}"), locking=QUICK)
        with store.write("links", {"urls": sorted(pages)}, "test") as out:
            import pyarrow as pa

            with out.open("links/part-00000.parquet", rows=len(pages)) as handle:
                pq.write_table(pa.table({"url": sorted(pages)}), handle)
            links = out.ref

        def run(store: Store = store, links: VersionRef = links) -> object:
            options = FetchOptions(shard_size=6, warc_file_bytes=20_000)
            return fetch_pages(
                store, links, options, open_page_source=partial(InterleavingSource, pages)
            )

        first, second = race(run, run)
        assert not isinstance(first, Exception) and not isinstance(second, Exception), (
            first,
            second,
        )
        assert first.ref == second.ref
        store.verify(first.ref)
        rows = pq.read_table(store.url(first.ref, "fetches")).to_pylist()
        assert sorted(r["url"] for r in rows) == sorted(pages)
        for row in rows:  # every pointer reads back the page it names
            with store.fs.open(store.url(first.ref, row["warc_file"]), "rb") as handle:
                handle.seek(row["warc_offset"])
                record = next(iter(ArchiveIterator(handle)))
                assert record.rec_headers.get_header("WARC-Target-URI") == row["url"]
                assert record.content_stream().read() == pages[row["url"]]
        assert leftovers(store, "fetches") == []


def test_two_extract_runs_at_once_give_one_version(tmp_path: Path) -> None:
    """Reproduces issue 14: the loser of an extract race exited with a raw
    `[Errno 2] .../.staging-.../part-00000.parquet` and left staging behind."""
    pages = {f"http://news.example/story-{i}": article(f"Story {i}", 8) for i in range(6)}
    for attempt in range(RACES):
        store = Store(str(tmp_path / f"store-{attempt}"), locking=QUICK)
        fetches = fetched(store, pages, shard_size=2)

        def run(store: Store = store, fetches: VersionRef = fetches) -> object:
            return extract_documents(store, fetches, ExtractOptions(workers=1))

        first, second = race(run, run)
        assert not isinstance(first, Exception) and not isinstance(second, Exception), (
            first,
            second,
        )
        assert first.ref == second.ref and first.stats == second.stats
        assert first.stats["counts"]["documents"] == 6
        store.verify(first.ref)
        assert leftovers(store, "documents") == []


def test_two_dedup_runs_at_once_give_one_version(tmp_path: Path) -> None:
    """Issue 14: as extract, the loser of a dedup race (the minhash stage's shared
    staging, then the webtext version) failed; now both return one version."""
    pages = {f"http://news.example/story-{i}": article(f"Story {i}", 8 + i) for i in range(6)}
    for attempt in range(RACES):
        store = Store(str(tmp_path / f"store-{attempt}"), locking=QUICK)
        documents = extract_documents(store, fetched(store, pages), ExtractOptions(workers=1))

        def run(store: Store = store, documents: VersionRef = documents.ref) -> object:
            return publish_dataset(store, documents)

        first, second = race(run, run)
        assert not isinstance(first, Exception) and not isinstance(second, Exception), (
            first,
            second,
        )
        assert first.ref == second.ref and first.stats == second.stats
        assert sorted([first.reused, second.reused]) == [False, True]
        store.verify(first.ref)
        assert leftovers(store, "minhash") == [] and leftovers(store, "webtext") == []


HOLDER = textwrap.dedent(
    """
    import sys, time
    from webtext.stage import PartResult, Stage, run_stage
    from webtext.store import LockSettings, Store

    store = Store(sys.argv[1], locking=LockSettings(heartbeat_s=0.2))

    def build(work):
        for part in work.pending(["a", "b", "c"]):
            work.out.put(f"data/{part}.txt", part.encode())
            work.commit(part, PartResult({f"data/{part}.txt": 1}, {"parts": 1}))
            if part == "b":
                print("committed b", flush=True)
                time.sleep(60)

    run_stage(store, Stage("numbers", "webtext.stage"), (), {}, build, resumable=True)
    """
)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_lock_of_a_killed_writer_is_taken_over_and_its_parts_kept(
    tmp_path: Path, caplog, request, where: str
) -> None:
    root = str(tmp_path / "store") if where == "local" else request.getfixturevalue("s3_store_url")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, root],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert holder.stdout.readline().strip() == "committed b"
    store = Store(root, locking=QUICK)
    lock = json.loads(store.fs.cat_file(store.fs.glob(f"{store.root}/numbers/.lock-*")[0]))
    assert lock["pid"] == holder.pid and lock["host"] == socket.gethostname()
    holder.send_signal(signal.SIGKILL)
    holder.wait()

    redone: list[str] = []

    def build(work: StageWrite) -> None:
        for part in work.pending(["a", "b", "c"]):
            redone.append(part)
            work.out.put(f"data/{part}.txt", part.encode())
            work.commit(part, PartResult({f"data/{part}.txt": 1}, {"parts": 1}))

    result = run_stage(store, THIS, (), {}, build, resumable=True)
    assert redone == ["c"] and result.stats["counts"] == {"parts": 3}
    assert f"process {holder.pid} is gone" in caplog.text  # taken over at once, no wait
    store.verify(result.ref)
    assert leftovers(store, "numbers") == []


def plant_lock(store: Store, ref: VersionRef, host: str, age_s: float) -> None:
    """The lock a writer on another machine holds, its last heartbeat `age_s` ago."""
    owner = {"host": host, "pid": 1, "token": "theirs", "heartbeat": time.time() - age_s}
    lock = f"{store.root}/{ref.stage}/.lock-{ref.version}"
    store.fs.makedirs(f"{store.root}/{ref.stage}", exist_ok=True)
    put_atomic(store.fs, lock, json.dumps(owner).encode())  # as a holder's heartbeat does


def test_a_live_writer_elsewhere_is_waited_for_then_named(store: Store, caplog) -> None:
    ref = Store.ref_for("links", {}, "1.0")
    plant_lock(store, ref, "other-host", age_s=0)
    patient = Store(store.root_url, locking=LockSettings(**{**vars(QUICK), "wait_s": 0.3}))
    stop = threading.Event()

    def heartbeat() -> None:  # the other machine's writer, alive
        while not stop.wait(0.05):
            plant_lock(store, ref, "other-host", age_s=0)

    beating = threading.Thread(target=heartbeat)
    beating.start()
    try:
        with (
            pytest.raises(StoreError, match=r"links/\w+ is being written by other-host pid 1"),
            patient.write("links", {}, "1.0"),
        ):
            pass
    finally:
        stop.set()
        beating.join()
    assert "is being written by other-host pid 1; waiting up to 0 s" in caplog.text
    assert not store.exists(ref)


def test_a_lock_without_heartbeat_is_stale_and_taken_over(store: Store, caplog) -> None:
    ref = Store.ref_for("links", {}, "1.0")
    plant_lock(store, ref, "other-host", age_s=QUICK.stale_after_s + 1)
    with store.write("links", {}, "1.0") as out:
        out.put("a.txt", b"a", rows=1)
    store.verify(ref)
    assert "no heartbeat for" in caplog.text and "other-host pid 1" in caplog.text
    assert leftovers(store, "links") == []


def test_a_writer_whose_lock_was_taken_does_not_publish(store: Store) -> None:
    with (
        pytest.raises(StoreError, match=r"lost its lock \(judged dead\) to other-host pid 1"),
        store.write("links", {}, "1.0") as out,
    ):
        out.put("a.txt", b"a", rows=1)
        lock = f"{store.root}/links/.lock-{out.ref.version}"
        # Taken over meanwhile, and read back as a taker does (`settle_s`): a heartbeat
        # between its check and its put (an HTTP round trip on S3) may overwrite it once.
        for _ in range(5):
            plant_lock(store, out.ref, "other-host", age_s=0)
            time.sleep(2 * QUICK.heartbeat_s)
            if json.loads(store.fs.cat_file(lock))["token"] == "theirs":
                break
    assert not store.exists(Store.ref_for("links", {}, "1.0"))
