"""The dedup stage: a `documents` version and its `minhash` rows in, a `webtext` version out.

1. Exact duplicates: equal `text_hash` (normalised text), among the new documents and
   against every document an earlier `webtext` version published.
2. Near duplicates: documents sharing a band key are candidates; a candidate pair is a
   duplicate when its MinHash estimate reaches the threshold. Earlier versions are
   queried band by band from their `index/band-BBB.parquet` files (keys sorted), so only
   one band of one earlier version is in memory at a time, plus the signatures of the
   earlier documents that matched.
3. Clusters (union-find over both kinds of pairs): a cluster that holds a published
   document keeps it and drops every new member; otherwise the member with the highest
   karma survives, then the earliest first seen, then the smallest doc id.

The version holds the published shards (`data/part-NNNNN.parquet`, zstd), the cluster
membership of every dropped document (`clusters/part-00000.parquet`), the index of its
own documents for later runs (`index/`), and a dataset card (`README.md`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dedup.card import dataset_card
from dedup.minhash import MinHashSettings
from webtext.config import code_version
from webtext.store import Manifest, StageResult, Store, VersionRef, VersionWriter

STAGE = "webtext"
# The published schema: stable, documented in the dataset card.
PUBLISHED_COLUMNS = (
    "doc_id",
    "text",
    "url",
    "domain",
    "title",
    "karma",
    "subreddits",
    "first_seen",
    "last_seen",
    "fetched_at",
    "published",
    "word_count",
    "language",
)
CLUSTER_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("kept_doc_id", pa.string()),
        ("kind", pa.string()),  # "exact" or "near"
        ("similarity", pa.float32()),
        ("kept_in", pa.string()),  # the version that holds the survivor
    ]
)
# Candidates sharing one band key: beyond this many, link each to the first only (a
# huge bucket is boilerplate everyone shares; pairing all of it would be quadratic).
_MAX_BUCKET_PAIRS = 64


@dataclass(frozen=True)
class PublishSettings:
    rows_per_shard: int = 100_000
    rows_per_row_group: int = 2_000

    def parameters(self) -> dict[str, int]:
        return {
            "rows_per_shard": self.rows_per_shard,
            "rows_per_row_group": self.rows_per_row_group,
        }


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        root = item
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while item != root:  # path compression
            self.parent[item], item = root, self.parent.get(item, item)
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def deduplicate(
    store: Store,
    documents: VersionRef,
    minhash: VersionRef,
    settings: MinHashSettings | None = None,
    publish: PublishSettings | None = None,
) -> StageResult:
    """Publish the documents of `documents` that duplicate nothing published before."""
    settings = settings or MinHashSettings()
    publish = publish or PublishSettings()
    parameters = {"minhash": settings.parameters(), "publish": publish.parameters()}
    version = code_version("dedup")
    earlier = store.versions(STAGE)
    for manifest in earlier:  # the same inputs were published already
        same_inputs = manifest.parents[:2] == (documents, minhash)
        if same_inputs and (manifest.code_version, manifest.parameters) == (version, parameters):
            return StageResult(manifest.ref, True, manifest.stats)
    parents = (documents, minhash, *(m.ref for m in earlier))

    new = _load_new(store, documents, minhash)
    ids = new["doc_id"].to_pylist()
    union = _UnionFind()
    kinds: dict[str, tuple[str, float]] = {}
    published_match: dict[str, str] = {}  # new doc id -> earlier version holding its twin

    _exact_pairs(new, union, kinds)
    for manifest in earlier:
        _match_earlier(store, manifest, new, settings, union, kinds, published_match)
    _near_pairs(new, settings, union, kinds)

    clusters: dict[str, list[int]] = defaultdict(list)
    for index, doc in enumerate(ids):
        clusters[union.find(doc)].append(index)
    keep = np.zeros(len(ids), dtype=bool)
    cluster_rows: list[dict[str, Any]] = []
    karma = new["karma"].fill_null(0).to_numpy(zero_copy_only=False)
    first_seen = (
        pc.cast(new["first_seen"], pa.int64()).fill_null(2**62).to_numpy(zero_copy_only=False)
    )
    for members in clusters.values():
        holder = _published_holder(members, ids, union, published_match)
        if holder is not None:
            survivor_id, kept_in = holder
        else:
            best = min(members, key=lambda i: (-karma[i], first_seen[i], ids[i]))
            keep[best] = True
            survivor_id, kept_in = ids[best], "this"
        for i in members:
            if ids[i] != survivor_id:
                kind, similarity = kinds.get(ids[i], ("near", 0.0))
                cluster_rows.append(
                    {
                        "doc_id": ids[i],
                        "kept_doc_id": survivor_id,
                        "kind": kind,
                        "similarity": similarity,
                        "kept_in": kept_in,
                    }
                )

    kept = new.filter(pa.array(keep))
    counts = {
        "documents_in": len(ids),
        "exact_duplicates": sum(1 for r in cluster_rows if r["kind"] == "exact"),
        "near_duplicates": sum(1 for r in cluster_rows if r["kind"] == "near"),
        "duplicates_of_earlier_versions": sum(1 for r in cluster_rows if r["kept_in"] != "this"),
        "published": kept.num_rows,
    }
    with store.write(STAGE, parameters, version, parents) as out:
        _write_shards(out, kept, publish)
        _write_table(
            out, "clusters/part-00000.parquet", pa.Table.from_pylist(cluster_rows, CLUSTER_SCHEMA)
        )
        _write_index(out, kept, settings)
        out.stats["counts"] = counts
        lineage = [store.manifest(ref) for ref in _lineage(store, documents)]
        card = dataset_card(out.ref, counts, parameters, lineage, PUBLISHED_COLUMNS)
        out.put("README.md", card.encode())
        ref = out.ref
    return StageResult(ref, False, store.manifest(ref).stats)


def _load_new(store: Store, documents: VersionRef, minhash: VersionRef) -> pa.Table:
    """Documents joined with their MinHash rows, in doc id order."""
    docs = _read_all(store, documents, "documents/")
    rows = _read_all(store, minhash, "minhash/")
    # Acero's join cannot carry list columns: align by position instead.
    position = pc.index_in(docs["doc_id"], value_set=rows["doc_id"].combine_chunks())
    if position.null_count:
        raise ValueError(f"{minhash} lacks rows for {position.null_count} documents")
    matched = rows.take(position)
    for name in ("text_hash", "signature", "bands"):
        docs = docs.append_column(name, matched[name])
    return docs.sort_by("doc_id")


def _read_all(
    store: Store, ref: VersionRef, prefix: str, columns: list[str] | None = None
) -> pa.Table:
    tables = []
    for entry in store.manifest(ref).files:
        if entry.path.startswith(prefix):
            with store.fs.open(f"{store.version_dir(ref)}/{entry.path}", "rb") as handle:
                tables.append(pq.read_table(handle, columns=columns))
    return pa.concat_tables(tables)


def _exact_pairs(new: pa.Table, union: _UnionFind, kinds: dict[str, tuple[str, float]]) -> None:
    first: dict[str, str] = {}
    for doc, digest in zip(new["doc_id"].to_pylist(), new["text_hash"].to_pylist(), strict=True):
        if digest in first:
            union.union(first[digest], doc)
            kinds[doc] = kinds[first[digest]] = ("exact", 1.0)
        else:
            first[digest] = doc


def _near_pairs(
    new: pa.Table,
    settings: MinHashSettings,
    union: _UnionFind,
    kinds: dict[str, tuple[str, float]],
) -> None:
    """Pairs among the new documents that share a band key and pass the estimate."""
    ids = new["doc_id"].to_pylist()
    bands = _matrix(new["bands"], settings.bands)
    sigs = _matrix(new["signature"], settings.num_perm)
    for band in range(settings.bands):
        keys = bands[:, band]
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts, ends, strict=True):
            if end - start < 2:
                continue
            bucket = order[start:end]
            for a, b in _bucket_pairs(bucket):
                _link(ids[a], ids[b], sigs[a], sigs[b], settings, union, kinds)


def _bucket_pairs(bucket: np.ndarray) -> Iterable[tuple[int, int]]:
    if len(bucket) * (len(bucket) - 1) // 2 <= _MAX_BUCKET_PAIRS:
        for i in range(len(bucket)):
            for j in range(i + 1, len(bucket)):
                yield int(bucket[i]), int(bucket[j])
    else:
        for j in range(1, len(bucket)):
            yield int(bucket[0]), int(bucket[j])


def _link(
    a: str,
    b: str,
    sig_a: np.ndarray,
    sig_b: np.ndarray,
    settings: MinHashSettings,
    union: _UnionFind,
    kinds: dict[str, tuple[str, float]],
) -> float | None:
    similarity = float(np.mean(sig_a == sig_b))
    if similarity < settings.threshold or union.find(a) == union.find(b):
        return None
    union.union(a, b)
    kinds.setdefault(a, ("near", similarity))
    kinds.setdefault(b, ("near", similarity))
    return similarity


def _match_earlier(
    store: Store,
    manifest: Manifest,
    new: pa.Table,
    settings: MinHashSettings,
    union: _UnionFind,
    kinds: dict[str, tuple[str, float]],
    published_match: dict[str, str],
) -> None:
    """Link new documents to the documents an earlier version published."""
    ref = manifest.ref
    ids = new["doc_id"].to_pylist()
    index_dir = f"{store.version_dir(ref)}/index"
    # Exact: the earlier version's text hashes.
    with store.fs.open(f"{index_dir}/hashes.parquet", "rb") as handle:
        hashes = pq.read_table(handle)
    hit = hashes.filter(pc.is_in(hashes["text_hash"], value_set=new["text_hash"]))
    old_by_hash = dict(zip(hit["text_hash"].to_pylist(), hit["doc_id"].to_pylist(), strict=True))
    for doc, digest in zip(ids, new["text_hash"].to_pylist(), strict=True):
        if digest in old_by_hash:
            _link_published(doc, old_by_hash[digest], ref, union, published_match)
            kinds[doc] = ("exact", 1.0)
    # Near: band by band, candidates whose keys match, then their signatures.
    bands = _matrix(new["bands"], settings.bands)
    candidates: dict[str, set[int]] = defaultdict(set)
    for band in range(settings.bands):
        with store.fs.open(f"{index_dir}/band-{band:03d}.parquet", "rb") as handle:
            old = pq.read_table(handle)
        new_keys = pa.array(bands[:, band], pa.uint64())
        matched = old.filter(pc.is_in(old["key"], value_set=new_keys))
        if matched.num_rows == 0:
            continue
        by_key: dict[int, list[int]] = defaultdict(list)
        for i, key in enumerate(bands[:, band].tolist()):
            by_key[key].append(i)
        for key, old_doc in zip(
            matched["key"].to_pylist(), matched["doc_id"].to_pylist(), strict=True
        ):
            candidates[old_doc].update(by_key[key])
    if not candidates:
        return
    with store.fs.open(f"{index_dir}/signatures.parquet", "rb") as handle:
        sigs = pq.read_table(handle)
    sigs = sigs.filter(pc.is_in(sigs["doc_id"], value_set=pa.array(sorted(candidates))))
    old_matrix = _matrix(sigs["signature"], settings.num_perm)
    new_matrix = _matrix(new["signature"], settings.num_perm)
    for row, old_doc in enumerate(sigs["doc_id"].to_pylist()):
        for i in candidates[old_doc]:
            similarity = float(np.mean(old_matrix[row] == new_matrix[i]))
            if similarity >= settings.threshold:
                _link_published(ids[i], old_doc, ref, union, published_match)
                kinds.setdefault(ids[i], ("near", similarity))


def _link_published(
    new_doc: str, old_doc: str, ref: VersionRef, union: _UnionFind, published: dict[str, str]
) -> None:
    published.setdefault(new_doc, f"{ref}:{old_doc}")


def _published_holder(
    members: list[int], ids: list[str], union: _UnionFind, published: dict[str, str]
) -> tuple[str, str] | None:
    for i in members:
        if ids[i] in published:
            where, _, old_doc = published[ids[i]].rpartition(":")
            return old_doc, where
    return None


def _matrix(column: pa.ChunkedArray, width: int) -> np.ndarray:
    """A fixed-size list column as an (n, width) array of its value type."""
    values = pc.list_flatten(column.combine_chunks())
    return values.to_numpy(zero_copy_only=False).reshape(-1, width)


def _write_table(
    out: VersionWriter, name: str, table: pa.Table, row_group: int | None = None
) -> None:
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd", row_group_size=row_group)
    out.put(name, buffer.getvalue().to_pybytes(), table.num_rows)


def _write_shards(out: VersionWriter, kept: pa.Table, publish: PublishSettings) -> None:
    table = kept.select(list(PUBLISHED_COLUMNS))
    shards = max(1, -(-table.num_rows // publish.rows_per_shard))
    for shard in range(shards):
        piece = table.slice(shard * publish.rows_per_shard, publish.rows_per_shard)
        _write_table(out, f"data/part-{shard:05d}.parquet", piece, publish.rows_per_row_group)


def _write_index(out: VersionWriter, kept: pa.Table, settings: MinHashSettings) -> None:
    """What a later run needs to match against this version: hashes, band keys (sorted
    per band), signatures."""
    _write_table(out, "index/hashes.parquet", kept.select(["doc_id", "text_hash"]))
    _write_table(out, "index/signatures.parquet", kept.select(["doc_id", "signature"]))
    bands = _matrix(kept["bands"], settings.bands)
    for band in range(settings.bands):
        table = pa.table({"key": pa.array(bands[:, band], pa.uint64()), "doc_id": kept["doc_id"]})
        _write_table(out, f"index/band-{band:03d}.parquet", table.sort_by("key"))


def _lineage(store: Store, documents: VersionRef) -> list[VersionRef]:
    """documents, then its fetches, then their links: the stages behind this version."""
    chain = [documents]
    while True:
        parents = store.manifest(chain[-1]).parents
        if not parents:
            return chain
        chain.append(parents[0])
