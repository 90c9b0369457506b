"""`train-gpt2`: a `tokens` version to a `model` version (weights, metrics, loss curve, a
Hugging Face export), then the `evaluate-zero-shot` deployment on it.

`training.launch.train_model` does the work (run folder, torchrun, streaming, publishing);
this flow streams its output into the run's log and shows the run as artifacts. Its
parameters are `TrainSettings`' fields with their defaults, and the launch's.
"""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows.artifacts import ProgressReporter, publish_version
from training.launch import (
    LOSS_PNG,
    METRICS,
    describe_step,
    final_metrics,
    read_metrics,
    run_dir,
    train_model,
)
from training.settings import TrainSettings
from webtext.config import open_store
from webtext.store import VersionRef


def publish_training(out_dir: Path, tokens: VersionRef) -> None:
    metrics = read_metrics(out_dir / METRICS)
    final = final_metrics(metrics)
    create_table_artifact(
        key="train-gpt2-metrics",
        table=[{"metric": name, "value": value} for name, value in final.items()],
        description=f"Last value of every metric ({len(metrics)} records), trained on {tokens}",
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
    # The launch.
    nodes: int = 1,
    gpus_per_node: int = 1,
    rdzv_endpoint: str | None = None,
    extra_args: list[str] | None = None,
    evaluate_deployment: str | None = "evaluate-zero-shot/default",
    store_url: str | None = None,
    runs_dir: str | None = None,
) -> VersionRef:
    """Train GPT-2 on a tokens version with torchrun (`gpus_per_node=0`: one CPU process)
    in `<runs_dir>/<model>-<model version>` (runs_dir: the parameter, else `$WEBTEXT_RUNS`,
    else ./runs) and publish it as a `model` version. The settings are `training.train`'s
    flags (`python -m training.train --help`); `extra_args`: more flags, passed last."""
    settings = TrainSettings.from_mapping(locals())  # the parameters named as its fields
    logger = get_run_logger()
    store = open_store(store_url)
    tokens = store.resolve("tokens", tokens_version)
    progress = ProgressReporter(f"Training steps of {model} on {tokens}")
    progress.start(max_steps)

    def on_metrics(record: dict) -> None:
        logger.info(describe_step(record, max_steps))
        progress.advance(record["step"] - progress.done)

    result = train_model(
        store,
        tokens,
        settings,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        rdzv_endpoint=rdzv_endpoint,
        extra_args=extra_args or (),
        runs_dir=runs_dir,
        on_line=logger.info,
        on_metrics=on_metrics,
    )
    progress.finish()
    publish_version(store, result.ref, result.stats["counts"], result.reused, "Trained model")
    if result.reused:
        logger.info("%s already trained on %s: nothing to do", result.ref, tokens)
        return result.ref
    publish_training(run_dir(runs_dir, model, result.ref), tokens)
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
