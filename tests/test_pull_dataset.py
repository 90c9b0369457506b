"""`webtext pull`: the published dataset as of a version (that version and the earlier ones
it names) in one folder every reader can glob, each file verified; the card says both
counts; the copy appears whole or not at all, and never over something else."""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
from pathlib import Path
from pydoc_data.topics import topics

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from test_extract_stage import ARTICLE, fetched
from typer.testing import CliRunner

from dedup.stage import publish_dataset
from scraping.extract_stage import ExtractOptions, extract_documents
from webtext.dataset import dataset_versions, documents_in, pull_dataset
from webtext.store import Store, StoreError, VersionRef
from webtext_app import cli


def page(title: str, topic: str) -> bytes:
    """An article of one topic of CPython's reference text: topics differ, so do pages."""
    prose = [p for p in topics[topic].split("\n\n") if len(p.split()) > 12]
    body = "".join(f"<p>{html.escape(' '.join(p.split()))}</p>" for p in prose[:30])
    return ARTICLE.format(title=title, paragraphs=body).encode()


MONTH1 = {
    "http://a.example/assignment": page("Assignment", "assignment"),
    "http://b.example/import": page("Import", "import"),
    "http://c.example/function": page("Function", "function"),
}
MONTH2 = {
    **MONTH1,  # fetched already: not fetched again
    "http://d.example/strings": page("Strings", "strings"),
    "http://e.example/try": page("Try", "try"),
    "http://mirror.example/import": MONTH1["http://b.example/import"],  # a duplicate
}
OPTIONS = ExtractOptions(workers=1)


def month(store: Store, pages: dict[str, bytes]) -> VersionRef:
    documents = extract_documents(store, fetched(store, pages), OPTIONS)
    return publish_dataset(store, documents.ref).ref


@pytest.fixture(scope="module")
def months(tmp_path_factory) -> tuple[Store, VersionRef, VersionRef]:
    """Two incremental months; the store is read only by the tests (copy it to change it)."""
    store = Store(str(tmp_path_factory.mktemp("months") / "store"))
    first = month(store, MONTH1)
    second = month(store, MONTH2)
    assert dataset_versions(store, second) == [first, second]
    return store, first, second


def urls(store: Store, ref: VersionRef) -> set[str]:
    return set(pq.read_table(store.url(ref, "data"), columns=["url"])["url"].to_pylist())


