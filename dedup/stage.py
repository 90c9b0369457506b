"""The dedup stage: a `documents` version and its `minhash` rows in, a `webtext` version out.

1. Exact duplicates: equal `text_hash` (normalised text), among the new documents and
   against every document of the dataset so far: the newest full `webtext` version (one
   made from documents re-extracted from every page fetched) and the versions after it.
   A full version itself is deduplicated against nothing earlier.
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
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dedup.card import dataset_card
from dedup.minhash import MinHashSettings
from dedup.signatures import compute_minhash, minhash_schema
from webtext.parquet import RollingParquetWriter, put_table
from webtext.stage import Map, Progress, Stage, StageWrite, run_stage
from webtext.store import Manifest, StageResult, Store, VersionRef, VersionWriter
from webtext.tables import DOCUMENTS_SCHEMA

STAGE = Stage("webtext", __name__)
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
    """Clusters over document positions; only documents in some pair are stored."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        root = item
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while item != root:  # path compression
            self.parent[item], item = root, self.parent.get(item, item)
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def members(self) -> set[int]:
        return set(self.parent) | set(self.parent.values())


def deduplicate(
    store: Store,
    documents: VersionRef,
    minhash: VersionRef,
    settings: MinHashSettings | None = None,
    publish: PublishSettings | None = None,
    skip_versions: Collection[str] = (),
) -> StageResult:
    """Publish the documents of `documents` that duplicate nothing published before.

    Every earlier version must be readable: a corrupt one stops the run naming its path,
    unless its id is in `skip_versions` (recorded in the version's parameters)."""
    settings = settings or MinHashSettings()
    publish = publish or PublishSettings()
    # Documents re-extracted from every page fetched so far make a full dataset of their
    # own, deduplicated against nothing earlier; later increments build on it.
    documents_manifest = store.manifest(documents)
    full = bool(documents_manifest.parameters.get("all_fetches"))
    parameters = {
        "minhash": settings.parameters(),
        "publish": publish.parameters(),
        "full": full,
        "skip_versions": sorted(skip_versions),
    }
    earlier = [] if full else _current_dataset(store, documents, skip_versions)

    def build(work: StageWrite) -> None:
        for manifest in earlier:
            if manifest.parameters["minhash"] != settings.parameters():
                raise ValueError(
                    f"{manifest.ref} was indexed with other MinHash settings; its signatures "
                    "cannot be compared with these (rebuild with its settings)"
                )
        _publish(store, documents, minhash, earlier, settings, publish, parameters, work)

    return run_stage(
        store,
        STAGE,
        (documents, minhash),
        parameters,
        build,
        parents=tuple(m.ref for m in earlier),
        # Documents that hold none add nothing to the dataset: its newest version stands.
        nothing_new=lambda: (
            not full
            and all(
                (f.rows or 0) == 0
                for f in documents_manifest.files
                if f.path.startswith("documents/")
            )
        ),
    )


