"""Pushshift submission dumps (`RS_YYYY-MM.zst` and friends), streamed in constant memory.

A dump is NDJSON, one submission a line, compressed with zstd (a window of up to 2 GiB in
the monthly dumps), bz2 or xz, or not at all. Lines are split on raw bytes before decoding:
a newline byte never occurs inside a multi-byte UTF-8 character, so a character cut across
two read chunks is always decoded whole. Each line is decoded on its own into the few
fields the pipeline needs (msgspec skips the rest without building it); a line that is not
valid JSON, not UTF-8 or has fields of the wrong type is reported with its file and line
number and skipped.
"""

from __future__ import annotations

import bz2
import lzma
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import fsspec
import msgspec

try:  # Python 3.14+
    from compression import zstd
except ImportError:
    from backports import zstd

# The monthly dumps are compressed with `zstd --long=31`: a decoder must accept a 2 GiB
# window, and holds up to that much history in memory while reading them.
ZSTD_MAX_WINDOW_LOG = 31
READ_CHUNK = 1 << 20
_COMMENT_PREFIX = "RC_"


class DumpError(ValueError):
    """A dump that cannot be read at all (as opposed to a bad line, which is skipped)."""


class CommentDumpError(DumpError):
    """A comment dump (`RC_*`) given where submissions were expected."""


class RedditRecord(msgspec.Struct):
    """The fields of a Reddit submission the link stage reads; every one may be absent.

    Types are unions because the dumps drift across 2005-2024: `created_utc` is an int,
    a float (2024) or a string (2014); ids were numbers in the earliest records.
    """

    id: str | int | None = None
    url: str | None = None
    title: str | None = None
    score: int | float | str | None = None
    created_utc: int | float | str | None = None
    subreddit: str | None = None
    is_self: bool | None = None
    over_18: bool | None = None
    domain: str | None = None
    # Present on comments only: how a comment dump given as submissions is recognised.
    parent_id: str | None = None
    link_id: str | None = None

    @property
    def is_comment(self) -> bool:
        return self.url is None and (self.parent_id is not None or self.link_id is not None)


@dataclass(frozen=True)
class LineError:
    file: str
    line: int
    error: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.error}"


_decoder = msgspec.json.Decoder(RedditRecord)


def _stream_chunks(stream: BinaryIO) -> Iterator[bytes]:
    # Not closed here: `raw` is closed by its owner, and closing a bz2/xz reader over a
    # file object it did not open leaves that object open anyway.
    while data := stream.read(READ_CHUNK):
        yield data


def decompressed_chunks(raw: BinaryIO, path: str) -> Iterator[bytes]:
    """The decompressed NDJSON bytes of `raw`, the codec chosen by the file's suffix."""
    if path.endswith(".zst"):
        options = {zstd.DecompressionParameter.window_log_max: ZSTD_MAX_WINDOW_LOG}
        return _stream_chunks(zstd.ZstdFile(raw, "rb", options=options))
    if path.endswith(".bz2"):
        return _stream_chunks(bz2.open(raw, "rb"))
    if path.endswith(".xz"):
        return _stream_chunks(lzma.open(raw, "rb"))
    return _stream_chunks(raw)


def dump_size(path: str) -> int:
    """The compressed size in bytes: what progress is measured against."""
    fs, fs_path = fsspec.core.url_to_fs(path)
    try:
        return fs.size(fs_path)
    except FileNotFoundError as exc:
        raise DumpError(f"dump not found: {path}") from exc


def iter_dump_lines(
    path: str, on_bytes: Callable[[int], None] | None = None
) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) for every non-empty line, 1-based.

    `on_bytes` is told how many compressed bytes each chunk consumed, for progress bars.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    number = 0
    pending = b""
    consumed = 0
    try:
        raw = fs.open(fs_path, "rb")
    except FileNotFoundError as exc:
        raise DumpError(f"dump not found: {path}") from exc
    with raw:
        chunks = decompressed_chunks(raw, path)
        while True:
            try:
                chunk = next(chunks, b"")
            except (zstd.ZstdError, OSError, EOFError, lzma.LZMAError) as exc:
                raise DumpError(
                    f"{path}: corrupt compressed data after line {number}: {exc}"
                ) from exc
            if on_bytes is not None:
                position = raw.tell()
                on_bytes(position - consumed)
                consumed = position
            if not chunk:
                break
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                number += 1
                if line.strip():
                    yield number, line
    if pending.strip():
        yield number + 1, pending


def read_submissions(
    path: str,
    on_error: Callable[[LineError], None],
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[RedditRecord]:
    """Every decodable record of a submission dump; bad lines go to `on_error`.

    Refuses a comment dump (`RC_` file name, or a first record that is a comment) with a
    `DumpError`: its records carry no links, and reading it as submissions would silently
    produce nothing.
    """
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name.startswith(_COMMENT_PREFIX):
        raise CommentDumpError(f"{path} is a comment dump (RC_*); give submission dumps (RS_*)")
    seen_record = False
    for number, line in iter_dump_lines(path, on_bytes):
        try:
            record = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            on_error(LineError(path, number, str(exc)))
            continue
        if not seen_record:
            seen_record = True
            if record.is_comment:
                raise CommentDumpError(
                    f"{path} looks like a comment dump: line {number} has parent_id/link_id "
                    "and no url; give submission dumps (RS_*)"
                )
        yield record
