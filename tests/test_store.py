"""The versioned artifact store, on a local folder and on fsspec's memory filesystem."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import fsspec
import pytest

from webtext.store import Store, StoreError, VersionRef, version_id

PARAMS = {"min_karma": 3, "sources": ["a.zst"]}


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path: Path) -> Store:
    if request.param == "local":
        yield Store(str(tmp_path / "store"))
        return
    root = f"memory://webtext-{uuid.uuid4().hex}"
    yield Store(root)
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)


def write_demo(store: Store, params=PARAMS, parents=(), payload: bytes = b"hello\n") -> VersionRef:
    with store.write("links", params, "1.0+abc", parents) as out:
        with out.open("data/part-0.txt", rows=1) as handle:
            handle.write(payload)
        out.stats["counts"] = {"links": 1}
        ref = out.ref
    return ref


def test_written_version_has_complete_manifest(store: Store) -> None:
    ref = write_demo(store)
    manifest = store.manifest(ref)
    assert manifest.stage == "links" and manifest.version == ref.version
    assert manifest.parameters == PARAMS
    assert manifest.code_version == "1.0+abc"
    assert manifest.stats == {"counts": {"links": 1}}
    (entry,) = manifest.files
    assert entry.path == "data/part-0.txt"
    assert entry.size == 6 and entry.rows == 1
    assert entry.sha256 == hashlib.sha256(b"hello\n").hexdigest()
    assert store.latest("links") == ref
    with store.fs.open(f"{store.version_dir(ref)}/data/part-0.txt", "rb") as handle:
        assert handle.read() == b"hello\n"
    store.verify(ref)


def test_version_id_depends_on_every_input() -> None:
    base = version_id("links", PARAMS, "1.0", ())
    assert base == version_id("links", dict(reversed(PARAMS.items())), "1.0", ())
    assert base != version_id("docs", PARAMS, "1.0", ())
    assert base != version_id("links", {**PARAMS, "min_karma": 4}, "1.0", ())
    assert base != version_id("links", PARAMS, "1.1", ())
    assert base != version_id("links", PARAMS, "1.0", (VersionRef("links", "abc"),))


def test_writing_the_same_version_twice_is_a_no_op(store: Store) -> None:
    first = write_demo(store)
    before = store.manifest(first)
    second = write_demo(store, payload=b"something else\n")
    assert second == first
    assert store.manifest(first) == before  # neither files nor creation time changed
    store.verify(first)
    assert len(store.versions("links")) == 1


def test_failed_write_leaves_nothing_visible(store: Store) -> None:
    kept = write_demo(store)
    with pytest.raises(RuntimeError), store.write("links", {"other": 1}, "1.0") as out:
        with out.open("part.txt") as handle:
            handle.write(b"half")
        raise RuntimeError("killed")
    assert [m.ref for m in store.versions("links")] == [kept]
    assert store.latest("links") == kept
    assert [p for p in store.fs.ls(f"{store.root}/links", detail=False) if ".tmp-" in p] == []


def test_leftovers_of_an_interrupted_publish_are_invisible_then_replaced(store: Store) -> None:
    ref = Store.ref_for("links", PARAMS, "1.0+abc")
    # What a publish killed after moving the data but before the manifest leaves behind.
    store.fs.makedirs(f"{store.version_dir(ref)}/data", exist_ok=True)
    store.fs.pipe_file(f"{store.version_dir(ref)}/data/part-0.txt", b"stale")
    assert not store.exists(ref)
    assert store.versions("links") == []
    with pytest.raises(StoreError, match="incomplete"):
        store.manifest(ref)
    assert write_demo(store) == ref
    store.verify(ref)


def test_corrupt_or_missing_manifest_is_a_clear_error(store: Store) -> None:
    ref = write_demo(store)
    where = f"{store.version_dir(ref)}/manifest.json"
    store.fs.pipe_file(where, b"{not json")
    with pytest.raises(StoreError, match="corrupt manifest"):
        store.manifest(ref)
    store.fs.pipe_file(where, json.dumps({"stage": "links"}).encode())
    with pytest.raises(StoreError, match="corrupt manifest"):
        store.manifest(ref)
    with pytest.raises(StoreError, match="no version links/nothing"):
        store.manifest(VersionRef("links", "nothing"))
    with pytest.raises(StoreError, match="no versions yet"):
        store.resolve("documents")


def test_verify_detects_a_changed_file(store: Store) -> None:
    ref = write_demo(store)
    store.fs.pipe_file(f"{store.version_dir(ref)}/data/part-0.txt", b"HELLO\n")
    with pytest.raises(StoreError, match="does not match"):
        store.verify(ref)


def test_invalid_file_names_are_refused(store: Store) -> None:
    with store.write("links", {}, "1.0") as out:
        for bad in ("../escape", "/abs", "manifest.json", ".hidden", ""):
            with pytest.raises(ValueError, match="invalid file name"):
                out.path(bad)
        out.path("ok.txt")
        store.fs.pipe_file(out.path("ok.txt"), b"")


def test_parents_are_recorded(store: Store) -> None:
    parent = write_demo(store)
    child = write_demo(store, params={"x": 1}, parents=(parent,))
    assert store.manifest(child).parents == (parent,)
    assert child != parent
    assert store.latest("links") == child


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from webtext.store import Store
    store = Store(sys.argv[1])
    with store.write("links", {"killed": True}, "1.0") as out:
        with out.open("big.bin") as handle:
            handle.write(b"x" * 1000)
            handle.flush()
        print("writing", flush=True)
        time.sleep(60)
    """
)


def test_a_killed_process_leaves_no_version(tmp_path: Path) -> None:
    root = tmp_path / "store"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = Store(str(root))
    assert store.versions("links") == []
    assert store.latest("links") is None


def test_a_resumable_write_keeps_finished_files_for_the_next_try(store: Store) -> None:
    params = {"resumable": True}
    with pytest.raises(RuntimeError), store.write("fetches", params, "1.0", resumable=True) as out:
        with out.open("part-0.txt", rows=1) as handle:
            handle.write(b"done\n")
        raise RuntimeError("killed after the first part")
    assert store.versions("fetches") == []
    with store.write("fetches", params, "1.0", resumable=True) as out:
        assert out.exists("part-0.txt")
        out.set_rows("part-0.txt", 1)  # kept from the first try: register, don't redo
        with out.open("part-1.txt", rows=1) as handle:
            handle.write(b"also done\n")
        ref = out.ref
    assert {f.path for f in store.manifest(ref).files} == {"part-0.txt", "part-1.txt"}
    assert not any(".staging-" in p for p in store.fs.ls(f"{store.root}/fetches", detail=False))
