"""The store on S3 (moto's server on loopback, `conftest.s3_endpoint`): the demo's data
stages give the same versions as on a local folder, two writers of one version on S3
publish it once, a pull copies it out, and nothing of the store's URL or credentials is
written into a version."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import s3fs
from conftest import S3_BUCKET
from test_cli_errors import one_line_naming, webtext
from test_store_exclusion import QUICK, leftovers, race

from dedup.stage import publish_dataset
from scraping.extract_stage import ExtractOptions, extract_documents
from scraping.fetch_stage import FetchOptions, fetch_pages
from scraping.links import collect_links
from training.token_shards import ShardSettings, TokenizeOptions, tokenize_dataset
from webtext.dataset import pull_dataset
from webtext.stage import PartResult, Stage, StageWrite, run_stage
from webtext.store import Store, StoreError, VersionLock, VersionRef
from webtext_app.demo import DEMO_FETCH, demo_records, write_dump
from webtext_app.demo_web import DemoWeb

RACES = 6


def data_stages(store: Store, dump: Path, archives: tuple[str, ...]) -> list[VersionRef]:
    """links -> fetch (replaying `archives`) -> extract -> dedup -> tokenize; every version
    made, in order."""
    links = collect_links(store, [str(dump)])
    fetches = fetch_pages(store, links.ref, FetchOptions(archives=archives))
    documents = extract_documents(store, fetches.ref, ExtractOptions(workers=1))
    webtext = publish_dataset(store, documents.ref)
    options = TokenizeOptions(vocab_size=512, shards=ShardSettings(val_fraction=0.05))
    tokenizer, tokens = tokenize_dataset(store, webtext.ref, options)
    minhash = store.manifest(webtext.ref).parents[1]
    refs = [links.ref, fetches.ref, documents.ref, minhash, webtext.ref, tokenizer.ref]
    return [*refs, tokens.ref]


def built_stages(
    store: Store, dump: Path, archives: tuple[str, ...], task_runner: str
) -> list[VersionRef]:
    """`data_stages` through the `build-webtext` flow, its parts on `task_runner`."""
    from flows.build import build_webtext

    built = build_webtext(
        dumps=[str(dump)],
        fetch={"archives": list(archives)},
        extract={"workers": 1},
        tokenize={"vocab_size": 512, "val_fraction": 0.05},
        until="tokenize",
        store_url=store.root_url,
        task_runner=task_runner,
    )
    minhash = store.manifest(built["dedup"]).parents[1]
    tokenizer = store.manifest(built["tokenize"]).parents[1]
    made = [built["links"], built["fetch"], built["extract"], minhash, built["dedup"]]
    return [*made, tokenizer, built["tokenize"]]


def file_hashes(store: Store, refs: list[VersionRef]) -> dict[str, str]:
    """`stage/id/file` -> sha256, from the manifests, every file checked against them."""
    hashes = {}
    for ref in refs:
        for entry in store.verify(ref).files:
            hashes[f"{ref}/{entry.path}"] = entry.sha256
    return hashes


@pytest.fixture(scope="module")
def demo_pages(tmp_path_factory) -> tuple[Path, tuple[str, ...]]:
    """The demo's dump and its pages, fetched once from the demo web on loopback into WARC
    files: both stores below replay them, so each run reads the same bytes (a live fetch
    records each page's own time of fetching)."""
    root = tmp_path_factory.mktemp("demo-pages")
    with DemoWeb() as web:
        # A quarter of the demo's posts (pages of every kind, faults, reposts): enough for
        # every stage to do its work, small enough to extract in seconds.
        dump = write_dump(root / "RS_demo.zst", demo_records(web.base_url)[::4])
        capture = Store(str(root / "capture"))
        links = collect_links(capture, [str(dump)])
        fetches = fetch_pages(capture, links.ref, FetchOptions(**DEMO_FETCH))
    warcs = [e.path for e in capture.manifest(fetches.ref).files if e.path.startswith("warc/")]
    return dump, tuple(str(root / "capture" / str(fetches.ref) / w) for w in warcs)


@dataclass(frozen=True)
class DemoRuns:
    local: Store
    remote: Store
    local_refs: list[VersionRef]
    remote_refs: list[VersionRef]
    remote_log: list[logging.LogRecord]  # every record the S3 run logged, DEBUG included


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, s3_endpoint: str, demo_pages, prefect_server) -> DemoRuns:
    """The demo's data stages, once on a local folder (the `build-webtext` flow on its
    default task runner, threads) and once on S3 (the stage functions, in this process)."""
    dump, archives = demo_pages
    local = Store(str(tmp_path_factory.mktemp("local") / "store"))
    remote = Store(f"s3://{S3_BUCKET}/demo-{uuid.uuid4().hex[:12]}")
    local_refs = built_stages(local, dump, archives, "threads")
    root, collect = logging.getLogger(), Collect()
    level = root.level
    root.addHandler(collect)
    root.setLevel(logging.DEBUG)
    try:
        remote_refs = data_stages(remote, dump, archives)
    finally:
        root.removeHandler(collect)
        root.setLevel(level)
    return DemoRuns(local, remote, local_refs, remote_refs, collect.records)


