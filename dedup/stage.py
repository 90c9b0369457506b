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
   The new documents' text hashes and band keys are spilled to Parquet by key range and
   grouped one range at a time, their signatures read from a flat file
   (`dedup/clustering.py`): memory does not grow with the corpus beyond the union-find.
3. Clusters (union-find over both kinds of pairs): a cluster that holds a published
   document keeps it and drops every new member; otherwise the member with the highest
   karma survives, then the earliest first seen, then the smallest doc id.

The version holds the published shards (`data/part-NNNNN.parquet`, zstd), the cluster
membership of every dropped document (`clusters/part-00000.parquet`), the index of its
own documents for later runs (`index/`), and a dataset card (`README.md`).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dedup.card import dataset_card
from dedup.clustering import SPILL_BUDGET_BYTES, KeySpill, SignatureFile, UnionFind, key_ranges
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
PUBLISHED_SCHEMA = pa.schema([DOCUMENTS_SCHEMA.field(name) for name in PUBLISHED_COLUMNS])
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


def deduplicate(
    store: Store,
    documents: VersionRef,
    minhash: VersionRef,
    settings: MinHashSettings | None = None,
    publish: PublishSettings | None = None,
    skip_versions: Collection[str] = (),
    spill_budget_bytes: int = SPILL_BUDGET_BYTES,
) -> StageResult:
    """Publish the documents of `documents` that duplicate nothing published before.

    Every earlier version must be readable: a corrupt one stops the run naming its path,
    unless its id is in `skip_versions` (recorded in the version's parameters).
    `spill_budget_bytes` bounds the memory of one key range while clustering (the output
    does not depend on it)."""
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
        _publish(
            store,
            documents,
            minhash,
            earlier,
            settings,
            publish,
            parameters,
            work,
            spill_budget_bytes,
        )

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


@dataclass
class _NewDocuments:
    """The new documents as clustering reads them, spilled to a temporary folder: each
    key kind range-partitioned on disk, the signatures in a flat file."""

    count: int
    parts: list[tuple[str, str, int, int]]  # minhash part, documents part, first position, rows
    hashes: KeySpill  # key (text hash prefix), position, text_hash
    bands: list[KeySpill]  # per band: key, position, doc_id
    signatures: SignatureFile

    def close(self) -> None:
        for spill in (self.hashes, *self.bands):
            spill.close()
        self.signatures.close()


class _Kinds:
    """How each document joined its cluster (5 bytes a document): an exact match, or near
    with the first estimate that linked it (a later link does not change it)."""

    NONE, EXACT, NEAR = 0, 1, 2

    def __init__(self, size: int) -> None:
        self.code = np.zeros(size, np.int8)
        self.similarity = np.zeros(size, np.float32)

    def exact(self, position: int) -> None:
        self.code[position], self.similarity[position] = self.EXACT, 1.0

    def near(self, position: int, similarity: float) -> None:
        if self.code[position] == self.NONE:
            self.code[position], self.similarity[position] = self.NEAR, similarity

    def names(self, positions: np.ndarray) -> pa.Array:
        return pa.array(np.where(self.code[positions] == self.EXACT, "exact", "near"), pa.string())


# MinHash rows read at once (a batch of 128 uint32 and 16 uint64 each: 1.2 KB a row).
_ROWS_PER_BATCH = 16_384
# Candidate pairs whose signatures are compared at once (two rows of num_perm uint32 each).
_PAIRS_PER_BATCH = 16_384


def _publish(
    store: Store,
    documents: VersionRef,
    minhash: VersionRef,
    earlier: list[Manifest],
    settings: MinHashSettings,
    publish: PublishSettings,
    parameters: dict[str, Any],
    work: StageWrite,
    spill_budget_bytes: int,
) -> None:
    """Cluster the new documents with each other and with `earlier` versions, and write
    the survivors, the clusters, the index and the card into `work`."""
    with tempfile.TemporaryDirectory(prefix="webtext-dedup-") as folder:
        new = _spill_new(store, documents, minhash, settings, Path(folder), spill_budget_bytes)
        try:
            union = UnionFind(new.count)
            kinds = _Kinds(new.count)
            published_match: dict[int, tuple[str, str]] = {}  # position -> (version, doc id)
            _exact_pairs(new, union, kinds)
            for manifest in earlier:
                _match_earlier(store, manifest, new, settings, kinds, published_match)
            _near_pairs(new, settings, union, kinds)
            dropped, dropped_ids, clusters = _clusters(
                store, documents, new, union, kinds, published_match
            )

            kind_counts = clusters["kind"].value_counts().to_pylist()
            by_kind = {item["values"]: item["counts"] for item in kind_counts}
            counts = work.counts
            counts.add("documents_in", new.count)
            counts.add("exact_duplicates", by_kind.get("exact", 0))
            counts.add("near_duplicates", by_kind.get("near", 0))
            earlier_kept = pc.sum(pc.not_equal(clusters["kept_in"], "this")).as_py() or 0
            counts.add("duplicates_of_earlier_versions", earlier_kept)
            counts.add("published", new.count - len(dropped))
            out = work.out
            put_table(out, "clusters/part-00000.parquet", clusters)
            del clusters  # a row per duplicate: not held through the two passes below
            _write_shards(store, documents, dropped_ids, out, publish)
            _write_index(store, minhash, new, dropped, out, settings)
        finally:
            new.close()
    lineage = [store.manifest(ref) for ref in _lineage(store, documents)]
    card = dataset_card(out.ref, counts.as_dict(), parameters, lineage, PUBLISHED_SCHEMA, earlier)
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


