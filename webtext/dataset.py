"""The published dataset as readers see it: a `webtext` version together with every earlier
version it was deduplicated against (its manifest names them as parents), oldest first.

An incremental run publishes only new documents; training, tokenizer fitting and
decontamination want the whole dataset as of that version, which this defines, and
`pull_dataset` copies it into one folder readers can glob (`DEST/data/*.parquet`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from webtext.store import FileEntry, Manifest, Store, StoreError, VersionRef, replace_folder

STAGE = "webtext"
_BATCH = 1_024
PULL_MARKER = "dataset.json"  # what makes a folder a pull of the dataset
CARD = "README.md"
_PULL_ENTRIES = {PULL_MARKER, CARD, "data"}


@dataclass(frozen=True)
class DatasetPart:
    version: VersionRef
    path: str  # data/part-NNNNN.parquet inside the version
    rows: int


def dataset_manifests(store: Store, webtext: VersionRef) -> list[Manifest]:
    """The manifests of the earlier versions `webtext` names, oldest first, then its own."""
    manifest = store.manifest(webtext)
    earlier = [store.manifest(p) for p in manifest.parents if p.stage == STAGE]
    earlier.sort(key=lambda m: m.created_at)
    return [*earlier, manifest]


def dataset_versions(store: Store, webtext: VersionRef) -> list[VersionRef]:
    """`webtext` and the earlier versions it names, oldest first."""
    return [m.ref for m in dataset_manifests(store, webtext)]


def dataset_parts(store: Store, webtext: VersionRef) -> list[DatasetPart]:
    return [
        DatasetPart(manifest.ref, entry.path, rows)
        for manifest in dataset_manifests(store, webtext)
        for entry, rows in _data_parts(manifest)
    ]


def _data_parts(manifest: Manifest) -> list[tuple[FileEntry, int]]:
    """A `webtext` version's data parts with their rows (its writer records them)."""
    parts = []
    for entry in manifest.files:
        if entry.path.startswith("data/"):
            if entry.rows is None:
                raise StoreError(f"corrupt manifest of {manifest.ref}: {entry.path} has no rows")
            parts.append((entry, entry.rows))
    return parts


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
        with store.open_verified(part.version, part.path) as handle:
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


def documents_in(manifest: Manifest) -> int:
    """How many documents a `webtext` version publishes (rows of its data parts)."""
    return sum(rows for _, rows in _data_parts(manifest))


@dataclass(frozen=True)
class PulledDataset:
    """Where `pull_dataset` put the dataset and what it holds."""

    path: str  # DEST, as given
    webtext: VersionRef  # the version the dataset is as of
    versions: list[VersionRef]  # the versions copied, oldest first
    documents: int  # documents copied
    files: int  # data parts copied


def pull_dataset(
    store: Store, webtext: VersionRef, dest: str, increment_only: bool = False
) -> PulledDataset:
    """Copy the published dataset as of `webtext` (its data parts and those of the earlier
    versions it names; only its own with `increment_only`) into `dest`:

        dest/data/<version>-part-NNNNN.parquet   every part, each sha256-checked as copied
        dest/README.md                           the dataset card of `webtext`
        dest/dataset.json                        versions, document counts, files and sha256s

    The copy is written beside `dest` and renamed into place, so `dest` holds a whole pull or
    nothing new. `dest` must be absent, empty, or a previous pull (which is replaced); never
    a file, nor inside the store (nor the store inside it).
    """
    if webtext.stage != STAGE:
        raise ValueError(f"{webtext} is not a version of the {STAGE!r} stage")
    fs, path = url_to_fs(dest)
    path = path.rstrip("/") or "/"
    _check_destination(store, fs, path, dest)
    manifests = dataset_manifests(store, webtext)
    copied = manifests[-1:] if increment_only else manifests
    parent, name = path.rsplit("/", 1) if "/" in path else (".", path)
    parent = parent or "/"
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{name}.pull-{uuid.uuid4().hex[:8]}"
    try:
        fs.makedirs(tmp, exist_ok=True)
        files: list[dict[str, Any]] = []
        counts: list[dict[str, Any]] = []
        for manifest in copied:
            ref, documents = manifest.ref, 0
            for entry, rows in _data_parts(manifest):
                local = f"data/{ref.version}-{entry.path[len('data/') :].replace('/', '-')}"
                store.copy_file(ref, entry, fs, f"{tmp}/{local}")
                documents += rows
                files.append(_file_record(local, ref, entry.path, rows, entry.size, entry.sha256))
            counts.append(
                {
                    "version": ref.version,
                    "created_at": manifest.created_at,
                    "full": bool(manifest.parameters.get("full")),
                    "documents": documents,
                }
            )
        card = next((f for f in manifests[-1].files if f.path == CARD), None)
        if card is not None:
            store.copy_file(webtext, card, fs, f"{tmp}/{CARD}")
            files.append(_file_record(CARD, webtext, card.path, None, card.size, card.sha256))
        total = sum(c["documents"] for c in counts)
        summary = {
            "dataset": STAGE,
            "as_of": webtext.version,
            "increment_only": increment_only,
            "documents": total,
            "versions": counts,
            "dataset_versions": [m.version for m in manifests],
            "source": store.root_url,
            "files": files,
        }
        fs.pipe_file(f"{tmp}/{PULL_MARKER}", (json.dumps(summary, indent=2) + "\n").encode())
        replace_folder(fs, tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)
        raise
    data_files = sum(1 for f in files if f["path"].startswith("data/"))
    return PulledDataset(dest, webtext, [m.ref for m in copied], total, data_files)


def _file_record(
    path: str, ref: VersionRef, source: str, rows: int | None, size: int, sha256: str
) -> dict[str, Any]:
    return {
        "path": path,
        "version": ref.version,
        "source": source,
        "rows": rows,
        "size": size,
        "sha256": sha256,
    }


def _check_destination(store: Store, fs: Any, path: str, dest: str) -> None:
    if problem := store.unfit_destination(fs, path):
        raise StoreError(f"cannot pull into {dest}: {problem}")
    if not fs.isdir(path):
        return
    entries = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
    if not entries:
        return
    if entries <= _PULL_ENTRIES and _is_pull(fs, f"{path}/{PULL_MARKER}"):
        return
    raise StoreError(
        f"cannot pull into {dest}: it is not empty and holds no earlier pull of the dataset "
        f"(found {', '.join(sorted(entries)[:3])}{', ...' if len(entries) > 3 else ''})"
    )


def _is_pull(fs: Any, marker: str) -> bool:
    try:
        return json.loads(fs.cat_file(marker)).get("dataset") == STAGE
    except (OSError, ValueError, AttributeError):
        return False
