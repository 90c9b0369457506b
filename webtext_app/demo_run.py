"""The demo, as an operator runs the pipeline: a Prefect server, a process serving the
deployments, and `prefect deployment run build-webtext/default --watch`.

    demo web (thread) -> RS_demo.zst -> prefect server start (SQLite, with its UI)
        -> python -m flows.serve -> prefect deployment run build-webtext/default --watch
        -> build-webtext runs links ... tokenize, train-gpt2/default as its own run, evaluate

`demo_session` starts everything, runs the build, and yields what it made while the server is
still up (so its UI can be opened); leaving the block stops the serve process, the server and
the web, also on an error or a Ctrl-C. The server's home (its SQLite database) is kept under
the work folder, so the UI can be reopened on the same runs afterwards.
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
from pathlib import Path
from typing import Any

from webtext.config import open_store
from webtext.store import VersionRef
from webtext_app.demo import DEMO_EVALUATE, DEMO_FETCH, DEMO_TOKENIZE, DEMO_TRAIN, write_demo_dump
from webtext_app.demo_web import DEMO_PORT, DemoWeb
from webtext_app.prefect_server import (
    UI_PORT,
    api_get,
    api_post,
    flow_env,
    free_port,
    port_is_free,
    prefect_executable,
    start_prefect_server,
    start_process,
    tail,
)

BUILD = "build-webtext/default"
TRAIN = "train-gpt2/default"
SERVED = (BUILD, TRAIN, "evaluate-zero-shot/default")
# flows/build.py's OUTCOME_ARTIFACT (not imported: flows import Prefect, the CLI starts fast)
OUTCOME_ARTIFACT = "build-webtext-outcome"
WATCH_TIMEOUT_S = 30 * 60
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
    def serve_log(self) -> Path:
        return self.workdir / "serve.log"


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
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def run_url(self) -> str:
        """The build run's page, as Prefect links it."""
        return f"{self.ui_url}/runs/flow-run/{self.flow_run_id}"


def store_location(store: str | None) -> str:
    """The store's URL, a local folder made absolute: the served flows run elsewhere."""
    url = open_store(store).root_url
    return url if "://" in url else str(Path(url).resolve())


def reopen_command(home: Path) -> str:
    """The command that serves the demo's UI again, on its database, after the demo."""
    return f"PREFECT_HOME={home.resolve()} {prefect_executable()} server start"


def open_demo_web(stack: contextlib.ExitStack) -> DemoWeb:
    """The offline web on DEMO_PORT (so a kept dump still points at it), else a free port."""
    try:
        return stack.enter_context(DemoWeb(port=DEMO_PORT))
    except OSError:  # the port is taken
        return stack.enter_context(DemoWeb())


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


def run_deployment_cli(
    api_url: str, home: Path, parameters: dict[str, Any], watch_timeout_s: int
) -> int:
    """`prefect deployment run build-webtext/default --watch`, its output on our terminal."""
    command = [
        prefect_executable(), "deployment", "run", BUILD, "--watch",
        "--watch-timeout", str(watch_timeout_s), "--params", json.dumps(parameters),
    ]  # fmt: skip
    # In our process group: a Ctrl-C stops it as it stops us.
    return subprocess.run(command, env=flow_env(api_url, home), check=False).returncode


def build_outcome(api_url: str, flow_run_id: str) -> tuple[StageOutcome, ...]:
    """Each stage's outcome, from the last OUTCOME_ARTIFACT table the build run published
    (none when it failed before its first stage)."""
    found = api_post(
        api_url,
        "/artifacts/filter",
        {
            "artifacts": {
                "flow_run_id": {"any_": [flow_run_id]},
                "key": {"any_": [OUTCOME_ARTIFACT]},
            },
            "sort": "CREATED_DESC",
            "limit": 1,
        },
    )
    if not found:
        return ()
    rows = found[0]["data"]  # a table artifact's rows, JSON-encoded
    return tuple(
        StageOutcome.from_row(row) for row in (json.loads(rows) if isinstance(rows, str) else rows)
    )


def child_flow_runs(api_url: str, flow_run_id: str) -> dict[str, dict[str, Any]]:
    """The build run's sub-flow runs (in-process or deployment runs) by flow name."""
    runs = api_post(
        api_url, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}}
    )
    names = {}
    for run in runs:
        if run["flow_id"] not in names:
            names[run["flow_id"]] = api_get(api_url, f"/flows/{run['flow_id']}")["name"]
    return {names[run["flow_id"]]: run for run in runs}


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
        web = open_demo_web(stack)
        dump = write_demo_dump(paths.workdir, web.base_url)
        say(f"demo web: {web.base_url}/ (dump: {dump})")

        port = port or (UI_PORT if port_is_free(UI_PORT) else free_port())
        say(f"starting a Prefect server (SQLite under {paths.prefect_home}) ...")
        server = stack.enter_context(start_prefect_server(paths.prefect_home, port))
        say(f"Prefect UI: {server.ui_url}")

        env = serve_env(server.api_url, paths, store_url)
        command = [sys.executable, "-m", "flows.serve"]
        serve = stack.enter_context(start_process(command, env, paths.serve_log))
        say(f"serving {', '.join(SERVED)} (every run's log: {paths.serve_log}) ...")
        deployments = wait_for_deployments(server.api_url, serve, paths.serve_log)

        before = deployment_run_ids(server.api_url, deployments[BUILD])
        parameters = build_parameters(dump, store_url, train)
        returncode = run_deployment_cli(
            server.api_url, paths.prefect_home, parameters, watch_timeout_s
        )
        new = deployment_run_ids(server.api_url, deployments[BUILD]) - before
        if len(new) != 1:
            raise RuntimeError(f"prefect deployment run exited {returncode}, no run created")
        flow_run_id = new.pop()
        run = api_get(server.api_url, f"/flow_runs/{flow_run_id}")
        state = run.get("state") or {}
        yield DemoRun(
            paths=paths,
            store_url=store_url,
            api_url=server.api_url,
            flow_run_id=flow_run_id,
            flow_run_name=run["name"],
            state=state.get("type", "UNKNOWN"),
            message=state.get("message") or "",
            stages=build_outcome(server.api_url, flow_run_id),
            pids=(server.process.pid, serve.pid),
        )