def _spill_new(
    store: Store,
    documents: VersionRef,
    minhash: VersionRef,
    settings: MinHashSettings,
    folder: Path,
    spill_budget_bytes: int,
) -> _NewDocuments:
    """One pass over the MinHash parts: text hashes and each band's keys into key-range
    spills, signatures into a flat file. Nothing of the corpus' size stays in memory."""
    minhash_manifest = store.manifest(minhash)
    document_rows = {
        f.path: f.rows for f in store.manifest(documents).files if f.path.startswith("documents/")
    }
    entries = [f for f in minhash_manifest.files if f.path.startswith("minhash/")]
    mismatch = ValueError(f"{minhash} does not match the documents of {documents}")
    if minhash_manifest.parents[:1] != (documents,) or len(entries) != len(document_rows):
        raise mismatch
    ranges = key_ranges(sum(f.rows or 0 for f in entries), spill_budget_bytes)
    hash_schema = pa.schema(
        [("key", pa.uint64()), ("position", pa.int64()), ("text_hash", pa.string())]
    )
    band_schema = pa.schema(
        [("key", pa.uint64()), ("position", pa.int64()), ("doc_id", pa.string())]
    )
    new = _NewDocuments(
        count=0,
        parts=[],
        hashes=KeySpill(folder / "hashes", hash_schema, ranges),
        bands=[
            KeySpill(folder / f"band-{b:03d}", band_schema, ranges) for b in range(settings.bands)
        ],
        signatures=SignatureFile(folder / "signatures.u32", settings.num_perm),
    )
    try:
        for entry in entries:
            part = entry.path.replace("minhash/", "documents/", 1)
            start = new.count
            with store.open_verified(minhash, entry) as handle:
                reader = pq.ParquetFile(handle)
                if document_rows.get(part, -1) not in (None, reader.metadata.num_rows):
                    raise mismatch
                # Batches, not the part at once: memory is a batch's, whatever the part's size.
                for batch in reader.iter_batches(_ROWS_PER_BATCH):
                    _spill_batch(new, pa.Table.from_batches([batch]), settings)
            new.parts.append((entry.path, part, start, new.count - start))
    except BaseException:
        new.close()
        raise
    return new


def _spill_batch(new: _NewDocuments, rows: pa.Table, settings: MinHashSettings) -> None:
    """One batch of MinHash rows into the spills and the signature file."""
    position = pa.array(np.arange(new.count, new.count + rows.num_rows), pa.int64())
    digests = rows["text_hash"].combine_chunks()
    prefixes = "".join(digest[:16] for digest in digests.to_pylist())
    hash_keys = np.frombuffer(bytes.fromhex(prefixes), ">u8").astype(np.uint64)
    new.hashes.add(pa.table({"key": hash_keys, "position": position, "text_hash": digests}))
    bands = _matrix(rows["bands"], settings.bands)
    for band, spill in enumerate(new.bands):
        spill.add(pa.table({"key": bands[:, band], "position": position, "doc_id": rows["doc_id"]}))
    new.signatures.append(_matrix(rows["signature"], settings.num_perm))
    new.count += rows.num_rows


