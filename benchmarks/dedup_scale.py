"""Memory and disk of the whole dedup stage per document, projected to WebText's 8M.

    python benchmarks/dedup_scale.py [--docs 20000 80000] [--quick]

For each size, in a fresh process: writes a `documents` version of that many documents
(300 words drawn from CPython's documentation each, a tenth of them edited copies of
another), runs `compute_minhash` then `deduplicate`, and records the
process's peak RSS above what it held before the stage (VmHWM) and the bytes the stage
wrote. The per-document slope between the two sizes is what grows with the corpus;
the last line on stdout is one JSON object with the 8M-document projection. There is no
baseline: the figure to compare with is the machine's memory (`fits_24_gib`). `--quick`: 500
and 2,000 documents, the same code path, a few seconds (CI runs it so that the script cannot
rot; its figures, the projection most of all, are not measurements).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import parse, reset_peak_rss, vm_hwm_bytes  # noqa: E402

WEBTEXT_DOCUMENTS = 8_000_000
MACHINE_GIB = 24


def _corpus(count: int) -> list[str]:
    from pydoc_data.topics import topics

    words = " ".join(topics.values()).split()
    rng = random.Random(count)
    texts = []
    for i in range(count):
        if i % 10 == 9:  # a tenth are edited copies of an earlier document
            copy = texts[rng.randrange(len(texts))].split()
            copy[rng.randrange(len(copy))] = "edited"
            texts.append(" ".join(copy))
            continue
        texts.append(" ".join(rng.choices(words, k=300)))  # real words, unrelated texts
    return texts


def _measure(count: int, queue) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dedup.signatures import compute_minhash
    from dedup.stage import deduplicate
    from scraping.extract_stage import DOCUMENTS_SCHEMA
    from webtext.store import Store

    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder)
        seen = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
        rows = [
            {
                "doc_id": f"{i:016x}",
                "url": f"http://s.example/{i}",
                "text": text,
                "karma": 3,
                "first_seen": seen,
            }
            for i, text in enumerate(_corpus(count))
        ]
        with store.write("documents", {"count": count}, "bench") as out:
            for part in range(0, count, 10_000):
                table = pa.Table.from_pylist(rows[part : part + 10_000], schema=DOCUMENTS_SCHEMA)
                with out.open(f"documents/part-{part // 10_000:05d}.parquet") as handle:
                    pq.write_table(table, handle)
            documents = out.ref
        del rows
        reset_peak_rss()
        before = vm_hwm_bytes()
        minhash = compute_minhash(store, documents)
        result = deduplicate(store, documents, minhash.ref)
        peak = vm_hwm_bytes() - before
        written = sum(
            f.size for ref in (minhash.ref, result.ref) for f in store.manifest(ref).files
        )
        index = sum(f.size for f in store.manifest(result.ref).files if f.path.startswith("index/"))
        queue.put((peak, written, index, result.stats["counts"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs=2, default=[20_000, 80_000])
    parser.add_argument("--quick", action="store_true", help="tiny input, seconds (CI)")
    # --quick: smaller defaults; options given explicitly still win
    args = parse(parser, argv, quick=dict(docs=[500, 2_000]))
    context = multiprocessing.get_context("spawn")
    results = {}
    for count in args.docs:
        queue = context.Queue()
        process = context.Process(target=_measure, args=(count, queue))
        process.start()
        results[count] = queue.get()
        process.join()
        peak, written, index, counts = results[count]
        print(
            f"{count:,} docs: peak +{peak / 2**20:.0f} MiB, wrote {written / 2**20:.0f} MiB "
            f"(index {index / 2**20:.1f} MiB), {counts}",
            file=sys.stderr,
        )
    small, large = args.docs
    ram_per_doc = (results[large][0] - results[small][0]) / (large - small)
    disk_per_doc = results[large][1] / large
    index_per_doc = results[large][2] / large
    projected = (results[small][0] + ram_per_doc * (WEBTEXT_DOCUMENTS - small)) / 2**30
    print(
        json.dumps(
            {
                "ram_bytes_per_doc": round(ram_per_doc),
                "ram_mib_per_million_docs": round(ram_per_doc * 1e6 / 2**20),
                "stage_disk_bytes_per_doc": round(disk_per_doc),
                "index_disk_bytes_per_doc": round(index_per_doc),
                "projected_ram_gib_for_8m_docs": round(projected, 1),
                "fits_24_gib": projected < MACHINE_GIB,
                "measured_at_docs": args.docs,
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
