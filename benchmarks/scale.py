"""The cost curve of the data pipeline: links -> fetch -> extract -> dedup -> tokenize at
N and 10N pages, and dedup alone on synthetic signatures, projected to WebText's size.

    python benchmarks/scale.py [--pages 10000] [--signatures 100000] [--workers 2]
                               [--hosts 8] [--quick]

The demo web (`webtext_app.demo_web`, served by `benchmarks/fetch.py`'s `serve` in its own
process) serves `/gen/<n>.html`: pages of real article boilerplate around six paragraphs of
CPython's documentation drawn by n, every tenth page a reworded mirror copy of the one
before (a known 10% of near duplicates). A Reddit-style dump posts each page once, above
the karma bar. Each stage runs in a fresh process on the same store, with the stage
functions the CLI and flows call; per stage it records wall seconds, CPU seconds of the
stage and its worker processes (the cost), the peak resident memory of the stage process
and of any one worker, and the bytes of the versions it wrote. Dedup alone then runs on
`--signatures` and 10x that many synthetic MinHash rows (random signatures, every tenth
a copy of the one before with 8 of 128 values changed), its peak memory measured above
what the process held before the stage.

Printed per stage: docs/s, peak RSS, disk bytes per doc and the growth exponent
log(cost(10N)/cost(N))/log(10) of CPU seconds; the projection to 45M URLs (links, fetch,
extract) and 8M documents (dedup, tokenize) scales the 10N cost by the exponent (at least
1: a smaller one is fixed costs not yet amortised) into core-hours, and the peak memory by
its own exponent (at least 0). `dask_speedup` is benchmarks/dask_speedup.py's own line,
read from `--dask-speedup FILE`. The last line is one JSON object. There is no baseline run:
the figures to compare with are the goals (exponent <= 1.1, memory flat within 20%).
`--quick`: 10 and 100 pages and 1,000 and 10,000 signatures, the same code path, well
under a minute (CI runs it so that the script cannot rot; its figures are not
measurements: at that size fixed costs dominate).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import multiprocessing
import queue as queue_module
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import parse, reset_peak_rss, test_data_root, vm_hwm_bytes  # noqa: E402
from benchmarks.fetch import serve  # noqa: E402

STAGES = ("links", "fetch", "extract", "dedup", "tokenize")
WEBTEXT_URLS = 45_000_000
WEBTEXT_DOCUMENTS = 8_000_000
TARGETS = {
    "links": WEBTEXT_URLS,
    "fetch": WEBTEXT_URLS,
    "extract": WEBTEXT_URLS,
    "dedup": WEBTEXT_DOCUMENTS,
    "tokenize": WEBTEXT_DOCUMENTS,
}
NO_DASK_SPEEDUP = (
    "not measured by this script: run benchmarks/dask_speedup.py (Dask clusters of 1 and "
    "2 workers) and pass its output with --dask-speedup FILE"
)
SYNTHETIC_PART_ROWS = 100_000
SYNTHETIC_CHANGED = 8  # of 128 values: an estimated Jaccard of 0.94, above the threshold


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _dump_records(urls: list[str]) -> list[dict]:
    start = 1_400_000_000
    return [
        {
            "id": f"scale{i:08d}",
            "url": url,
            "title": url.rsplit("/", 1)[-1],
            "score": 5,
            "created_utc": start + i,
            "subreddit": "python",
            "is_self": False,
            "over_18": False,
            "domain": url.split("/")[2],
        }
        for i, url in enumerate(urls)
    ]


def _stage_run(name: str, store_root: str, inputs: dict[str, Any], workers: int) -> dict:
    """Run stage `name` on the store; what it made, how many docs it took in, its refs."""
    from webtext.store import Store, VersionRef

    store = Store(store_root)
    refs = {key: VersionRef(*value) for key, value in inputs.items() if key != "dump"}
    if name == "links":
        from scraping.links import LinkOptions, collect_links

        result = collect_links(store, [inputs["dump"]], options=LinkOptions(workers=workers))
        return {"items": result.stats["counts"]["records"], "made": [result.ref]}
    if name == "fetch":
        from scraping.fetch_stage import FetchOptions, fetch_pages

        options = FetchOptions(
            connections=32,
            per_host_connections=8,
            per_host_delay=0.0,
            allow_loopback=True,
            shard_size=1_000,
        )
        result = fetch_pages(store, refs["links"], options)
        return {"items": result.stats["counts"]["attempted"], "made": [result.ref]}
    if name == "extract":
        from scraping.extract_stage import ExtractOptions, extract_documents

        result = extract_documents(store, refs["fetches"], ExtractOptions(workers=workers))
        return {"items": result.stats["counts"]["pages"], "made": [result.ref]}
    if name == "dedup":
        from dedup.signatures import compute_minhash
        from dedup.stage import deduplicate

        minhash = compute_minhash(store, refs["documents"])
        result = deduplicate(store, refs["documents"], minhash.ref)
        counts = result.stats["counts"]
        return {"items": counts["documents_in"], "made": [minhash.ref, result.ref], "dedup": counts}
    if name == "tokenize":
        from training.token_shards import encode_version
        from training.tokenizer_stage import gpt2_tokenizer_version, load_encoder

        tokenizer = gpt2_tokenizer_version(store, test_data_root() / "gpt2-bpe").ref
        with load_encoder(store, tokenizer) as encoder:
            result = encode_version(store, refs["webtext"], encoder, tokenizer)
        published = store.manifest(refs["webtext"]).stats["counts"]["published"]
        return {"items": published, "made": [result.ref]}
    raise ValueError(f"unknown stage {name!r}")


def _measured(work: Callable[[], dict], queue: Any) -> None:
    """Run `work` in this (child) process and report its cost and peak memory."""
    cpu, started = _cpu_seconds(), time.perf_counter()
    reset_peak_rss()
    before = vm_hwm_bytes()
    done = work()
    wall = time.perf_counter() - started
    # Every stage ends the processes it started: reaped here, so their CPU seconds count.
    for worker in multiprocessing.active_children():
        worker.join(timeout=60)
        if worker.is_alive():  # ended, or this process could not exit either
            worker.terminate()
            raise RuntimeError(f"the stage left {worker} running")
    workers_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done.update(
        wall_s=wall,
        cpu_s=_cpu_seconds() - cpu,
        peak_rss_bytes=max(vm_hwm_bytes(), workers_kib * 1024),
        peak_above_start_bytes=vm_hwm_bytes() - before,
    )
    queue.put(done)


def _stage_child(name: str, store_root: str, inputs: dict, workers: int, queue: Any) -> None:
    def work() -> dict:
        from webtext.store import Store

        done = _stage_run(name, store_root, inputs, workers)
        store = Store(store_root)
        done["disk_bytes"] = sum(f.size for ref in done["made"] for f in store.manifest(ref).files)
        done["made"] = [(ref.stage, ref.version) for ref in done["made"]]
        return done

    _measured(work, queue)


def _in_child(target: Callable, *args: Any) -> dict:
    """`target(*args, queue)` in a fresh spawned process: its imports and memory its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    try:
        while True:
            try:
                return queue.get(timeout=5)
            except queue_module.Empty:
                if not process.is_alive():
                    name = f"{target.__name__}{args[:1]}"
                    raise RuntimeError(f"{name} died: exit {process.exitcode}") from None
    finally:
        process.join()


