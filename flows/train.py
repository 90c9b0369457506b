"""`train-gpt2`: a `tokens` version to a `model` version (weights, metrics, loss curve, a
Hugging Face export), then the `evaluate-zero-shot` deployment on it.

`training.launch.train_model` does the work (run folder, torchrun, streaming, publishing);
this flow streams its output into the run's log and shows the run as artifacts. Its
parameters are `TrainSettings`' fields with their defaults, and the launch's.

While it trains, its progress artifact (key PROGRESS_KEY) holds the share of steps done and,
as its description, the latest step's line (step, loss, tokens/s, ETA); `watch_training`
reads it from the run that started this one (build-webtext) and repeats it in that run's log.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows.artifacts import ProgressReporter, publish_version
from training.launch import LOSS_PNG, METRICS, run_dir, train_model
from training.progress import StepClock, describe_step
from training.settings import TrainSettings
from webtext.config import open_store
from webtext.store import Store, VersionRef

PROGRESS_KEY = "train-gpt2-progress"
# The progress artifact is updated at most this often (each update is a call to the server),
# and a step's line goes to the run's log at most this often (600,000 steps, every one of
# them in the log, would be millions of lines).
PROGRESS_EVERY_S = 2.0
LOG_EVERY_S = 10.0
# How often build-webtext asks for the training run's state, and repeats its progress.
WATCH_POLL_S = 5.0
WATCH_LOG_EVERY_S = 30.0


class TrainingProgress:
    """This run's progress artifact (key PROGRESS_KEY): percent of `max_steps` done, and the
    latest step's line (with the time left) as its description; the line goes to `log`
    too, at most every `log_every_s`."""

    def __init__(
        self,
        title: str,
        max_steps: int,
        log: Callable[[str], None],
        every_s: float = PROGRESS_EVERY_S,
        log_every_s: float = LOG_EVERY_S,
    ) -> None:
        self.max_steps = max_steps
        self.log = log
        self.log_every_s = log_every_s
        self.clock = StepClock(max_steps)
        self._logged = float("-inf")
        self.artifact = ProgressReporter(f"{title}: starting", every_s, key=PROGRESS_KEY)
        self.artifact.start(max_steps)

    @property
    def line(self) -> str:
        """The latest step's line (or how the run started or ended)."""
        return self.artifact.description

    def on_metrics(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        line = describe_step(record, self.max_steps, self.clock.eta_s(step))
        now = time.monotonic()
        # The first step, validations and the last step are always logged.
        if step >= self.max_steps or "val_loss" in record or now - self._logged >= self.log_every_s:
            self._logged = now
            self.log(line)
        self.artifact.advance(step - self.artifact.done, line)

    def finish(self, line: str) -> None:
        self.artifact.finish(line)


def latest_progress(client: Any, flow_run_id: UUID) -> tuple[float, str] | None:
    """A train-gpt2 run's progress artifact: (percent, its latest line), None before it has one."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[PROGRESS_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
        ),
        sort=ArtifactSort.UPDATED_DESC,
        limit=1,
    )
    if not found:
        return None
    return float(found[0].data or 0.0), found[0].description or ""


def watch_training(
    flow_run: FlowRun,
    log: Callable[[str], None],
    timeout_s: float,
    poll_s: float = WATCH_POLL_S,
    log_every_s: float = WATCH_LOG_EVERY_S,
) -> FlowRun:
    """Wait for a train-gpt2 run to end (or `timeout_s`), and say how it goes through `log`:
    its state when it changes (Scheduled: no worker of its pool has taken it yet), and its
    latest step's line (step, loss, tokens/s, ETA) every `log_every_s` when it is new.

    Called from a flow run (build-webtext), it also mirrors the training's percent in a
    progress artifact of that run. Returns the run as last read."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    name = f"train-gpt2 run {flow_run.name}"
    mirror: ProgressReporter | None = None
    last_state = last_line = None
    last_logged = float("-inf")
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run.id)
            final = flow_run.state is not None and flow_run.state.is_final()
            now = time.monotonic()
            if final or now - last_logged >= log_every_s:
                progress = latest_progress(client, flow_run.id)
                if progress is not None and progress[1] != last_line:
                    last_logged = now
                    percent, last_line = progress
                    log(f"{name}: {last_line}")
                    if mirror is None and FlowRunContext.get() is not None:
                        mirror = ProgressReporter(name, min_interval_s=0)
                        mirror.start(100)
                    if mirror is not None:
                        mirror.advance(percent - mirror.done)
            state = flow_run.state.name if flow_run.state else "no state"
            if state != last_state:
                last_state = state
                waiting = ": waiting for a worker of its pool" if state == "Scheduled" else ""
                log(f"{name}: {state}{waiting}")
            if final or now >= deadline:
                return flow_run
            time.sleep(poll_s)


