"""Stage parts on Dask: 2 workers against 1, on extraction and MinHash signatures.

    python benchmarks/dask_speedup.py [--parts 8] [--pages-per-part 120] [--docs-per-part 3000]
                                      [--spin 5000000] [--seed 0] [--quick]

Inputs, made once: a `links` version and a `fetches` version of `parts` x
`pages-per-part` article pages (real prose: random paragraphs of CPython's reference and
docstrings, 300-1000 words, in page boilerplate), fetched by the real fetch stage from an
in-memory page source; and a `documents` version of `parts` x `docs-per-part` documents of
the same kind for MinHash.

Runs: each stage runs the same parts on a `distributed.LocalCluster` of 1 single-threaded
worker process (the baseline), then of 2, each run into a fresh copy of the inputs' store,
so both do all the work. Parts go to the cluster through `Client.map` (the `Map` the flows
hand the stage through Prefect's DaskTaskRunner, less Prefect's per-task bookkeeping);
extraction runs each part's pages in a pool of one process (`workers=1`), so a Dask
worker is one busy process. Each cluster is warmed up before the stage is timed (every
worker imports the stages, loads the extractor and starts its page pool, as a worker has
after its first part; that warm-up's time is reported apart); the time is the stage
call's wall time, and the cores it kept busy are its CPU seconds (this process, the
workers, their page pools) over that time. Both runs must
publish the same version id and file hashes, or the script fails.

Human lines go to stderr, among them `ratio <stage> 2 workers / 1 worker = X`; the last
line on stdout is one JSON object with each stage's times and ratio (`ratio`: the lower
of the two, what the goal of >= 1.7 asks of both), the control's (8 tasks of a pure-CPU
Python loop on the same clusters: the most 2 workers can gain on this machine now, about
2 on 2 idle cores), the cores and the
load average before and after (other work on the machine bounds what 2 workers can
gain). `--quick`: 2 parts of 3 pages and 2 of 200 documents, the same code path (CI runs
it so that the script cannot rot; its figures are not measurements).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import parse  # noqa: E402
from benchmarks.dedup import make_document, paragraphs  # noqa: E402
from dedup.signatures import compute_minhash  # noqa: E402
from flows.runner import let_dask_workers_start_processes  # noqa: E402
from scraping.extract_stage import ExtractOptions, extract_documents  # noqa: E402
from scraping.fetch_stage import FetchOptions, fetch_pages  # noqa: E402
from scraping.page_source import FetchResult  # noqa: E402
from webtext.parquet import put_table  # noqa: E402
from webtext.store import Store, VersionRef  # noqa: E402
from webtext.tables import DOCUMENTS_SCHEMA  # noqa: E402

PAGE = (
    "<html><head><title>{title}</title></head><body><nav>Home | News | About</nav>"
    "<article><h1>{title}</h1>{body}</article><footer>Copyright 2017</footer></body></html>"
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class MemorySource:
    """A page source serving fixed pages from memory (no network in the timing)."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages

    async def __aenter__(self) -> MemorySource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def parameters(self) -> dict[str, Any]:
        return {"kind": "memory", "pages": len(self.pages)}

    async def fetch(self, url: str) -> FetchResult:
        content_type = "text/html; charset=utf-8"
        return FetchResult(
            url=url,
            final_url=url,
            status=200,
            headers=[("Content-Type", content_type)],
            body=self.pages[url],
            content_type=content_type,
            attempts=1,
        )


def make_inputs(root: Path, args: argparse.Namespace) -> tuple[VersionRef, VersionRef]:
    """The fetches version extraction reads and the documents version MinHash reads."""
    rng = random.Random(args.seed)
    pool = paragraphs()
    store = Store(str(root))
    pages = {}
    for i in range(args.parts * args.pages_per_part):
        text = make_document(pool, rng)
        body = "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n"))
        page = PAGE.format(title=f"Page {i}", body=body)
        # A host per part: each fetch shard (every host in one) is one part of the same size.
        pages[f"http://site{i % args.parts}.example/{i}"] = page.encode()
    urls = sorted(pages)
    seen = pa.array([1_500_000_000] * len(urls), pa.timestamp("s", tz="UTC"))
    links_table = pa.table(
        {
            "url": urls,
            "domain": [u.split("/")[2] for u in urls],
            "karma": [3] * len(urls),
            "submissions": [1] * len(urls),
            "subreddits": [["news"]] * len(urls),
            "post_ids": [[f"p{i}"] for i in range(len(urls))],
            "first_seen": seen,
            "last_seen": seen,
        }
    )
    parameters = {"benchmark": "dask_speedup", "urls": len(urls)}
    with store.write("links", parameters, "bench") as out:
        put_table(out, "links/part-00000.parquet", links_table)
    options = FetchOptions(shard_size=args.pages_per_part)
    fetches = fetch_pages(
        store, out.ref, options, open_page_source=partial(MemorySource, pages)
    ).ref

    first_seen = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
    with store.write("documents", {"benchmark": "dask_speedup"}, "bench") as out:
        for part in range(args.parts):
            rows = [
                {
                    "doc_id": f"{part:04d}-{i:06d}",
                    "url": f"http://docs.example/{part}/{i}",
                    "text": make_document(pool, rng),
                    "karma": 3,
                    "first_seen": first_seen,
                    "language": "en",
                    "word_count": 0,
                }
                for i in range(args.docs_per_part)
            ]
            table = pa.Table.from_pylist(rows, schema=DOCUMENTS_SCHEMA)
            put_table(out, f"documents/part-{part:05d}.parquet", table)
    return fetches, out.ref