def pipeline(pages: int, bases: list[str], workers: int) -> dict[str, dict]:
    """Every stage over `pages` generated pages, each in its own process."""
    from webtext_app.demo import write_dump
    from webtext_app.demo_web import gen_urls

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="webtext-scale-") as folder:
        dump = write_dump(
            Path(folder) / "RS_scale.zst", _dump_records(gen_urls(bases, pages)), bad_line=False
        )
        inputs: dict[str, Any] = {"dump": str(dump)}
        for name in STAGES:
            done = _in_child(_stage_child, name, f"{folder}/store", inputs, workers)
            results[name] = done
            for stage, version in done["made"]:
                inputs[stage] = (stage, version)
            print(
                f"{pages:>8,} pages  {name:<8} {done['items']:>8,} in  {done['wall_s']:7.1f} s  "
                f"cpu {done['cpu_s']:7.1f} s  peak {done['peak_rss_bytes'] / 2**20:6.0f} MiB  "
                f"disk {done['disk_bytes'] / 2**20:8.1f} MiB",
                file=sys.stderr,
            )
    return results


def _synthetic_child(count: int, queue: Any) -> None:
    """Dedup alone over `count` synthetic MinHash rows (documents with short texts)."""
    import numpy as np
    import pyarrow as pa

    from dedup.minhash import MinHashSettings, band_keys
    from dedup.signatures import minhash_schema
    from dedup.stage import deduplicate
    from webtext.parquet import put_table
    from webtext.store import Store
    from webtext.tables import DOCUMENTS_SCHEMA

    settings = MinHashSettings()
    rng = np.random.default_rng(count)
    with tempfile.TemporaryDirectory(prefix="webtext-scale-dedup-") as folder:
        store = Store(folder)
        parts = range(0, count, SYNTHETIC_PART_ROWS)
        seen = pa.scalar(
            dt.datetime(2017, 1, 1, tzinfo=dt.UTC), DOCUMENTS_SCHEMA.field("first_seen").type
        )
        with store.write("documents", {"synthetic": count}, "bench") as out:
            for start in parts:
                rows = min(SYNTHETIC_PART_ROWS, count - start)
                ids = [f"{i:016x}" for i in range(start, start + rows)]
                given = {
                    "doc_id": pa.array(ids),
                    "url": pa.array([f"http://s.example/{i}" for i in ids]),
                    "text": pa.array([f"synthetic document {i}" for i in ids]),
                    "karma": pa.array(rng.integers(0, 100, rows)),
                    "first_seen": pa.repeat(seen, rows),
                }
                table = pa.table(
                    [given.get(f.name, pa.nulls(rows, f.type)) for f in DOCUMENTS_SCHEMA],
                    schema=DOCUMENTS_SCHEMA,
                )
                put_table(out, f"documents/part-{start // SYNTHETIC_PART_ROWS:05d}.parquet", table)
            documents = out.ref
        schema = minhash_schema(settings)
        with store.write("minhash", {"synthetic": count}, "bench", parents=(documents,)) as out:
            for start in parts:
                rows = min(SYNTHETIC_PART_ROWS, count - start)
                matrix = rng.integers(0, 2**32, (rows, settings.num_perm), dtype=np.uint32)
                copies = np.arange(rows)[np.arange(start, start + rows) % 10 == 9]
                copies = copies[copies > 0]
                matrix[copies] = matrix[copies - 1]
                changed = rng.integers(0, settings.num_perm, (len(copies), SYNTHETIC_CHANGED))
                matrix[copies[:, None], changed] = rng.integers(
                    0, 2**32, changed.shape, dtype=np.uint32
                )
                keys = band_keys(matrix, settings).astype(np.uint64)
                table = pa.table(
                    {
                        "doc_id": pa.array([f"{i:016x}" for i in range(start, start + rows)]),
                        # Spread as sha256 digests are: the spill's key ranges are
                        # cut by their first bytes.
                        "text_hash": pa.array(
                            [
                                hashlib.blake2b(b"%d" % i, digest_size=16).hexdigest()
                                for i in range(start, start + rows)
                            ]
                        ),
                        "signature": pa.FixedSizeListArray.from_arrays(
                            pa.array(matrix.reshape(-1)), settings.num_perm
                        ),
                        "bands": pa.FixedSizeListArray.from_arrays(
                            pa.array(keys.reshape(-1)), settings.bands
                        ),
                    },
                    schema=schema,
                )
                put_table(out, f"minhash/part-{start // SYNTHETIC_PART_ROWS:05d}.parquet", table)
            minhash = out.ref

        def work() -> dict:
            result = deduplicate(store, documents, minhash, settings)
            return {"items": count, "dedup": result.stats["counts"]}

        _measured(work, queue)


