"""The published dataset as readers see it: a `webtext` version together with every earlier
version it was deduplicated against (its manifest names them as parents), oldest first.

An incremental run publishes only new documents; training, tokenizer fitting and
decontamination want the whole dataset as of that version, which this defines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow.parquet as pq

from webtext.store import Store, VersionRef

STAGE = "webtext"
_BATCH = 1_024


@dataclass(frozen=True)
class DatasetPart:
    version: VersionRef
    path: str  # data/part-NNNNN.parquet inside the version
    rows: int | None


def dataset_versions(store: Store, webtext: VersionRef) -> list[VersionRef]:
    """`webtext` and the earlier versions it names, oldest first."""
    manifest = store.manifest(webtext)
    earlier = [store.manifest(p) for p in manifest.parents if p.stage == STAGE]
    earlier.sort(key=lambda m: m.created_at)
    return [*(m.ref for m in earlier), webtext]


def dataset_parts(store: Store, webtext: VersionRef) -> list[DatasetPart]:
    return [
        DatasetPart(ref, entry.path, entry.rows)
        for ref in dataset_versions(store, webtext)
        for entry in store.manifest(ref).files
        if entry.path.startswith("data/")
    ]


def iter_texts(
    store: Store,
    parts: Sequence[DatasetPart],
    limit: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The `text` of every document of `parts` in order (the first `limit`), read a batch
    at a time; `on_progress` gets documents read per batch."""
    seen = 0
    for part in parts:
        with store.fs.open(f"{store.version_dir(part.version)}/{part.path}", "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(_BATCH, columns=["text"]):
                texts = batch.column("text").to_pylist()
                if limit is not None:
                    texts = texts[: limit - seen]
                yield from texts
                seen += len(texts)
                if on_progress:
                    on_progress(len(texts))
                if limit is not None and seen >= limit:
                    return
