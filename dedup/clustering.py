"""Duplicate clusters in bounded memory: keys spilled by range, a union-find over arrays.

The dedup stage groups documents by a key (a band key, a text hash) once per key kind.
Holding every document's keys would grow with the corpus, so `KeySpill` writes the
(key, position, ...) rows to Arrow stream files in a temporary folder, one per key range
(the top bits of the 64-bit key), sized so that one range fits the memory budget. Read
back range by range, each sorted in memory, they are the rows sorted by key: grouping
gives the same buckets, in the same order, as sorting everything at once. Signatures
go to a flat file read back row by row (`SignatureFile`), and `UnionFind` holds one
int64 per document: 8 bytes a document is all that grows with the corpus.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

# The memory one key range may take while sorted and grouped (the default of the stage).
SPILL_BUDGET_BYTES = 16 * 2**20
# What one spilled row (key, position, a 16-character id) may cost once read back, sorted
# (the order, the taken copy) and grouped: an allowance, not a count (with 64, a million
# documents made ranges of 250,000 rows, 2.5 times the one range of 100,000 documents).
_ROW_BYTES = 256


class UnionFind:
    """Clusters over document positions 0..size-1: one int64 parent per document."""

    def __init__(self, size: int) -> None:
        self.parent = np.arange(size, dtype=np.int64)

    def find(self, item: int) -> int:
        parent = self.parent
        root = item
        while (above := int(parent[root])) != root:
            root = above
        while (above := int(parent[item])) != root:  # path compression
            parent[item] = root
            item = above
        return root

    def union(self, a: int, b: int) -> None:
        """Join the clusters of `a` and `b`; a cluster's root is its smallest position."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def members(self, chunk: int = 1 << 20) -> np.ndarray:
        """Positions in a cluster of two or more, ascending (read in chunks, so no
        second array of the corpus' size is made)."""
        linked = []
        for start in range(0, len(self.parent), chunk):
            block = self.parent[start : start + chunk]
            moved = np.flatnonzero(block != np.arange(start, start + len(block)))
            linked += [moved + start, block[moved]]
        return np.unique(np.concatenate(linked)) if linked else np.empty(0, np.int64)


def key_ranges(rows: int, budget_bytes: int) -> int:
    """How many key ranges (a power of two) keep one range of `rows` rows within budget."""
    needed = max(1, math.ceil(rows * _ROW_BYTES / max(budget_bytes, 1)))
    return 1 << (needed - 1).bit_length()


class KeySpill:
    """Rows with a uint64 `key` column, spilled to one Arrow stream file per key range."""

    def __init__(self, folder: Path, schema: pa.Schema, ranges: int) -> None:
        if schema.field("key").type != pa.uint64() or ranges & (ranges - 1):
            raise ValueError("a KeySpill needs a uint64 key and a power-of-two range count")
        folder.mkdir(parents=True)
        self.folder = folder
        self.schema = schema
        self.ranges = ranges
        self._shift = 64 - (ranges.bit_length() - 1)
        self._writers: dict[int, tuple[pa.ipc.RecordBatchStreamWriter, pa.NativeFile]] = {}

    def add(self, table: pa.Table) -> None:
        """Append rows; within a range they keep the order they were added in."""
        keys = table["key"].to_numpy()
        which = keys >> np.uint64(self._shift) if self.ranges > 1 else np.zeros(len(keys), int)
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(self.ranges + 1))
        for index in range(self.ranges):
            if bounds[index] < bounds[index + 1]:
                rows = table.take(order[bounds[index] : bounds[index + 1]])
                self._writer(index).write_table(rows.cast(self.schema))

    def sorted_ranges(self) -> Iterator[pa.Table]:
        """Each range's rows sorted by key (ties in the order added), ranges ascending."""
        self.close()
        for index in range(self.ranges):
            path = self.folder / f"range-{index:05d}.arrows"
            if path.exists():
                with pa.OSFile(str(path), "rb") as source:
                    table = pa.ipc.open_stream(source).read_all()
                order = np.argsort(table["key"].to_numpy(), kind="stable")
                yield table.take(order)

    def close(self) -> None:
        for writer, sink in self._writers.values():
            writer.close()
            sink.close()
        self._writers.clear()

    def _writer(self, index: int) -> pa.ipc.RecordBatchStreamWriter:
        # Arrow's stream format, not Parquet: a stream writer buffers nothing between
        # batches, where an open Parquet writer holds about half a MiB, and a spill keeps
        # a writer open per key range (hundreds at a few million documents). Keys and ids
        # are random bytes: compression would only cost time.
        if index not in self._writers:
            sink = pa.OSFile(str(self.folder / f"range-{index:05d}.arrows"), "wb")
            self._writers[index] = (pa.ipc.new_stream(sink, self.schema), sink)
        return self._writers[index][0]


class SignatureFile:
    """The documents' MinHash signatures in one flat file, rows read back on demand.

    Rows are read with `pread`, not through a memory map: the kernel maps pages around
    each faulting one, so random rows of a mapped file fill the process' memory with most
    of the file (512 MB at a million documents)."""

    def __init__(self, path: Path, width: int) -> None:
        self.path = path
        self.width = width
        self.rows = 0
        self._handle: Any = path.open("w+b")

    def append(self, matrix: np.ndarray) -> None:
        self._handle.write(np.ascontiguousarray(matrix, dtype=np.uint32).data)
        self.rows += len(matrix)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at `positions` (each distinct row read once)."""
        self._handle.flush()
        unique, inverse = np.unique(positions, return_inverse=True)
        rows = np.empty((len(unique), self.width), np.uint32)
        size = self.width * rows.itemsize
        descriptor = self._handle.fileno()
        for index, position in enumerate(unique.tolist()):
            if os.preadv(descriptor, [rows[index].data], position * size) != size:
                raise OSError(f"{self.path}: row {position} is beyond its {self.rows} rows")
        return rows[inverse.reshape(-1)]

    def close(self) -> None:
        self._handle.close()
