"""Stage parts on a real Dask cluster: a worker killed mid-part costs nothing but time."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest
from test_extract_stage import article, fetched

from scraping.extract_stage import ExtractOptions, extract_documents
from webtext.store import Store

pytestmark = pytest.mark.usefixtures("prefect_server")


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