def publish_training(store: Store, ref: VersionRef, out_dir: Path, tokens: VersionRef) -> None:
    """The run's last metrics (the version's counts: the last value of every numeric one),
    its folder's files and its loss curve, as artifacts."""
    manifest = store.manifest(ref)
    records = next((f.rows for f in manifest.files if f.path == METRICS), None)
    create_table_artifact(
        key="train-gpt2-metrics",
        table=[
            {"metric": name, "value": value} for name, value in manifest.stats["counts"].items()
        ],
        description=f"Last value of every metric ({records} records), trained on {tokens}",
    )
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    listing = "\n".join(f"| `{p.relative_to(out_dir)}` | {p.stat().st_size:,} |" for p in files)
    create_markdown_artifact(
        key="train-gpt2-checkpoint",
        markdown=(
            f"# Checkpoint folder\n\n[{out_dir}]({out_dir.resolve().as_uri()})\n\n"
            f"Tokens: `{tokens}`\n\n| file | bytes |\n|---|---|\n{listing}\n"
        ),
        description="Where this run's checkpoint, metrics and loss plot are",
    )
    png = out_dir / LOSS_PNG
    if png.is_file():
        # A data: URI renders in the UI's <img> with no server to host the file; a file://
        # URL would point at the worker's disk, which a browser neither can nor may read.
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        create_image_artifact(
            key="train-gpt2-loss",
            image_url=f"data:image/png;base64,{encoded}",
            description=f"Loss curve; also at {png}",
        )


@flow(name="train-gpt2")
def train_gpt2_flow(
    tokens_version: str = "latest",
    # TrainSettings' fields, with its defaults (tests/test_launch.py checks they match).
    model: str = "124M",
    vocab_size: int | None = None,
    block_size: int | None = None,
    dropout: float = 0.0,
    batch_size: int = 16,
    grad_accum: int = 1,
    max_steps: int = 600_000,
    decay_steps: int | None = None,
    lr: float = 6e-4,
    min_lr: float = 6e-5,
    warmup_steps: int = 100,
    weight_decay: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.95,
    grad_clip: float = 1.0,
    eval_interval: int = 250,
    eval_steps: int = 20,
    checkpoint_interval: int = 1000,
    keep_checkpoints: int = 3,
    compile: bool = False,
    dtype: str | None = None,
    seed: int = 1337,
    init_from: str | None = None,
    # The launch.
    nodes: int = 1,
    gpus_per_node: int = 1,
    rdzv_endpoint: str | None = None,
    extra_args: list[str] | None = None,
    allow_cpu: bool = False,
    evaluate_deployment: str | None = "evaluate-zero-shot/default",
    store_url: str | None = None,
    runs_dir: str | None = None,
) -> VersionRef:
    """Train GPT-2 on a tokens version with torchrun (`gpus_per_node=0`: one CPU process)
    in `<runs_dir>/<model>-<model version>` (runs_dir: the parameter, else `$WEBTEXT_RUNS`,
    else ./runs) and publish it as a `model` version. The settings are `training.train`'s
    flags (`python -m training.train --help`); `extra_args`: more flags, passed last.
    `init_from`: a model version to fine-tune (its weights, with a fresh optimizer) on
    tokens encoded with its vocabulary; the new version names it as a parent.
    A model larger than `tiny` on CPU (gpus_per_node=0, or no CUDA device on the worker)
    is refused at once unless `allow_cpu`."""
    settings = TrainSettings.from_mapping(locals())  # the parameters named as its fields
    logger = get_run_logger()
    store = open_store(store_url)
    tokens = store.resolve("tokens", tokens_version)
    progress = TrainingProgress(f"training {model} on {tokens}", max_steps, logger.info)

    result = train_model(
        store,
        tokens,
        settings,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        rdzv_endpoint=rdzv_endpoint,
        extra_args=extra_args or (),
        runs_dir=runs_dir,
        allow_cpu=allow_cpu,
        on_line=logger.info,
        on_metrics=progress.on_metrics,
    )
    if result.reused:
        progress.finish(f"{result.ref} was trained on {tokens} already")
    else:
        progress.finish(f"trained {result.ref}: {progress.line}")
    publish_version(store, result.ref, result.stats["counts"], result.reused, "Trained model")
    if result.reused:
        logger.info("%s already trained on %s: nothing to do", result.ref, tokens)
        return result.ref
    publish_training(store, result.ref, run_dir(runs_dir, model, result.ref), tokens)
    if evaluate_deployment:
        try:
            evaluation = run_deployment(
                evaluate_deployment,
                parameters={"checkpoint": result.ref.version, "store_url": store.root_url},
                timeout=0,  # start it and return: evaluation is its own run
            )
            logger.info("started evaluation %s (%s)", evaluation.name, evaluate_deployment)
        except ObjectNotFound:
            logger.info("evaluation skipped: no deployment %r", evaluate_deployment)
    return result.ref
