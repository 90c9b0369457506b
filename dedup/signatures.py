"""The `minhash` stage: one row per document of a `documents` version, computed once.

Row: doc_id, text_hash (exact-duplicate key), signature (MinHash, `num_perm` values) and
band keys (`bands` 64-bit hashes). Each documents part is one independent task
(`minhash_part`), so the parts can run on any executor: `map` here, Prefect's Dask task
runner in `flows/dedup.py`. Earlier versions' signatures are never recomputed: the dedup
stage reads them back from the `webtext` versions that published them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dedup.minhash import MinHashSettings, band_keys, signatures, text_hash
from webtext.config import code_version
from webtext.parquet import put_table
from webtext.store import StageResult, Store, VersionRef, VersionWriter

STAGE = "minhash"


def minhash_schema(settings: MinHashSettings) -> pa.Schema:
    return pa.schema(
        [
            ("doc_id", pa.string()),
            ("text_hash", pa.string()),
            ("signature", pa.list_(pa.uint32(), settings.num_perm)),
            ("bands", pa.list_(pa.uint64(), settings.bands)),
        ]
    )


def document_parts(store: Store, documents: VersionRef) -> list[str]:
    return sorted(
        f.path for f in store.manifest(documents).files if f.path.startswith("documents/")
    )


def minhash_part(
    store_url: str,
    documents: VersionRef,
    staging_dir: str,
    settings: MinHashSettings,
    part: str,
) -> str:
    """Compute one documents part's rows into the staging folder; returns its file name.

    A plain function of plain arguments, so any executor can run it on any worker that
    sees the store.
    """
    store = Store(store_url)
    with store.fs.open(f"{store.version_dir(documents)}/{part}", "rb") as handle:
        table = pq.read_table(handle, columns=["doc_id", "text"])
    texts = table["text"].to_pylist()
    matrix = signatures(texts, settings)
    keys = band_keys(matrix, settings)
    rows = pa.table(
        {
            "doc_id": table["doc_id"],
            "text_hash": pa.array([text_hash(text) for text in texts], pa.string()),
            "signature": _fixed_lists(matrix.astype(np.uint32), pa.uint32(), settings.num_perm),
            "bands": _fixed_lists(keys.astype(np.uint64), pa.uint64(), settings.bands),
        },
        schema=minhash_schema(settings),
    )
    name = part.replace("documents/", "minhash/", 1)
    put_table(VersionWriter(store.fs, staging_dir, VersionRef(STAGE, "staging")), name, rows)
    return name


def compute_minhash(
    store: Store,
    documents: VersionRef,
    settings: MinHashSettings | None = None,
    map_parts: Callable[[Callable[[str], str], list[str]], Iterable[str]] = map,
) -> StageResult:
    """Signatures of every document of `documents`, one task per part via `map_parts`."""
    settings = settings or MinHashSettings()
    parameters = {"minhash": settings.parameters()}
    version = code_version("dedup")
    ref = store.ref_for(STAGE, parameters, version, (documents,))
    if store.exists(ref):
        return StageResult(ref, True, store.manifest(ref).stats)
    parts = document_parts(store, documents)
    with store.write(STAGE, parameters, version, (documents,), resumable=True) as out:
        outputs = {part: part.replace("documents/", "minhash/", 1) for part in parts}
        todo = [part for part in parts if not out.exists(outputs[part])]
        task = partial(minhash_part, store.root_url, documents, out.tmp_dir, settings)
        for _ in map_parts(task, todo):
            pass
        total = 0
        for name in outputs.values():
            with out.fs.open(out.path(name), "rb") as handle:
                rows = pq.ParquetFile(handle).metadata.num_rows
            out.set_rows(name, rows)
            total += rows
        out.stats["counts"] = {"documents": total, "parts": len(parts)}
        ref = out.ref
    return StageResult(ref, False, store.manifest(ref).stats)


def _fixed_lists(matrix: np.ndarray, kind: pa.DataType, width: int) -> Any:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), kind), width)
