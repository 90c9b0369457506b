"""The `minhash` stage: one row per document of a `documents` version, computed once.

Row: doc_id, text_hash (exact-duplicate key), signature (MinHash, `num_perm` values) and
band keys (`bands` 64-bit hashes). Each documents part is one independent task
(`minhash_part`), so the parts can run on any executor: `map` here, Prefect's Dask task
runner in `flows/dedup.py`. Earlier versions' signatures are never recomputed: the dedup
stage reads them back from the `webtext` versions that published them.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dedup.minhash import MinHashSettings, band_keys, signatures, text_hash
from webtext.parquet import put_table
from webtext.stage import Map, PartResult, Progress, Stage, StageWrite, run_stage
from webtext.store import StageResult, Store, VersionRef, VersionWriter

STAGE = Stage("minhash", __name__)


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
) -> PartResult:
    """Compute one documents part's rows into the staging folder.

    A plain function of plain arguments, so any executor can run it on any worker that
    sees the store.
    """
    store = Store(store_url)
    with store.open_verified(documents, part) as handle:
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
    put_table(VersionWriter(store.fs, staging_dir, VersionRef(STAGE.name, "staging")), name, rows)
    return PartResult({name: rows.num_rows}, {"documents": rows.num_rows, "parts": 1})


def compute_minhash(
    store: Store,
    documents: VersionRef,
    settings: MinHashSettings | None = None,
    *,
    map: Map = map,
    progress: Progress | None = None,
) -> StageResult:
    """Signatures of every document of `documents`, one task per part on `map`."""
    settings = settings or MinHashSettings()

    def build(work: StageWrite) -> None:
        task = partial(minhash_part, store.root_url, documents, work.out.tmp_dir, settings)
        work.run_parts(document_parts(store, documents), task, map, progress)

    parameters = {"minhash": settings.parameters()}
    return run_stage(
        store,
        STAGE,
        (documents,),
        parameters,
        build,
        count_names=("documents", "parts"),
        resumable=True,
    )


def _fixed_lists(matrix: np.ndarray, kind: pa.DataType, width: int) -> Any:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), kind), width)
