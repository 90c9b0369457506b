"""What checking a parent's sha256 costs a stage: `Store.open_verified` against a plain read.

    python benchmarks/verified_read.py [--mib 128] [--repeats 5] [--seed 0] [--quick]

A documents-like Parquet part (zstd, one `text` column of 300-1000 words drawn from the
words of CPython's reference topics, `pydoc_data.topics`) of about `--mib` MiB is written
into a store in a temporary folder. Each repeat reads it whole with `pq.read_table`, once
through `store.fs.open` (the baseline: how stages read before) and once through
`Store.open_verified` (sha256 over the file while it is copied into a spooled temporary
file, then the read from that copy), alternating; the median of each is reported, after
one warm-up read of each (the file is then in the page cache: the figures are CPU, not
disk). Human lines go to stderr; the last line on stdout is one JSON object: `plain_s`,
`verified_s`, `ratio` (verified / plain) and `overhead_s_per_gib`. `--quick`: 4 MiB, 2
repeats (CI runs it so the script cannot rot; its figures are not measurements).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import parse  # noqa: E402
from webtext.parquet import put_table  # noqa: E402
from webtext.store import Store, VersionRef  # noqa: E402


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def documents_part(store: Store, mib: int, seed: int) -> tuple[VersionRef, str]:
    """A one-part version of about `mib` MiB on disk: (its ref, the part's name). Rows are
    random slices (2,000-7,000 characters) of a text of random reference-topic words."""
    from pydoc_data.topics import topics

    vocabulary = np.array(sorted({w for text in topics.values() for w in text.split()}))
    rng = np.random.default_rng(seed)
    corpus = " ".join(rng.choice(vocabulary, min(4_000_000, 60_000 * mib)).tolist())

    def texts(n: int) -> list[str]:
        starts = rng.integers(0, len(corpus) - 7_000, n)
        lengths = rng.integers(2_000, 7_000, n)
        pairs = zip(starts.tolist(), lengths.tolist(), strict=True)
        return [corpus[start : start + length] for start, length in pairs]

    sample = pa.BufferOutputStream()  # the compressed size of a row, from 2,000 of them
    pq.write_table(pa.table({"text": texts(2_000)}), sample, compression="zstd")
    rows = int((mib << 20) / (sample.getvalue().size / 2_000)) + 1
    name = "documents/part-00000.parquet"
    with store.write("documents", {"mib": mib, "seed": seed}, "benchmark") as out:
        put_table(out, name, pa.table({"text": texts(rows)}))
        return out.ref, name


def seconds(read: Callable[[], int]) -> float:
    start = time.perf_counter()
    read()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=128, help="size of the part on disk")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 MiB, 2 repeats: a smoke test")
    args = parse(parser, argv, quick={"mib": 4, "repeats": 2})
    with tempfile.TemporaryDirectory(prefix="webtext-bench-verified-") as folder:
        store = Store(folder)
        ref, name = documents_part(store, args.mib, args.seed)
        entry = store.file_entry(ref, name)
        path = f"{store.version_dir(ref)}/{name}"

        def plain() -> int:
            with store.fs.open(path, "rb") as handle:
                return pq.read_table(handle).num_rows

        def verified() -> int:
            with store.open_verified(ref, entry) as handle:
                return pq.read_table(handle).num_rows

        rows = plain()
        assert verified() == rows
        plain_times: list[float] = []
        verified_times: list[float] = []
        for _ in range(args.repeats):
            plain_times.append(seconds(plain))
            verified_times.append(seconds(verified))
    plain_s, verified_s = statistics.median(plain_times), statistics.median(verified_times)
    gib = entry.size / 2**30
    _log(f"{entry.size / 2**20:.1f} MiB, {rows:,} rows: plain {plain_s:.3f} s, verified "
         f"{verified_s:.3f} s (medians of {args.repeats})")  # fmt: skip
    result = {
        "quick": args.quick,
        "size_mib": round(entry.size / 2**20, 1),
        "rows": rows,
        "repeats": args.repeats,
        "plain_s": round(plain_s, 4),
        "verified_s": round(verified_s, 4),
        "ratio": round(verified_s / plain_s, 3),
        "overhead_s_per_gib": round((verified_s - plain_s) / gib, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