def test_pull_latest_is_the_union_and_every_reader_counts_it(months, tmp_path, monkeypatch) -> None:
    store, first, second = months
    added = [documents_in(store.manifest(ref)) for ref in (first, second)]
    assert added[0] > 0 and added[1] > 0
    assert store.manifest(second).stats["counts"]["duplicates_of_earlier_versions"] == 1

    dest = tmp_path / "webtext-data"
    pulled = pull_dataset(store, store.resolve("webtext"), str(dest))
    assert pulled.versions == [first, second] and pulled.documents == sum(added)

    # One build over both months publishes the same dataset.
    once = Store(str(tmp_path / "once"))
    whole = month(once, MONTH2)
    assert documents_in(once.manifest(whole)) == pulled.documents
    # The same documents, but one of the twins: the first published, or the one with more
    # karma when both are new.
    twins = {"http://b.example/import", "http://mirror.example/import"}
    assert urls(once, whole) ^ (urls(store, first) | urls(store, second)) == twins

    import duckdb
    import polars as pl

    data = dest / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(
        f"{ref.version}-part-00000.parquet" for ref in (first, second)
    )
    assert ds.dataset(str(data), format="parquet").count_rows() == pulled.documents
    query = f"SELECT count(*), count(DISTINCT doc_id) FROM read_parquet('{data}/*.parquet')"
    assert duckdb.sql(query).fetchall() == [(pulled.documents, pulled.documents)]
    assert pl.scan_parquet(f"{data}/*.parquet").select(pl.len()).collect().item() == sum(added)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    from datasets import load_dataset

    dataset = load_dataset(
        "parquet",
        data_files=f"{data}/*.parquet",
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert len(dataset) == pulled.documents

    # The card of the newest version, and what a reader needs to verify the copy.
    card = (dest / "README.md").read_text()
    assert card == (Path(store.version_dir(second)) / "README.md").read_text()
    summary = json.loads((dest / "dataset.json").read_text())
    assert summary["as_of"] == second.version and summary["documents"] == sum(added)
    assert [v["version"] for v in summary["versions"]] == [first.version, second.version]
    assert [v["documents"] for v in summary["versions"]] == added
    assert {f["path"] for f in summary["files"]} == {
        "README.md",
        *(f"data/{p.name}" for p in data.iterdir()),
    }
    for entry in summary["files"]:
        assert hashlib.sha256((dest / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders


def test_every_card_states_what_it_adds_and_the_dataset_as_of_it(months, tmp_path) -> None:
    store, first, second = months
    for ref in (first, second):
        card = (Path(store.version_dir(ref)) / "README.md").read_text()
        versions = dataset_versions(store, ref)
        total = sum(documents_in(store.manifest(v)) for v in versions)
        added = documents_in(store.manifest(ref))
        # The card's count is the manifests' rows: a reader counting the pulled files agrees.
        dest = tmp_path / ref.version
        pull_dataset(store, ref, str(dest))
        assert ds.dataset(str(dest / "data"), format="parquet").count_rows() == total
        own = ds.dataset(store.url(ref, "data"), format="parquet").count_rows()
        assert own == added
        assert f"- documents added by this version: {added:,}\n" in card
        listed = ", ".join(f"`{v.version}`" for v in versions)
        assert re.search(
            rf"- documents in the dataset as of this version: {total:,}, in versions? {listed} ",
            card,
        ), card
    card = (Path(store.version_dir(second)) / "README.md").read_text()
    assert "An incremental version" in card


def test_a_full_version_is_its_own_whole_dataset(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    month(store, MONTH1)
    fetches = fetched(store, MONTH2)
    extract_documents(store, fetches, OPTIONS)
    rebuild = ExtractOptions(workers=1, all_fetches=True)
    full = publish_dataset(store, extract_documents(store, fetches, rebuild).ref)
    assert dataset_versions(store, full.ref) == [full.ref]
    card = (Path(store.version_dir(full.ref)) / "README.md").read_text()
    count = documents_in(store.manifest(full.ref))
    assert (
        f"- documents in the dataset as of this version: {count:,}, in version "
        f"`{full.ref.version}` " in card
    )
    assert "A full version" in card
    pulled = pull_dataset(store, full.ref, str(tmp_path / "full"))
    assert pulled.versions == [full.ref] and pulled.documents == count


def test_increment_only_copies_just_the_new_part(months, tmp_path) -> None:
    store, first, second = months
    dest = tmp_path / "increment"
    pulled = pull_dataset(store, second, str(dest), increment_only=True)
    assert pulled.versions == [second]
    assert pulled.documents == documents_in(store.manifest(second))
    assert {p.name.split("-")[0] for p in (dest / "data").iterdir()} == {second.version}
    assert ds.dataset(str(dest / "data"), format="parquet").count_rows() == pulled.documents
    summary = json.loads((dest / "dataset.json").read_text())
    assert summary["increment_only"] and summary["dataset_versions"] == [
        first.version,
        second.version,
    ]


def test_a_flipped_byte_fails_the_pull_and_leaves_nothing(months, tmp_path) -> None:
    source, first, _ = months
    store = Store(str(tmp_path / "store"))
    shutil.copytree(source.root, store.root)
    part = Path(store.version_dir(first)) / "data" / "part-00000.parquet"
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    part.write_bytes(bytes(raw))
    dest = tmp_path / "out" / "webtext-data"
    with pytest.raises(StoreError, match=rf"{first}: data/part-00000\.parquet does not match"):
        pull_dataset(store, store.resolve("webtext"), str(dest))
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []


def test_a_previous_pull_is_replaced_whole(months, tmp_path) -> None:
    store, _, second = months
    dest = tmp_path / "data"
    dest.mkdir()  # an empty folder is fine
    increment = pull_dataset(store, second, str(dest), increment_only=True)
    (dest / "data" / "part-99999.parquet").write_bytes(b"stale")  # not part of any pull
    pulled = pull_dataset(store, second, str(dest))
    assert not (dest / "data" / "part-99999.parquet").exists()
    assert pulled.documents > increment.documents
    assert ds.dataset(str(dest / "data"), format="parquet").count_rows() == pulled.documents
    assert json.loads((dest / "dataset.json").read_text())["increment_only"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_destinations_that_are_refused(months, tmp_path) -> None:
    store, _, second = months
    root = Path(store.root)
    for inside in (root, root / "copy", root / "webtext"):
        with pytest.raises(StoreError, match="inside the store"):
            pull_dataset(store, second, str(inside))
    assert not (root / "copy").exists()
    with pytest.raises(StoreError, match=rf"the store .* is inside {root.parent}"):
        pull_dataset(store, second, str(root.parent))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty and holds no earlier pull"):
        pull_dataset(store, second, str(busy))
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match=f"{a_file} is a file, not a folder"):
        pull_dataset(store, second, str(a_file))
    with pytest.raises(ValueError, match="not a version of the 'webtext' stage"):
        pull_dataset(store, store.resolve("documents"), str(tmp_path / "documents"))


def test_the_command_pulls_the_dataset_and_says_where(
    months, tmp_path, capsys, monkeypatch
) -> None:
    store, first, second = months
    runner = CliRunner()
    dest = tmp_path / "webtext-data"
    result = runner.invoke(cli.app, ["pull", "latest", str(dest), "--store", store.root_url])
    assert result.exit_code == 0, result.output
    total = sum(documents_in(store.manifest(ref)) for ref in (first, second))
    assert f"pulled {total:,} documents of the dataset as of {second}" in result.output
    assert f"{dest}/data/" in result.output
    result = runner.invoke(
        cli.app,
        ["pull", second.version, str(dest), "--increment-only", "--store", store.root_url],
    )
    assert result.exit_code == 0 and "documents added by" in result.output, result.output
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    monkeypatch.setattr(
        "sys.argv", ["webtext", "pull", "latest", str(a_file), "--store", store.root]
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2  # a user error: DEST
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{a_file} is a file, not a folder" in err
