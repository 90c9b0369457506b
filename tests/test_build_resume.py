"""The whole `build-webtext` DAG under Prefect: incremental months, and a kill in every stage.

Both tests run the real flows against the session's Prefect test server and the demo's
offline web on loopback. The kill test runs each build in a child process group, freezes it
(SIGSTOP) the moment a stage is seen working, checks that the stage had not finished, and
SIGKILLs the whole group (the trainer and the extraction workers included).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from webtext.store import Store, VersionRef
from webtext_app.demo import (
    DEMO_EVALUATE,
    DEMO_FETCH,
    DEMO_START,
    DEMO_TOKENIZE,
    DEMO_TRAIN,
    PAGE_KINDS,
    demo_records,
    write_demo_dump,
    write_dump,
)
from webtext_app.demo_web import DemoWeb, site_urls

pytestmark = [
    pytest.mark.usefixtures("prefect_server"),
    # Process groups, SIGSTOP/SIGKILL and /proc: POSIX (Linux) only.
    pytest.mark.skipif(sys.platform != "linux", reason="needs Linux process groups and /proc"),
]

REPO_ROOT = Path(__file__).resolve().parent.parent
STAGES = ("links", "fetch", "extract", "dedup", "tokenize", "train", "evaluate")
SUBFLOWS = {
    "links": "collect-links",
    "fetch": "fetch-pages",
    "extract": "extract-text",
    "dedup": "dedup",
    "tokenize": "tokenize",
    "train": "train-gpt2",
    "evaluate": "evaluate-zero-shot",
}
OUTPUTS = {
    "links": "links",
    "fetch": "fetches",
    "extract": "documents",
    "dedup": "webtext",
    "tokenize": "tokens",
    "train": "model",
    "evaluate": "evaluation",
}
# The demo's training, shortened to keep the test quick: three checkpoints still leave
# room to kill it between two.
MAX_STEPS = 60
TRAIN = {
    **DEMO_TRAIN,
    "max_steps": MAX_STEPS,
    "extra_args": [
        *("--warmup-steps", "10"),
        *("--eval-interval", "20"),
        *("--checkpoint-interval", "20"),
    ],
}
EVALUATE = {**DEMO_EVALUATE, "limit": 16}
CHILD_TIMEOUT_S = 600


# Reading versions ------------------------------------------------------------------------


def _table(
    store: Store, ref: VersionRef, folder: str, columns: list[str] | None = None
) -> pa.Table:
    """Every Parquet part under `folder/` of a version, as one table."""
    tables = []
    for entry in store.manifest(ref).files:
        if entry.path.startswith(f"{folder}/") and entry.path.endswith(".parquet"):
            with store.fs.open(f"{store.version_dir(ref)}/{entry.path}", "rb") as handle:
                tables.append(pq.read_table(handle, columns=columns))
    assert tables, f"{ref} has no {folder}/ parts"
    return pa.concat_tables(tables)


def _documents(store: Store, ref: VersionRef, folder: str) -> dict[str, str]:
    """doc_id -> text of a documents or webtext version's `folder` parts."""
    table = _table(store, ref, folder, ["doc_id", "text"])
    docs = dict(zip(table["doc_id"].to_pylist(), table["text"].to_pylist(), strict=True))
    assert len(docs) == table.num_rows, f"{ref}: a doc_id twice in {folder}/"
    return docs


def _urls(store: Store, ref: VersionRef, folder: str) -> set[str]:
    urls = _table(store, ref, folder, ["url"])["url"].to_pylist()
    assert len(urls) == len(set(urls)), f"{ref}: a URL twice in {folder}/"
    return set(urls)


def _dropped(store: Store, ref: VersionRef) -> dict[str, str]:
    """doc_id -> the doc_id kept in its place, from a webtext version's clusters table."""
    table = _table(store, ref, "clusters", ["doc_id", "kept_doc_id"])
    return dict(zip(table["doc_id"].to_pylist(), table["kept_doc_id"].to_pylist(), strict=True))


# Test 1: two months, incrementally -------------------------------------------------------


