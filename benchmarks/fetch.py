"""Fetch-stage throughput against a sequential one-at-a-time client, same server, same run.

    python benchmarks/fetch.py [--connections 64] [--latency 0.1] [--hosts 32] [--profile]
                               [--quick]

The demo web serves its article pages with `--latency` seconds injected before every
answer, on `--hosts` loopback addresses (127.0.0.1..N), from a separate process so
server and client do not share an interpreter. Ours is the whole fetch stage
(`fetch_pages`: robots.txt, politeness, safety checks, WARC and Parquet output) with
`--connections` in flight; the baseline fetches pages one after another with urllib.
Printed last: one JSON line. CPU seconds of each process say where the bound lies;
`--profile` adds the client's top functions by own time. `--quick`: 2 hosts, 8 connections,
10 ms latency, the same code path, a few seconds (CI runs it so that the script cannot rot;
its figures are not measurements).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import pstats
import resource
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import parse  # noqa: E402
from scraping.fetch_stage import FetchOptions, fetch_pages  # noqa: E402
from webtext.store import Store  # noqa: E402
from webtext_app.demo_web import DemoWeb, site_urls  # noqa: E402


def serve(latency: float, hosts: int, ready, stop, cpu) -> None:
    """Serve the demo web (in a child process): its base URLs into `ready`, then, once
    `stop` is set, its CPU seconds into `cpu`."""
    with DemoWeb(latency=latency, addresses=hosts) as web:
        ready.put(web.base_urls)
        stop.wait()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu.put(usage.ru_utime + usage.ru_stime)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def baseline(urls: list[str]) -> float:
    """Pages per second of a plain sequential client."""
    started = time.perf_counter()
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
    return len(urls) / (time.perf_counter() - started)


def ours(urls: list[str], connections: int, profile: bool) -> tuple[float, float, dict, str]:
    """Pages per second of the fetch stage, its CPU seconds, its counts, a profile."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder)
        with store.write("links", {"benchmark": len(urls)}, "bench") as out:
            import pyarrow as pa
            import pyarrow.parquet as pq

            with out.open("links/part-00000.parquet", rows=len(urls)) as handle:
                pq.write_table(pa.table({"url": urls}), handle)
            links = out.ref
        # The stage's options as the CLI and the flows pass them.
        options = FetchOptions(
            connections=connections,
            per_host_connections=max(1, connections // len({u.split("/")[2] for u in urls})),
            per_host_delay=0.0,
            allow_loopback=True,
            shard_size=1000,
        )
        profiler = cProfile.Profile() if profile else None
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        result = fetch_pages(store, links, options)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
    report = ""
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        report = text.getvalue()
    return len(urls) / elapsed, cpu, result.stats["counts"], report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--hosts", type=int, default=32)
    parser.add_argument("--baseline-pages", type=int, default=40)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny input, seconds (CI)")
    # --quick: smaller defaults; options given explicitly still win
    args = parse(parser, argv, quick=dict(connections=8, latency=0.01, hosts=2, baseline_pages=10))

    context = multiprocessing.get_context("spawn")
    ready, stop, cpu = context.Queue(), context.Event(), context.Queue()
    server = context.Process(target=serve, args=(args.latency, args.hosts, ready, stop, cpu))
    server.start()
    try:
        bases = ready.get(timeout=60)
        urls = [url for base in bases for url in site_urls(base)["article"]]
        base_rate = baseline(urls[: args.baseline_pages])
        print(f"baseline: {base_rate:.1f} pages/s (sequential urllib)", file=sys.stderr)
        rate, client_cpu, counts, report = ours(urls, args.connections, args.profile)
        print(f"ours: {rate:.1f} pages/s over {len(urls)} pages", file=sys.stderr)
        assert counts["fetched"] == len(urls), counts
    finally:
        stop.set()
        server.join(timeout=30)
    server_cpu = cpu.get(timeout=10)
    if report:
        print(report, file=sys.stderr)
    wall = len(urls) / rate
    print(
        json.dumps(
            {
                "pages_per_s": round(rate, 1),
                "baseline_pages_per_s": round(base_rate, 1),
                "ratio": round(rate / base_rate, 1),
                "connections": args.connections,
                "latency_s": args.latency,
                "pages": len(urls),
                "wall_s": round(wall, 2),
                "client_cpu_s": round(client_cpu, 2),
                "server_cpu_s_whole_run": round(server_cpu, 2),
                "ideal_pages_per_s": round(args.connections / args.latency, 1),
                "baseline": "sequential urllib.request, one page at a time",
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
