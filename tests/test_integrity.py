"""Stages check what they read: a parent's file that is missing, unreadable or altered
stops the stage naming the file, before anything is published; a corrupt earlier version
stops an incremental dedup unless the operator leaves it out by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_dedup import TOPICS, document, prose, published, run
from test_extract_stage import article, fetched

from dedup.signatures import compute_minhash
from dedup.stage import DedupOptions, deduplicate, publish_dataset
from scraping.extract_stage import DOCUMENTS_SCHEMA, ExtractOptions, extract_documents
from webtext.store import Store, StoreError, VersionRef


def plain_documents(store: Store, rows: list[dict], name: str) -> VersionRef:
    """A documents version written uncompressed, so a flipped bit lands in a text."""
    with store.write("documents", {"name": name}, "test") as out:
        table = pa.Table.from_pylist(rows, schema=DOCUMENTS_SCHEMA)
        with out.open("documents/part-00000.parquet", rows=table.num_rows) as handle:
            pq.write_table(table, handle, compression="none")
        return out.ref


def flip_bit(path: Path, inside: bytes) -> None:
    """Flip the case bit of the first byte of `inside` in the file: still a valid file."""
    data = bytearray(path.read_bytes())
    at = data.index(inside)
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


def local(store: Store, ref: VersionRef, name: str) -> Path:
    return Path(store.version_dir(ref)) / name


def test_a_flipped_bit_in_documents_stops_dedup_naming_the_file(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    rows = [document(f"d{i}", prose(t)) for i, t in enumerate(TOPICS[:5])]
    documents = plain_documents(store, rows, "flipped")
    clean = store.manifest(documents).files[0].sha256
    flip_bit(local(store, documents, "documents/part-00000.parquet"), prose(TOPICS[2]).encode())
    # Before: the altered text went through into a webtext version with fresh sha256s.
    with pytest.raises(StoreError) as failure:
        publish_dataset(store, documents)
    message = str(failure.value)
    assert "documents/part-00000.parquet does not match its sha256" in message
    assert clean in message and str(documents) in message
    assert store.versions("webtext") == [] and store.versions("minhash") == []


def test_dedup_refuses_minhash_rows_that_changed_after_they_were_written(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    rows = [document(f"d{i}", prose(t)) for i, t in enumerate(TOPICS[:5])]
    documents = plain_documents(store, rows, "minhash-flipped")
    minhash = compute_minhash(store, documents).ref
    part = local(store, minhash, "minhash/part-00000.parquet")
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"minhash/part-00000\.parquet does not match"):
        deduplicate(store, documents, minhash)


def test_a_missing_warc_fails_extract_and_nothing_empty_is_kept(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    pages = {f"http://news.example/story-{i}": article(f"Story {i}") for i in range(3)}
    fetches = fetched(store, pages)
    warc = next(f.path for f in store.manifest(fetches).files if f.path.startswith("warc/"))
    kept = tmp_path / "kept.warc.gz"
    shutil.move(local(store, fetches, warc), kept)
    # Before: 3 pages counted extract_failed, an empty documents version published (rc 0)
    # and found again once the WARC was back.
    with pytest.raises(StoreError, match=rf"{warc} is missing"):
        extract_documents(store, fetches, ExtractOptions(workers=1))
    assert store.versions("documents") == []
    shutil.move(kept, local(store, fetches, warc))
    result = extract_documents(store, fetches, ExtractOptions(workers=1))
    assert not result.reused and result.stats["counts"]["documents"] == 3


def test_an_altered_warc_or_fetches_part_fails_extract(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    pages = {f"http://news.example/story-{i}": article(f"Story {i}") for i in range(3)}
    fetches = fetched(store, pages)
    files = [f.path for f in store.manifest(fetches).files]
    warc = next(name for name in files if name.startswith("warc/"))
    path = local(store, fetches, warc)
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0x01]))
    with pytest.raises(StoreError, match=rf"{warc} does not match its sha256"):
        extract_documents(store, fetches, ExtractOptions(workers=1))
    path.write_bytes(original)
    part = next(name for name in files if name.startswith("fetches/"))
    part_path = local(store, fetches, part)
    part_path.write_bytes(part_path.read_bytes() + b"\0")
    with pytest.raises(StoreError, match=rf"{part} does not match its sha256"):
        extract_documents(store, fetches, ExtractOptions(workers=1))
    assert store.versions("documents") == []


def test_a_corrupt_earlier_version_stops_incremental_dedup_unless_skipped(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    first_rows = [document(f"v1-{t}", prose(t)) for t in TOPICS[:4]]
    first = run(store, plain_documents(store, first_rows, "v1"))
    manifest = local(store, first.ref, "manifest.json")
    manifest.write_text(manifest.read_text()[:-40])
    second_rows = [document("v2-again", prose(TOPICS[0])), document("v2-new", prose(TOPICS[9]))]
    second_documents = plain_documents(store, second_rows, "v2")
    # Before: a WARNING, and v2-again published a second time.
    with pytest.raises(StoreError, match=rf"{manifest}.*--skip-version {first.ref.version}"):
        run(store, second_documents)
    assert [m.ref for m in store.versions("webtext")] == []
    skipping = DedupOptions(skip_versions=(first.ref.version,))
    second = publish_dataset(store, second_documents, skipping)
    assert set(published(store, second.ref)) == {"v2-again", "v2-new"}
    assert store.manifest(second.ref).parameters["skip_versions"] == [first.ref.version]
    with pytest.raises(ValueError, match="no webtext version 0123456789ab to skip"):
        publish_dataset(store, second_documents, DedupOptions(skip_versions=("0123456789ab",)))


def test_open_verified_reads_the_bytes_it_checked(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    with store.write("links", {}, "1") as out:
        out.put("small.txt", b"small\n")
        out.put("large.bin", bytes(range(256)) * 300_000)  # past the in-memory spool
        ref = out.ref
    assert store.read_verified(ref, "small.txt") == b"small\n"
    with store.open_verified(ref, "large.bin") as handle:
        handle.seek(256 * 299_999)
        assert handle.read() == bytes(range(256))
    local(store, ref, "small.txt").write_bytes(b"SMALL\n")
    with pytest.raises(
        StoreError, match=r"small\.txt does not match its sha256: read [0-9a-f]{64}"
    ):
        store.read_verified(ref, "small.txt")
    local(store, ref, "large.bin").unlink()
    with pytest.raises(StoreError, match=r"large\.bin is missing"):
        store.read_verified(ref, "large.bin")
    with pytest.raises(StoreError, match=r"has no file 'other\.txt'"):
        store.read_verified(ref, "other.txt")


def verify(monkeypatch, capsys, *args: str) -> tuple[int, list[str], str]:
    """`webtext verify ARGS`: (exit code, stdout lines, stderr)."""
    from webtext_app import cli

    monkeypatch.setattr("sys.argv", ["webtext", "verify", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 0
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_webtext_verify_names_what_differs(tmp_path, monkeypatch, capsys) -> None:
    store = Store(str(tmp_path / "store"))
    rows = [document(f"d{i}", prose(t)) for i, t in enumerate(TOPICS[:5])]
    documents = plain_documents(store, rows, "verify")
    result = run(store, documents)
    code, lines, _ = verify(monkeypatch, capsys, "--deep", "--store", store.root_url)
    assert code == 0 and len(lines) == 3, lines  # documents, minhash, webtext
    assert all(line.startswith("ok ") and "sha256 checked" in line for line in lines)
    part = "documents/part-00000.parquet"
    flip_bit(local(store, documents, part), prose(TOPICS[2]).encode())
    # Same size: only --deep sees the flipped bit.
    size = store.manifest(documents).files[0].size
    code, lines, _ = verify(monkeypatch, capsys, "documents", "--store", store.root_url)
    assert code == 0 and lines == [f"ok     {documents}: 1 files, {size:,} bytes, sizes checked"]
    code, lines, err = verify(monkeypatch, capsys, "--deep", "--store", store.root_url)
    assert code == 1 and "1 version(s) failed" in err
    failed = [line for line in lines if line.startswith("FAILED")]
    assert len(failed) == 1 and f"FAILED {documents}: {part} does not match its sha256" in failed[0]
    # The next stage refuses it too (a new dedup setting, so the version is not reused).
    with pytest.raises(StoreError, match=f"{part} does not match its sha256"):
        run(store, documents, rows_per_shard=2)
    # A cut file and a corrupt manifest fail without --deep; a folder without a manifest
    # (a write in progress or killed) is said, not failed.
    data = local(store, result.ref, "data/part-00000.parquet")
    data.write_bytes(data.read_bytes()[:-10])
    minhash = store.manifest(result.ref).parents[1]
    local(store, minhash, "manifest.json").write_text("{")
    (Path(store.version_dir(result.ref)).parent / "0123456789ab").mkdir()
    code, lines, _ = verify(monkeypatch, capsys, "--store", store.root_url)
    assert code == 1
    assert any(
        line.startswith(f"FAILED {result.ref}: data/part-00000.parquet has ") for line in lines
    )
    assert any(
        line.startswith("FAILED corrupt manifest") and str(minhash.version) in line
        for line in lines
    )
    assert (
        "skip   webtext/0123456789ab: no manifest (a write in progress, or a killed one)" in lines
    )
    code, lines, _ = verify(monkeypatch, capsys, "webtext/latest", "--store", store.root_url)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"FAILED {result.ref}")
    code, lines, err = verify(monkeypatch, capsys, "nope/latest", "--store", store.root_url)
    assert code == 2 and lines == [] and "unknown stage 'nope'" in err


def test_training_checks_the_token_files_it_will_memory_map(tmp_path) -> None:
    from training.launch import local_version

    def tokens_version(store: Store) -> VersionRef:
        with store.write("tokens", {"test": "mmap"}, "test") as out:
            out.put("tokens/train/part-00000.bin", bytes(range(256)) * 64)
            return out.ref

    store = Store(str(tmp_path / "store"))
    ref = tokens_version(store)
    assert local_version(store, ref, tmp_path / "cache") == store.version_dir(ref)
    shard = local(store, ref, "tokens/train/part-00000.bin")
    shard.write_bytes(shard.read_bytes()[::-1])  # same size, other bytes
    with pytest.raises(StoreError, match=r"tokens/train/part-00000\.bin does not match"):
        local_version(store, ref, tmp_path / "cache")
    remote = Store(f"memory://webtext-{tmp_path.name}")
    try:
        ref = tokens_version(remote)
        cache = tmp_path / "cache"
        folder = Path(local_version(remote, ref, cache))  # pulled, checked while copying
        assert (folder / "tokens/train/part-00000.bin").read_bytes() == bytes(range(256)) * 64
        (folder / "tokens/train/part-00000.bin").write_bytes(b"\0" * 256 * 64)
        with pytest.raises(StoreError, match=r"tokens/train/part-00000\.bin does not match"):
            local_version(remote, ref, cache)  # the earlier pull changed since
    finally:
        remote.fs.rm(remote.root, recursive=True)
