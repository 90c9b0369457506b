"""Parquet helpers every stage shares: whole tables written atomically, rolling shards,
and keeping a process's resident memory near the Arrow memory it uses."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from webtext.store import VersionWriter

log = logging.getLogger(__name__)
_PR_SET_THP_DISABLE = 41  # <linux/prctl.h>


def without_huge_pages() -> None:
    """Turn transparent huge pages off for this process and the ones it starts (Linux).

    pyarrow's default allocator, mimalloc, asks for 2 MiB huge pages on its arenas: where
    the kernel grants them on request (THP `madvise`, the usual setting), a few MiB of live
    Arrow buffers scattered over them keep tens of MiB resident, more the longer a stage
    runs. The link stage held 5 MiB of Arrow memory at most and its peak grew from 175 to
    234 MiB between 10^4 and 10^5 submissions, 18 MiB of it huge pages in mimalloc's arena.
    Works at any time (later page faults get small pages); idempotent; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:  # refused: memory is only larger
        log.warning("could not turn off huge pages: %s", ctypes.get_errno())


def release_arrow_memory() -> None:
    """Hand the memory Arrow's allocator keeps for reuse back to the system: call it
    between steps that each use a bounded amount, so the process's peak stays that bound
    instead of the sum of what each step left cached."""
    pa.default_memory_pool().release_unused()


def put_table(
    out: VersionWriter, name: str, table: pa.Table, row_group_size: int | None = None
) -> None:
    """Write `table` (zstd) as file `name` of a version, all at once: it appears whole."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd", row_group_size=row_group_size)
    out.put(name, buffer.getvalue().to_pybytes(), table.num_rows)


class RollingParquetWriter:
    """Writes tables into `<prefix>/part-NNNNN.parquet` files of at most `rows_per_file`."""

    def __init__(
        self,
        version: VersionWriter,
        prefix: str,
        schema: pa.Schema,
        rows_per_file: int,
        row_group_size: int | None = None,
    ) -> None:
        self.version = version
        self.prefix = prefix
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.row_group_size = row_group_size
        self.files = 0
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._handle: Any = None
        self._name = ""
        self._rows_in_file = 0

    def write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                self._open()
            take = min(self.rows_per_file - self._rows_in_file, table.num_rows - offset)
            self._writer.write_table(table.slice(offset, take), self.row_group_size)
            offset += take
            self._rows_in_file += take
            self.rows += take
            if self._rows_in_file >= self.rows_per_file:
                self._close_file()

    def close(self) -> None:
        if self._writer is None and self.files == 0:
            self._open()  # an empty result still gets one readable, empty file
        self._close_file()

    def _open(self) -> None:
        self._name = f"{self.prefix}/part-{self.files:05d}.parquet"
        self._handle = self.version.fs.open(self.version.path(self._name), "wb")
        self._writer = pq.ParquetWriter(self._handle, self.schema, compression="zstd")
        self._rows_in_file = 0
        self.files += 1

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._handle.close()
        self.version.set_rows(self._name, self._rows_in_file)
        self._writer = None
