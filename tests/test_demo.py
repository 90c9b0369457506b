"""`webtext demo`: a local Prefect server, the deployments served, build-webtext run as a
deployment with training as its own deployment run, and nothing left running afterwards.

The demo itself runs once per session (the `demo_run` fixture in conftest.py); test_ui.py opens
the same run in the browser.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.build import STAGES
from webtext.store import Store, VersionRef
from webtext_app.demo_run import TRAIN, DemoPaths, DemoRun, StageOutcome, child_flow_runs
from webtext_app.prefect_server import api_get

pytestmark = pytest.mark.xdist_group("demo")  # one demo per session under --dist loadgroup

NUL = b"\0"
SUBFLOWS = (
    "collect-links", "fetch-pages", "extract-text", "dedup", "tokenize", "train-gpt2",
    "evaluate-zero-shot",
)  # fmt: skip


def test_the_build_run_completes_with_a_version_per_stage(demo_run: DemoRun) -> None:
    assert demo_run.completed, f"{demo_run.state}: {demo_run.message}"
    assert list(demo_run.versions) == list(STAGES)
    # A fresh store: every stage made its version (the build's outcome table says so).
    assert [(s.state, s.reused, s.error) for s in demo_run.stages] == [
        ("completed", False, "")
    ] * len(STAGES)
    store = Store(demo_run.store_url)
    for stage, ref in demo_run.versions.items():
        assert store.exists(ref), f"{stage}: {ref} not in {store.root_url}"
    # The UI's database is kept for later: `PREFECT_HOME=... prefect server start`.
    assert (demo_run.paths.prefect_home / "prefect.db").is_file()


def test_training_is_a_deployment_run_under_the_build(demo_run: DemoRun) -> None:
    children = child_flow_runs(demo_run.api_url, demo_run.flow_run_id)
    assert sorted(children) == sorted(SUBFLOWS)
    assert all(run["state_type"] == "COMPLETED" for run in children.values())
    train = api_get(demo_run.api_url, f"/deployments/name/{TRAIN}")
    assert children["train-gpt2"]["deployment_id"] == train["id"]
    # The data stages and the evaluation run inside the build's process.
    assert [name for name, run in children.items() if run["deployment_id"]] == ["train-gpt2"]


def test_the_evaluation_version_holds_every_demo_set(demo_run: DemoRun) -> None:
    store = Store(demo_run.store_url)
    evaluation = demo_run.versions["evaluate"]
    results = json.loads(store.fs.cat_file(f"{store.version_dir(evaluation)}/results.json"))
    assert set(results["results"]) == {"lambada", "wikitext2", "winograd"}
    assert store.fs.exists(f"{store.version_dir(evaluation)}/table.md")


def test_the_outcome_table_names_the_failed_stage() -> None:
    rows = [
        {"stage": "tokenize", "version": "tokens/9b87fbd1f58b", "reused": True,
         "state": "completed", "error": ""},
        {"stage": "train", "version": "", "reused": None, "state": "failed",
         "error": "RuntimeError: train-gpt2/default run x ended Failed"},
        {"stage": "evaluate", "version": "", "reused": None, "state": "pending", "error": ""},
    ]  # fmt: skip
    stages = tuple(StageOutcome.from_row(row) for row in rows)
    # The state's message is for people; which stage failed comes from the table.
    run = DemoRun(DemoPaths(Path(".")), "", "http://h/api", "id", "n", "FAILED", "", stages, ())
    assert not run.completed
    assert run.failed_stage == "train"
    assert run.failed.error.startswith("RuntimeError")
    assert run.versions == {"tokenize": VersionRef("tokens", "9b87fbd1f58b")}
    assert run.run_url == "http://h/runs/flow-run/id"


def _processes_using(path: Path) -> list[str]:
    """Our processes whose command line or environment mention `path`."""
    found = []
    needle = str(path).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if needle in cmdline or needle in (entry / "environ").read_bytes():
                found.append(f"{entry.name}: {cmdline.replace(NUL, b' ').decode()[:200]}")
        except OSError:  # gone, or not ours
            continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_ctrl_c_mid_build_stops_everything(tmp_path: Path) -> None:
    """A Ctrl-C in the terminal while the build runs: the demo exits and leaves no process."""
    webtext = Path(sys.executable).with_name("webtext")
    command = [str(webtext), "demo", "--workdir", str(tmp_path / "w")]
    command += ["--store", str(tmp_path / "a")]
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        # Its own process group, as a terminal's foreground job is.
        demo = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while b"prefect.flow-run.Running" not in log.read_bytes():
            assert demo.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        returncode = demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert returncode != 0
    assert "stopping the serve process" in log.read_text()
    assert _processes_using(tmp_path) == []


def test_the_served_deployments_are_prefect_yamls() -> None:
    """flows.serve serves prefect.yaml's `default` deployments under the same names, with the
    same parameters (but gpus_per_node: this machine's), none of them a secret."""
    import yaml

    from flows.serve import deployments

    config = yaml.safe_load((Path(__file__).parent.parent / "prefect.yaml").read_text())
    declared = {
        entry["entrypoint"].rsplit(":", 1)[1]: entry.get("parameters", {})
        for entry in config["deployments"]
        if entry["name"] == "default"
    }
    served = {d.entrypoint.rsplit(".", 1)[1]: d for d in deployments()}
    assert sorted(served) == sorted(declared)
    for function, parameters in declared.items():
        deployment = served[function]
        assert deployment.name == "default"
        expected = {k: v for k, v in parameters.items() if k != "gpus_per_node"}
        assert expected.items() <= deployment.parameters.items(), function
        assert not any("secret" in k or "reddit" in k for k in deployment.parameters)
