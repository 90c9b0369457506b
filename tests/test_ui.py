"""The Prefect UI of the demo's build-webtext run, opened in headless Chromium, shows its sub-flows
(training among them, as a deployment run) and every stage's artifacts.

The run is the session's `demo_run` (conftest.py): a real `prefect server start` with its UI,
`python -m flows.serve`, and `prefect deployment run build-webtext/default`.
Needs Debian's `chromium` (`apt-get install -y chromium`): skipped without it, failed under CI.
`WEBTEXT_UPDATE_SCREENSHOT=1` also saves the Subflow Runs tab to docs/images/ui-build-webtext.png.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from ui_check import assert_run_shows, chromium_executable

from webtext_app.demo_run import DemoRun

pytestmark = pytest.mark.xdist_group("demo")  # one demo per session under --dist loadgroup

SUBFLOWS = [
    "collect-links", "fetch-pages", "extract-text", "dedup", "tokenize", "train-gpt2",
    "evaluate-zero-shot",
]  # fmt: skip
# One or more per stage, each on its own sub-flow run's Artifacts tab.
STAGE_ARTIFACTS = [
    "links-counts", "fetches-counts", "documents-counts", "webtext-counts", "tokens-counts",
    "model-counts", "train-gpt2-metrics", "train-gpt2-loss", "evaluation-counts",
    "evaluate-zero-shot-paper-table",
]  # fmt: skip
# The build run's own, on its Artifacts tab.
BUILD_ARTIFACTS = ["build-webtext-counts", "build-webtext-versions"]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "ui-build-webtext.png"


@pytest.fixture
def chromium() -> str:
    path = chromium_executable()
    if path is None:
        message = "chromium not found (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def keep_screenshots(folder: Path) -> None:
    """Copy the screenshots to $WEBTEXT_UI_SCREENSHOTS, when set, for the demo or CI to keep."""
    target = os.environ.get("WEBTEXT_UI_SCREENSHOTS")
    if not target:
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    for png in sorted(folder.glob("*.png")):
        shutil.copyfile(png, Path(target) / f"build-webtext-{png.name}")


def test_ui_shows_the_demo_run(chromium: str, demo_run: DemoRun, tmp_path: Path) -> None:
    assert demo_run.completed, f"{demo_run.state}: {demo_run.message}"
    started = time.monotonic()
    try:
        shots = assert_run_shows(
            demo_run.ui_url,
            demo_run.flow_run_id,
            subflow_names=SUBFLOWS,
            artifact_keys=STAGE_ARTIFACTS + BUILD_ARTIFACTS,
            out_dir=tmp_path / "screenshots",
        )
    finally:  # a failed check's screenshots are the ones worth keeping
        keep_screenshots(tmp_path / "screenshots")

    assert demo_run.flow_run_name in shots.subflows.text
    # The first Artifacts tab is the build run's own; the stages' are on their sub-flow runs.
    own = shots.artifacts[0].text
    assert all(key in own for key in BUILD_ARTIFACTS), own[:2000]
    assert len(shots.artifacts) == 1 + len(SUBFLOWS)
    if os.environ.get("WEBTEXT_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots.subflows.png, SCREENSHOT)
    print(f"UI check: {time.monotonic() - started:.1f} s")
