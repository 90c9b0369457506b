"""Launching `training.train`: the torchrun command, its output, its metrics and loss plot.

Plain functions, no Prefect: the `train-gpt2` flow and a notebook call the same code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from webtext.config import code_version
from webtext.store import StageResult, Store, VersionRef

TRAINER_MODULE = "training.train"
STAGE = "model"
RUNS_ENV = "WEBTEXT_RUNS"  # where training runs' folders go (default ./runs)
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
LOSS_PNG = "loss.png"


def torchrun_command(
    *,
    tokens_dir: str,
    out_dir: str,
    model: str,
    max_steps: int,
    nodes: int = 1,
    gpus_per_node: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "webtext-train",
    batch_size: int | None = None,
    grad_accum: int | None = None,
    block_size: int | None = None,
    extra_args: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """The command that trains `model` on one node; with `nodes` > 1 every node runs it.

    `gpus_per_node=0` is one CPU process without torchrun. One node uses torchrun's
    `--standalone` rendezvous; several nodes meet at `rdzv_endpoint` (host:port of the
    c10d store, e.g. pod 0 of the Indexed Job) under `rdzv_id`.
    """
    if nodes < 1 or gpus_per_node < 0:
        raise ValueError(f"need nodes >= 1 and gpus_per_node >= 0, got {nodes}, {gpus_per_node}")
    if gpus_per_node == 0 and nodes > 1:
        raise ValueError("CPU training (gpus_per_node=0) runs on one node only")
    if nodes > 1 and not rdzv_endpoint:
        raise ValueError(f"nodes={nodes} needs rdzv_endpoint (host:port of the rendezvous)")

    if gpus_per_node == 0:
        launcher = [python, "-m", TRAINER_MODULE]
    elif nodes == 1:
        launcher = [python, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(gpus_per_node), "-m", TRAINER_MODULE]
    else:
        launcher = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus_per_node)]
        launcher += ["--nnodes", str(nodes), "--rdzv-backend", "c10d"]
        launcher += ["--rdzv-endpoint", str(rdzv_endpoint), "--rdzv-id", rdzv_id]
        launcher += ["-m", TRAINER_MODULE]

    args = ["--tokens", tokens_dir, "--model", model, "--out", out_dir]
    args += ["--max-steps", str(max_steps)]
    args += ["--device", "cuda" if gpus_per_node else "cpu"]
    # Unset sizes are left to the trainer's per-model defaults.
    for flag, value in (
        ("--batch-size", batch_size),
        ("--grad-accum", grad_accum),
        ("--block-size", block_size),
    ):
        if value is not None:
            args += [flag, str(value)]
    return [*launcher, *args, *extra_args]


def stream(
    command: Sequence[str], env: Mapping[str, str] | None, on_line: Callable[[str], None]
) -> int:
    """Run `command`, handing each line of its stdout and stderr (merged, in order) to
    `on_line` as it comes; returns the exit code. The process is stopped if we are."""
    process = subprocess.Popen(
        list(command),
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",  # a stray byte in a log line must not kill the run
        bufsize=1,
    )
    output = process.stdout
    assert output is not None  # stdout=PIPE
    try:
        for line in output:
            on_line(line.rstrip("\r\n"))
        return process.wait()
    except BaseException:
        # A cancelled flow or a failing callback: torchrun passes SIGTERM on to its workers.
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    finally:
        output.close()


def read_metrics(path: str | Path, malformed: list[int] | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl file, in order; an absent file is no metrics.

    Lines that are not JSON objects (a write cut short by a crash) are skipped, and their
    line numbers appended to `malformed` when it is given.
    """
    records: list[dict[str, Any]] = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return records
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif malformed is not None:
            malformed.append(number)
    return records