def test_the_demo_data_stages_on_s3_make_the_versions_they_make_locally(
    demo_runs: DemoRuns,
) -> None:
    local, remote = demo_runs.local, demo_runs.remote
    assert demo_runs.remote_refs == demo_runs.local_refs  # the same ids, stage by stage
    local_files = file_hashes(local, demo_runs.local_refs)
    remote_files = file_hashes(remote, demo_runs.remote_refs)
    assert remote_files.keys() == local_files.keys()
    differ = sorted(name for name in local_files if local_files[name] != remote_files[name])
    webtext = demo_runs.remote_refs[4]
    # Only the dataset card's creation times: the fetches table and WARC files (record ids
    # from the version id, rows in each shard's URL order) are byte for byte the same.
    assert differ == [f"{webtext}/README.md"]
    assert sum(f.rows or 0 for f in remote.manifest(webtext).files if f.path.startswith("data/"))
    for ref in demo_runs.remote_refs:
        assert remote.latest(ref.stage) == ref
        assert leftovers(remote, ref.stage) == []


def test_build_webtext_on_dask_with_the_store_on_s3_makes_the_local_versions(
    demo_runs: DemoRuns, demo_pages
) -> None:
    """The README's production path: `build-webtext` with its parts on a Dask cluster of two
    worker processes and the store on S3 publishes, stage by stage, the version ids and
    file bytes of the threaded run on a local folder (and so of the S3 run above)."""
    from distributed import LocalCluster

    from flows.runner import let_dask_workers_start_processes

    store = Store(f"s3://{S3_BUCKET}/dask-{uuid.uuid4().hex[:12]}")
    let_dask_workers_start_processes()  # extraction's page pool runs inside a part
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        refs = built_stages(store, *demo_pages, task_runner=cluster.scheduler_address)
    assert refs == demo_runs.local_refs
    local_files = file_hashes(demo_runs.local, demo_runs.local_refs)
    files = file_hashes(store, refs)
    assert files.keys() == local_files.keys()
    differ = sorted(name for name in local_files if local_files[name] != files[name])
    assert differ == [f"{refs[4]}/README.md"]  # the card's creation times only


def test_a_dataset_pulled_from_s3_is_the_local_one(demo_runs: DemoRuns, tmp_path: Path) -> None:
    webtext = demo_runs.remote_refs[4]
    pulled = pull_dataset(demo_runs.remote, webtext, str(tmp_path / "from-s3"))
    local = pull_dataset(demo_runs.local, webtext, str(tmp_path / "from-local"))
    assert pulled.documents == local.documents > 0
    parts = sorted(p.name for p in (tmp_path / "from-local" / "data").iterdir())
    assert parts and parts == sorted(p.name for p in (tmp_path / "from-s3" / "data").iterdir())
    for name in parts:
        assert (tmp_path / "from-s3" / "data" / name).read_bytes() == (
            tmp_path / "from-local" / "data" / name
        ).read_bytes()
    tokens = demo_runs.remote_refs[-1]
    demo_runs.remote.pull(tokens, str(tmp_path / "versions"))
    Store(str(tmp_path / "versions")).verify(tokens)


def test_no_manifest_names_the_store_and_no_log_line_the_credentials(
    demo_runs: DemoRuns, s3_endpoint: str
) -> None:
    secrets = {
        os.environ["AWS_ACCESS_KEY_ID"],
        os.environ["AWS_SECRET_ACCESS_KEY"],
        s3_endpoint.removeprefix("http://"),
        demo_runs.remote.root_url,
        demo_runs.remote.root,  # bucket/prefix, without the scheme
    }
    for ref in demo_runs.remote_refs:
        manifest = demo_runs.remote.fs.cat_file(
            f"{demo_runs.remote.version_dir(ref)}/manifest.json"
        ).decode()
        card = [f.path for f in demo_runs.remote.manifest(ref).files if f.path == "README.md"]
        texts = [manifest, *(demo_runs.remote.read_verified(ref, name).decode() for name in card)]
        for text in texts:
            assert not [secret for secret in secrets if secret in text], (ref, text[:200])
    # The log may name the store (errors must say where), never the secret key, and the
    # key id only in botocore's own DEBUG lines (the request it signs).
    key_id, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    lines = [(r.levelno, r.name, r.getMessage()) for r in demo_runs.remote_log]
    assert any(name.startswith("scraping") for _, name, _ in lines)  # the stages' lines are here
    assert not [line for line in lines if secret in line[2]]
    named = [line for line in lines if key_id in line[2]]
    assert not [(level, name) for level, name, _ in named if level > logging.DEBUG], named[:3]
    assert not [name for _, name, _ in named if not name.startswith(("botocore", "aiobotocore"))]


