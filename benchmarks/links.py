"""Link-stage reading speed against a plain zstandard + json.loads loop, same filter.

    python benchmarks/links.py [--records 500000] [--quick]

Builds a `.zst` dump by repeating the real Pushshift sample (2005-2024 records, 3 KB on
average), then times, in fresh child processes so each peak RSS is its
own, the reading pass of both readers: decompress, decode, apply `SubmissionFilter`.
Also times the whole stage (`collect_links`: filter, spill, aggregate, write Parquet).
The last line printed is one JSON object. `--quick`: 2,000 records, the same code path, a
few seconds (CI runs it so that the script cannot rot; its figures are not measurements).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import parse, test_data_root  # noqa: E402
from scraping.dumps import RedditRecord, read_submissions  # noqa: E402
from scraping.link_filters import LinkFilters, SubmissionFilter  # noqa: E402


def sample_path() -> Path:
    path = test_data_root() / "reddit" / "pushshift" / "test_submissions.ndjson"
    if not path.exists():
        sys.exit(f"sample dump not found at {path}; set WEBTEXT_TEST_DATA")
    return path


def build_dump(folder: Path, records: int) -> Path:
    lines = sample_path().read_bytes().splitlines(keepends=True)
    # A 128 MiB window, zstd's largest without --long: real monthly dumps use a 2 GiB
    # window, which any decoder holds in memory once that much text has gone by; with
    # the smaller window the figures show the reader's own memory, not the format's.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27, enable_ldm=True)
    path = folder / "RS_bench.zst"
    with (
        open(path, "wb") as out,
        zstandard.ZstdCompressor(compression_params=params).stream_writer(out) as writer,
    ):
        for i in range(records):
            writer.write(lines[i % len(lines)])
    return path


def ours(path: str) -> Counter:
    check = SubmissionFilter(LinkFilters())
    counts: Counter = Counter()
    for _, record in read_submissions(path, lambda error: counts.update(["malformed_line"])):
        outcome = check(record)
        counts["passed" if not isinstance(outcome, str) else outcome] += 1
    return counts


def baseline(path: str) -> Counter:
    """What one would write first: zstandard's stream reader, text lines, json.loads."""
    check = SubmissionFilter(LinkFilters())
    counts: Counter = Counter()
    fields = RedditRecord.__struct_fields__
    with open(path, "rb") as raw:
        reader = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(raw)
        for line in io.TextIOWrapper(reader, encoding="utf-8"):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                counts["malformed_line"] += 1
                continue
            outcome = check(RedditRecord(**{name: data.get(name) for name in fields}))
            counts["passed" if not isinstance(outcome, str) else outcome] += 1
    return counts


def whole_stage(path: str) -> Counter:
    from scraping.links import collect_links
    from webtext.store import Store

    with tempfile.TemporaryDirectory() as store:
        return Counter(collect_links(Store(store), [path]).stats["counts"])


def _peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM); getrusage would report the parent's
    peak, which Linux carries into a child across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(name: str, path: str, queue) -> None:
    started = time.perf_counter()
    counts = globals()[name](path)
    seconds = time.perf_counter() - started
    peak_mb = _peak_rss_mb()
    queue.put((seconds, peak_mb, dict(counts)))


def measure(name: str, path: Path) -> tuple[float, float, dict]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, str(path), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--quick", action="store_true", help="tiny input, seconds (CI)")
    # --quick: smaller defaults; options given explicitly still win
    args = parse(parser, argv, quick=dict(records=2_000))
    with tempfile.TemporaryDirectory() as folder:
        quarter_dir = Path(folder) / "quarter"
        full_dir = Path(folder) / "full"
        quarter_dir.mkdir()
        full_dir.mkdir()
        quarter = build_dump(quarter_dir, args.records // 4)
        full = build_dump(full_dir, args.records)
        size_kb = full.stat().st_size / 1e3
        print(f"dump: {args.records:,} records, {size_kb:,.0f} kB of zst", file=sys.stderr)

        base_s, base_rss, base_counts = measure("baseline", full)
        print(f"baseline: {base_s:.1f} s, peak {base_rss:.0f} MB", file=sys.stderr)
        our_s, our_rss, our_counts = measure("ours", full)
        print(f"ours:     {our_s:.1f} s, peak {our_rss:.0f} MB", file=sys.stderr)
        assert our_counts == base_counts, (our_counts, base_counts)
        _, quarter_rss, _ = measure("ours", quarter)
        stage_s, stage_rss, stage_counts = measure("whole_stage", full)
        print(f"whole stage: {stage_s:.1f} s, peak {stage_rss:.0f} MB", file=sys.stderr)
        assert stage_counts["records"] == args.records
    result = {
        "records": args.records,
        "records_per_s": round(args.records / our_s),
        "baseline_records_per_s": round(args.records / base_s),
        "ratio": round(base_s / our_s, 2),
        "peak_rss_mb": round(our_rss, 1),
        "peak_rss_mb_quarter_input": round(quarter_rss, 1),
        "baseline_peak_rss_mb": round(base_rss, 1),
        "whole_stage_records_per_s": round(args.records / stage_s),
        "whole_stage_peak_rss_mb": round(stage_rss, 1),
        "baseline": "zstandard stream_reader + json.loads loop, same filter",
        "quick": args.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
