"""Stage parts on a real Dask cluster: a worker killed mid-part costs nothing but time."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time

import pytest
from test_extract_stage import article, fetched
from test_fetch_stage import links_version

from scraping import extract_stage
from scraping.extract_stage import ExtractOptions, extract_documents
from scraping.fetch_stage import FetchOptions, fetch_pages
from scraping.links import LinkOptions, collect_links
from webtext.store import Store


def warm_up_page() -> bytes:
    """In a page-pool worker: the page its parent's module held when the pool started."""
    return extract_stage._WARM_UP_PAGE


def test_the_page_pool_is_forked_where_spawn_is_the_default(monkeypatch) -> None:
    """A Dask worker's default start method is spawn: a spawned page worker would import
    everything again and start cold (seconds, at every start and every recycling), not
    with what its parent has loaded."""
    monkeypatch.setattr(extract_stage, "_WARM_UP_PAGE", b"<p>only in this process</p>")
    default = multiprocessing.get_start_method()
    multiprocessing.set_start_method("spawn", force=True)
    pool = None
    try:
        pool = extract_stage._started_page_pool(1, 1 << 30)
        assert pool.schedule(warm_up_page).result(timeout=60) == b"<p>only in this process</p>"
    finally:
        multiprocessing.set_start_method(default, force=True)
        if pool is not None:
            extract_stage._PAGE_POOLS.pop((1, 1 << 30))
            pool.stop()
            pool.join()


def published_files(store: Store, ref) -> dict[str, str]:
    return {f.path: f.sha256 for f in store.manifest(ref).files}


def kill_a_busy_worker(client, stop: threading.Event) -> list[str]:
    """SIGKILL the process of a worker that has been running a part for a moment (its page
    pool started). Returns the keys of the tasks it was running."""
    while not stop.is_set():
        busy = {address: keys for address, keys in client.processing().items() if keys}
        if busy:
            time.sleep(0.5)
            pids = client.run(os.getpid)
            for address, keys in client.processing().items():
                if keys and set(keys) & set(busy.get(address, ())):
                    os.kill(pids[address], signal.SIGKILL)
                    return [str(key) for key in keys]
        time.sleep(0.05)
    return []


class MessagesHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def start_page_pool() -> bool:
    """In a Dask worker: start the page pool; whether it runs a page process."""
    pool = extract_stage.page_pool(ExtractOptions(workers=1))
    return pool.schedule(os.getpid).result(timeout=60) != os.getpid()


def test_a_dask_worker_with_a_page_pool_exits_when_closed() -> None:
    """A Dask worker is a multiprocessing child, which runs no atexit handler: its page
    pool kept it from exiting until the nanny killed it, 4 s later."""
    from distributed import Client, LocalCluster

    from flows.runner import let_dask_workers_start_processes

    let_dask_workers_start_processes()
    nanny, said = logging.getLogger("distributed.nanny"), MessagesHandler()
    nanny.addHandler(said)  # distributed's loggers do not propagate to the root's
    try:
        with (
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster,
            Client(cluster) as client,
        ):
            assert client.submit(start_page_pool, pure=False).result()
    finally:
        nanny.removeHandler(said)
    assert said.messages and not [m for m in said.messages if "killing" in m]


@pytest.mark.usefixtures("prefect_server")
def test_a_worker_killed_during_extract_leaves_the_bytes_of_a_one_process_run(tmp_path) -> None:
    from distributed import Client, LocalCluster

    from flows.extract import extract_text_flow
    from flows.runner import let_dask_workers_start_processes

    one, dask = tmp_path / "one", tmp_path / "dask"
    pages = {f"http://k{i % 3}.example/{i}": article(f"K{i}", paragraphs=12) for i in range(8)}
    fetches = fetched(Store(str(one)), pages, shard_size=2)  # 4 parts
    shutil.copytree(one, dask)  # the same fetches version, byte for byte
    options = ExtractOptions(workers=1)
    expected = extract_documents(Store(str(one)), fetches, options)

    let_dask_workers_start_processes()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        stop = threading.Event()
        killed: list[list[str]] = []
        killer = threading.Thread(target=lambda: killed.append(kill_a_busy_worker(client, stop)))
        killer.start()
        try:
            ref = extract_text_flow(
                fetches_version=fetches.version,
                workers=1,
                store_url=str(dask),
                task_runner=cluster.scheduler_address,
            )
        finally:
            stop.set()
            killer.join()
    assert killed and killed[0], "no worker was killed while running a part"
    assert ref == expected.ref
    assert published_files(Store(str(dask)), ref) == published_files(Store(str(one)), expected.ref)
    counts = Store(str(dask)).manifest(ref).stats["counts"]
    assert counts["pages"] == len(pages) and counts["documents"] == len(pages)


@pytest.mark.usefixtures("prefect_server")
def test_fetch_shards_on_dask_write_the_bytes_of_a_threaded_run(tmp_path) -> None:
    from distributed import LocalCluster

    from flows.fetch import fetch_pages_flow

    # Pages to replay: fetched once from a static source into WARC files.
    pages = {f"http://k{i % 5}.example/{i}": article(f"K{i}", paragraphs=3) for i in range(20)}
    capture = Store(str(tmp_path / "capture"))
    captured = fetched(capture, pages)
    archives = [
        capture.url(captured, f.path)
        for f in capture.manifest(captured).files
        if f.path.startswith("warc/")
    ]
    urls = [*sorted(pages), "http://k9.example/not-captured"]
    threaded, dask = Store(str(tmp_path / "threads")), Store(str(tmp_path / "dask"))
    options = FetchOptions(archives=tuple(archives), shard_size=4)
    expected = fetch_pages(threaded, links_version(threaded, urls), options)
    links = links_version(dask, urls)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        ref = fetch_pages_flow(
            links_version=links.version,
            archives=archives,
            shard_size=4,
            store_url=str(dask.root),
            task_runner=cluster.scheduler_address,
        )
    assert ref == expected.ref
    assert published_files(dask, ref) == published_files(threaded, expected.ref)
    counts = dask.manifest(ref).stats["counts"]
    assert counts["fetched"] == len(pages) and counts["not_in_archive"] == 1
    assert counts["archive_urls"] == len(pages)  # the index counted once, not per shard


@pytest.mark.usefixtures("prefect_server")
def test_dumps_filtered_on_dask_give_the_links_of_a_one_process_run(tmp_path, sample_dump) -> None:
    from distributed import LocalCluster

    from flows.links import collect_links_flow

    lines = sample_dump.read_text().splitlines()
    dumps = []
    for n in range(3):  # three dumps, a third of the real sample each, one with a bad line
        dump = tmp_path / f"RS_{n}.ndjson"
        dump.write_text("\n".join([*lines[n::3], *(['{"id": "cut'] if n == 1 else [])]))
        dumps.append(str(dump))
    one, dask = Store(str(tmp_path / "one")), Store(str(tmp_path / "dask"))
    expected = collect_links(one, dumps, options=LinkOptions(workers=1))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        ref = collect_links_flow(
            dumps=dumps, store_url=str(dask.root), task_runner=cluster.scheduler_address
        )
    assert ref == expected.ref
    assert published_files(dask, ref) == published_files(one, expected.ref)
    assert dask.manifest(ref).stats["counts"] == expected.stats["counts"]
    assert len(dask.manifest(ref).stats["line_errors"]) == 1