def _two_months(base_url: str) -> tuple[list[dict], list[dict], list[str], list[str]]:
    """The demo's page posts split in time into two "months", plus month-2 reposts of
    month-1 URLs: three that cleared the karma bar in month 1 (fetched then), three that
    only clear it with the repost's karma (first fetched in month 2).

    The fault URLs are left out: `test_flows` covers them, and a slow-loris page only
    makes each fetch five seconds longer.
    """
    faults = {
        url for kind, urls in site_urls(base_url).items() if kind not in PAGE_KINDS for url in urls
    }
    records = [r for r in demo_records(base_url) if r["url"] not in faults]
    cutoff = DEMO_START + 120 * 3_600  # in the middle of the mirrors: mirrors in both months
    month1 = [r for r in records if int(r["created_utc"]) < cutoff]
    month2 = [r for r in records if int(r["created_utc"]) >= cutoff]
    karma: Counter[str] = Counter()
    for record in month1:
        karma[record["url"].split("?", 1)[0]] += int(record["score"])
    articles = sorted(set(site_urls(base_url)["article"]) & set(karma))
    over = [url for url in articles if karma[url] >= 3][:3]
    under = [url for url in articles if karma[url] < 3][:3]
    last = max(int(r["created_utc"]) for r in records)
    for i, url in enumerate(over + under):
        month2.append(
            {
                "id": f"repost{i:02d}",
                "url": url,
                "title": "again",
                "score": 5,
                "created_utc": last + (i + 1) * 3_600,
                "subreddit": "python",
                "is_self": False,
                "over_18": False,
                "domain": url.split("/")[2],
            }
        )
    return month1, month2, over, under


