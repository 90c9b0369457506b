"""The dedup stage: exact and near duplicates, the survivor rule, incremental runs,
publishing, pulling, and the readers researchers use."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from pydoc_data.topics import topics

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dedup.minhash import MinHashSettings
from dedup.signatures import compute_minhash
from dedup.stage import PUBLISHED_COLUMNS, PublishSettings, deduplicate
from scraping.extract_stage import DOCUMENTS_SCHEMA
from webtext.store import Store, StoreError, VersionRef

TOPICS = sorted(name for name, text in topics.items() if len(text.split()) > 400)


def prose(topic: str) -> str:
    return " ".join(topics[topic].split()[:400])


def edited(text: str, changes: int, seed: int) -> str:
    """`text` with `changes` words replaced: a near duplicate of it."""
    rng = random.Random(seed)
    words = text.split()
    for position in rng.sample(range(len(words)), changes):
        words[position] = f"edited{rng.randrange(10**6)}"
    return " ".join(words)


def document(doc_id: str, text: str, karma: int = 5, day: int = 1) -> dict:
    seen = dt.datetime(2017, 1, day, tzinfo=dt.UTC)
    return {
        "doc_id": doc_id,
        "url": f"http://site.example/{doc_id}",
        "final_url": f"http://site.example/{doc_id}",
        "domain": "site.example",
        "title": doc_id,
        "text": text,
        "language": "en",
        "word_count": len(text.split()),
        "fetched_at": seen,
        "karma": karma,
        "submissions": 1,
        "subreddits": ["news"],
        "post_ids": [doc_id],
        "first_seen": seen,
        "last_seen": seen,
    }


def documents_version(store: Store, rows: list[dict], name: str) -> VersionRef:
    with store.write("documents", {"name": name}, "test") as out:
        table = pa.Table.from_pylist(rows, schema=DOCUMENTS_SCHEMA)
        with out.open("documents/part-00000.parquet", rows=table.num_rows) as handle:
            pq.write_table(table, handle)
        return out.ref


def run(store: Store, documents: VersionRef, **publish):
    minhash = compute_minhash(store, documents)
    return deduplicate(store, documents, minhash.ref, publish=PublishSettings(**publish))


def published(store: Store, ref: VersionRef) -> dict[str, dict]:
    rows = pq.read_table(store.url(ref, "data")).to_pylist()
    return {row["doc_id"]: row for row in rows}


def test_exact_and_near_duplicates_keep_the_best_member(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    a, b, c = (prose(t) for t in TOPICS[:3])
    rows = [
        document("a-low", a, karma=3),
        document("a-high", a.upper().replace(" ", "  "), karma=90),  # same text, normalised
        document("b-early", b, karma=7, day=1),
        document("b-late", edited(b, 4, seed=1), karma=7, day=9),  # ~0.95 Jaccard
        document("c", c),
        *(document(f"other-{t}", prose(t)) for t in TOPICS[3:8]),
    ]
    result = run(store, documents_version(store, rows, "one"))
    kept = published(store, result.ref)
    assert "a-high" in kept and "a-low" not in kept  # highest karma wins
    assert "b-early" in kept and "b-late" not in kept  # then the earliest
    assert {"c", *(f"other-{t}" for t in TOPICS[3:8])} <= set(kept)
    counts = result.stats["counts"]
    assert counts == {
        "documents_in": 10,
        "exact_duplicates": 1,
        "near_duplicates": 1,
        "duplicates_of_earlier_versions": 0,
        "published": 8,
    }
    clusters = pq.read_table(store.url(result.ref, "clusters")).to_pylist()
    assert {(r["doc_id"], r["kept_doc_id"], r["kind"]) for r in clusters} == {
        ("a-low", "a-high", "exact"),
        ("b-late", "b-early", "near"),
    }
    assert list(next(iter(kept.values()))) == list(PUBLISHED_COLUMNS)


def test_unrelated_and_distant_edits_are_not_merged(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    base = prose(TOPICS[0])
    rows = [document("base", base), document("far", edited(base, 120, seed=3))]  # ~0.3
    rows += [document(f"t{i}", prose(t)) for i, t in enumerate(TOPICS[1:20])]
    result = run(store, documents_version(store, rows, "distant"))
    assert result.stats["counts"]["published"] == len(rows)


def test_a_later_version_is_deduplicated_against_published_ones(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    first_rows = [document(f"v1-{t}", prose(t)) for t in TOPICS[:6]]
    first = run(store, documents_version(store, first_rows, "v1"))
    second_rows = [
        document("v2-near", edited(prose(TOPICS[0]), 3, seed=5), karma=500),
        document("v2-exact", prose(TOPICS[1]).lower()),
        document("v2-new", prose(TOPICS[10])),
    ]
    second = run(store, documents_version(store, second_rows, "v2"))
    assert set(published(store, second.ref)) == {"v2-new"}  # earlier documents stay
    counts = second.stats["counts"]
    assert counts["duplicates_of_earlier_versions"] == 2 and counts["published"] == 1
    assert first.ref in store.manifest(second.ref).parents
    clusters = {
        r["doc_id"]: r for r in pq.read_table(store.url(second.ref, "clusters")).to_pylist()
    }
    assert clusters["v2-near"]["kept_doc_id"] == f"v1-{TOPICS[0]}"
    assert clusters["v2-near"]["kept_in"] == str(first.ref)


def test_shards_row_groups_card_and_reuse(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    rows = [document(f"d{i}", prose(t)) for i, t in enumerate(TOPICS[:25])]
    documents = documents_version(store, rows, "shards")
    result = run(store, documents, rows_per_shard=10, rows_per_row_group=4)
    files = [f for f in store.manifest(result.ref).files if f.path.startswith("data/")]
    assert [f.rows for f in files] == [10, 10, 5]
    metadata = pq.ParquetFile(store.url(result.ref, files[0].path)).metadata
    assert metadata.num_row_groups == 3 and metadata.row_group(0).column(0).compression == "ZSTD"
    card = (Path(store.version_dir(result.ref)) / "README.md").read_text()
    assert "| dedup | published | 25 |" in card and "## Schema" in card and "karma" in card
    assert run(store, documents, rows_per_shard=10, rows_per_row_group=4).reused


def test_pull_copies_and_verifies_and_every_reader_reads_it(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    rows = [document(f"d{i}", prose(t)) for i, t in enumerate(TOPICS[:12])]
    result = run(store, documents_version(store, rows, "pull"))
    destination = tmp_path / "pulled"
    store.pull(result.ref, str(destination))
    copy = Store(str(destination))
    copy.verify(result.ref)
    data = f"{copy.version_dir(result.ref)}/data"

    import duckdb
    import polars as pl
    from datasets import load_dataset

    assert pq.read_table(data).num_rows == 12
    assert duckdb.sql(f"SELECT count(*) FROM '{data}/*.parquet'").fetchall() == [(12,)]
    frame = pl.read_parquet(f"{data}/*.parquet")
    assert frame.height == 12 and frame["karma"].sum() == 60
    dataset = load_dataset("parquet", data_files=f"{data}/*.parquet", split="train")
    assert len(dataset) == 12 and set(dataset.column_names) == set(PUBLISHED_COLUMNS)

    tampered = Path(store.version_dir(result.ref)) / "data" / "part-00000.parquet"
    tampered.write_bytes(tampered.read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(StoreError, match="does not match its sha256"):
        store.pull(result.ref, str(tmp_path / "second"))
    assert not (tmp_path / "second" / "webtext" / result.ref.version / "manifest.json").exists()
    json.loads((Path(copy.version_dir(result.ref)) / "manifest.json").read_text())


def test_republishing_the_same_documents_with_other_settings_keeps_them(tmp_path) -> None:
    store = Store(str(tmp_path / "store"))
    rows = [document(f"d{i}", prose(t)) for i, t in enumerate(TOPICS[:6])]
    documents = documents_version(store, rows, "again")
    first = run(store, documents, rows_per_shard=100)
    second = run(store, documents, rows_per_shard=2)  # not "earlier": same documents
    assert second.ref != first.ref
    assert set(published(store, second.ref)) == set(published(store, first.ref))
    assert first.ref not in store.manifest(second.ref).parents


def near_duplicate_corpus(count: int, seed: int) -> list[dict]:
    """`count` documents over the long topics: each topic's first is its text, later ones
    are edited copies (1 to 40 words changed: near duplicates and distant ones), a few
    exact copies in capitals; karma and first-seen drawn, so the survivor rule decides."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        base = prose(TOPICS[i % len(TOPICS)])
        text = base if i < len(TOPICS) else edited(base, rng.choice([1, 3, 6, 40]), seed=i)
        if i % 37 == 0:
            text = base.upper()
        karma, day = rng.randrange(5), 1 + rng.randrange(20)
        rows.append(document(f"d{rng.randrange(10**9):09d}", text, karma=karma, day=day))
    return rows


