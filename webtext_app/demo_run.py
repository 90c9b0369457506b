"""The demo, as an operator runs the pipeline: a Prefect server, a process serving the
deployments, and `prefect deployment run build-webtext/default`.

    demo web (thread) -> RS_demo.zst -> prefect server start (SQLite, with its UI)
        -> python -m flows.serve -> prefect deployment run build-webtext/default
        -> build-webtext runs links ... tokenize, train-gpt2/default as its own run, evaluate

`demo_session` starts everything, runs the build, says each stage starting and finishing
(and training's progress) as the server reports them (`BuildWatcher`), and yields what it made
while the server is still up (so its UI can be opened); leaving the block stops the serve
process, the server and the web, also on an error or a Ctrl-C. The server's home (its SQLite
database) is kept under the work folder, so the UI can be reopened on the same runs
afterwards; the serve process's output is appended to `serve.log`, each demo run from a
RUN_SEPARATOR line.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from webtext.config import open_store
from webtext.store import Store, StoreError, VersionRef
from webtext_app.demo import (
    DEMO_EVALUATE,
    DEMO_FETCH,
    DEMO_TOKENIZE,
    DEMO_TRAIN,
    kept_dump_port,
    write_demo_dump,
)
from webtext_app.demo_web import DEMO_PORT, DemoWeb
from webtext_app.prefect_server import (
    FINAL_STATES,
    UI_PORT,
    api_get,
    api_post,
    api_url_at,
    flow_env,
    flow_run_url,
    free_port,
    port_is_free,
    prefect_executable,
    start_prefect_server,
    start_process,
    tail,
    ui_url,
    wait_for_children,
)

BUILD = "build-webtext/default"
TRAIN = "train-gpt2/default"
SERVED = (BUILD, TRAIN, "evaluate-zero-shot/default")
# flows/build.py's OUTCOME_ARTIFACT and flows/train.py's PROGRESS_KEY (not imported: flows
# import Prefect, the CLI starts fast).
OUTCOME_ARTIFACT = "build-webtext-outcome"
PROGRESS_ARTIFACT = "train-gpt2-progress"
# build-webtext's stages (flows/build.py's STAGES, in order) by the name of their sub-flow.
STAGE_FLOWS = {
    "collect-links": "links",
    "fetch-pages": "fetch",
    "extract-text": "extract",
    "dedup": "dedup",
    "tokenize": "tokenize",
    "train-gpt2": "train",
    "evaluate-zero-shot": "evaluate",
}
STAGE_ORDER = tuple(STAGE_FLOWS.values())
# The counts a finished stage's line shows, by the kind of version it made (all of an
# evaluation's but the overlaps; else the first).
KEY_COUNTS = {
    "links": ("links",),
    "fetches": ("fetched", "attempted"),
    "documents": ("documents",),
    "webtext": ("published",),
    "tokens": ("train_tokens", "val_tokens"),
    "model": ("step", "loss", "val_loss"),
}
WATCH_TIMEOUT_S = 30 * 60
POLL_S = 2.0  # how often the demo asks the server how the build goes
# How long a finished run's process may take to exit (it sends its last logs and events)
# before the serve process is stopped anyway.
RUN_EXIT_S = 60.0
PROGRESS_EVERY_S = 5.0  # training's progress line at most this often
# Each demo run's first line in serve.log, then `<separator> <started>: build-webtext run ...`.
RUN_SEPARATOR = "===== webtext demo run"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo keeps what it makes, under one work folder."""

    workdir: Path

    @property
    def prefect_home(self) -> Path:  # the server's SQLite database, UI files, server.log
        return self.workdir / "prefect"

    @property
    def runs(self) -> Path:  # WEBTEXT_RUNS: training runs' folders, caches
        return self.workdir / "runs"

    @property
    def serve_log(self) -> Path:  # flows.serve's output, appended: every demo run's
        return self.workdir / "serve.log"

    @property
    def dump(self) -> Path:
        return self.workdir / "RS_demo.zst"


