"""Launching training: settings, torchrun commands, output streaming, metrics, the loss
plot, the Kubernetes manifests, and `train_model` and the `train-gpt2` flow over a fake
trainer."""

from __future__ import annotations

import inspect
import json
import struct
import sys
import textwrap
import threading
import time
import typing
from dataclasses import fields
from pathlib import Path

import pytest

import training.launch
from training.launch import (
    check_device,
    final_metrics,
    plot_loss,
    read_metrics,
    stream,
    torchrun_command,
    train_model,
    training_parameters,
)
from training.progress import StepClock, describe_step, format_duration
from training.settings import TrainSettings, parse_settings
from training.train import parse_args
from webtext.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent
K8S = REPO_ROOT / "docker" / "k8s"
K8S_VERSION = "1.30"
COMMON = {"tokens_dir": "/data/tokens/abc", "out_dir": "/runs/x"}
DEFAULTS = TrainSettings()


def trainer_args(command: list[str]) -> list[str]:
    return command[command.index("training.train") + 1 :]


def test_command_one_gpu_is_standalone_torchrun() -> None:
    command = torchrun_command(TrainSettings(max_steps=10), **COMMON, python="py")
    assert command[:6] == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
    ]
    assert command[6:8] == ["-m", "training.train"]
    assert trainer_args(command) == [
        "--tokens", "/data/tokens/abc", "--out", "/runs/x", "--device", "cuda",
        "--max-steps", "10",
    ]  # fmt: skip
    assert "--nnodes" not in command and "--rdzv-endpoint" not in command


def test_command_eight_gpus_passes_settings_and_extra_args_last() -> None:
    settings = TrainSettings(max_steps=5, batch_size=12, grad_accum=4, block_size=1024)
    command = torchrun_command(
        settings, **COMMON, gpus_per_node=8, extra_args=["--compile", "--dtype", "bf16"]
    )
    assert command[command.index("--nproc_per_node") + 1] == "8"
    args = trainer_args(command)
    assert args[args.index("--batch-size") + 1] == "12"
    assert args[args.index("--grad-accum") + 1] == "4"
    assert args[args.index("--block-size") + 1] == "1024"
    assert args[-3:] == ["--compile", "--dtype", "bf16"]


def test_command_two_nodes_uses_c10d_rendezvous() -> None:
    command = torchrun_command(
        DEFAULTS, **COMMON, nodes=2, gpus_per_node=8,
        rdzv_endpoint="train-gpt2-0.train-gpt2:29400", rdzv_id="run-1",
    )  # fmt: skip
    launcher = command[: command.index("training.train")]
    assert "--standalone" not in launcher
    flags = dict(zip(launcher[3::2], launcher[4::2], strict=False))
    assert flags["--nproc_per_node"] == "8" and flags["--nnodes"] == "2"
    assert flags["--rdzv-backend"] == "c10d"
    assert flags["--rdzv-endpoint"] == "train-gpt2-0.train-gpt2:29400"
    assert flags["--rdzv-id"] == "run-1"
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        torchrun_command(DEFAULTS, **COMMON, nodes=2, gpus_per_node=8)


def test_command_cpu_is_one_plain_process() -> None:
    command = torchrun_command(DEFAULTS, **COMMON, gpus_per_node=0, python="py")
    assert command[:3] == ["py", "-m", "training.train"]
    assert "torch.distributed.run" not in command
    assert command[-2:] == ["--device", "cpu"]
    with pytest.raises(ValueError, match="one node"):
        torchrun_command(DEFAULTS, **COMMON, nodes=2, gpus_per_node=0, rdzv_endpoint="h:1")