def documents_in_parts(store: Store, rows: list[dict], name: str, part_rows: int) -> VersionRef:
    with store.write("documents", {"name": name}, "test") as out:
        for start in range(0, len(rows), part_rows):
            table = pa.Table.from_pylist(rows[start : start + part_rows], schema=DOCUMENTS_SCHEMA)
            part = f"documents/part-{start // part_rows:05d}.parquet"
            with out.open(part, rows=table.num_rows) as handle:
                pq.write_table(table, handle)
        return out.ref


def file_hashes(store: Store, ref: VersionRef) -> dict[str, str]:
    return {f.path: f.sha256 for f in store.manifest(ref).files if f.path != "README.md"}


def test_clusters_spilled_in_many_key_ranges_are_the_same_bytes(tmp_path) -> None:
    """A budget so small that every key kind is split into 32 ranges on disk gives the
    same files as one range held at once, for a first and an incremental version."""
    rows = near_duplicate_corpus(300, seed=7)
    results = []
    for budget in (2**30, 2_400):
        store = Store(str(tmp_path / f"store-{budget}"))
        versions = []
        for name, part in (("one", rows[:220]), ("two", rows[220:])):
            documents = documents_in_parts(store, part, name, part_rows=70)
            minhash = compute_minhash(store, documents)
            versions.append(deduplicate(store, documents, minhash.ref, spill_budget_bytes=budget))
        results.append((store, versions))
    (store_a, versions_a), (store_b, versions_b) = results
    for a, b in zip(versions_a, versions_b, strict=True):
        assert a.ref == b.ref and file_hashes(store_a, a.ref) == file_hashes(store_b, b.ref)
    counts = versions_a[1].stats["counts"]
    assert counts["duplicates_of_earlier_versions"] > 0 and counts["near_duplicates"] > 0


