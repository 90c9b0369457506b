"""Open the Prefect UI of a flow run in headless Chromium: screenshots, and the text it shows.

Operators watch `build-webtext` runs in the Prefect UI. The UI is a single-page app that fetches
everything from the API after it loads, so a page is read through the DevTools protocol, and
captured once the text we look for has rendered (or a time limit has passed), never before.

Prefect 3.9 serves two UIs: V2 (React) under `/v2/`, where `/` redirects a fresh browser, and V1
(Vue) at `/`, where the run links that Prefect prints lead. Only V2 selects a run page's tab
from the URL (`?tab=SubflowRuns`), so this module reads V2.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from webtext_app.prefect_server import stop_process, tail

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

WINDOW = (1600, 1200)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The V2 Artifacts tab has loaded: it says the run has none, or shows a card (a link) per artifact.
ARTIFACTS_LOADED = (
    "document.body.innerText.includes('did not produce any artifacts')"
    " || !!document.querySelector('a[href*=\"/artifacts/artifact/\"]')"
)

# The `tab` values of V2's `/runs/flow-run/$id` route (its validateSearch schema).
FlowRunTab = Literal[
    "Logs", "TaskRuns", "SubflowRuns", "Artifacts", "Details", "Parameters", "JobVariables"
]

_FLOW_RUN_LINK = re.compile(
    r"/runs/flow-run/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)


# --- the UI's routes ----------------------------------------------------------------------------


def flow_run_page(ui_url: str, flow_run_id: str, tab: FlowRunTab | None = None) -> str:
    """The V2 UI page of a flow run, e.g. `.../v2/runs/flow-run/<id>?tab=SubflowRuns`."""
    page = f"{ui_url.rstrip('/')}/v2/runs/flow-run/{flow_run_id}"
    return f"{page}?tab={tab}" if tab else page


def linked_flow_runs(html: str, exclude: str = "") -> list[str]:
    """The ids of the flow runs a page links to, in order, without `exclude`."""
    ids = dict.fromkeys(_FLOW_RUN_LINK.findall(html))
    ids.pop(exclude, None)
    return list(ids)


# --- headless Chromium --------------------------------------------------------------------------


def chromium_executable() -> str | None:
    """Chromium on PATH (Debian's `chromium`, or `chromium-browser`), else None."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


@dataclass(frozen=True)
class PageShot:
    """A page as rendered: its screenshot, visible text (innerText) and DOM (outerHTML)."""

    url: str
    png: Path
    text: str
    html: str


class Browser:
    """One tab of a headless Chromium, driven through the DevTools protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._last_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result; events are ignored."""
        self._last_id += 1
        self._ws.send(json.dumps({"id": self._last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") != self._last_id:
                continue
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            return message["result"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['result'].get('description')}")
        return result["result"].get("value")

    def shoot(
        self,
        url: str,
        png: Path,
        ready: str = "false",
        wait_s: float = 30.0,
        settle_s: float = 0.5,
    ) -> PageShot:
        """Load `url`, wait until the JavaScript `ready` is true or `wait_s`, then capture.

        Past `wait_s` the page is captured anyway, so that a failed check has its screenshot.
        """
        # Through about:blank, so that the text we wait on cannot be the previous page's.
        self._navigate("about:blank")
        self._poll(lambda: self.evaluate("location.href") == "about:blank", 10.0)
        self._navigate(url)
        self._poll(lambda: self._loaded_and(ready), wait_s)
        time.sleep(settle_s)  # the text is there; let the canvas and layout catch up
        data = self.call("Page.captureScreenshot", format="png")["data"]
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(base64.b64decode(data))
        text = self.evaluate("document.body ? document.body.innerText : ''")
        html = self.evaluate("document.documentElement.outerHTML")
        return PageShot(url, png, text, html)

    def _navigate(self, url: str) -> None:
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {result['errorText']}")

    def _loaded_and(self, ready: str) -> bool:
        return self.evaluate(
            "location.href !== 'about:blank' && document.readyState === 'complete'"
            f" && !!document.body && !!({ready})"
        )

    @staticmethod
    def _poll(condition: Callable[[], bool], wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            # Mid-navigation, the page's JavaScript context may be gone: not ready yet.
            with contextlib.suppress(RuntimeError):
                if condition():
                    return True
            time.sleep(0.2)
        return False


@contextlib.contextmanager
def open_browser(executable: str | None = None, timeout_s: float = 30.0) -> Iterator[Browser]:
    """A headless Chromium with a throwaway profile, stopped (with its children) on exit."""
    from websockets.sync.client import connect  # a dependency of prefect

    executable = executable or chromium_executable()
    if executable is None:
        raise FileNotFoundError("chromium not found on PATH (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="webtext-chromium-") as profile:
        log_path = Path(profile) / "chromium.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [executable, *_chromium_flags(profile), "about:blank"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            page_socket = _page_socket(process, Path(profile), log_path, timeout_s)
            with connect(page_socket, max_size=None, open_timeout=timeout_s) as ws:
                browser = Browser(ws)
                width, height = WINDOW
                browser.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=width,
                    height=height,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                try:
                    yield browser
                finally:
                    # Closed from within, Chromium shuts its children down itself before it exits.
                    with contextlib.suppress(Exception):
                        browser.call("Browser.close")
        finally:
            stop_process(process)


def _chromium_flags(profile: str) -> list[str]:
    width, height = WINDOW
    return [
        "--headless",
        # Root in a container has no usable sandbox; the pages are our own server's.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
        # Port 0: Chromium picks one and writes it to DevToolsActivePort in the profile.
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    ]


def _page_socket(
    process: subprocess.Popen[bytes], profile: Path, log: Path, timeout_s: float
) -> str:
    """The DevTools WebSocket URL of the browser's first tab."""
    active_port = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}:\n{tail(log)}")
        lines = active_port.read_text().split() if active_port.exists() else []
        if lines:
            with contextlib.suppress(OSError, ValueError):
                url = f"http://127.0.0.1:{lines[0]}/json/list"
                with urllib.request.urlopen(url, timeout=2) as response:
                    targets = json.load(response)
                pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
                if pages:
                    return pages[0]
        time.sleep(0.1)
    raise RuntimeError(f"chromium's DevTools not up after {timeout_s:.0f} s:\n{tail(log)}")


def shows_text(strings: Sequence[str]) -> str:
    """A JavaScript test: the page's visible text has all of `strings`."""
    return f"{json.dumps(list(strings))}.every(s => document.body.innerText.includes(s))"


def capture(url: str, png: Path, wait_s: float = 30.0, expect: Sequence[str] = ()) -> str:
    """Screenshot `url` into `png` and return the page's rendered, visible text.

    With `expect`, the page is captured as soon as all those strings show (at most `wait_s`);
    without, after `wait_s`.
    """
    with open_browser() as browser:
        shot = browser.shoot(url, png, shows_text(expect) if expect else "false", wait_s)
    return shot.text


# --- the check ----------------------------------------------------------------------------------


def assert_png(png: Path, min_bytes: int = 20_000) -> None:
    """`png` is a PNG of the browser window, with more in it than a blank page."""
    data = png.read_bytes()
    _check(data.startswith(PNG_MAGIC), f"{png} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    _check((width, height) == WINDOW, f"{png} is {width}x{height}, not {WINDOW}")
    _check(len(data) >= min_bytes, f"{png} has {len(data)} bytes: a blank page?")


@dataclass(frozen=True)
class RunShots:
    """What `assert_run_shows` saw: the Subflow Runs tab, and the Artifacts tabs it opened."""

    subflows: PageShot
    artifacts: list[PageShot]


def assert_run_shows(
    ui_url: str,
    flow_run_id: str,
    subflow_names: Sequence[str],
    artifact_keys: Sequence[str],
    out_dir: Path,
    wait_s: float = 30.0,
) -> RunShots:
    """Check that the UI shows a run's sub-flows and artifacts, as an operator would see them.

    The run's Subflow Runs tab must name every flow of `subflow_names`; the Artifacts tabs of
    the run and of the sub-flow runs it links to must, together, show every key of
    `artifact_keys` (a stage's artifacts belong to its sub-flow run, not to the parent).
    Screenshots go to `out_dir`: `subflows.png`, `artifacts-0.png` (the run's own), 1, 2...
    """
    with open_browser() as browser:
        subflows = browser.shoot(
            flow_run_page(ui_url, flow_run_id, "SubflowRuns"),
            out_dir / "subflows.png",
            shows_text(subflow_names),
            wait_s,
        )
        assert_png(subflows.png)
        _assert_shown(subflows, subflow_names, "sub-flows")
        runs = [flow_run_id, *linked_flow_runs(subflows.html, exclude=flow_run_id)]
        artifacts = [
            browser.shoot(
                flow_run_page(ui_url, run_id, "Artifacts"),
                out_dir / f"artifacts-{index}.png",
                ARTIFACTS_LOADED,
                wait_s,
            )
            for index, run_id in enumerate(runs)
        ]
    for shot in artifacts:
        assert_png(shot.png)
    shown = "\n".join(shot.text for shot in artifacts)
    missing = [key for key in artifact_keys if key not in shown]
    pages = ", ".join(str(shot.png) for shot in artifacts)
    _check(not missing, f"artifacts {missing} not shown on the runs' Artifacts tabs ({pages})")
    return RunShots(subflows, artifacts)


def _assert_shown(shot: PageShot, names: Sequence[str], what: str) -> None:
    missing = [name for name in names if name not in shot.text]
    _check(not missing, f"{what} {missing} not shown at {shot.url} (see {shot.png})")


def _check(condition: bool, message: str) -> None:
    # Not `assert`: these checks must hold under `python -O` too.
    if not condition:
        raise AssertionError(message)