@dataclass(frozen=True)
class StageOutcome:
    """One row of the build's outcome table (flows/build.py's BuildOutcome)."""

    stage: str
    version: VersionRef | None  # None until the stage made or found one
    reused: bool | None  # the version existed before the stage ran; None until known
    state: str  # pending, completed, failed
    error: str  # the failure, "" otherwise

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StageOutcome:
        kind, _, version = str(row.get("version") or "").partition("/")
        return cls(
            stage=row["stage"],
            version=VersionRef(kind, version) if version else None,
            reused=row.get("reused"),
            state=row["state"],
            error=row.get("error") or "",
        )


@dataclass(frozen=True)
class DemoRun:
    """One build-webtext deployment run of the demo, and where to look at it."""

    paths: DemoPaths
    store_url: str
    api_url: str
    flow_run_id: str
    flow_run_name: str
    state: str  # the final state type: COMPLETED, FAILED, CRASHED, CANCELLED
    message: str
    stages: tuple[StageOutcome, ...]  # the build's outcome table, in stage order
    pids: tuple[int, ...]  # the server and the serve process: their sessions end with the demo

    @property
    def completed(self) -> bool:
        return self.state == "COMPLETED"

    @property
    def versions(self) -> dict[str, VersionRef]:
        """build-webtext's stage -> the version it made or reused."""
        return {s.stage: s.version for s in self.stages if s.version is not None}

    @property
    def failed(self) -> StageOutcome | None:
        """The stage the build failed at, from its outcome table."""
        return next((s for s in self.stages if s.state == "failed"), None)

    @property
    def failed_stage(self) -> str | None:
        return self.failed.stage if self.failed else None

    @property
    def nothing_new(self) -> bool:
        """The build completed and every stage reused a version made before it: it made
        nothing new (its outcome table's `reused` flags say so)."""
        return self.completed and bool(self.stages) and all(s.reused for s in self.stages)

    @property
    def ui_url(self) -> str:
        return ui_url(self.api_url)

    @property
    def run_url(self) -> str:
        """The build run's page, as Prefect links it."""
        return flow_run_url(self.api_url, self.flow_run_id)


def store_location(store: str | None) -> str:
    """The store's URL, a local folder made absolute: the served flows run elsewhere."""
    url = open_store(store).root_url
    return url if "://" in url else str(Path(url).resolve())


def reopen_command(home: Path) -> str:
    """The command that serves the demo's UI again, on its database, after the demo."""
    return f"PREFECT_HOME={home.resolve()} {prefect_executable()} server start"


def reopen_hint(home: Path, flow_run_id: str) -> list[str]:
    """How to see the run again after the demo: the command that serves its UI (on UI_PORT,
    Prefect's default), the run's page there, and the prefect CLI's setting for it."""
    api_url = api_url_at(UI_PORT)
    return [
        f"the UI again, later: {reopen_command(home)}",
        f"  then open {flow_run_url(api_url, flow_run_id)}",
        f"  and for the prefect CLI: export PREFECT_API_URL={api_url}",
    ]


def open_demo_web(stack: contextlib.ExitStack, kept_dump: Path | None = None) -> DemoWeb:
    """The offline web on the port `kept_dump` (an earlier run's) points at, else DEMO_PORT,
    else a free one: the same port makes the same dump, and so the same links version."""
    kept = kept_dump_port(kept_dump) if kept_dump is not None else None
    for port in dict.fromkeys(p for p in (kept, DEMO_PORT) if p):
        with contextlib.suppress(OSError):  # the port is taken
            return stack.enter_context(DemoWeb(port=port))
    return stack.enter_context(DemoWeb())


