"""A local Prefect server, and processes that report to it, started and stopped from Python.

The demo and the UI tests run `prefect server start` (SQLite, with its UI) under a home folder
of their own, start processes against it (`python -m flows.serve`, the `prefect` CLI), and talk
to its REST API with the standard library. Each process runs in a session of its own, so that
stopping it stops everything it started (flow run subprocesses, their workers) and a Ctrl-C in
the terminal reaches only the process that should handle it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

UI_PORT = 4200  # Prefect's default: where `prefect server start` puts the UI when it is free
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


class PrefectServer(NamedTuple):
    """A running `prefect server start`; unpacks as `(process, api_url)`."""

    process: subprocess.Popen[bytes]
    api_url: str

    @property
    def ui_url(self) -> str:
        return ui_url(self.api_url)


def api_url_at(port: int) -> str:
    """The REST API of a server on the loopback `port`."""
    return f"http://127.0.0.1:{port}/api"


def ui_url(api_url: str) -> str:
    """The UI's root, e.g. `http://127.0.0.1:4200` (the API is under `/api`)."""
    return api_url.removesuffix("/api")


def flow_run_url(api_url: str, flow_run_id: str) -> str:
    """A flow run's page in the UI, as Prefect links it."""
    return f"{ui_url(api_url)}/runs/flow-run/{flow_run_id}"


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the loopback `port` now."""
    with socket.socket() as sock:
        # As servers bind (uvicorn does): a port left in TIME_WAIT by the last server is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def prefect_executable() -> str:
    """The `prefect` command of this Python's environment (a venv need not be on PATH)."""
    return str(Path(sys.executable).with_name("prefect"))


def prefect_env(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment without its PREFECT_* settings, plus a home and `settings`.

    A test session sets PREFECT_HOME, PREFECT_API_URL... for its own harness; a server or a
    flow started for the UI must not inherit them.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    env.update(settings)
    return env


def flow_env(api_url: str, home: Path, **settings: str) -> dict[str, str]:
    """The environment of a process whose flows report to the server at `api_url`."""
    return prefect_env(home, PREFECT_API_URL=api_url, **settings)


@contextlib.contextmanager
def start_prefect_server(
    home: Path, port: int | None = None, timeout_s: float = 90.0
) -> Iterator[PrefectServer]:
    """Run `prefect server start` on loopback with its UI, until the block exits.

    Its database, UI files and log (`server.log`) live under `home`.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = api_url_at(port)
    env = prefect_env(
        home,
        PREFECT_LOGGING_LEVEL="INFO",
        PREFECT_UI_ENABLED="true",
        # The UI asks /ui-settings where the API is; the default would do, but say it.
        PREFECT_UI_API_URL=api_url,
        PREFECT_UI_URL=ui_url(api_url),
        # The server copies the UI bundles before serving them; by default into the installed
        # prefect package, which may be read-only or shared. ~1 s per start.
        PREFECT_UI_STATIC_DIRECTORY=str(home / "ui"),
        # Off by default: without them `prefect deployment run --watch` shows events, no logs.
        PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED="true",
        PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED="true",
    )
    command = [prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log_path = home / "server.log"
    with start_process(command, env, log_path) as process:
        wait_healthy(process, api_url, log_path, timeout_s)
        yield PrefectServer(process, api_url)


@contextlib.contextmanager
def start_process(
    command: Sequence[str], env: Mapping[str, str], log_path: Path, append: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` in the background, output to `log_path` (replaced, or with `append`
    appended to), stopped when the block exits."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab" if append else "wb") as log:
        # A session of its own: stopping it stops anything it started, and a Ctrl-C meant for
        # the foreground command does not reach it.
        process = subprocess.Popen(
            list(command), env=dict(env), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        stop_process(process)


def wait_healthy(
    process: subprocess.Popen[bytes], api_url: str, log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}:\n{tail(log)}")
        if _responds(f"{api_url}/health"):
            return
        time.sleep(0.25)
    raise RuntimeError(f"prefect server not healthy after {timeout_s:.0f} s:\n{tail(log)}")


def _responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused while it starts, or an HTTP error
        return False


def stop_process(process: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """Terminate the process, then kill whatever is left of its session."""
    # The leader alone first, so that it can stop its children itself.
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def session_alive(pid: int) -> bool:
    """Whether any process is left in the session (process group) that `pid` led."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the id was reused by someone else's group
        return True
    return True


def child_pids(pid: int) -> set[int]:
    """The processes that `pid` started and has not reaped yet (Linux: /proc, else `pgrep`)."""
    found: set[int] = set()
    read = False
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir() if tasks.is_dir() else ():
        with contextlib.suppress(OSError):  # a thread gone, or no CONFIG_PROC_CHILDREN
            found.update(int(child) for child in (task / "children").read_text().split())
            read = True
    if read:
        return found
    try:
        listed = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):  # no pgrep: nothing known
        return set()
    return {int(child) for child in listed.stdout.split()}


def wait_for_children(pid: int, timeout_s: float) -> bool:
    """Wait until the process `pid` has no child process left; False after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while child_pids(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)
    return True


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no log: {error})"


# --- the REST API -------------------------------------------------------------------------------


def api_get(api_url: str, path: str) -> Any:
    """GET `path` of the API as JSON; None when the server answers 404."""
    try:
        with urllib.request.urlopen(f"{api_url}{path}", timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def api_post(api_url: str, path: str, body: Mapping[str, Any]) -> Any:
    """POST a JSON body to `path` of the API (the `/filter` endpoints); the JSON answer."""
    request = urllib.request.Request(
        f"{api_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