def _publish(
    store: Store,
    documents: VersionRef,
    minhash: VersionRef,
    earlier: list[Manifest],
    settings: MinHashSettings,
    publish: PublishSettings,
    parameters: dict[str, Any],
    work: StageWrite,
) -> None:
    """Cluster the new documents with each other and with `earlier` versions, and write
    the survivors, the clusters, the index and the card into `work`."""
    new = _load_new(store, documents, minhash, settings)
    doc_ids = new["doc_id"].combine_chunks()
    union = _UnionFind()
    kinds: dict[int, tuple[str, float]] = {}
    published_match: dict[int, tuple[str, str]] = {}  # position -> (version, doc id) kept

    _exact_pairs(new, union, kinds)
    for manifest in earlier:
        _match_earlier(store, manifest, new, settings, kinds, published_match)
    _near_pairs(new, settings, union, kinds)

    # Documents in no pair (nearly all of them) are kept without ever becoming objects.
    clusters: dict[int, list[int]] = defaultdict(list)
    for position in union.members() | set(published_match):
        clusters[union.find(position)].append(position)
    keep = np.ones(new.num_rows, dtype=bool)
    cluster_rows: list[dict[str, Any]] = []
    karma = new["karma"].fill_null(0).to_numpy(zero_copy_only=False)
    first_seen = (
        pc.cast(new["first_seen"], pa.int64()).fill_null(2**62).to_numpy(zero_copy_only=False)
    )
    for members in clusters.values():
        keep[members] = False
        holder = next((published_match[i] for i in sorted(members) if i in published_match), None)
        if holder is not None:
            kept_in, survivor_id = holder
        else:
            best = min(members, key=lambda i: (-karma[i], first_seen[i], doc_ids[i].as_py()))
            keep[best] = True
            kept_in, survivor_id = "this", doc_ids[best].as_py()
        for i in sorted(members):
            doc = doc_ids[i].as_py()
            if doc != survivor_id:
                kind, similarity = kinds.get(i, ("near", 0.0))
                cluster_rows.append(
                    {
                        "doc_id": doc,
                        "kept_doc_id": survivor_id,
                        "kind": kind,
                        "similarity": similarity,
                        "kept_in": kept_in,
                    }
                )

    kept_mask = pa.array(keep)
    kept_ids = doc_ids.filter(kept_mask)
    counts = work.counts
    counts.add("documents_in", new.num_rows)
    counts.add("exact_duplicates", sum(1 for r in cluster_rows if r["kind"] == "exact"))
    counts.add("near_duplicates", sum(1 for r in cluster_rows if r["kind"] == "near"))
    counts.add(
        "duplicates_of_earlier_versions", sum(1 for r in cluster_rows if r["kept_in"] != "this")
    )
    counts.add("published", len(kept_ids))
    out = work.out
    _write_shards(store, documents, kept_ids, out, publish)
    clusters_table = pa.Table.from_pylist(cluster_rows, CLUSTER_SCHEMA)
    put_table(out, "clusters/part-00000.parquet", clusters_table)
    _write_index(out, new, kept_mask, settings)
    lineage = [store.manifest(ref) for ref in _lineage(store, documents)]
    card = dataset_card(out.ref, counts.as_dict(), parameters, lineage, PUBLISHED_COLUMNS, earlier)
    out.put("README.md", card.encode())


def _current_dataset(
    store: Store, documents: VersionRef, skip_versions: Collection[str]
) -> list[Manifest]:
    """The versions that make up the dataset now: the newest full version and every
    version after it (all of them, if none is full). Versions made from these same
    documents (other settings or code) are left out: matching against them would find
    every document already published."""
    every = store.checked_versions(STAGE.name, skip_versions)
    published = [m for m in every if m.parents[0] != documents]
    starts = [i for i, m in enumerate(published) if m.parameters.get("full")]
    return published[starts[-1] if starts else 0 :]


def _load_new(
    store: Store, documents: VersionRef, minhash: VersionRef, settings: MinHashSettings
) -> pa.Table:
    """The MinHash rows of the new documents with the two fields the survivor rule needs
    (no text), in the documents' own order."""
    rows = _read_all(store, minhash, "minhash/", minhash_schema(settings))
    columns = ["doc_id", "karma", "first_seen"]
    docs = _read_all(store, documents, "documents/", DOCUMENTS_SCHEMA, columns)
    position = pc.index_in(rows["doc_id"], value_set=docs["doc_id"].combine_chunks())
    if position.null_count or len(rows) != len(docs):
        raise ValueError(f"{minhash} does not match the documents of {documents}")
    for name in ("karma", "first_seen"):
        rows = rows.append_column(name, docs[name].take(position))
    return rows


def _read_all(
    store: Store,
    ref: VersionRef,
    prefix: str,
    schema: pa.Schema,
    columns: list[str] | None = None,
) -> pa.Table:
    """Every file under `prefix` of a version as one table (empty, with `schema`, if none)."""
    tables = [schema.empty_table().select(columns or schema.names)]
    for entry in store.manifest(ref).files:
        if entry.path.startswith(prefix):
            with store.open_verified(ref, entry) as handle:
                tables.append(pq.read_table(handle, columns=columns))
    return pa.concat_tables(tables, promote_options="permissive")