def test_the_trainer_reads_back_every_setting_of_the_command() -> None:
    """Settings -> torchrun command -> the trainer's flags: the same settings."""
    settings = TrainSettings(
        model="tiny", block_size=32, max_steps=7, lr=1e-3, compile=True, dtype="fp32", seed=3
    )
    args = parse_args(trainer_args(torchrun_command(settings, **COMMON)))
    assert TrainSettings.from_mapping(vars(args)) == settings
    assert TrainSettings.from_mapping(vars(parse_args(["--tokens", "t", "--out", "o"]))) == (
        DEFAULTS
    )
    assert parse_settings(["--model", "tiny", "--no-compile"]) == TrainSettings(model="tiny")
    with pytest.raises(SystemExit):
        parse_settings(["--model", "7B"])
    with pytest.raises(ValueError, match="7B"):
        TrainSettings(model="7B")


def test_the_flow_takes_every_setting_with_its_default_and_type() -> None:
    from flows.train import train_gpt2_flow

    parameters = inspect.signature(train_gpt2_flow.fn).parameters
    hints = typing.get_type_hints(train_gpt2_flow.fn)
    setting_hints = typing.get_type_hints(TrainSettings)
    for field in fields(TrainSettings):
        assert parameters[field.name].default == field.default, field.name
        assert hints[field.name] == setting_hints[field.name], field.name


def test_describe_step_shows_what_a_record_has() -> None:
    record = {"step": 10, "loss": 5.12345, "lr": 3e-4, "tokens_per_s": 12345.6, "mfu": None}
    assert describe_step(record, 300) == "step 10/300  loss 5.1235  lr 3.00e-04  12,346 tokens/s"
    record |= {"val_loss": 5.5, "mfu": 0.312}
    assert "val_loss 5.5000" in describe_step(record, 300)
    assert describe_step(record, 300).endswith("mfu 31.2%")


def test_describe_step_adds_the_time_left_at_the_pace_so_far() -> None:
    now = [100.0]
    clock = StepClock(1000, clock=lambda: now[0])
    assert clock.eta_s(200) is None  # a resumed run: its clock starts at its first step
    now[0] += 30.0
    assert clock.eta_s(210) == pytest.approx(790 * 3.0)  # 3 s a step, 790 steps left
    record = {"step": 210, "loss": 4.5, "tokens_per_s": 2000.0}
    assert describe_step(record, 1000, clock.eta_s(210)) == (
        "step 210/1000  loss 4.5000  2,000 tokens/s  ETA 39m30s"
    )
    assert [format_duration(s) for s in (0, 42.4, 725, 3 * 3600 + 420, 41 * 86400 + 6 * 3600)] == [
        "0s", "42s", "12m05s", "3h07m", "41d06h",
    ]  # fmt: skip


def test_check_device_refuses_gpt2_sizes_on_cpu_in_one_line() -> None:
    with pytest.raises(ValueError) as refused:
        check_device("124M", 0)
    message = str(refused.value)
    assert "\n" not in message
    assert message == (
        "refusing to train GPT-2 124M on CPU (gpus_per_node=0): pass allow_cpu=true "
        "(--allow-cpu) to train it there anyway, or model=tiny"
    )
    check_device("124M", 0, allow_cpu=True)
    check_device("tiny", 0)
    check_device("774M", 8, cuda=True)
    # GPUs asked for on a worker without CUDA: on CPU after all.
    with pytest.raises(ValueError, match=r"GPT-2 350M on CPU \(gpus_per_node=1 but no CUDA"):
        check_device("350M", 1, cuda=False)
    with pytest.raises(ValueError, match="pass gpus_per_node=0 to use the CPU"):
        check_device("tiny", 1, cuda=False)


def test_read_metrics_skips_and_counts_malformed_lines(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 0, "loss": 10.9, "lr": 0.0}\n'
        '{"step": 1, "loss": 10.1, "val_loss": 10.3}\n'
        "not json\n"
        "\n"
        "[1, 2]\n"
        '{"step": 2, "loss": 9.5, "tokens_per_s": 1200.0, "mfu": 0.31}\n'
        '{"step": 3, "loss": 9.'  # a write cut short by a crash
    )
    malformed: list[int] = []
    metrics = read_metrics(path, malformed)
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert malformed == [3, 5, 7]
    final = final_metrics(metrics)
    assert final["step"] == 2 and final["loss"] == 9.5 and final["val_loss"] == 10.3
    assert read_metrics(tmp_path / "absent.jsonl") == []