def _exact_pairs(new: _NewDocuments, union: UnionFind, kinds: _Kinds) -> None:
    """Documents with equal text hashes join the first of them."""
    for table in new.hashes.sorted_ranges():
        table = table.sort_by([("text_hash", "ascending"), ("position", "ascending")])
        digests = table["text_hash"].combine_chunks()
        repeats = pc.equal(digests[1:], digests[:-1]).to_numpy(zero_copy_only=False)
        if not repeats.any():  # nearly always: no Python work for the range
            continue
        positions = table["position"].to_numpy()
        firsts = np.flatnonzero(np.r_[True, ~repeats])  # where each digest's run starts
        first_of = firsts[np.searchsorted(firsts, np.arange(len(positions)), "right") - 1]
        for row in np.flatnonzero(np.r_[False, repeats]).tolist():
            first = int(positions[first_of[row]])
            union.union(first, int(positions[row]))
            kinds.exact(first)
            kinds.exact(int(positions[row]))


def _near_pairs(
    new: _NewDocuments,
    settings: MinHashSettings,
    union: UnionFind,
    kinds: _Kinds,
) -> None:
    """Pairs among the new documents that share a band key and pass the estimate, band by
    band, buckets in key order (the order decides which similarity a member records)."""
    for spill in new.bands:
        for table in spill.sorted_ranges():
            first, second = _bucket_pairs(table["key"].to_numpy(), table["position"].to_numpy())
            for start in range(0, len(first), _PAIRS_PER_BATCH):
                a = first[start : start + _PAIRS_PER_BATCH]
                b = second[start : start + _PAIRS_PER_BATCH]
                similarity = (new.signatures.take(a) == new.signatures.take(b)).mean(axis=1)
                for x, y, estimate in zip(a.tolist(), b.tolist(), similarity.tolist(), strict=True):
                    if estimate >= settings.threshold and union.find(x) != union.find(y):
                        union.union(x, y)
                        kinds.near(x, estimate)
                        kinds.near(y, estimate)


