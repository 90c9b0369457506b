"""Reading Pushshift dumps: codecs, long zstd windows, bad lines, drift, comment dumps."""

from __future__ import annotations

import bz2
import io
import json
import lzma
from pathlib import Path

import pytest
import zstandard

from scraping import dumps
from scraping.dumps import CommentDumpError, DumpError, LineError, read_submissions


def zstd_long_window(data: bytes) -> bytes:
    """Compress as the monthly dumps are: a 2 GiB window, beyond zstd's default limit."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31, enable_ldm=True)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(
        out, closefd=False
    ) as writer:
        writer.write(data)
    return out.getvalue()


def read_all(path: Path) -> tuple[list, list[LineError]]:
    errors: list[LineError] = []
    return list(read_submissions(str(path), errors.append)), errors


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
    with pytest.raises(DumpError, match="corrupt compressed data"):
        read_all(path)


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
    with pytest.raises(DumpError, match="corrupt compressed data"):
        read_all(path)


def test_concatenated_zstd_frames_are_all_read(tmp_path, raw_lines) -> None:
    path = tmp_path / "RS_frames.zst"
    path.write_bytes(zstd_long_window(raw_lines) + zstandard.ZstdCompressor().compress(raw_lines))
    assert len(read_all(path)[0]) == 62
