"""`webtext demo`: a local Prefect server, the deployments served, build-webtext run as a
deployment with training as its own deployment run, and nothing left running afterwards.

The demo itself runs once per session (the `demo_run` fixture in conftest.py); test_ui.py opens
the same run in the browser. `demo_twice` runs the `webtext demo` command twice in one work
folder, for what the operator's terminal shows and what a second run finds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.build import STAGES
from webtext.store import Store, VersionRef
from webtext_app import demo_run as demo_run_module
from webtext_app.demo_run import (
    RUN_SEPARATOR,
    STAGE_ORDER,
    TRAIN,
    BuildWatcher,
    DemoPaths,
    DemoRun,
    StageOutcome,
    child_flow_runs,
    key_counts,
    reopen_hint,
)
from webtext_app.prefect_server import UI_PORT, api_get

pytestmark = pytest.mark.xdist_group("demo")  # one demo per session under --dist loadgroup

NUL = b"\0"
TWICE_STEPS = 20  # demo_twice's training steps: a progress line or two
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


def test_the_watcher_knows_every_stage_of_the_build() -> None:
    assert STAGE_ORDER == STAGES


def test_the_watcher_reads_the_artifacts_the_flows_publish() -> None:
    from flows.build import OUTCOME_ARTIFACT
    from flows.train import PROGRESS_KEY

    assert (demo_run_module.OUTCOME_ARTIFACT, demo_run_module.PROGRESS_ARTIFACT) == (
        OUTCOME_ARTIFACT,
        PROGRESS_KEY,
    )


def test_the_reopen_hint_links_the_run_on_prefects_default_port(tmp_path: Path) -> None:
    home = tmp_path / "prefect"
    command, link, cli = reopen_hint(home, "run-id")
    assert command == f"the UI again, later: {demo_run_module.reopen_command(home)}"
    assert link == f"  then open http://127.0.0.1:{UI_PORT}/runs/flow-run/run-id"
    assert (
        cli == f"  and for the prefect CLI: export PREFECT_API_URL=http://127.0.0.1:{UI_PORT}/api"
    )


def test_key_counts() -> None:
    assert key_counts("links", {"records": 241, "links": 1136}) == "links 1,136"
    assert key_counts("model", {"step": 40, "loss": 7.6132}) == "step 40, loss 7.613"
    assert key_counts("evaluation", {"lambada acc": 0.5, "lambada 8-gram overlap": 0.1}) == (
        "lambada acc 0.5"
    )
    assert key_counts("minhash", {"documents": 105, "parts": 1}) == "documents 105"
    assert key_counts("links", {}) == ""


def test_a_build_that_reused_every_stage_made_nothing_new() -> None:
    def run(*reused: bool | None, state: str = "COMPLETED") -> DemoRun:
        stages = tuple(
            StageOutcome(stage, VersionRef(stage, "ab12"), flag, "completed", "")
            for stage, flag in zip(STAGES, reused, strict=False)
        )
        return DemoRun(DemoPaths(Path(".")), "", "http://h/api", "id", "n", state, "", stages, ())

    assert run(*[True] * len(STAGES)).nothing_new
    assert not run(*[True] * (len(STAGES) - 1), False).nothing_new
    assert not run(*[True] * len(STAGES), state="FAILED").nothing_new
    assert not run().nothing_new  # no outcome: nothing known


def test_the_serve_log_marks_the_demo_run(demo_run: DemoRun) -> None:
    marks = [
        line
        for line in demo_run.paths.serve_log.read_text().splitlines()
        if line.startswith(RUN_SEPARATOR)
    ]
    assert len(marks) == 2, marks  # the run's start, then its flow run
    assert demo_run.flow_run_id in marks[1]


def test_the_watcher_says_each_stage_in_order(demo_run: DemoRun) -> None:
    """Read after the build, every stage is said once, started before completed."""
    said: list[str] = []
    BuildWatcher(demo_run.api_url, demo_run.flow_run_id, demo_run.store_url, said.append).poll()
    stages = [line.split(":", 1)[0] for line in said if not line.startswith("train: step")]
    assert stages == [stage for stage in STAGES for _ in range(2)], said
    links = child_flow_runs(demo_run.api_url, demo_run.flow_run_id)["collect-links"]
    assert said[0] == f"links: started ({links['name']}, Completed)"
    assert said[1].startswith(f"links: completed {demo_run.versions['links']}: links ")


@pytest.fixture(scope="module")
def demo_twice(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """`webtext demo` run twice in one work folder and store, as an operator does: the
    terminal output of each run (stdout and stderr as a terminal interleaves them), and the
    work folder."""
    root = tmp_path_factory.mktemp("demo-twice")
    webtext = Path(sys.executable).with_name("webtext")
    command = [str(webtext), "demo", "--workdir", str(root / "w"), "--store", str(root / "a")]
    outputs = []
    for number in (1, 2):
        done = subprocess.run(
            [*command, "--max-steps", str(TWICE_STEPS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, f"demo run {number}:\n{done.stdout[-5000:]}"
        outputs.append(done.stdout)
    return outputs[0], outputs[1], root / "w"


def _lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines()]


def test_the_demo_terminal_says_each_stage_and_the_api_url(demo_twice) -> None:
    first, _, _ = demo_twice
    lines = _lines(first)
    ui = next(i for i, line in enumerate(lines) if line.startswith("Prefect UI: "))
    port = lines[ui].rsplit(":", 1)[1]
    # Beside the UI link: how to point the prefect CLI at this server.
    assert lines[ui + 1].endswith(f"export PREFECT_API_URL=http://127.0.0.1:{port}/api")
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in first  # to reopen it later
    # The reopen hint links this build run, on the port the reopened server takes.
    run_id = re.search(
        r"^Prefect UI of this build run: \S+/runs/flow-run/([0-9a-f-]{36})$", first, re.M
    )[1]
    reopen = next(i for i, line in enumerate(lines) if line.startswith("the UI again, later: "))
    assert lines[reopen + 1] == f"then open http://127.0.0.1:{UI_PORT}/runs/flow-run/{run_id}"
    assert lines[reopen + 2].endswith(f"export PREFECT_API_URL=http://127.0.0.1:{UI_PORT}/api")
    for stage in STAGES:
        started = next(i for i, line in enumerate(lines) if line.startswith(f"{stage}: started"))
        completed = next(
            i for i, line in enumerate(lines) if line.startswith(f"{stage}: completed ")
        )
        assert started < completed, stage
        assert "(reused)" not in lines[completed], lines[completed]
    assert any(re.match(r"links: completed links/\w+: links \d+$", line) for line in lines)
    assert any(re.match(rf"train: step \d+/{TWICE_STEPS} ", line) for line in lines), first[-5000:]
    assert "nothing new" not in first
    assert "┃ count" in first and "|---|" in first  # the tables a second run leaves out


def test_a_second_demo_run_finds_nothing_new(demo_twice) -> None:
    _, second, _ = demo_twice
    reused = [line for line in _lines(second) if re.match(r"\w+: completed .* \(reused\)", line)]
    assert len(reused) == len(STAGES), second[-5000:]
    versions = ", ".join(rf"{stage} [0-9a-f]+" for stage in STAGES)
    assert re.search(rf"^nothing new: every stage reused \({versions}\)$", second, re.M), second
    # Instead of the first run's count tables and evaluation table.
    assert "┃ count" not in second and "|---|" not in second


def test_the_serve_log_holds_each_demo_run(demo_twice) -> None:
    first, second, workdir = demo_twice
    text = (workdir / "serve.log").read_text()
    marks = [line for line in text.splitlines() if line.startswith(RUN_SEPARATOR)]
    starts = [line for line in marks if "flow run" not in line]
    assert len(starts) == 2, marks
    for output in (first, second):
        run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", output)[1]
        assert sum(run_id in line for line in marks) == 1, (run_id, marks)
    # Both runs' serve output is kept: the first run's lines come before the second's mark.
    assert text.index(starts[1]) > text.index("serving build-webtext/default")


def test_stopping_the_demo_leaves_its_runs_completed(demo_twice) -> None:
    """The serve process is stopped after the build's processes exit: stopped before, it
    marks the runs it still tracks Cancelled, completed ones too."""
    _, _, workdir = demo_twice
    # Prefect's own table: the server is gone with the demo.
    with contextlib.closing(sqlite3.connect(workdir / "prefect" / "prefect.db")) as db:
        states = db.execute("SELECT name, state_type FROM flow_run").fetchall()
    assert len(states) > 2 * len(STAGES), states
    assert {state for _, state in states} == {"COMPLETED"}, states


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
        while b"links: started" not in log.read_bytes():
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