def _bucket_pairs(keys: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs of key-sorted rows: every pair of a bucket (rows sharing a key),
    or, in a bucket too big for that, its first member with each other one; bucket by
    bucket, in key order."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else keys[:0]
    sizes = np.diff(np.r_[starts, len(keys)])
    twos = starts[sizes == 2]  # nearly every bucket: done at once
    first, second, bucket = [positions[twos]], [positions[twos + 1]], [twos]
    for start, size in zip(starts[sizes > 2].tolist(), sizes[sizes > 2].tolist(), strict=True):
        members = positions[start : start + size]
        if size * (size - 1) // 2 <= _MAX_BUCKET_PAIRS:
            i, j = np.triu_indices(size, 1)
        else:
            i, j = np.zeros(size - 1, np.int64), np.arange(1, size)
        first.append(members[i])
        second.append(members[j])
        bucket.append(np.full(len(i), start))
    order = np.argsort(np.concatenate(bucket), kind="stable")
    return np.concatenate(first)[order], np.concatenate(second)[order]


def _match_earlier(
    store: Store,
    manifest: Manifest,
    new: _NewDocuments,
    settings: MinHashSettings,
    kinds: _Kinds,
    published_match: dict[int, tuple[str, str]],
) -> None:
    """Find new documents that an earlier version already published (or a twin of)."""
    ref = manifest.ref
    # Exact: the earlier version's text hashes.
    with store.open_verified(ref, "index/hashes.parquet") as handle:
        hashes = pq.read_table(handle)
    for table in new.hashes.sorted_ranges():
        hit = hashes.filter(pc.is_in(hashes["text_hash"], value_set=table["text_hash"]))
        old_by_hash = dict(
            zip(hit["text_hash"].to_pylist(), hit["doc_id"].to_pylist(), strict=True)
        )
        for position, digest in zip(
            table["position"].to_pylist(), table["text_hash"].to_pylist(), strict=True
        ):
            if digest in old_by_hash:
                published_match.setdefault(position, (str(ref), old_by_hash[digest]))
                kinds.exact(position)
    # Near: band by band, the earlier keys equal to new ones, then their signatures.
    candidates: dict[str, set[int]] = defaultdict(set)
    for band, spill in enumerate(new.bands):
        with store.open_verified(ref, f"index/band-{band:03d}.parquet") as handle:
            old = pq.read_table(handle)
        for table in spill.sorted_ranges():
            matched = old.filter(pc.is_in(old["key"], value_set=table["key"]))
            if matched.num_rows == 0:
                continue
            keys = table["key"].to_numpy()
            hit = np.isin(keys, matched["key"].to_numpy())
            by_key: dict[int, list[int]] = defaultdict(list)
            for key, position in zip(
                keys[hit].tolist(), table["position"].to_numpy()[hit].tolist(), strict=True
            ):
                by_key[key].append(position)
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
    for row, old_doc in enumerate(sigs["doc_id"].to_pylist()):
        positions = np.array(sorted(candidates[old_doc]), np.int64)
        similarity = (new.signatures.take(positions) == old_matrix[row]).mean(axis=1)
        for position, estimate in zip(positions.tolist(), similarity.tolist(), strict=True):
            if estimate >= settings.threshold:
                published_match.setdefault(position, (str(ref), old_doc))
                kinds.near(position, estimate)


def _clusters(
    store: Store,
    documents: VersionRef,
    new: _NewDocuments,
    union: UnionFind,
    kinds: _Kinds,
    published_match: dict[int, tuple[str, str]],
) -> tuple[np.ndarray, pa.Array, pa.Table]:
    """The survivor rule over every cluster: the positions dropped (ascending), their doc
    ids, and the clusters table, a row per dropped document (clusters by smallest member, members
    ascending). A cluster holding a published document keeps that and drops every new
    member; otherwise the highest karma, then earliest first seen, then smallest doc id
    survives. Columns, not objects: documents in no cluster are never read."""
    members = np.union1d(
        union.members(), np.fromiter(published_match, np.int64, len(published_match))
    )
    roots = np.fromiter((union.find(p) for p in members.tolist()), np.int64, len(members))
    order = np.argsort(roots, kind="stable")  # members are ascending: now by cluster too
    members, roots = members[order], roots[order]
    fields = _member_fields(store, documents, new, members)
    doc_ids = fields["doc_id"].combine_chunks()
    # The best member of each cluster: sorted by (cluster, -karma, first seen, doc id).
    ranked = pa.table(
        {
            "root": roots,
            "karma": pc.negate(fields["karma"].fill_null(0)),
            "first_seen": pc.cast(fields["first_seen"], pa.int64()).fill_null(2**62),
            "doc_id": doc_ids,
            "index": np.arange(len(members)),
        }
    ).sort_by(
        [
            ("root", "ascending"),
            ("karma", "ascending"),
            ("first_seen", "ascending"),
            ("doc_id", "ascending"),
        ]
    )
    ranked_roots = ranked["root"].to_numpy()
    heads = (
        np.flatnonzero(np.r_[True, ranked_roots[1:] != ranked_roots[:-1]])
        if len(members)
        else ranked_roots[:0]
    )
    cluster_roots = ranked_roots[heads]
    best = ranked["index"].to_numpy()[heads]
    survivor = doc_ids.take(pa.array(best)).to_pylist()
    kept_in = ["this"] * len(cluster_roots)
    # A cluster with a published document: the first such member's (by position) survives.
    held = np.zeros(len(cluster_roots), bool)
    for position in sorted(published_match):
        cluster = int(np.searchsorted(cluster_roots, union.find(position)))
        if not held[cluster]:
            held[cluster] = True
            kept_in[cluster], survivor[cluster] = published_match[position]
    cluster_of = np.searchsorted(cluster_roots, roots)
    is_survivor = (np.arange(len(members)) == best[cluster_of]) & ~held[cluster_of]
    survivor_ids = pa.array(survivor, pa.string()).take(pa.array(cluster_of))
    listed = pc.not_equal(doc_ids, survivor_ids)
    table = pa.table(
        {
            "doc_id": doc_ids,
            "kept_doc_id": survivor_ids,
            "kind": kinds.names(members),
            "similarity": kinds.similarity[members],
            "kept_in": pa.array(kept_in, pa.string()).take(pa.array(cluster_of)),
        },
        schema=CLUSTER_SCHEMA,
    ).filter(listed)
    dropped = pa.array(~is_survivor)
    return np.sort(members[~is_survivor]), doc_ids.filter(dropped), table


def _member_fields(
    store: Store, documents: VersionRef, new: _NewDocuments, members: np.ndarray
) -> pa.Table:
    """doc_id, karma and first_seen of each position of `members` (in its order), read
    from the documents parts that hold one."""
    order = np.argsort(members, kind="stable")
    ascending = members[order]
    tables = [DOCUMENTS_SCHEMA.empty_table().select(["doc_id", "karma", "first_seen"])]
    for _, part, start, rows in new.parts:
        inside = ascending[(ascending >= start) & (ascending < start + rows)]
        if len(inside):
            with store.open_verified(documents, part) as handle:
                table = pq.read_table(handle, columns=["doc_id", "karma", "first_seen"])
            tables.append(table.take(pa.array(inside - start)))
    fields = pa.concat_tables(tables, promote_options="permissive")
    return fields.take(pa.array(np.argsort(order, kind="stable")))


def _matrix(column: pa.ChunkedArray, width: int) -> np.ndarray:
    """A fixed-size list column as an (n, width) array of its value type."""
    values = pc.list_flatten(column.combine_chunks())
    return values.to_numpy(zero_copy_only=False).reshape(-1, width)


def _write_shards(
    store: Store,
    documents: VersionRef,
    dropped_ids: pa.Array,
    out: VersionWriter,
    publish: PublishSettings,
) -> None:
    """Stream the kept documents, part by part, into shards of `rows_per_shard` rows."""
    columns, schema = list(PUBLISHED_COLUMNS), PUBLISHED_SCHEMA
    shards = RollingParquetWriter(
        out, "data", schema, publish.rows_per_shard, publish.rows_per_row_group
    )
    for entry in store.manifest(documents).files:
        if entry.path.startswith("documents/"):
            with store.open_verified(documents, entry) as handle:
                part = pq.read_table(handle, columns=columns)
            part = part.filter(pc.invert(pc.is_in(part["doc_id"], value_set=dropped_ids)))
            shards.write(part.sort_by("doc_id").cast(schema))
    shards.close()


def _write_index(
    store: Store,
    minhash: VersionRef,
    new: _NewDocuments,
    dropped: np.ndarray,
    out: VersionWriter,
    settings: MinHashSettings,
) -> None:
    """What a later run needs to match against this version: hashes, band keys (sorted
    per band), signatures, of the documents it publishes; streamed part by part."""
    with (
        _ParquetStream(out, "index/hashes.parquet", _HASHES_SCHEMA) as hashes,
        _ParquetStream(out, "index/signatures.parquet", _signatures_schema(settings)) as sigs,
    ):
        for part, _, start, _ in new.parts:
            with store.open_verified(minhash, part) as handle:
                batches = pq.ParquetFile(handle).iter_batches(
                    _ROWS_PER_BATCH, columns=["doc_id", "text_hash", "signature"]
                )
                for batch in batches:
                    table = pa.Table.from_batches([batch])
                    kept = pa.array(~np.isin(np.arange(start, start + len(table)), dropped))
                    hashes.write(table.select(["doc_id", "text_hash"]).filter(kept))
                    sigs.write(table.select(["doc_id", "signature"]).filter(kept))
                    start += len(table)
    for band, spill in enumerate(new.bands):
        with _ParquetStream(out, f"index/band-{band:03d}.parquet", _BAND_SCHEMA) as keys:
            for table in spill.sorted_ranges():
                kept = pa.array(~np.isin(table["position"].to_numpy(), dropped))
                keys.write(table.select(["key", "doc_id"]).filter(kept))


_HASHES_SCHEMA = pa.schema([("doc_id", pa.string()), ("text_hash", pa.string())])
_BAND_SCHEMA = pa.schema([("key", pa.uint64()), ("doc_id", pa.string())])


def _signatures_schema(settings: MinHashSettings) -> pa.Schema:
    schema = minhash_schema(settings)
    return pa.schema([schema.field("doc_id"), schema.field("signature")])


class _ParquetStream:
    """One file of a version written table by table (zstd), its row count recorded.
    Rows are regrouped into row groups of a fixed size, so the bytes do not depend on
    how the tables came (one range or many)."""

    ROW_GROUP = 65_536

    def __init__(self, out: VersionWriter, name: str, schema: pa.Schema) -> None:
        self.out, self.name, self.schema, self.rows = out, name, schema, 0
        self._pending: list[pa.Table] = [schema.empty_table()]
        self._pending_rows = 0

    def __enter__(self) -> _ParquetStream:
        self._handle = self.out.fs.open(self.out.path(self.name), "wb")
        self._writer = pq.ParquetWriter(self._handle, self.schema, compression="zstd")
        return self

    def write(self, table: pa.Table) -> None:
        self._pending.append(table.cast(self.schema))
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.ROW_GROUP:
            self._flush(whole_groups_only=True)

    def _flush(self, whole_groups_only: bool = False) -> None:
        pending = pa.concat_tables(self._pending)
        cut = pending.num_rows - pending.num_rows % self.ROW_GROUP
        if not whole_groups_only:
            cut = pending.num_rows
        if cut or self.rows == 0:
            self._writer.write_table(pending.slice(0, cut), self.ROW_GROUP)
        self._pending, self._pending_rows = [pending.slice(cut)], pending.num_rows - cut

    def __exit__(self, *exc: object) -> None:
        self._flush()
        self._writer.close()
        self._handle.close()
        self.out.set_rows(self.name, self.rows)


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
