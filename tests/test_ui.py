"""The Prefect UI of a finished run, opened in headless Chromium, shows its sub-flows and artifacts.

A real `prefect server start` with its UI (not the session's test harness, which serves no UI),
a flow run in a subprocess that reports to it, then screenshots of the run's pages.
Needs Debian's `chromium` (`apt-get install -y chromium`): skipped without it, failed under CI.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from webtext.ui_check import (
    assert_run_shows,
    chromium_executable,
    flow_env,
    start_prefect_server,
    wait_flow_run_final,
)

PARENT = "build-webtext-ui-check"
# sub-flow name -> the key of the table artifact it creates
STAGES = {"collect-links": "ui-check-links-counts", "fetch-pages": "ui-check-fetches-counts"}

# Run in a subprocess, so that only the environment we give it configures Prefect.
FLOW_SCRIPT = """
import json, sys

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

parent_name, stages = sys.argv[1], json.loads(sys.argv[2])


def stage_flow(name, key):
    @flow(name=name)
    def stage():
        rows = [{"count": "kept", "value": 3}, {"count": "dropped", "value": 1}]
        create_table_artifact(key=key, table=rows, description=f"{name} counts")

    return stage


@flow(name=parent_name)
def parent():
    for name, key in stages.items():
        stage_flow(name, key)()
    return flow_run.get_id()


print(json.dumps({"flow_run_id": parent()}))
"""


@pytest.fixture
def chromium() -> str:
    path = chromium_executable()
    if path is None:
        message = "chromium not found (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_flows(api_url: str, home: Path) -> str:
    """Run the parent flow and its sub-flows against `api_url`; the parent run's id."""
    done = subprocess.run(
        [sys.executable, "-c", FLOW_SCRIPT, PARENT, json.dumps(STAGES)],
        env=flow_env(api_url, home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["flow_run_id"]


def keep_screenshots(folder: Path) -> None:
    """Copy the screenshots to $WEBTEXT_UI_SCREENSHOTS, when set, for the demo or CI to keep."""
    target = os.environ.get("WEBTEXT_UI_SCREENSHOTS")
    if not target:
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    for png in sorted(folder.glob("*.png")):
        shutil.copyfile(png, Path(target) / f"{PARENT}-{png.name}")


def test_ui_shows_subflows_and_artifacts(chromium: str, tmp_path: Path) -> None:
    times = [time.monotonic()]
    with start_prefect_server(tmp_path / "server") as (_, api_url):
        times.append(time.monotonic())
        flow_run_id = run_flows(api_url, tmp_path / "client")
        assert wait_flow_run_final(api_url, flow_run_id) == "COMPLETED"
        times.append(time.monotonic())

        try:
            shots = assert_run_shows(
                api_url.removesuffix("/api"),
                flow_run_id,
                subflow_names=list(STAGES),
                artifact_keys=list(STAGES.values()),
                out_dir=tmp_path / "screenshots",
            )
        finally:  # a failed check's screenshots are the ones worth keeping
            keep_screenshots(tmp_path / "screenshots")

    assert PARENT in shots.subflows.text
    # The run itself made no artifact; each stage's shows on its own sub-flow run's page.
    assert len(shots.artifacts) == 1 + len(STAGES)
    times.append(time.monotonic())
    server, flows, browser = (later - earlier for earlier, later in itertools.pairwise(times))
    print(f"UI check: server {server:.1f} s, flows {flows:.1f} s, browser {browser:.1f} s")
