"""The versioned artifact store, on a local folder, fsspec's memory filesystem and S3 (moto's
server, `conftest.s3_endpoint`)."""

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


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path: Path) -> Store:
    if request.param == "local":
        yield Store(str(tmp_path / "store"))
        return
    if request.param == "s3":
        yield Store(request.getfixturevalue("s3_store_url"))
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


def forge_path(store: Store, ref: VersionRef, path: str) -> None:
    """Rewrite a version's manifest so that its first file is named `path`."""
    where = f"{store.version_dir(ref)}/manifest.json"
    raw = json.loads(store.fs.cat_file(where))
    raw["files"][0]["path"] = path
    store.fs.pipe_file(where, json.dumps(raw).encode())


BAD_PATHS = [
    "../../../ESCAPED.txt",
    "../" * 11 + "ESCAPED.txt",
    "data/../../ESCAPED.txt",
    "/tmp/ESCAPED.txt",
    "data\\..\\..\\ESCAPED.txt",
    "C:/ESCAPED.txt",
    "c:ESCAPED.txt",
    "data//part-0.txt",
    "data/./part-0.txt",
    "data/part-0.txt/",
    "",
]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_a_manifest_naming_a_path_out_of_its_version_is_corrupt(store: Store, bad: str) -> None:
    """Issue 14: `pull` wrote where a manifest said, `../../../ESCAPED.txt` outside DEST."""
    ref = write_demo(store)
    forge_path(store, ref, bad)
    where = f"{store.version_dir(ref)}/manifest.json"
    with pytest.raises(StoreError, match=rf"corrupt manifest {where}: file path"):
        store.manifest(ref)
    assert store.versions("links") == []  # a corrupt version is no version


def test_a_pull_never_writes_outside_dest(tmp_path: Path) -> None:
    """Issue 14: with a memory store standing in for S3, 11 `..` wrote into a local folder
    outside DEST. DEST lies deep enough here that an escape lands inside tmp_path."""
    store = Store(f"memory://webtext-{uuid.uuid4().hex}")
    ref = write_demo(store)
    escape = "../" * 11 + "ESCAPED.txt"
    payload = b"written outside DEST\n"
    store.fs.pipe_file(f"{store.version_dir(ref)}/{escape}", payload)  # what a pull would copy
    forge_path(store, ref, escape)
    where = f"{store.version_dir(ref)}/manifest.json"
    raw = json.loads(store.fs.cat_file(where))
    raw["files"][0].update(size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    store.fs.pipe_file(where, json.dumps(raw).encode())
    dest = tmp_path.joinpath(*"abcdefghijklm") / "dest"
    with pytest.raises(StoreError, match="corrupt manifest"):
        store.pull(ref, str(dest))
    assert list(tmp_path.rglob("ESCAPED.txt")) == []
    assert not dest.exists()


def test_a_pull_into_the_store_itself_is_refused_and_loses_nothing(tmp_path: Path) -> None:
    """Issue 14: pulling into the store opened the source for writing (it became 0 bytes)."""
    store = Store(str(tmp_path / "store"))
    ref = write_demo(store)
    for dest in (store.root, f"{store.root}/links", f"{store.root}/links/{ref.version}"):
        with pytest.raises(StoreError, match=f"cannot pull into {dest}: .*the store"):
            store.pull(ref, dest)
    store.verify(ref)
    # A store folder named like the stage: DEST its parent would put the copy on the source.
    named_links = Store(str(tmp_path / "links"))
    ref = write_demo(named_links)
    with pytest.raises(StoreError, match=f"cannot pull into {tmp_path}: .*the store"):
        named_links.pull(ref, str(tmp_path))
    named_links.verify(ref)


def test_a_pull_replaces_what_dest_held_of_the_version(store: Store, tmp_path: Path) -> None:
    """Issue 14: a pull into a DEST holding the version kept a stale extra file beside the
    verified ones. The copy is made beside it and renamed into place, whole."""
    ref = write_demo(store)
    dest = tmp_path / "pulled"
    store.pull(ref, str(dest))
    folder = dest / "links" / ref.version
    (folder / "data" / "part-99999.parquet").write_bytes(b"stale")
    (folder / "data" / "part-0.txt").write_bytes(b"changed\n")
    url = store.pull(ref, str(dest))
    assert url.endswith(f"links/{ref.version}")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["data/part-0.txt", "manifest.json"]
    Store(str(dest)).verify(ref)
    assert sorted(p.name for p in (dest / "links").iterdir()) == [ref.version]  # no temp


def test_a_pull_into_a_file_is_one_clear_error(store: Store, tmp_path: Path, capsys) -> None:
    ref = write_demo(store)
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    for dest in (a_file, a_file / "below"):
        with pytest.raises(StoreError, match=f"cannot pull into {dest}: .* is a file"):
            store.pull(ref, str(dest))
    assert a_file.read_text() == "mine"
    from webtext_app import cli

    argv = ["webtext", "pull", ref.version, str(a_file), "--stage", "links"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", [*argv, "--store", store.root_url])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err, err