def final_metrics(metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last value of every field: val_loss is only in some records, so the latest
    validation loss survives the training records that follow it."""
    final: dict[str, Any] = {}
    for record in metrics:
        final.update(record)
    return final


def plot_loss(metrics: Sequence[Mapping[str, Any]], png_path: str | Path) -> Path:
    """Training loss (and validation loss where present) against step, as a PNG."""
    # The object API on an Agg canvas: no pyplot global state, safe off the main thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None and "step" in m]
        return [float(s) for s, _ in points], [float(v) for _, v in points]

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps, losses = series("loss")
    axes.plot(steps, losses, linewidth=1, label="train loss")
    val_steps, val_losses = series("val_loss")
    if val_steps:
        axes.plot(val_steps, val_losses, marker="o", markersize=3, label="val loss")
    axes.set_xlabel("step")
    axes.set_ylabel("cross-entropy (nats/token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(png_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def local_version(store: Store, ref: VersionRef, cache_dir: Path) -> str:
    """The version's folder on this machine: the store's own when it is local, else a
    verified copy in `cache_dir` (pulled once; a copy has its manifest only if complete)."""
    protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
    if "file" in protocols:
        return store.version_dir(ref)
    cache = Store(str(cache_dir))
    if not cache.exists(ref):
        store.pull(ref, str(cache_dir))
    return cache.version_dir(ref)


def training_parameters(
    model: str,
    max_steps: int,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    block_size: int | None = None,
    extra_args: Sequence[str] | None = (),
    nodes: int = 1,
    gpus_per_node: int = 1,
) -> dict[str, Any]:
    """What a `model` version's id covers: everything that changes the trained weights."""
    return {
        "model": model,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "block_size": block_size,
        "extra_args": list(extra_args or ()),
        # The global batch is per-rank batch x accumulation x ranks.
        "ranks": nodes * max(gpus_per_node, 1),
    }


def model_ref(store: Store, tokens: VersionRef, parameters: Mapping[str, Any]) -> VersionRef:
    """The `model` version training these parameters on `tokens` makes (or made)."""
    return store.ref_for(STAGE, parameters, code_version("training"), (tokens,))


def publish_model(
    store: Store, tokens: VersionRef, parameters: Mapping[str, Any], run_dir: Path
) -> StageResult:
    """A finished run's folder to a `model` version: the last checkpoint's weights (no
    optimizer state), its metrics and loss plot, and a Hugging Face export in `hf/`."""
    import tempfile

    import torch

    from training.model import GPT, GPTConfig, export_hf
    from training.train import checkpoints, load_checkpoint

    ref = model_ref(store, tokens, parameters)
    if store.exists(ref):
        return StageResult(ref, True, store.manifest(ref).stats)
    found = checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"training finished without a checkpoint in {run_dir}")
    state = load_checkpoint(found[-1])
    model = GPT(GPTConfig(**state["config"]))
    model.load_state_dict(state["model"])
    metrics = read_metrics(run_dir / METRICS)
    tokenizer_files, encoder = _tokenizer_of(store, tokens)
    with store.write(STAGE, parameters, code_version("training"), (tokens,)) as out:
        with out.open(CHECKPOINT) as handle:
            torch.save({key: state[key] for key in ("model", "config", "step", "args")}, handle)
        out.put(METRICS, (run_dir / METRICS).read_bytes(), rows=len(metrics))
        if (run_dir / LOSS_PNG).is_file():
            out.put(LOSS_PNG, (run_dir / LOSS_PNG).read_bytes())
        with tempfile.TemporaryDirectory() as hf_dir:
            export_hf(
                model,
                model.config,
                hf_dir,
                tokenizer_files,
                encoder.eot_id if encoder else None,
                encoder.vocab_size if encoder else None,
            )
            for path in sorted(Path(hf_dir).iterdir()):
                out.put(f"hf/{path.name}", path.read_bytes())
        out.stats["counts"] = {
            key: value
            for key, value in final_metrics(metrics).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        ref = out.ref
    return StageResult(ref, False, store.manifest(ref).stats)


# Our tokenizer versions' files under the names Hugging Face's GPT-2 tokenizers load.
HF_TOKENIZER_NAMES = {
    "tokenizer.json": "tokenizer.json",
    "encoder.json": "vocab.json",
    "vocab.bpe": "merges.txt",
}


def _tokenizer_of(store: Store, tokens: VersionRef):
    """The tokenizer version a tokens version was encoded with: its files for a Hugging Face
    export, and its encoder; nothing when the tokens name none."""
    from training.tokenizer_stage import load_encoder

    tokenizers = [p for p in store.manifest(tokens).parents if p.stage == "tokenizer"]
    if not tokenizers:
        return {}, None
    folder = store.version_dir(tokenizers[0])
    files = {
        HF_TOKENIZER_NAMES[entry.path]: store.fs.cat_file(f"{folder}/{entry.path}")
        for entry in store.manifest(tokenizers[0]).files
        if entry.path in HF_TOKENIZER_NAMES
    }
    return files, load_encoder(store, tokenizers[0])