def _exact_pairs(new: pa.Table, union: _UnionFind, kinds: dict[int, tuple[str, float]]) -> None:
    first: dict[str, int] = {}
    for position, digest in enumerate(new["text_hash"].to_pylist()):
        if digest in first:
            union.union(first[digest], position)
            kinds[position] = kinds[first[digest]] = ("exact", 1.0)
        else:
            first[digest] = position


def _near_pairs(
    new: pa.Table,
    settings: MinHashSettings,
    union: _UnionFind,
    kinds: dict[int, tuple[str, float]],
) -> None:
    """Pairs among the new documents that share a band key and pass the estimate."""
    bands = _matrix(new["bands"], settings.bands)
    sigs = _matrix(new["signature"], settings.num_perm)
    for band in range(settings.bands):
        keys = bands[:, band]
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        # Only buckets of two or more: start where a run of equal keys begins.
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts, ends, strict=True):
            if end - start > 1:
                for a, b in _bucket_pairs(order[start:end]):
                    _link(a, b, sigs, settings, union, kinds)


def _bucket_pairs(bucket: np.ndarray) -> Iterable[tuple[int, int]]:
    if len(bucket) * (len(bucket) - 1) // 2 <= _MAX_BUCKET_PAIRS:
        for i in range(len(bucket)):
            for j in range(i + 1, len(bucket)):
                yield int(bucket[i]), int(bucket[j])
    else:
        for j in range(1, len(bucket)):
            yield int(bucket[0]), int(bucket[j])


def _link(
    a: int,
    b: int,
    sigs: np.ndarray,
    settings: MinHashSettings,
    union: _UnionFind,
    kinds: dict[int, tuple[str, float]],
) -> None:
    if union.find(a) == union.find(b):
        return
    similarity = float(np.mean(sigs[a] == sigs[b]))
    if similarity >= settings.threshold:
        union.union(a, b)
        kinds.setdefault(a, ("near", similarity))
        kinds.setdefault(b, ("near", similarity))


def _match_earlier(
    store: Store,
    manifest: Manifest,
    new: pa.Table,
    settings: MinHashSettings,
    kinds: dict[int, tuple[str, float]],
    published_match: dict[int, tuple[str, str]],
) -> None:
    """Find new documents that an earlier version already published (or a twin of)."""
    ref = manifest.ref
    # Exact: the earlier version's text hashes.
    with store.open_verified(ref, "index/hashes.parquet") as handle:
        hashes = pq.read_table(handle)
    hit = hashes.filter(pc.is_in(hashes["text_hash"], value_set=new["text_hash"]))
    old_by_hash = dict(zip(hit["text_hash"].to_pylist(), hit["doc_id"].to_pylist(), strict=True))
    for position, digest in enumerate(new["text_hash"].to_pylist()):
        if digest in old_by_hash:
            published_match.setdefault(position, (str(ref), old_by_hash[digest]))
            kinds[position] = ("exact", 1.0)
    # Near: band by band, the earlier keys equal to new ones, then their signatures.
    bands = _matrix(new["bands"], settings.bands)
    candidates: dict[str, set[int]] = defaultdict(set)
    for band in range(settings.bands):
        with store.open_verified(ref, f"index/band-{band:03d}.parquet") as handle:
            old = pq.read_table(handle)
        matched = old.filter(pc.is_in(old["key"], value_set=pa.array(bands[:, band])))
        if matched.num_rows == 0:
            continue
        wanted = set(matched["key"].to_pylist())
        by_key: dict[int, list[int]] = defaultdict(list)
        for position in np.flatnonzero(np.isin(bands[:, band], list(wanted))):
            by_key[int(bands[position, band])].append(int(position))
        for key, old_doc in zip(
            matched["key"].to_pylist(), matched["doc_id"].to_pylist(), strict=True
        ):
            candidates[old_doc].update(by_key[key])
    if not candidates:
        return
    with store.open_verified(ref, "index/signatures.parquet") as handle:
        sigs = pq.read_table(handle)
    sigs = sigs.filter(pc.is_in(sigs["doc_id"], value_set=pa.array(sorted(candidates))))
    old_matrix = _matrix(sigs["signature"], settings.num_perm)
    new_matrix = _matrix(new["signature"], settings.num_perm)
    for row, old_doc in enumerate(sigs["doc_id"].to_pylist()):
        for position in candidates[old_doc]:
            similarity = float(np.mean(old_matrix[row] == new_matrix[position]))
            if similarity >= settings.threshold:
                published_match.setdefault(position, (str(ref), old_doc))
                kinds.setdefault(position, ("near", similarity))


