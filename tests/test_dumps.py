"""Reading Pushshift dumps: codecs, long zstd windows, bad lines, drift, comment dumps,
streams that stop early, lines without end."""

from __future__ import annotations

import bz2
import io
import json
import lzma
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from scraping import dumps
from scraping.dumps import (
    CORRUPT,
    LINE_TOO_LONG,
    MALFORMED_LINE,
    TRUNCATED,
    CommentDumpError,
    DumpCutShort,
    DumpError,
    LineError,
    read_submissions,
    split_lines,
)


def zstd_long_window(data: bytes) -> bytes:
    """Compress as the monthly dumps are: a 2 GiB window, beyond zstd's default limit."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31, enable_ldm=True)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(
        out, closefd=False
    ) as writer:
        writer.write(data)
    return out.getvalue()


def read_all(path: Path, **options) -> tuple[list, list[LineError]]:
    errors: list[LineError] = []
    return [record for _, record in read_submissions(str(path), errors.append, **options)], errors


@pytest.fixture
def raw_lines(sample_dump: Path) -> bytes:
    return sample_dump.read_bytes()


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".zst", zstd_long_window),
        (".bz2", bz2.compress),
        (".xz", lzma.compress),
        (".ndjson", lambda data: data),
    ],
)
def test_every_codec_yields_every_record(tmp_path, raw_lines, suffix, compress) -> None:
    path = tmp_path / f"RS_2005-06{suffix}"
    path.write_bytes(compress(raw_lines))
    records, errors = read_all(path)
    expected = [json.loads(line) for line in raw_lines.splitlines()]
    assert errors == []
    assert [str(r.id) for r in records] == [str(e["id"]) for e in expected]
    assert [r.url for r in records] == [e["url"] for e in expected]


def test_long_window_zst_needs_the_raised_limit(tmp_path, raw_lines) -> None:
    data = zstd_long_window(raw_lines)
    with pytest.raises(zstandard.ZstdError, match="too much memory"):
        zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    path = tmp_path / "RS_long.zst"
    path.write_bytes(data)
    assert len(read_all(path)[0]) == 31


def test_records_from_2005_to_2024_all_parse(sample_dump: Path) -> None:
    records, errors = read_all(sample_dump)
    assert errors == [] and len(records) == 31
    kinds = {type(r.created_utc) for r in records}
    assert kinds == {int, float, str}  # the drift the real dumps have
    assert all(not r.is_comment for r in records)


def test_utf8_character_split_across_read_chunks(tmp_path, monkeypatch) -> None:
    titles = [
        "caf\u00e9 \u2014 na\u00efve",
        "\u65e5\u672c\u8a9e\u306e\u8a18\u4e8b",
        "emoji \U0001f600",
    ]
    lines = [
        json.dumps({"id": str(i), "url": "http://e.com/", "title": t}, ensure_ascii=False)
        for i, t in enumerate(titles)
    ]
    path = tmp_path / "RS_utf8.zst"
    path.write_bytes(zstd_long_window("\n".join(lines).encode()))
    # Odd, tiny chunks cut multi-byte characters in every possible place.
    for chunk in (1, 2, 3, 5, 7):
        monkeypatch.setattr(dumps, "READ_CHUNK", chunk)
        records, errors = read_all(path)
        assert errors == []
        assert [r.title for r in records] == titles


def test_malformed_lines_are_reported_with_file_and_line(tmp_path, raw_lines) -> None:
    good = raw_lines.splitlines()
    bad = [
        good[0],
        b'{"id": "x", "url": "http://truncated',
        good[1],
        b"\xff\xfe not utf-8 \xff",
        b'{"id": "y", "url": ["a list"], "score": 5}',
        b"",
        good[2],
    ]
    path = tmp_path / "RS_bad.ndjson"
    path.write_bytes(b"\n".join(bad))
    records, errors = read_all(path)
    assert len(records) == 3
    assert [(e.file, e.line) for e in errors] == [(str(path), 2), (str(path), 4), (str(path), 5)]
    assert str(errors[0]).startswith(f"{path}:2: ")


def test_comment_dump_is_refused_by_name(tmp_path, test_data) -> None:
    comments = test_data / "reddit/pushshift/test_comments.ndjson"
    path = tmp_path / "RC_2024-01.ndjson"
    path.write_bytes(comments.read_bytes())
    with pytest.raises(CommentDumpError, match="comment dump"):
        read_all(path)


def test_comment_dump_is_refused_by_content(test_data) -> None:
    with pytest.raises(CommentDumpError, match=r"line 1 has parent_id/link_id and no url"):
        read_all(test_data / "reddit/pushshift/test_comments.ndjson")


def test_missing_and_corrupt_files_are_clear_errors(tmp_path, raw_lines) -> None:
    with pytest.raises(DumpError, match="dump not found"):
        read_all(tmp_path / "RS_missing.zst")
    path = tmp_path / "RS_cut.zst"
    path.write_bytes(zstd_long_window(raw_lines * 20)[:-200] + b"garbage" * 50)
    with pytest.raises(DumpCutShort, match="corrupt compressed data") as cut:
        read_all(path)
    assert cut.value.kind == CORRUPT


@pytest.mark.parametrize("suffix", [".zst", ".bz2", ".ndjson"])
def test_progress_reports_every_compressed_byte(tmp_path, raw_lines, suffix) -> None:
    compress = {".zst": zstd_long_window, ".bz2": bz2.compress, ".ndjson": bytes}[suffix]
    path = tmp_path / f"RS_p{suffix}"
    path.write_bytes(compress(raw_lines))
    seen: list[int] = []
    list(read_submissions(str(path), lambda e: None, seen.append))
    assert sum(seen) == path.stat().st_size


@pytest.mark.parametrize("suffix", [".zst", ".bz2", ".xz"])
def test_a_truncated_download_is_an_error_not_a_short_month(tmp_path, raw_lines, suffix):
    compress = {".zst": zstd_long_window, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix]
    data = compress(raw_lines * 50)
    path = tmp_path / f"RS_cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DumpCutShort, match="truncated compressed data") as cut:
        read_all(path)
    assert cut.value.kind == TRUNCATED and cut.value.path == str(path)


def test_concatenated_zstd_frames_are_all_read(tmp_path, raw_lines) -> None:
    path = tmp_path / "RS_frames.zst"
    path.write_bytes(zstd_long_window(raw_lines) + zstandard.ZstdCompressor().compress(raw_lines))
    assert len(read_all(path)[0]) == 62


def test_invalid_utf8_inside_a_field_is_a_bad_line(tmp_path, raw_lines) -> None:
    # Before: msgspec's UnicodeDecodeError (not a DecodeError) ended the whole read.
    good = raw_lines.splitlines()
    bad_title = b'{"id": "u1", "url": "http://e.com/", "title": "caf\xc3 au lait"}'
    bad_url = b'{"id": "u2", "url": "http://e.com/\xff", "score": 5}'
    path = tmp_path / "RS_utf8.ndjson"
    path.write_bytes(b"\n".join([good[0], bad_title, good[1], bad_url, good[2]]))
    records, errors = read_all(path)
    assert [str(r.id) for r in records] == [json.loads(good[i])["id"] for i in range(3)]
    assert [(e.file, e.line, e.reason) for e in errors] == [
        (str(path), 2, MALFORMED_LINE),
        (str(path), 4, MALFORMED_LINE),
    ]
    assert "utf-8" in errors[0].error.lower()  # msgspec words it by version


def test_a_newline_free_stream_is_skipped_in_bounded_memory(tmp_path, raw_lines) -> None:
    # Before: the whole stream was held as one line and rebuilt on every chunk (200 MB
    # took 30 s and 538 MB); 4 MiB here, four times the default bound of 1 MiB.
    path = tmp_path / "RS_endless.ndjson"
    first = raw_lines.splitlines()[0]
    path.write_bytes(first + b"\n" + b"x" * (4 << 20) + b"\n" + first)
    tracemalloc.start()
    try:
        records, errors = read_all(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(records) == 2
    assert [(e.line, e.reason) for e in errors] == [(2, LINE_TOO_LONG)]
    assert str(errors[0]).startswith(f"{path}:2: line longer than 1,048,576 bytes")
    # The bound, one read chunk and the chunk's copy when split: never the whole line.
    assert peak < 4 * dumps.MAX_LINE_BYTES


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_long_lines_are_cut_wherever_chunks_end(chunk) -> None:
    stream = b"short\n" + b"a" * 20 + b"\n\nexactly-ten\n" + b"b" * 12 + b"\nlast"
    pieces = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    assert list(split_lines(pieces, max_line=11)) == [
        b"short",
        None,
        b"",
        b"exactly-ten",
        None,
        b"last",
    ]
    assert list(split_lines(pieces, max_line=1000)) == stream.split(b"\n")


def test_line_splitting_holds_at_most_the_bound() -> None:
    # 64 MiB without a newline, in 64 KiB chunks: joining each chunk to what came before
    # (the old splitter) would copy some 32 GiB and hold 64 MiB; a bounded splitter holds
    # the bound and touches each chunk once.
    chunk = b"z" * (64 << 10)
    tracemalloc.start()
    try:
        lines = list(split_lines(iter([chunk] * 1024 + [b"\nend"]), max_line=256 << 10))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == [None, b"end"]
    assert peak < 2 * (256 << 10) + len(chunk)


@pytest.mark.parametrize(
    ("suffix", "compress"), [(".zst", zstd_long_window), (".xz", lzma.compress)]
)
def test_a_stream_cut_in_its_first_chunk_gives_what_came_before(
    tmp_path, raw_lines, suffix, compress
) -> None:
    # The whole text fits in one read chunk; the cut ends its last compressed block. The
    # blocks before it still come (a whole-chunk read() would have dropped them all).
    text = raw_lines * 10
    assert len(text) < dumps.READ_CHUNK
    data = compress(text)
    path = tmp_path / f"RS_early{suffix}"
    path.write_bytes(data[:-32])
    records: list = []
    with pytest.raises(DumpCutShort) as cut:
        records.extend(r for _, r in read_submissions(str(path), lambda error: None))
    assert cut.value.kind == TRUNCATED and len(records) > len(text.splitlines()) // 2
    assert cut.value.line >= len(records)


def test_a_checksum_failure_is_named_corruption(tmp_path, raw_lines) -> None:
    # Before: reported in the same words as a truncated download.
    data = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(raw_lines * 50))
    data[len(data) // 2] ^= 0x01
    path = tmp_path / "RS_flipped.zst"
    path.write_bytes(bytes(data))
    with pytest.raises(DumpCutShort, match=rf"^{path}: corrupt compressed data after line"):
        read_all(path)


def test_a_folder_given_as_a_dump_is_one_clear_error(tmp_path) -> None:
    folder = tmp_path / "RS_folder.zst"
    folder.mkdir()
    with pytest.raises(DumpError, match=f"cannot read dump {folder}"):
        read_all(folder)


def test_a_plain_dump_needs_only_read(raw_lines) -> None:
    # Object-store files (fsspec's AbstractBufferedFile: S3, GCS, HTTP) have no read1.
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._stream = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._stream.read(size)

    chunks = dumps.decompressed_chunks(ReadOnly(raw_lines), "RS_s3.ndjson")
    assert b"".join(chunks) == raw_lines
