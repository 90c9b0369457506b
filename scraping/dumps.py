"""Pushshift submission dumps (`RS_YYYY-MM.zst` and friends), streamed in constant memory.

A dump is NDJSON, one submission a line, compressed with zstd (a window of up to 2 GiB in
the monthly dumps), bz2 or xz, or not at all. Lines are split on raw bytes before decoding:
a newline byte never occurs inside a multi-byte UTF-8 character, so a character cut across
two read chunks is always decoded whole. Each line is decoded on its own into the few
fields the pipeline needs (msgspec skips the rest without building it); a line that is not
valid JSON, not UTF-8 or has fields of the wrong type is reported with its file and line
number and skipped, and so is a line longer than `MAX_LINE_BYTES`, which is passed over
without being held. A stream that ends early or fails its checks is a `DumpCutShort`
naming the file, the kind of failure and the last line read: what came before is kept.
"""

from __future__ import annotations

import bz2
import lzma
from collections.abc import Callable, Iterable, Iterator
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
# Far above any real submission (a self post's text is capped at 40,000 characters);
# a longer line is skipped, so a newline-free stream cannot fill memory.
MAX_LINE_BYTES = 1 << 20
_COMMENT_PREFIX = "RC_"

# Why a line never became a record (counted under these names by the link stage).
MALFORMED_LINE = "malformed_line"
LINE_TOO_LONG = "line_too_long"
# How a compressed stream can stop early: cut off, or failing its checks (a checksum, a
# block that does not decode). A truncated download ends in EOFError; the rest are the
# codecs' own errors (bz2 raises a bare OSError).
TRUNCATED = "truncated"
CORRUPT = "corrupt"
_CODEC_ERRORS = (zstd.ZstdError, EOFError, lzma.LZMAError, OSError)


class DumpError(ValueError):
    """A dump that cannot be read at all (as opposed to a bad line, which is skipped)."""


class CommentDumpError(DumpError):
    """A comment dump (`RC_*`) given where submissions were expected."""


class DumpCutShort(DumpError):
    """A dump whose stream stopped early: `kind` is `TRUNCATED` or `CORRUPT`; the lines
    up to `line` were read."""

    def __init__(self, path: str, kind: str, line: int, cause: BaseException) -> None:
        self.path, self.kind, self.line = path, kind, line
        super().__init__(f"{path}: {kind} compressed data after line {line} ({cause})")


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
    reason: str = MALFORMED_LINE

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.error}"


_decoder = msgspec.json.Decoder(RedditRecord)


def _stream_chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    # Not closed here: `raw` is closed by its owner, and closing a bz2/xz reader over a
    # file object it did not open leaves that object open anyway.
    while data := read(READ_CHUNK):
        yield data


def decompressed_chunks(raw: BinaryIO, path: str) -> Iterator[bytes]:
    """The decompressed NDJSON bytes of `raw`, the codec chosen by the file's suffix.

    Decoders are read with `read1`: a stream that fails mid-way still gives the bytes
    decoded before the failure (`read` would drop its whole last chunk). A plain file
    is read with `read`, which every fsspec file has.
    """
    if path.endswith(".zst"):
        options = {zstd.DecompressionParameter.window_log_max: ZSTD_MAX_WINDOW_LOG}
        return _stream_chunks(zstd.ZstdFile(raw, "rb", options=options).read1)
    if path.endswith(".bz2"):
        return _stream_chunks(bz2.open(raw, "rb").read1)
    if path.endswith(".xz"):
        return _stream_chunks(lzma.open(raw, "rb").read1)
    return _stream_chunks(raw.read)