def test_plot_loss_writes_a_png(tmp_path) -> None:
    metrics = [{"step": s, "loss": 11.0 - s / 10} for s in range(50)]
    metrics += [{"step": 49, "val_loss": 6.4}, {"step": 10, "val_loss": 9.9}]
    png = plot_loss(metrics, tmp_path / "plots" / "loss.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (800, 450) and len(data) > 10_000


def test_stream_passes_lines_in_order_and_returns_the_exit_code() -> None:
    script = (
        "import sys\n"
        "for i in range(200):\n"
        "    print(f'line {i}', file=sys.stderr if i % 2 else sys.stdout, flush=True)\n"
        "sys.exit(7)"
    )
    lines: list[str] = []
    assert stream([sys.executable, "-c", script], None, lines.append) == 7
    assert lines == [f"line {i}" for i in range(200)]
    utf8 = {"PYTHONIOENCODING": "utf-8"}
    assert stream([sys.executable, "-c", "print('é')"], utf8, lines.append) == 0
    assert lines[-1] == "é"


def test_multinode_manifests_validate() -> None:
    import kubernetes_validate
    import yaml

    documents = list(yaml.safe_load_all((K8S / "multinode-job.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["Service", "Job"]
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    service, job = documents
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert spec["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    env = {e["name"]: e["value"] for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["NNODES"] == str(spec["completions"])
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert (
        f"--rdzv-endpoint={job['metadata']['name']}-0.{service['metadata']['name']}:29400" in args
    )


def test_gpu_job_template_fills_to_a_valid_job() -> None:
    import kubernetes_validate
    from prefect.utilities.templating import apply_values

    template = json.loads((K8S / "gpu-job-template.json").read_text())
    properties = template["variables"]["properties"]
    values = {name: p["default"] for name, p in properties.items() if "default" in p}
    # What the worker supplies for a run (it turns env into a list before submitting).
    values |= {
        "name": "train-gpt2-abc",
        "labels": {"prefect.io/flow-run-id": "abc"},
        "env": [{"name": "PREFECT__FLOW_RUN_ID", "value": "abc"}],
        "command": ["prefect", "flow-run", "execute"],
        "gpus": 8,
    }
    manifest = apply_values(template["job_configuration"]["job_manifest"], values)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    dshm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"]["medium"] == "Memory"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert "serviceAccountName" not in pod  # unset variables drop out, as in the worker


def test_prefect_yaml_has_the_training_deployment() -> None:
    import yaml

    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    train = next(d for d in deployments if d["entrypoint"] == "flows/train.py:train_gpt2_flow")
    assert train["name"] == "default" and train["work_pool"]["name"] == "webtext-gpu"
    assert train["parameters"]["gpus_per_node"] >= 1
    # The build says what it trains, and where: the GPU pool's deployment.
    build = next(
        d
        for d in deployments
        if d["entrypoint"] == "flows/build.py:build_webtext" and d["name"] == "default"
    )
    assert build["parameters"]["train"] == {"model": "124M", "max_steps": DEFAULTS.max_steps}
    assert build["parameters"]["train_deployment"] == f"train-gpt2/{train['name']}"


# A stand-in for training.train: the same arguments, a metrics.jsonl, a checkpoint.
FAKE_TRAINER = textwrap.dedent(
    """
    import argparse, json, pathlib, sys
    from training.train import parse_args
    fake = argparse.ArgumentParser()
    fake.add_argument("--fail-at", type=int)
    known, rest = fake.parse_known_args()
    args = parse_args(rest)
    args.fail_at = known.fail_at
    assert sorted(pathlib.Path(args.tokens).glob("tokens/train/*.bin")), args.tokens
    out = pathlib.Path(args.out)
    with open(out / "metrics.jsonl", "w") as metrics:
        for step in range(args.max_steps):
            if step == args.fail_at:
                print("CUDA error: out of memory", file=sys.stderr)
                sys.exit(3)
            record = {"step": step, "loss": 10.0 - step, "lr": 6e-4, "mfu": 0.1}
            if step % 2:
                record["val_loss"] = 10.5 - step
            metrics.write(json.dumps(record) + "\\n")
            print(json.dumps(record), flush=True)
        print("done", flush=True)
        metrics.write("{broken\\n")
    import torch
    from training.model import GPT, GPTConfig
    config = GPTConfig(block_size=8, vocab_size=64, n_layer=1, n_head=1, n_embd=8)
    state = {"model": GPT(config).state_dict(), "config": vars(config), "optimizer": {},
             "step": args.max_steps, "args": vars(args), "rng": []}
    torch.save(state, out / f"ckpt-{args.max_steps:08d}.pt")
    """
)


@pytest.fixture
def fake_training(tmp_path, monkeypatch) -> dict[str, str]:
    """A tokens version in a local store, and train_model's command pointed at the fake."""
    store_url = str(tmp_path / "store")
    with Store(store_url).write("tokens", {"fake": True}, "test") as writer:
        writer.put("tokens/train/part-00000.bin", b"\0" * 64)
        writer.put("tokens/val/part-00000.bin", b"\0" * 64)
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    real = training.launch.torchrun_command

    def fake_command(settings, **kwargs) -> list[str]:
        command = real(settings, **kwargs)
        assert command[1:3] == ["-m", "training.train"]  # gpus_per_node=0: no torchrun
        return [command[0], str(script), *command[3:]]

    monkeypatch.setattr(training.launch, "torchrun_command", fake_command)
    return {"store_url": store_url, "runs_dir": str(tmp_path / "runs")}


@pytest.mark.usefixtures("prefect_server")
def test_train_flow_runs_the_trainer_and_publishes_artifacts(fake_training) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.train import train_gpt2_flow

    assert train_gpt2_flow.name == "train-gpt2"
    state = train_gpt2_flow(
        gpus_per_node=0, max_steps=6, model="tiny", return_state=True, **fake_training
    )
    ref = state.result()
    store = Store(fake_training["store_url"])
    files = {entry.path for entry in store.manifest(ref).files}
    assert {"checkpoint.pt", "metrics.jsonl", "loss.png", "hf/config.json"} <= files
    assert "hf/model.safetensors" in files
    out = Path(fake_training["runs_dir"]) / f"tiny-{ref.version}"  # named by the version
    assert (out / "ckpt-00000006.pt").is_file()
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    with get_client(sync_client=True) as client:
        keys = ["train-gpt2-metrics", "train-gpt2-checkpoint", "train-gpt2-loss"]
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    # Other tests train on the same server: keep this run's artifacts.
    run_id = state.state_details.flow_run_id
    artifacts = {a.key: a for a in found if a.flow_run_id == run_id}
    assert set(artifacts) == set(keys)
    table = json.loads(artifacts["train-gpt2-metrics"].data)
    assert {"metric": "step", "value": 5} in table and {"metric": "val_loss", "value": 5.5} in table
    assert "ckpt-00000006.pt" in artifacts["train-gpt2-checkpoint"].data
    assert artifacts["train-gpt2-loss"].data.startswith("data:image/png;base64,")
    # The same parameters on the same tokens again: a cache hit, the trainer never runs.
    (out / "metrics.jsonl").unlink()
    assert train_gpt2_flow(gpus_per_node=0, max_steps=6, model="tiny", **fake_training) == ref
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.usefixtures("prefect_server")
def test_train_flow_failure_names_the_exit_code_and_step(fake_training) -> None:
    from flows.train import train_gpt2_flow

    with pytest.raises(RuntimeError, match=r"exit code 3 after step 3") as failure:
        train_gpt2_flow(
            model="tiny",
            gpus_per_node=0,
            max_steps=6,
            extra_args=["--fail-at", "4"],
            **fake_training,
        )
    assert "CUDA error: out of memory" in str(failure.value)


@pytest.fixture
def no_trainer(monkeypatch) -> None:
    """Starting a process fails the test."""

    def started(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(training.launch.subprocess, "Popen", started)


@pytest.mark.usefixtures("no_trainer")
def test_train_model_refuses_124m_on_cpu_at_once(fake_training) -> None:
    store = Store(fake_training["store_url"])
    tokens = store.resolve("tokens")
    started = time.monotonic()
    with pytest.raises(ValueError) as refused:
        train_model(
            store, tokens, TrainSettings(), gpus_per_node=0, runs_dir=fake_training["runs_dir"]
        )
    assert time.monotonic() - started < 2
    assert str(refused.value).startswith("refusing to train GPT-2 124M on CPU (gpus_per_node=0)")
    assert "\n" not in str(refused.value) and "allow_cpu=true (--allow-cpu)" in str(refused.value)
    assert not Path(fake_training["runs_dir"]).exists()  # no run folder either


@pytest.mark.usefixtures("no_trainer")
def test_train_model_returns_a_124m_model_made_already_on_cpu(fake_training) -> None:
    """Only a new run has to fit where it runs: a version made already is returned."""
    store = Store(fake_training["store_url"])
    tokens = store.resolve("tokens")
    parameters = training_parameters(TrainSettings(), (), 1, 0)
    stage = training.launch.STAGE
    with store.write(stage.name, parameters, stage.code_version, (tokens,)) as out:
        out.put("checkpoint.pt", b"weights")
    result = train_model(store, tokens, TrainSettings(), gpus_per_node=0)
    assert result.reused and result.ref == store.resolve("model")


@pytest.mark.usefixtures("prefect_server", "no_trainer")
def test_train_flow_refuses_124m_on_cpu_at_once(fake_training) -> None:
    from flows.train import train_gpt2_flow

    started = time.monotonic()
    state = train_gpt2_flow(gpus_per_node=0, return_state=True, **fake_training)
    assert state.is_failed() and time.monotonic() - started < 10  # a flow run: a few calls
    with pytest.raises(ValueError, match=r"^refusing to train GPT-2 124M on CPU"):
        state.result()


@pytest.mark.usefixtures("prefect_server")
def test_train_flow_allow_cpu_trains_a_gpt2_size_there(fake_training) -> None:
    """allow_cpu launches; it is not in the model version's parameters."""
    from flows.train import train_gpt2_flow

    ref = train_gpt2_flow(gpus_per_node=0, max_steps=2, allow_cpu=True, **fake_training)
    parameters = Store(fake_training["store_url"]).manifest(ref).parameters
    assert parameters == training_parameters(TrainSettings(max_steps=2), (), 1, 0)


@pytest.mark.usefixtures("prefect_server")
def test_watch_training_repeats_the_runs_state_and_progress() -> None:
    """What build-webtext's log shows while a train-gpt2 run trains elsewhere."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
    from prefect.states import Completed, Running, Scheduled

    from flows.train import PROGRESS_KEY, watch_training

    @flow(name="train-gpt2")
    def stand_in() -> None:
        pass

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(stand_in, state=Scheduled())  # as run_deployment's

        lines: list[str] = []
        shown = threading.Condition()

        def show(line: str) -> None:
            with shown:
                lines.append(line)
                shown.notify_all()

        def after_shown(text: str) -> None:
            """The trainer's next step waits for the watcher to show this one (no timing)."""
            with shown:
                assert shown.wait_for(lambda: any(text in line for line in lines), 30), lines

        def train_elsewhere() -> None:
            after_shown("Scheduled")
            client.set_flow_run_state(run.id, Running(), force=True)
            artifact = client.create_artifact(
                ArtifactCreate(
                    key=PROGRESS_KEY,
                    type="progress",
                    data=10.0,
                    description="step 10/100  loss 5.0000  900 tokens/s  ETA 1m30s",
                    flow_run_id=run.id,
                )
            )
            after_shown("step 10/100")
            update = ArtifactUpdate(data=50.0, description="step 50/100  loss 3.0000  ETA 50s")
            client.update_artifact(artifact.id, update)
            after_shown("step 50/100")
            time.sleep(0.3)  # more polls of the same progress: it is still shown once
            client.set_flow_run_state(run.id, Completed(), force=True)

        thread = threading.Thread(target=train_elsewhere)
        thread.start()
        try:
            ended = watch_training(run, show, timeout_s=60, poll_s=0.1, log_every_s=0.1)
        finally:
            thread.join()
    assert ended.state.is_completed()
    name = f"train-gpt2 run {run.name}"
    assert lines[0] == f"{name}: Scheduled: waiting for a worker of its pool"
    assert f"{name}: Running" in lines and lines[-1] == f"{name}: Completed"
    progress = [line for line in lines if "step" in line]
    assert progress == [
        f"{name}: step 10/100  loss 5.0000  900 tokens/s  ETA 1m30s",
        f"{name}: step 50/100  loss 3.0000  ETA 50s",
    ]  # each line once, however often it was read


def test_train_model_streams_metrics_and_lines_and_publishes(fake_training) -> None:
    store = Store(fake_training["store_url"])
    tokens = store.resolve("tokens")
    settings = TrainSettings(model="tiny", max_steps=4)
    lines: list[str] = []
    steps: list[int] = []
    result = train_model(
        store,
        tokens,
        settings,
        gpus_per_node=0,
        runs_dir=fake_training["runs_dir"],
        on_line=lines.append,
        on_metrics=lambda record: steps.append(record["step"]),
    )
    assert not result.reused and result.ref.stage == "model"
    assert lines[0].startswith("training tiny on tokens/")
    # Every metrics record went to on_metrics; the fake's torn last record is reported.
    assert lines[1:] == ["done", "1 malformed metrics lines skipped (lines [5])"]
    assert steps == [0, 1, 2, 3]
    parameters = store.manifest(result.ref).parameters
    assert parameters == training_parameters(settings, (), 1, 0)
    assert parameters["max_steps"] == 4 and parameters["lr"] == DEFAULTS.lr
    again = train_model(store, tokens, settings, gpus_per_node=0, on_line=lines.append)
    assert again.reused and again.ref == result.ref


def test_training_parameters_take_the_flows_defaults() -> None:
    """build-webtext fills in train-gpt2's defaults, `extra_args=None` among them."""
    parameters = training_parameters(
        TrainSettings(model="tiny"), extra_args=None, nodes=2, gpus_per_node=8
    )
    assert parameters["extra_args"] == [] and parameters["ranks"] == 16
    assert parameters["batch_size"] == DEFAULTS.batch_size


@pytest.mark.usefixtures("prefect_server")
def test_build_refuses_a_deployment_that_would_train_124m_on_cpu(fake_training) -> None:
    """build-webtext reads the deployment's parameters: gpus_per_node=0 (flows.serve on a
    machine without a GPU) and 124M fail the train stage before any run starts."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    import flows.build
    from flows.build import _train

    store = Store(fake_training["store_url"])
    tokens = store.resolve("tokens")
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("train-gpt2")
        deployment_id = client.create_deployment(
            flow_id, "on-cpu", parameters={"model": "124M", "gpus_per_node": 0}
        )

    @flow
    def build(options: dict) -> str:
        return str(_train(store, tokens, options, "train-gpt2/on-cpu"))

    started = time.monotonic()
    state = build({}, return_state=True)
    assert time.monotonic() - started < 10
    with pytest.raises(ValueError, match=r"^refusing to train GPT-2 124M on CPU \(gpus_per_node=0"):
        state.result()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    assert runs == []  # no run was started
    # Tiny is what CPUs are for, and allow_cpu lets 124M through: both start a run, which
    # no worker takes here (a timeout of 0 stops watching it at once).
    for options in ({"model": "tiny", "max_steps": 3}, {"allow_cpu": True}):
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(flows.build.POLICIES, "train", flows.build.StagePolicy(0, timeout_s=0))
            with pytest.raises(RuntimeError, match=r"run \S+ ended Scheduled"):
                build(options)