def test_a_second_month_fetches_only_new_urls_and_publishes_only_new_documents(
    tmp_path: Path,
) -> None:
    """Two dumps built one after the other (`incremental=True`) against one store.

    What "nothing lost" can honestly mean: the documents *extracted* over both months are
    exactly those a single build over both dumps extracts (same doc ids, same texts). The
    *published* sets may differ in which member of a duplicate cluster survives: a single
    build keeps the highest-karma member, an incremental one must keep the member it
    published in month 1 (published text never changes). So the test checks that each
    build accounts for every document exactly once (published, or dropped for a survivor
    it published), and that both builds form the same clusters (joining the two builds'
    "dropped for" edges, every cluster holds exactly one published document of each).
    A near-duplicate chain A~B~C with A and C apart, split over the months, could
    legitimately keep two; the demo's mirrors are one-to-one copies, so it has none.
    """
    from dedup.minhash import text_hash
    from flows.build import build_webtext
    from training.token_shards import split_of
    from training.tokenizer_stage import load_encoder

    with DemoWeb() as web:
        month1, month2, over, under = _two_months(web.base_url)
        assert len(over) == len(under) == 3
        dump1 = write_dump(tmp_path / "inputs" / "RS_month-1.zst", month1)
        dump2 = write_dump(tmp_path / "inputs" / "RS_month-2.zst", month2)
        store = Store(str(tmp_path / "store"))
        common: dict[str, Any] = {"fetch": DEMO_FETCH, "incremental": True, "until": "dedup"}
        first = build_webtext(dumps=[str(dump1)], store_url=store.root_url, **common)
        second = build_webtext(dumps=[str(dump2)], store_url=store.root_url, **common)
        single_store = Store(str(tmp_path / "single"))
        single = build_webtext(
            dumps=[str(dump1), str(dump2)], store_url=single_store.root_url, **common
        )
        # The tokens stage on the second version; every earlier stage is reused.
        tokenized = build_webtext(
            dumps=[str(dump2)],
            store_url=store.root_url,
            **{**common, "until": "tokenize", "tokenize": DEMO_TOKENIZE},
        )

    # Links: month 2 merged into month 1 is what one build over both dumps collects.
    assert store.manifest(second["links"]).parents == (first["links"],)
    merged = _table(store, second["links"], "links", ["url", "karma"]).sort_by("url")
    assert merged.equals(
        _table(single_store, single["links"], "links", ["url", "karma"]).sort_by("url")
    )

    # Fetches: the second version attempts only URLs no earlier version holds.
    fetched1 = _urls(store, first["fetch"], "fetches")
    fetched2 = _urls(store, second["fetch"], "fetches")
    assert fetched2 and not fetched1 & fetched2
    assert set(over) <= fetched1 and not set(over) & fetched2  # reposts: not fetched again
    assert set(under) <= fetched2 and not set(under) & fetched1  # lifted over the bar by them
    assert fetched1 | fetched2 == set(merged["url"].to_pylist())
    counts = store.manifest(second["fetch"]).stats["counts"]
    assert counts["fetched_before"] == len(fetched1)
    assert counts["attempted"] == len(fetched2) == counts["urls"] - len(fetched1)
    assert first["fetch"] in store.manifest(second["fetch"]).parents

    # Documents: extracted once each; both months together are the single build's.
    docs1 = _documents(store, first["extract"], "documents")
    docs2 = _documents(store, second["extract"], "documents")
    assert not docs1.keys() & docs2.keys()
    everything = _documents(single_store, single["extract"], "documents")
    assert {**docs1, **docs2} == everything

    # Published: the second version names the first, and repeats none of its documents.
    assert first["dedup"] in store.manifest(second["dedup"]).parents
    published1 = _documents(store, first["dedup"], "data")
    published2 = _documents(store, second["dedup"], "data")
    assert published1 and published2
    assert not published1.keys() & published2.keys()
    hashes1 = {text_hash(text) for text in published1.values()}
    hashes2 = {text_hash(text) for text in published2.values()}
    assert len(hashes1) == len(published1) and len(hashes2) == len(published2)
    assert not hashes1 & hashes2
    counts = store.manifest(second["dedup"]).stats["counts"]
    assert counts["duplicates_of_earlier_versions"] > 0  # month 2's mirrors of month 1

    # Nothing lost: every document published or dropped for a published survivor, once.
    incremental = {**published1, **published2}
    dropped = {**_dropped(store, first["dedup"]), **_dropped(store, second["dedup"])}
    single_published = _documents(single_store, single["dedup"], "data")
    single_dropped = _dropped(single_store, single["dedup"])
    for published, lost in ((incremental, dropped), (single_published, single_dropped)):
        assert not published.keys() & lost.keys()
        assert published.keys() | lost.keys() == everything.keys()
        assert set(lost.values()) <= published.keys()
    # The same clusters: one survivor each, in either build.
    clusters = _components(everything, [*dropped.items(), *single_dropped.items()])
    for members in clusters:
        assert len(members & incremental.keys()) == 1, members
        assert len(members & single_published.keys()) == 1, members

    # Tokens of the second version: the dataset as of it, i.e. both versions' documents.
    assert tokenized["dedup"] == second["dedup"] and tokenized["links"] == second["links"]
    tokens = store.manifest(tokenized["tokenize"])
    assert tokens.parents[0] == second["dedup"]
    shards = {f.path.rsplit("/", 1)[-1].split("-", 1)[0] for f in tokens.files}
    assert shards == {first["dedup"].version, second["dedup"].version}
    tokenizer = next(p for p in tokens.parents if p.stage == "tokenizer")
    encoder = load_encoder(store, tokenizer)
    expected = {"train_tokens": 0, "val_tokens": 0}
    arrays = encoder.encode_batch_arrays(list(incremental.values()))
    for doc_id, array in zip(incremental, arrays, strict=True):
        split = split_of(doc_id, DEMO_TOKENIZE["val_fraction"])
        expected[f"{split}_tokens"] += len(array) + 1  # and its <|endoftext|>
    assert {k: tokens.stats["counts"][k] for k in expected} == expected