def mark_serve_log(log: Path, text: str) -> None:
    """A separator line in serve.log (appended to, also by the serve process)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n{RUN_SEPARATOR} {text} =====\n")


@contextlib.contextmanager
def stop_signals_unwind() -> Iterator[None]:
    """A SIGTERM or SIGHUP (a CI timeout, a closed terminal) unwinds the demo as a Ctrl-C does,
    so the processes it started, each in a session of its own, are stopped too."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; its caller's are in force
        return

    def unwind(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {number: signal.signal(number, unwind) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def build_parameters(
    dump: Path, store_url: str, train: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """build-webtext's parameters for the demo: the small site, a tiny model, the demo sets.

    `train`: options over DEMO_TRAIN's (the tests train fewer steps).
    """
    return {
        "dumps": [str(dump.resolve())],
        "fetch": DEMO_FETCH,
        "tokenize": DEMO_TOKENIZE,
        "train": {**DEMO_TRAIN, **(train or {})},
        "evaluate": DEMO_EVALUATE,
        "store_url": store_url,
        # Training is a run of its own deployment, a sub-flow of the build in the UI.
        "train_deployment": TRAIN,
    }


def serve_env(api_url: str, paths: DemoPaths, store_url: str) -> dict[str, str]:
    return flow_env(
        api_url,
        paths.prefect_home,
        # INFO, so that the runs' logs reach the UI and the --watch stream.
        PREFECT_LOGGING_LEVEL="INFO",
        WEBTEXT_STORE=store_url,
        WEBTEXT_RUNS=str(paths.runs.resolve()),
        PYTHONUNBUFFERED="1",
    )


def wait_for_deployments(
    api_url: str, serve: subprocess.Popen[bytes], log: Path, timeout_s: float = 120.0
) -> dict[str, str]:
    """The served deployments' ids by name, once the serve process has registered them all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise RuntimeError(f"flows.serve exited with {serve.returncode}:\n{tail(log)}")
        found = {name: api_get(api_url, f"/deployments/name/{name}") for name in SERVED}
        if all(found.values()):
            return {name: deployment["id"] for name, deployment in found.items()}
        time.sleep(0.5)
    raise RuntimeError(f"deployments not served after {timeout_s:.0f} s:\n{tail(log)}")


def deployment_run_ids(api_url: str, deployment_id: str, newest: int = 50) -> set[str]:
    """The ids of a deployment's newest runs (a new run is among them)."""
    body = {
        "deployments": {"id": {"any_": [deployment_id]}},
        "sort": "EXPECTED_START_TIME_DESC",
        "limit": newest,
    }
    return {run["id"] for run in api_post(api_url, "/flow_runs/filter", body)}


def run_deployment_cli(api_url: str, home: Path, parameters: dict[str, Any]) -> None:
    """`prefect deployment run build-webtext/default`: creates the run and returns. Its output
    (the parameters in full) is shown only when it fails."""
    command = [
        prefect_executable(), "deployment", "run", BUILD, "--params", json.dumps(parameters),
    ]  # fmt: skip
    # In our process group: a Ctrl-C stops it as it stops us.
    done = subprocess.run(
        command, env=flow_env(api_url, home), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"prefect deployment run {BUILD} exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def latest_artifact(
    api_url: str, flow_run_id: str, key: str, sort: str = "CREATED_DESC"
) -> dict[str, Any] | None:
    """A flow run's artifact of `key`, the first by `sort` (CREATED_DESC: the last one
    published; UPDATED_DESC: the last one changed, for a progress artifact); None if none."""
    found = api_post(
        api_url,
        "/artifacts/filter",
        {
            "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": [key]}},
            "sort": sort,
            "limit": 1,
        },
    )
    return found[0] if found else None


def build_outcome(api_url: str, flow_run_id: str) -> tuple[StageOutcome, ...]:
    """Each stage's outcome, from the last OUTCOME_ARTIFACT table the build run published
    (none when it failed before its first stage)."""
    artifact = latest_artifact(api_url, flow_run_id, OUTCOME_ARTIFACT)
    if artifact is None:
        return ()
    rows = artifact["data"]  # a table artifact's rows, JSON-encoded
    return tuple(
        StageOutcome.from_row(row) for row in (json.loads(rows) if isinstance(rows, str) else rows)
    )


def training_progress(api_url: str, flow_run_id: str) -> str | None:
    """A train-gpt2 run's latest line, its PROGRESS_ARTIFACT's description: how it starts,
    then the latest step's (`step 120/300  loss 5.1 ...`, as training.progress.describe_step
    writes it), then how it ended. None before the run has the artifact."""
    artifact = latest_artifact(api_url, flow_run_id, PROGRESS_ARTIFACT, "UPDATED_DESC")
    return artifact.get("description") if artifact is not None else None


def child_flow_runs(
    api_url: str, flow_run_id: str, names: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """The build run's sub-flow runs (in-process or deployment runs) by flow name. `names`:
    flow names by flow id, known so far (filled in)."""
    runs = api_post(
        api_url,
        "/flow_runs/filter",
        {
            "flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}},
            "sort": "EXPECTED_START_TIME_ASC",  # a retried stage's last run wins
        },
    )
    names = {} if names is None else names
    for run in runs:
        if run["flow_id"] not in names:
            names[run["flow_id"]] = api_get(api_url, f"/flows/{run['flow_id']}")["name"]
    return {names[run["flow_id"]]: run for run in runs}


def key_counts(kind: str, counts: Mapping[str, Any]) -> str:
    """A version's key counts, e.g. `links 136` or `step 300, loss 5.12`."""
    if kind == "evaluation":
        names = [name for name in counts if "overlap" not in name]
    else:
        names = [name for name in KEY_COUNTS.get(kind, ()) if name in counts]
        names = names or list(counts)[:1]
    return ", ".join(f"{name} {_number(counts[name])}" for name in names)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


class BuildWatcher:
    """Says, through `say`, each stage of a build-webtext run starting and finishing (with its
    version and key counts) and, while it trains, the latest training step.

    It asks the server's REST API every POLL_S seconds: the run's state, its sub-flow runs,
    its outcome table (republished after each stage) and the training run's progress
    artifact (its description is the latest step's line). Not `prefect deployment run
    --watch` (its stream is mostly heartbeat events), nor serve.log (text whose format is
    the logging setup's, holding every run's lines, and empty when the flows run on a work
    pool elsewhere): the API's records are structured and are there wherever the flows run,
    and each read is the whole current state, so a slow or failed poll loses nothing (but
    the training steps between two reads). Stages are said in build order, each start
    before its finish.
    """

    def __init__(
        self,
        api_url: str,
        flow_run_id: str,
        store_url: str,
        say: Say,
        progress_every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        self.api_url = api_url
        self.flow_run_id = flow_run_id
        self.store_url = store_url
        self.say = say
        self.progress_every_s = progress_every_s
        self.stages: tuple[StageOutcome, ...] = ()  # the outcome table as last read
        self._store: Store | None = None
        self._flow_names: dict[str, str] = {}
        self._started: set[str] = set()
        self._finished: set[str] = set()
        self._step_line: str | None = None
        self._step_said = float("-inf")

    def watch(self, timeout_s: float, poll_s: float = POLL_S) -> dict[str, Any]:
        """Poll until the run ends or `timeout_s` passes; the run as last read."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.poll()
            if run.get("state_type") in FINAL_STATES or time.monotonic() >= deadline:
                return run
            time.sleep(poll_s)

    def poll(self) -> dict[str, Any]:
        """Read the run, say what changed since the last poll; the run."""
        # The run first: when it is final, the outcome and the sub-flows read next are too.
        run = api_get(self.api_url, f"/flow_runs/{self.flow_run_id}")
        children = {
            STAGE_FLOWS[name]: child
            for name, child in child_flow_runs(
                self.api_url, self.flow_run_id, self._flow_names
            ).items()
            if name in STAGE_FLOWS
        }
        self.stages = build_outcome(self.api_url, self.flow_run_id)
        outcomes = {outcome.stage: outcome for outcome in self.stages}
        for stage in STAGE_ORDER:
            child, outcome = children.get(stage), outcomes.get(stage)
            done = outcome is not None and outcome.state != "pending"
            if stage not in self._started and (child is not None or done):
                self._started.add(stage)
                # A stage found done has no run when it had nothing to do (trained already).
                how = f" ({child['name']}, {child['state_name']})" if child else ""
                self.say(f"{stage}: started{how}")
            if stage == "train" and child is not None and not done:
                self._say_progress(child["id"])
            if done and stage not in self._finished:
                self._finished.add(stage)
                self.say(self._finish_line(outcome))
        return run

    def _say_progress(self, train_run_id: str) -> None:
        """The newest training step, when new, at most every `progress_every_s` (the stage's
        finish line then gives the last step's counts)."""
        now = time.monotonic()
        if now - self._step_said < self.progress_every_s:
            return
        line = training_progress(self.api_url, train_run_id)
        # Only step lines: the run's start and end are the stage's own lines.
        if line is not None and line.startswith("step ") and line != self._step_line:
            self._step_line, self._step_said = line, now
            self.say(f"train: {line}")

    def _finish_line(self, outcome: StageOutcome) -> str:
        if outcome.state != "completed":
            return f"{outcome.stage}: {outcome.state}: {outcome.error}"
        ref = outcome.version
        reused = " (reused)" if outcome.reused else ""
        counts = self._counts(ref) if ref is not None else ""
        return f"{outcome.stage}: completed {ref}{reused}" + (f": {counts}" if counts else "")

    def _counts(self, ref: VersionRef) -> str:
        try:
            self._store = self._store or open_store(self.store_url)
            return key_counts(ref.stage, self._store.manifest(ref).stats.get("counts", {}))
        except (StoreError, OSError):  # a line without counts, not a failed demo
            return ""


def _print(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def demo_session(
    workdir: Path,
    store: str | None = None,
    port: int | None = None,
    train: Mapping[str, Any] | None = None,
    watch_timeout_s: int = WATCH_TIMEOUT_S,
    say: Say = _print,
) -> Iterator[DemoRun]:
    """Run the demo's build as a deployment run; yield it while the server still serves it.

    `port`: the server's; default 4200 when free, else any free one. `train`: options over
    DEMO_TRAIN's.
    """
    paths = DemoPaths(workdir.resolve())
    store_url = store_location(store)
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_signals_unwind())
        # Said first, then done as the stack unwinds: also on an error or a Ctrl-C.
        stack.callback(say, "stopping the serve process, the Prefect server and the demo web")
        web = open_demo_web(stack, paths.dump)
        dump = write_demo_dump(paths.workdir, web.base_url)
        say(f"demo web: {web.base_url}/ (dump: {dump})")

        port = port or (UI_PORT if port_is_free(UI_PORT) else free_port())
        say(f"starting a Prefect server (SQLite under {paths.prefect_home}) ...")
        server = stack.enter_context(start_prefect_server(paths.prefect_home, port))
        say(f"Prefect UI: {server.ui_url}")
        # Without it, `prefect deployment ls` in another terminal starts a temporary server of
        # its own and lists nothing.
        say(f"  the prefect CLI on this server: export PREFECT_API_URL={server.api_url}")

        started = datetime.now(UTC).isoformat(timespec="seconds")
        mark_serve_log(paths.serve_log, started)
        env = serve_env(server.api_url, paths, store_url)
        command = [sys.executable, "-m", "flows.serve"]
        serve = stack.enter_context(start_process(command, env, paths.serve_log, append=True))
        say(
            f"serving {', '.join(SERVED)} (their runs' log, appended to at each demo run: "
            f"{paths.serve_log}) ..."
        )
        deployments = wait_for_deployments(server.api_url, serve, paths.serve_log)

        before = deployment_run_ids(server.api_url, deployments[BUILD])
        parameters = build_parameters(dump, store_url, train)
        run_deployment_cli(server.api_url, paths.prefect_home, parameters)
        new = deployment_run_ids(server.api_url, deployments[BUILD]) - before
        if len(new) != 1:
            raise RuntimeError(f"prefect deployment run {BUILD} created {len(new)} runs, not 1")
        flow_run_id = new.pop()
        run = api_get(server.api_url, f"/flow_runs/{flow_run_id}")
        mark_serve_log(
            paths.serve_log, f"{started}: {BUILD} flow run '{run['name']}' {flow_run_id}"
        )
        say(f"prefect deployment run {BUILD}: flow run '{run['name']}' ({flow_run_id})")

        watcher = BuildWatcher(server.api_url, flow_run_id, store_url, say)
        run = watcher.watch(watch_timeout_s)
        state = run.get("state") or {}
        say(f"{BUILD} flow run '{run['name']}': {state.get('name', 'no state')}")
        yield DemoRun(
            paths=paths,
            store_url=store_url,
            api_url=server.api_url,
            flow_run_id=flow_run_id,
            flow_run_name=run["name"],
            state=state.get("type", "UNKNOWN"),
            message=state.get("message") or "",
            stages=watcher.stages,
            pids=(server.process.pid, serve.pid),
        )
        # A run's process outlives its final state by seconds; a serve process stopped before
        # it exits marks the run it still tracks Cancelled ("Runner is shutting down."), even
        # a completed one. So, unless the session ends on an error or an unfinished build, it
        # waits for the runs' processes (its children) to exit first.
        if state.get("type") in FINAL_STATES:
            wait_for_children(serve.pid, RUN_EXIT_S)