def dask_map(client: Any) -> Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]:
    """The stage runtime's `Map` on a Dask client: every part submitted, results in order."""

    def run(work: Callable[[Any], Any], parts: Iterable[Any]) -> Iterator[Any]:
        futures = client.map(work, list(parts), pure=False)
        return (future.result() for future in futures)

    return run


def _warm_up(client: Any) -> float:
    """Bring every worker to where a long-running one is after its first part: the stages
    imported, the extractor's lazy parts loaded and its page pool started. A cluster's
    worker pays this once for thousands of parts; here it would weigh on a few seconds of
    work, so it is timed apart. Returns its wall seconds."""

    def load() -> int:
        import dedup.signatures  # noqa: F401
        from scraping import extract_stage

        extract_stage.page_pool(ExtractOptions(workers=1))  # what the timed run uses
        return os.getpid()

    started = time.perf_counter()
    client.run(load)
    return time.perf_counter() - started


def spin(n: int) -> int:
    """Pure CPU work, no I/O and no memory traffic: the control."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def control_seconds(client: Any, tasks: int, n: int) -> float:
    """Wall time of `tasks` spin tasks on the cluster: what the machine grants its workers."""
    started = time.perf_counter()
    client.gather(client.map(spin, [n] * tasks, pure=False))
    return time.perf_counter() - started


def cpu_seconds() -> float:
    """CPU seconds of this process and of every process below it, running or ended: the
    local cluster's scheduler (a thread here), nannies, workers and the workers' page
    pools (a page process recycled after 500 pages counts in its worker's children)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for process in (me, *me.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # ended since listed: counted in its parent's children
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass
class Timings:
    seconds: dict[str, dict[int, float]]  # stage (and "control") -> workers -> wall seconds
    cores: dict[str, dict[int, float]]  # stage -> workers -> cores busy on average
    warm_up: dict[int, float]  # workers -> the cluster's warm-up, wall seconds


def timed_runs(
    base: Path,
    stages: dict[str, Callable[[Store, Callable[..., Any]], VersionRef]],
    spin_n: int,
) -> Timings:
    """Each stage, and the control, on 1, then 2, Dask workers (one cluster for all)."""
    from distributed import Client, LocalCluster

    timings = Timings({name: {} for name in [*stages, "control"]}, {n: {} for n in stages}, {})
    published: dict[str, dict[int, dict[str, str]]] = {name: {} for name in stages}
    for workers in (1, 2):
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster,
            Client(cluster) as client,
        ):
            timings.warm_up[workers] = _warm_up(client)
            timings.seconds["control"][workers] = control_seconds(client, 8, spin_n)
            for name, run in stages.items():
                root = base / f"{name}-{workers}"
                shutil.copytree(base / "inputs", root)  # a fresh store: all the work again
                store = Store(str(root))
                cpu, started = cpu_seconds(), time.perf_counter()
                ref = run(store, dask_map(client))
                wall = timings.seconds[name][workers] = time.perf_counter() - started
                timings.cores[name][workers] = (cpu_seconds() - cpu) / wall
                files = {f.path: f.sha256 for f in store.manifest(ref).files}
                published[name][workers] = {"version": str(ref), **files}
    for name, runs in published.items():
        if runs[1] != runs[2]:
            raise SystemExit(f"{name}: 1 and 2 workers published different bytes")
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--pages-per-part", type=int, default=120)
    parser.add_argument("--docs-per-part", type=int, default=3_000)
    parser.add_argument("--spin", type=int, default=5_000_000, help="control loop length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    quick = {"parts": 2, "pages_per_part": 3, "docs_per_part": 200, "spin": 100_000}
    args = parse(parser, argv, quick=quick)
    let_dask_workers_start_processes()  # the page pool runs inside a worker
    load_before = os.getloadavg()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dask-speedup-") as folder:
        base = Path(folder)
        fetches, documents = make_inputs(base / "inputs", args)
        stages = {
            "extract": lambda store, parts: (
                extract_documents(store, fetches, ExtractOptions(workers=1), map=parts).ref
            ),
            "minhash": lambda store, parts: compute_minhash(store, documents, map=parts).ref,
        }
        timings = timed_runs(base, stages, args.spin)
        for name, runs in timings.seconds.items():
            one, two = runs[1], runs[2]
            _log(f"{name}: 1 worker {one:.2f} s, 2 workers {two:.2f} s")
            _log(f"ratio {name} 2 workers / 1 worker = {one / two:.2f}")
            report[name] = {"one_worker_s": one, "two_workers_s": two, "ratio": one / two}
            if name in timings.cores:
                busy = timings.cores[name]
                _log(f"{name}: cores busy with 1 worker {busy[1]:.2f}, with 2 {busy[2]:.2f}")
                report[name].update(one_worker_cores=busy[1], two_workers_cores=busy[2])
    warm_up = timings.warm_up
    _log(f"warm-up (imports, extractor, page pool): {warm_up[1]:.2f} s, {warm_up[2]:.2f} s")
    report.update(
        warm_up_s={"one_worker": warm_up[1], "two_workers": warm_up[2]},
        ratio=min(report[name]["ratio"] for name in ("extract", "minhash")),  # the goal's
        parts=args.parts,
        pages=args.parts * args.pages_per_part,
        documents=args.parts * args.docs_per_part,
        cores=os.cpu_count(),
        load_average_before=load_before[0],
        load_average_after=os.getloadavg()[0],
        baseline="1 Dask worker",
        quick=args.quick,
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