def _components(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[set[str]]:
    """Connected components of an undirected graph."""
    parent = {node: node for node in nodes}

    def find(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: dict[str, set[str]] = {}
    for node in parent:
        groups.setdefault(find(node), set()).add(node)
    return list(groups.values())


# Test 2: a kill in every stage -----------------------------------------------------------

# The child: one build-webtext run, tagged so the test finds its flow runs on the server.
_CHILD = """
import json, sys
from prefect import tags
from flows.build import build_webtext
tag, result, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with tags(tag):
    refs = build_webtext(**kwargs)
with open(result, "w") as handle:
    json.dump({name: [ref.stage, ref.version] for name, ref in refs.items()}, handle)
"""


@dataclass
class ChildBuild:
    """A build-webtext run in its own process group; `scratch` is its TMPDIR."""

    process: subprocess.Popen[bytes]
    tag: str
    scratch: Path
    log: Path
    result: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6_000:]


@contextlib.contextmanager
def _child_build(
    kwargs: dict[str, Any], folder: Path, api_url: str, runs: Path, store: Store
) -> Iterator[ChildBuild]:
    """Start a build in its own process group; on the way out, none of it is left running."""
    folder.mkdir(parents=True)
    scratch = folder / "tmp"  # a fresh TMPDIR: the stages' scratch folders show up here
    scratch.mkdir()
    tag = f"resume-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,  # PREFECT_HOME and the other settings of this session
        "PREFECT_API_URL": api_url,
        "WEBTEXT_RUNS": str(runs),
        "TMPDIR": str(scratch),
    }
    result = folder / "refs.json"
    arguments = json.dumps({**kwargs, "store_url": store.root_url})
    log = folder / "build.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, tag, str(result), arguments],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the trainer and workers too
        )
    child = ChildBuild(process, tag, scratch, log, result)
    try:
        yield child
    finally:
        if process.poll() is None:
            _kill_group(process)


def _finish(child: ChildBuild) -> dict[str, VersionRef]:
    try:
        returncode = child.process.wait(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"build still running after {CHILD_TIMEOUT_S} s:\n{child.output()}")
    assert returncode == 0, f"build failed ({returncode}):\n{child.output()}"
    refs = json.loads(child.result.read_text())
    return {name: VersionRef(*ref) for name, ref in refs.items()}


def _group_states(pgid: int) -> dict[int, str]:
    """pid -> state letter of the live (not zombie) processes of a process group."""
    states = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            states[int(stat.parent.name)] = fields[0]
    return states


def _freeze(process: subprocess.Popen[bytes]) -> None:
    """SIGSTOP the group and wait until every member has stopped: a barrier, after which
    nothing the build does can change what the test sees."""
    os.killpg(process.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while any(state not in "Tt" for state in _group_states(process.pid).values()):
        assert time.monotonic() < deadline, f"process group {process.pid} did not stop"
        time.sleep(0.001)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole group and wait until every member is gone."""
    with contextlib.suppress(ProcessLookupError):  # the group may be gone already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while _group_states(process.pid):
        assert time.monotonic() < deadline, f"process group {process.pid} outlived SIGKILL"
        time.sleep(0.05)


def _stage_started(stage: str, store_dir: Path, runs: Path) -> bool:
    """Whether `stage` is visibly working: its staging folders, its checkpoints."""

    def found(pattern: str, root: Path = store_dir) -> bool:
        return next(root.glob(pattern), None) is not None

    if stage == "links":  # filtering into its staged spill, aggregating, the write
        return found("links/.staging-*")
    if stage == "fetch":  # pages written into the staged version's WARC
        return found("fetches/.staging-*/warc/*.warc.gz")
    if stage == "extract":
        return found("documents/.staging-*")
    if stage == "dedup":  # signatures staged or done, or the publishing write
        return found("minhash/.staging-*") or found("minhash/*/manifest.json")
    if stage == "tokenize":  # the vocabulary written or being written, or encoding
        return found("tokenizer/.tmp-*") or found("tokenizer/*/manifest.json")
    if stage == "train":  # a checkpoint, and steps logged past it
        checkpoints = sorted(runs.glob("tiny-*/ckpt-*.pt"))
        if not checkpoints:
            return False
        saved = int(checkpoints[-1].stem.split("-")[1])
        return saved < MAX_STEPS and _last_step(checkpoints[-1].parent) >= saved + 3
    if stage == "evaluate":  # one evaluation set scored, others to go
        return found("evaluation/.staging-*/tasks/*.json")
    raise ValueError(stage)


def _last_step(run_dir: Path) -> int:
    steps = [0]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):  # a line being written
            steps.append(json.loads(line)["step"])
    return steps[-1]


@dataclass
class Kill:
    stage: str
    flow_run_id: uuid.UUID
    checkpoints: dict[Path, tuple[int, int]]  # path -> (inode, mtime_ns), at the kill


# Stages that take about a second on the demo, too short to catch at work by polling alone:
# the build is frozen when their sub-flow run turns RUNNING, then let run in short slices
# until the stage is seen at work (a build on a busy machine runs no differently).
SHORT_STAGES = ("links", "dedup", "tokenize")
SLICE_S = 0.02


def _stage_runs(client: Any, stage: str, tag: str) -> list[Any]:
    """The flow runs of `stage`'s sub-flow under one child build."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterTags,
    )

    return client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[SUBFLOWS[stage]])),
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
    )