def split_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[bytes | None]:
    """Every line of the byte stream `chunks`, without its newline; None for a line longer
    than `max_line` bytes.

    Linear and bounded: each byte is copied a fixed number of times, and at most
    `max_line` bytes of a line cut by chunk boundaries are held; the rest of a longer
    line is dropped as it arrives.
    """
    held = bytearray()  # the start of a line that continues into the next chunk
    too_long = False  # inside a line already longer than max_line
    for chunk in chunks:
        first = chunk.find(b"\n")
        if first == -1:
            if not too_long:
                too_long = len(held) + len(chunk) > max_line
                if too_long:
                    held.clear()
                else:
                    held += chunk
            continue
        if too_long or len(held) + first > max_line:
            yield None
        elif held:
            held += chunk[:first]
            yield bytes(held)
        else:
            yield chunk[:first]
        held.clear()
        last = chunk.rfind(b"\n")
        if last > first:
            lines = chunk[first + 1 : last].split(b"\n")
            if last - first > max_line:
                yield from (line if len(line) <= max_line else None for line in lines)
            else:
                yield from lines
        too_long = len(chunk) - last - 1 > max_line
        if not too_long:
            held += chunk[last + 1 :]
    if too_long:
        yield None
    elif held:
        yield bytes(held)


def dump_size(path: str) -> int:
    """The compressed size in bytes: what progress is measured against."""
    fs, fs_path = fsspec.core.url_to_fs(path)
    try:
        return fs.size(fs_path)
    except FileNotFoundError as exc:
        raise DumpError(f"dump not found: {path}") from exc


def iter_dump_lines(
    path: str,
    on_error: Callable[[LineError], None],
    on_bytes: Callable[[int], None] | None = None,
    max_line: int = MAX_LINE_BYTES,
) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) for every non-empty line, 1-based; a line longer than
    `max_line` goes to `on_error` as `LINE_TOO_LONG`.

    `on_bytes` is told how many compressed bytes each chunk consumed, for progress bars.
    Raises `DumpCutShort` where the stream stops early, after yielding what came before.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    try:
        raw = fs.open(fs_path, "rb")
    except FileNotFoundError as exc:
        raise DumpError(f"dump not found: {path}") from exc
    except OSError as exc:  # a folder, no permission: nothing to read
        raise DumpError(f"cannot read dump {path}: {exc.strerror or exc}") from exc
    with raw:
        consumed = 0

        def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
            nonlocal consumed
            for chunk in chunks:
                position = raw.tell()
                on_bytes(position - consumed)
                consumed = position
                yield chunk

        chunks = decompressed_chunks(raw, path)
        if on_bytes is not None:
            chunks = counted(chunks)
        number = 0
        try:
            for number, line in enumerate(split_lines(chunks, max_line), 1):
                if line is None:
                    error = f"line longer than {max_line:,} bytes, skipped"
                    on_error(LineError(path, number, error, LINE_TOO_LONG))
                elif line.strip():
                    yield number, line
        except _CODEC_ERRORS as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                # The file system failed, not the data: no reason to go on without it.
                raise DumpError(f"cannot read dump {path}: {exc}") from exc
            kind = TRUNCATED if isinstance(exc, EOFError) else CORRUPT
            raise DumpCutShort(path, kind, number, exc) from exc
        if on_bytes is not None:
            on_bytes(raw.tell() - consumed)


def read_submissions(
    path: str,
    on_error: Callable[[LineError], None],
    on_bytes: Callable[[int], None] | None = None,
    max_line: int = MAX_LINE_BYTES,
) -> Iterator[tuple[int, RedditRecord]]:
    """(line number, record) for every decodable record of a submission dump; bad lines
    go to `on_error`.

    Refuses a comment dump (`RC_` file name, or a first record that is a comment) with a
    `CommentDumpError`: its records carry no links, and reading it as submissions would
    silently produce nothing. A stream that stops early raises `DumpCutShort` after the
    records before it.
    """
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name.startswith(_COMMENT_PREFIX):
        raise CommentDumpError(f"{path} is a comment dump (RC_*); give submission dumps (RS_*)")
    seen_record = False
    for number, line in iter_dump_lines(path, on_error, on_bytes, max_line):
        try:
            record = _decoder.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # msgspec checks UTF-8 only in the fields it decodes, and reports a bad byte
            # there as a UnicodeDecodeError, not as a DecodeError.
            on_error(LineError(path, number, str(exc)))
            continue
        if not seen_record:
            seen_record = True
            if record.is_comment:
                raise CommentDumpError(
                    f"{path} looks like a comment dump: line {number} has parent_id/link_id "
                    "and no url; give submission dumps (RS_*)"
                )
        yield number, record
