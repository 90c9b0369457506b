"""`train-gpt2`: a `tokens` version to a `model` version (weights, metrics, loss curve, a
Hugging Face export), then the `evaluate-zero-shot` deployment on it.

The run folder is named by the model version it will publish, so a rerun of a killed run
resumes from its last checkpoint, and a rerun of a finished one is a cache hit. The flow
runs torchrun for its own node. With `nodes` > 1 the other nodes run the same command (the
Indexed Job of docker/k8s/multinode-job.yaml) and `runs_dir` must be a filesystem every
node shares, so the flow sees what rank 0 writes.
"""

from __future__ import annotations

import base64
import json
import os
from collections import deque
from contextlib import suppress
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
    RUNS_ENV,
    final_metrics,
    local_version,
    model_ref,
    plot_loss,
    publish_model,
    read_metrics,
    stream,
    torchrun_command,
    training_parameters,
)
from webtext.config import open_store
from webtext.store import VersionRef

TAIL_LINES = 20


def publish_training(out_dir: Path, metrics: list[dict], tokens: VersionRef) -> None:
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
    if any("loss" in record for record in metrics):
        png = plot_loss(metrics, out_dir / LOSS_PNG)
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
    model: str = "124M",
    nodes: int = 1,
    gpus_per_node: int = 1,
    rdzv_endpoint: str | None = None,
    # nanoGPT's GPT-2 (124M) schedule: 600k steps of ~0.5M tokens
    max_steps: int = 600_000,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    block_size: int | None = None,
    extra_args: list[str] | None = None,
    evaluate_deployment: str | None = "evaluate-zero-shot/default",
    store_url: str | None = None,
    runs_dir: str | None = None,
) -> VersionRef:
    """Train `model` on a tokens version with torchrun (`gpus_per_node=0`: one CPU process)
    in `<runs_dir>/<model>-<model version>` (runs_dir: the parameter, else `$WEBTEXT_RUNS`,
    else ./runs) and publish it as a `model` version."""
    logger = get_run_logger()
    store = open_store(store_url)
    tokens = store.resolve("tokens", tokens_version)
    parameters = training_parameters(
        model, max_steps, batch_size, grad_accum, block_size, extra_args or (), nodes, gpus_per_node
    )
    ref = model_ref(store, tokens, parameters)
    if store.exists(ref):
        logger.info("%s already trained on %s: nothing to do", ref, tokens)
        publish_version(store, ref, store.manifest(ref).stats["counts"], True, "Trained model")
        return ref
    root = Path(runs_dir or os.environ.get(RUNS_ENV, "runs"))
    tokens_dir = local_version(store, tokens, root / "tokens-cache")
    out_dir = root / f"{model}-{ref.version}"
    out_dir.mkdir(parents=True, exist_ok=True)

    command = torchrun_command(
        tokens_dir=tokens_dir,
        out_dir=str(out_dir),
        model=model,
        max_steps=max_steps,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_id=f"train-{ref.version}",
        batch_size=batch_size,
        grad_accum=grad_accum,
        block_size=block_size,
        extra_args=extra_args or (),
    )
    logger.info("training %s on %s: %s", model, tokens, " ".join(command))
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    progress = ProgressReporter(f"Training steps of {model} on {tokens}")
    progress.start(max_steps)

    def on_line(line: str) -> None:
        tail.append(line)
        logger.info(line)
        if line.startswith('{"step": '):  # the trainer's metrics record, one per step
            # A line cut short is skipped: the next step's line counts.
            with suppress(ValueError, KeyError, TypeError):
                progress.advance(int(json.loads(line)["step"]) - progress.done)

    # Unbuffered, so each line reaches the log when printed, not when a buffer fills.
    returncode = stream(command, {**os.environ, "PYTHONUNBUFFERED": "1"}, on_line)

    malformed: list[int] = []
    metrics = read_metrics(out_dir / METRICS, malformed)
    if malformed:
        logger.warning("%d malformed metrics lines skipped (lines %s)", len(malformed), malformed)
    if returncode != 0:
        last_step = final_metrics(metrics).get("step", "none")
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        raise RuntimeError(
            f"training {model} failed with {how} after step {last_step} (last logged step); "
            f"output in {out_dir}; last lines:\n" + "\n".join(tail)
        )

    progress.finish()
    publish_training(out_dir, metrics, tokens)
    result = publish_model(store, tokens, parameters, out_dir)
    publish_version(store, result.ref, result.stats["counts"], result.reused, "Trained model")
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