def _kill_during(stage: str, child: ChildBuild, store: Store, store_dir: Path, runs: Path) -> Kill:
    """Wait until `stage` works, freeze the build, check the stage is unfinished, kill it.

    SIGSTOP first: with the whole group frozen, "unfinished" cannot change between the
    check and the SIGKILL. (On failure, `_child_build` kills the frozen group.)
    """
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + CHILD_TIMEOUT_S
    asked = 0.0
    with get_client(sync_client=True) as client:
        while not _stage_started(stage, store_dir, runs):
            if stage in SHORT_STAGES and time.monotonic() - asked > 0.03:
                asked = time.monotonic()
                if any(
                    r.state and r.state.is_running() for r in _stage_runs(client, stage, child.tag)
                ):
                    break
            if child.process.poll() is not None:
                pytest.fail(f"build ended before {stage} was seen working:\n{child.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{stage} not seen working in {CHILD_TIMEOUT_S} s:\n{child.output()}")
            time.sleep(0.005)  # a file check is cheap: poll fast, so short stages are caught
        _freeze(child.process)  # nothing finishes from here on
        while not _stage_started(stage, store_dir, runs):  # a short stage
            assert store.versions(OUTPUTS[stage]) == [], f"{stage} finished before it was seen"
            os.killpg(child.process.pid, signal.SIGCONT)
            time.sleep(SLICE_S)
            _freeze(child.process)
        checkpoints = {
            path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in runs.glob("*/ckpt-*.pt")
        }
        assert store.versions(OUTPUTS[stage]) == [], f"{stage} finished before the kill"
        stage_runs = _stage_runs(client, stage, child.tag)
        assert len(stage_runs) == 1, f"{SUBFLOWS[stage]} runs: {stage_runs}"
        assert stage_runs[0].state is not None and stage_runs[0].state.is_running()
    _kill_group(child.process)
    return Kill(stage, stage_runs[0].id, checkpoints)


def _never_completed(kill: Kill) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(kill.flow_run_id)
    assert states and not any(state.is_completed() for state in states), (kill.stage, states)