def test_two_writers_of_one_version_on_s3_publish_it_once(s3_store_url: str) -> None:
    """Each writer with its own S3 client (as two machines): the lock's create is a
    conditional PUT, so one builds the version and the other waits and reuses it."""
    stage = Stage("numbers", "webtext.stage")
    writers = [Store(s3_store_url, locking=QUICK) for _ in range(2)]
    for writer in writers:  # not the one client fsspec caches for this process
        writer.fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    for attempt in range(RACES):
        built: list[str] = []

        def build(work: StageWrite, built: list[str] = built) -> None:
            built.append(work.ref.version)
            for part in work.pending(["a", "b"]):
                work.out.put(f"data/{part}.txt", part.encode())
                work.commit(part, PartResult({f"data/{part}.txt": 1}, {"parts": 1}))

        first, second = race(
            *(
                lambda store=store, attempt=attempt, build=build: run_stage(
                    store, stage, (), {"attempt": attempt}, build, resumable=True
                )
                for store in writers
            )
        )
        assert not isinstance(first, Exception) and not isinstance(second, Exception), (
            first,
            second,
        )
        assert first.ref == second.ref and len(built) == 1
        assert sorted([first.reused, second.reused]) == [False, True]
        writers[0].verify(first.ref)
        assert leftovers(writers[0], "numbers") == []


def test_the_lock_is_a_conditional_put_on_s3(s3_store_url: str) -> None:
    """Two clients create one lock at once, many times: exactly one succeeds each time
    (the server answers the other's `If-None-Match: *` with 412)."""
    store = Store(s3_store_url, locking=QUICK)
    clients = [s3fs.S3FileSystem(skip_instance_cache=True) for _ in range(2)]
    for attempt in range(RACES * 5):
        ref = VersionRef("links", f"{attempt:012x}")
        path = f"{store.root}/links/.lock-{ref.version}"
        locks = [VersionLock(fs, path, ref, QUICK) for fs in clients]
        start = threading.Barrier(2)
        created = [False, False]

        def create(i: int, locks=locks, start=start, created=created) -> None:
            start.wait()
            created[i] = locks[i]._create()

        threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(created) == [False, True], attempt
        winner = locks[created.index(True)]
        assert json.loads(store.fs.cat_file(path))["token"] == winner.token


def test_latest_is_replaced_by_one_put_and_always_names_a_whole_version(
    s3_store_url: str,
) -> None:
    """A reader polling `latest` while versions are published finds each id it reads
    complete (its manifest there and its files verifying)."""
    store = Store(s3_store_url)
    done = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def read() -> None:
        reader = Store(s3_store_url)
        while not done.is_set():
            ref = reader.latest("links")
            if ref is None or ref.version in seen:
                time.sleep(0.005)
                continue
            seen.add(ref.version)
            try:
                reader.verify(ref)
            except Exception as exc:  # the test asserts on it
                problems.append(repr(exc))

    reading = threading.Thread(target=read)
    reading.start()
    try:
        for i in range(5):
            with store.write("links", {"i": i}, "1.0") as out:
                for part in range(3):
                    out.put(f"data/part-{part}.txt", f"{i} {part}".encode(), rows=1)
    finally:
        done.set()
        reading.join()
    assert problems == [] and len(seen) >= 2, (problems, seen)
    assert not [p for p in store.fs.ls(f"{store.root}/links") if ".tmp-" in p]


def test_a_missing_bucket_is_one_clear_error_and_is_not_created(s3_endpoint: str) -> None:
    """Before: s3fs's `makedirs` created the mistyped bucket and the version went there."""
    store = Store("s3://no-such-bucket/webtext")
    with (
        pytest.raises(StoreError, match=r"no bucket 'no-such-bucket' for the store s3://"),
        store.write("links", {}, "1.0") as out,
    ):
        out.put("a.txt", b"a", rows=1)
    assert not s3fs.S3FileSystem().exists("no-such-bucket")


def test_missing_credentials_are_one_line_at_the_command_line(
    s3_store_url: str, monkeypatch, capsys, sample_dump: Path
) -> None:
    """Before: botocore's NoCredentialsError traceback, exit 1."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask
    s3fs.S3FileSystem.clear_instance_cache()  # the cached client holds the credentials
    try:
        code, _, err = webtext(
            monkeypatch, capsys, "links", str(sample_dump), "--store", s3_store_url
        )
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert code == 2
    one_line_naming(err, "Unable to locate credentials", "README: The store on S3")