def _dask_speedup(path: Path | None) -> dict | None:
    """benchmarks/dask_speedup.py's JSON line from `path` (its own run: starting Dask
    clusters here would double this script's time), or None when none is given."""
    if path is None:
        return None
    try:
        line = path.read_text().strip().splitlines()[-1]
        report = json.loads(line)
    except (OSError, IndexError, ValueError) as exc:
        sys.exit(f"--dask-speedup {path}: not a dask_speedup.py JSON line ({exc})")
    if not isinstance(report, dict) or "ratio" not in report:
        sys.exit(f"--dask-speedup {path}: no 'ratio' in its last line")
    return report


def exponent(small: float, large: float) -> float:
    """The growth exponent between N and 10N: 1 is linear."""
    return math.log(max(large, 1e-9) / max(small, 1e-9)) / math.log(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10_000, help="N: runs N and 10N pages")
    parser.add_argument("--signatures", type=int, default=100_000, help="dedup alone: S and 10S")
    parser.add_argument("--workers", type=int, default=2, help="processes of links and extract")
    parser.add_argument("--hosts", type=int, default=8, help="loopback addresses served")
    parser.add_argument(
        "--dask-speedup",
        type=Path,
        help="a file holding the last line of benchmarks/dask_speedup.py, reported as is",
    )
    parser.add_argument("--quick", action="store_true", help="tiny input, seconds (CI)")
    # --quick: smaller defaults; options given explicitly still win
    args = parse(parser, argv, quick=dict(pages=10, signatures=1_000))
    sizes = (args.pages, 10 * args.pages)
    dask = _dask_speedup(args.dask_speedup)  # a bad file fails before the long run

    context = multiprocessing.get_context("spawn")
    ready, stop, server_cpu = context.Queue(), context.Event(), context.Queue()
    server = context.Process(target=serve, args=(0.0, args.hosts, ready, stop, server_cpu))
    server.start()
    try:
        bases = ready.get(timeout=60)
        runs = {pages: pipeline(pages, bases, args.workers) for pages in sizes}
    finally:
        stop.set()
        server.join(timeout=30)
    synthetic = {}
    for count in (args.signatures, 10 * args.signatures):
        synthetic[count] = _in_child(_synthetic_child, count)
        done = synthetic[count]
        print(
            f"dedup alone, {count:,} synthetic signatures: {done['wall_s']:.1f} s, "
            f"peak {done['peak_rss_bytes'] / 2**20:.0f} MiB "
            f"(+{done['peak_above_start_bytes'] / 2**20:.0f} MiB over the process before), "
            f"{done['dedup']}",
            file=sys.stderr,
        )

    small, large = (runs[n] for n in sizes)
    stages, projection = {}, {}
    for name in STAGES:
        a, b = small[name], large[name]
        cost_exponent = exponent(a["cpu_s"], b["cpu_s"])
        memory_exponent = exponent(a["peak_rss_bytes"], b["peak_rss_bytes"])
        stages[name] = {
            "docs_per_s": round(b["items"] / b["wall_s"], 1),
            "peak_rss_mb": round(b["peak_rss_bytes"] / 2**20, 1),
            "disk_bytes_per_doc": round(b["disk_bytes"] / max(b["items"], 1)),
            "exponent": round(cost_exponent, 3),
            "cpu_s_per_1k_docs": round(1000 * b["cpu_s"] / max(b["items"], 1), 3),
            "peak_rss_mb_at_n": round(a["peak_rss_bytes"] / 2**20, 1),
            "memory_growth": round(b["peak_rss_bytes"] / a["peak_rss_bytes"], 3),
            "docs": [a["items"], b["items"]],
        }
        scale = TARGETS[name] / max(b["items"], 1)
        projection[name] = {
            "docs": TARGETS[name],
            "core_hours": round(b["cpu_s"] * scale ** max(cost_exponent, 1.0) / 3600, 1),
            "peak_memory_mb_per_worker": round(
                b["peak_rss_bytes"] * scale ** max(memory_exponent, 0.0) / 2**20
            ),
        }
    projection["total_core_hours"] = round(sum(p["core_hours"] for p in projection.values()), 1)
    few, many = (synthetic[n] for n in sorted(synthetic))
    dedup_alone = {
        "signatures": sorted(synthetic),
        "peak_rss_mb": [round(d["peak_rss_bytes"] / 2**20, 1) for d in (few, many)],
        "peak_above_start_mb": [round(d["peak_above_start_bytes"] / 2**20, 1) for d in (few, many)],
        "wall_s": [round(d["wall_s"], 1) for d in (few, many)],
        "near_duplicates": [d["dedup"]["near_duplicates"] for d in (few, many)],
        "union_find_mb_at_10s": round(8 * max(synthetic) / 2**20, 1),
        "exponent": round(exponent(few["cpu_s"], many["cpu_s"]), 3),
    }
    print(
        f"{'stage':<9}{'docs/s':>9}{'peak MiB':>10}{'disk B/doc':>12}{'exponent':>10}",
        file=sys.stderr,
    )
    for name, row in stages.items():
        print(
            f"{name:<9}{row['docs_per_s']:>9}{row['peak_rss_mb']:>10}"
            f"{row['disk_bytes_per_doc']:>12}{row['exponent']:>10}",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "stages": stages,
                "dedup_synthetic": dedup_alone,
                "dask_speedup": dask,
                **({} if dask else {"dask_speedup_reason": NO_DASK_SPEEDUP}),
                "projection": projection,
                "pages": list(sizes),
                "workers": args.workers,
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