def test_clusters_are_those_of_every_pair_compared(tmp_path) -> None:
    """The reference: every pair of documents compared (equal text hash, or a shared band
    key and an estimate at the threshold), clusters closed transitively, the survivor
    rule applied in plain Python. The stage must drop exactly those documents, each
    pointing at its cluster's survivor."""
    store = Store(str(tmp_path / "store"))
    rows = near_duplicate_corpus(160, seed=11)
    documents = documents_in_parts(store, rows, "ref", part_rows=50)
    minhash = compute_minhash(store, documents)
    result = deduplicate(store, documents, minhash.ref, spill_budget_bytes=2_400)

    table = pq.read_table(store.url(minhash.ref, "minhash")).to_pylist()
    threshold = MinHashSettings().threshold
    parent = list(range(len(table)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, a in enumerate(table):
        for j in range(i + 1, len(table)):
            b = table[j]
            same = a["text_hash"] == b["text_hash"]
            shared = set(a["bands"]) & set(b["bands"]) and any(
                x == y for x, y in zip(a["bands"], b["bands"], strict=True)
            )
            estimate = sum(x == y for x, y in zip(a["signature"], b["signature"], strict=True))
            if same or (shared and estimate / len(a["signature"]) >= threshold):
                parent[max(root(i), root(j))] = min(root(i), root(j))
    by_id = {row["doc_id"]: row for row in rows}
    clusters: dict[int, list[str]] = {}
    for i, row in enumerate(table):
        clusters.setdefault(root(i), []).append(row["doc_id"])
    expected = {}
    for members in clusters.values():
        survivor = min(members, key=lambda d: (-by_id[d]["karma"], by_id[d]["first_seen"], d))
        expected |= {d: survivor for d in members if d != survivor}
    found = pq.read_table(store.url(result.ref, "clusters")).to_pylist()
    assert {r["doc_id"]: r["kept_doc_id"] for r in found} == expected
    assert len(expected) > 40  # the fixture has near duplicates worth the name
    assert set(published(store, result.ref)) == set(by_id) - set(expected)


def test_key_ranges_read_back_are_the_rows_sorted_and_rows_come_back_by_position(
    tmp_path,
) -> None:
    import numpy as np

    from dedup.clustering import KeySpill, SignatureFile, UnionFind, key_ranges

    assert key_ranges(1_000, 256 * 1_000) == 1 and key_ranges(1_000, 256 * 100) == 16
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2**64, 5_000, dtype=np.uint64)
    keys[::7] = keys[0]  # a big bucket, spread over the parts added
    schema = pa.schema([("key", pa.uint64()), ("position", pa.int64())])
    spill = KeySpill(tmp_path / "spill", schema, ranges=8)
    for start in range(0, len(keys), 1_000):
        chunk = keys[start : start + 1_000]
        spill.add(pa.table({"key": chunk, "position": np.arange(start, start + len(chunk))}))
    read = pa.concat_tables(spill.sorted_ranges())
    order = np.argsort(keys, kind="stable")
    assert read["key"].to_numpy().tolist() == keys[order].tolist()
    assert read["position"].to_numpy().tolist() == order.tolist()  # ties in the order added

    matrix = rng.integers(0, 2**32, (50, 16), dtype=np.uint32)
    signatures = SignatureFile(tmp_path / "sigs.u32", 16)
    signatures.append(matrix[:20])
    signatures.append(matrix[20:])
    positions = np.array([49, 3, 3, 0, 20])
    assert (signatures.take(positions) == matrix[positions]).all()
    with pytest.raises(OSError, match="row 50 is beyond its 50 rows"):
        signatures.take(np.array([50]))
    signatures.close()

    union = UnionFind(10)
    union.union(7, 3)
    union.union(3, 9)
    union.union(1, 2)
    assert union.find(9) == 3 and union.members().tolist() == [1, 2, 3, 7, 9]