def _matrix(column: pa.ChunkedArray, width: int) -> np.ndarray:
    """A fixed-size list column as an (n, width) array of its value type."""
    values = pc.list_flatten(column.combine_chunks())
    return values.to_numpy(zero_copy_only=False).reshape(-1, width)


def _write_shards(
    store: Store,
    documents: VersionRef,
    kept_ids: pa.Array,
    out: VersionWriter,
    publish: PublishSettings,
) -> None:
    """Stream the kept documents, part by part, into shards of `rows_per_shard` rows."""
    columns = list(PUBLISHED_COLUMNS)
    schema = pa.schema([DOCUMENTS_SCHEMA.field(name) for name in columns])
    shards = RollingParquetWriter(
        out, "data", schema, publish.rows_per_shard, publish.rows_per_row_group
    )
    for entry in store.manifest(documents).files:
        if entry.path.startswith("documents/"):
            with store.open_verified(documents, entry) as handle:
                part = pq.read_table(handle, columns=columns)
            part = part.filter(pc.is_in(part["doc_id"], value_set=kept_ids))
            shards.write(part.sort_by("doc_id").cast(schema))
    shards.close()


def _write_index(
    out: VersionWriter, new: pa.Table, kept: pa.Array, settings: MinHashSettings
) -> None:
    """What a later run needs to match against this version: hashes, band keys (sorted
    per band), signatures, of the documents it publishes."""
    put_table(out, "index/hashes.parquet", new.select(["doc_id", "text_hash"]).filter(kept))
    put_table(out, "index/signatures.parquet", new.select(["doc_id", "signature"]).filter(kept))
    doc_ids = new["doc_id"].filter(kept)
    bands = _matrix(new["bands"].filter(kept), settings.bands)
    for band in range(settings.bands):
        table = pa.table({"key": pa.array(bands[:, band], pa.uint64()), "doc_id": doc_ids})
        put_table(out, f"index/band-{band:03d}.parquet", table.sort_by("key"))


def _lineage(store: Store, documents: VersionRef) -> list[VersionRef]:
    """documents, then its fetches, then their links: the stages behind this version."""
    chain = [documents]
    while True:
        parents = store.manifest(chain[-1]).parents
        if not parents:
            return chain
        chain.append(parents[0])


@dataclass(frozen=True)
class DedupOptions:
    """Every setting of the dedup stages (minhash, then webtext): the only place their
    defaults live."""

    minhash: MinHashSettings = field(default_factory=MinHashSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    # Earlier webtext versions the operator leaves out of an incremental run by id (a
    # corrupt one otherwise stops it).
    skip_versions: tuple[str, ...] = ()


def publish_dataset(
    store: Store,
    documents: VersionRef,
    options: DedupOptions | None = None,
    *,
    map: Map = map,
    progress: Progress | None = None,
) -> StageResult:
    """The stage package's entry: MinHash signatures of `documents` (parts on `map`,
    `progress` counting parts), then the deduplicated `webtext` version."""
    options = options or DedupOptions()
    minhash = compute_minhash(store, documents, options.minhash, map=map, progress=progress)
    return deduplicate(
        store, documents, minhash.ref, options.minhash, options.publish, options.skip_versions
    )