def test_a_kill_in_every_stage_then_a_rerun_loses_and_doubles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One store, one build per stage, each SIGKILLed while that stage runs (its earlier
    stages reused or finished by it), then a build that completes; compared with an
    uninterrupted build of the same inputs in another store.

    Kill points: links while filtering into its staged spill; fetch with pages in the
    staged WARC; extract with its version staged; dedup with signatures staged or done;
    tokenize with the vocabulary written or being written; training a few steps past a
    checkpoint; evaluation with one set scored. Training is the demo's, shortened to
    60 steps with a checkpoint every 20.
    """
    import prefect.settings

    from flows.build import build_webtext

    api_url = prefect.settings.PREFECT_API_URL.value()
    assert api_url, "the prefect_server fixture sets the API URL"
    with DemoWeb() as web:
        dump = write_demo_dump(tmp_path / "inputs", web.base_url)
        kwargs: dict[str, Any] = {
            "dumps": [str(dump)],
            "fetch": DEMO_FETCH,
            "tokenize": DEMO_TOKENIZE,
            "train": TRAIN,
            "evaluate": EVALUATE,
            "train_deployment": None,
        }
        reference_store = Store(str(tmp_path / "reference"))
        reference_runs = tmp_path / "reference-runs"
        monkeypatch.setenv("WEBTEXT_RUNS", str(reference_runs))
        reference = build_webtext(**kwargs, store_url=reference_store.root_url)

        store_dir = tmp_path / "store"
        store = Store(str(store_dir))
        runs = tmp_path / "runs"
        kills = []
        for stage in STAGES:
            with _child_build(kwargs, tmp_path / f"kill-{stage}", api_url, runs, store) as child:
                kills.append(_kill_during(stage, child, store, store_dir, runs))
        with _child_build(kwargs, tmp_path / "final", api_url, runs, store) as child:
            final = _finish(child)

    assert [kill.stage for kill in kills] == list(STAGES)
    for kill in kills:
        _never_completed(kill)
    _same_outputs(store, final, reference_store, reference)
    _training_resumed(store, final["train"], runs, kills[STAGES.index("train")], reference_store)
    _clean_store(store, reference_store)


def _same_outputs(
    store: Store,
    refs: dict[str, VersionRef],
    reference_store: Store,
    reference: dict[str, VersionRef],
) -> None:
    """What the killed-and-rerun build published is what the uninterrupted one did."""
    # Version ids cover parameters, code and parents: equal ids mean no stage was rebuilt
    # on top of a stray version a killed run left (a second fetches version, say).
    assert {s: refs[s] for s in STAGES[:-1]} == {s: reference[s] for s in STAGES[:-1]}
    # One fetch row per link, documents and published texts as in the reference.
    assert _urls(store, refs["fetch"], "fetches") == _urls(store, refs["links"], "links")
    for stage, folder in (("extract", "documents"), ("dedup", "data")):
        mine = _documents(store, refs[stage], folder)
        assert mine and mine == _documents(reference_store, reference[stage], folder)
    splits = ("train_tokens", "val_tokens")
    tokens = store.manifest(refs["tokenize"]).stats["counts"]
    expected = reference_store.manifest(reference["tokenize"]).stats["counts"]
    assert {k: tokens[k] for k in splits} == {k: expected[k] for k in splits}
    results, expected = (
        json.loads(s.fs.cat_file(f"{s.version_dir(r['evaluate'])}/results.json"))["results"]
        for s, r in ((store, refs), (reference_store, reference))
    )
    assert set(results) == set(expected) == set(EVALUATE["tasks"])
    for task, result in results.items():  # the same weights score the same
        assert result["metric"] == expected[task]["metric"]
        assert result["value"] == pytest.approx(expected[task]["value"], rel=1e-4)


def _training_resumed(
    store: Store, model: VersionRef, runs: Path, kill: Kill, reference_store: Store
) -> None:
    """Steps 1..max_steps logged once each, the run resumed from the checkpoint it had."""
    run_dir = runs / f"tiny-{model.version}"  # the run folder is named by the model version
    published = store.fs.cat_file(f"{store.version_dir(model)}/metrics.jsonl").decode()
    for text in (published, (run_dir / "metrics.jsonl").read_text()):
        steps = [json.loads(line)["step"] for line in text.splitlines()]
        assert steps == list(range(1, MAX_STEPS + 1))
    # A checkpoint that existed at the kill is the same file: training went on from it
    # (a fresh start would have rewritten it).
    assert kill.checkpoints
    for path, identity in kill.checkpoints.items():
        assert path.parent == run_dir
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity, path
    # Batches are a function of the step, and the RNG states are restored: the resumed
    # run's losses are the uninterrupted run's.
    reference = reference_store.fs.cat_file(
        f"{reference_store.version_dir(model)}/metrics.jsonl"
    ).decode()
    losses = [json.loads(line)["loss"] for line in published.splitlines()]
    expected = [json.loads(line)["loss"] for line in reference.splitlines()]
    assert losses == pytest.approx(expected, rel=1e-4)


def _clean_store(store: Store, reference_store: Store) -> None:
    """Only complete versions are listed, the same ones as in the uninterrupted build's
    store; `latest` points at them; every file matches its manifest."""
    stages = sorted(p.name for p in Path(store.root).iterdir())
    assert stages == sorted(p.name for p in Path(reference_store.root).iterdir())
    for stage in stages:
        versions = [m.ref for m in store.versions(stage)]
        expected = [m.ref for m in reference_store.versions(stage)]
        if stage == "evaluation":  # its id covers the checkpoint file's sha256, and the
            # file records the trainer's arguments: its run folder and tokens paths
            assert len(versions) == len(expected) == 1
        else:
            assert versions == expected, stage
        assert store.latest(stage) == versions[-1]
        for ref in versions:
            store.verify(ref)
    # Resumable stages finish the version they staged; the `.tmp-*` of a killed
    # non-resumable write may stay behind (nothing collects them yet), never listed.
    assert not list(Path(store.root).glob("*/.staging-*"))
