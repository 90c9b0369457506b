"""Launching `training.train`: the torchrun command, its output, its metrics and loss plot,
and the `model` version a finished run becomes.

Plain functions, no Prefect: `train_model` is what the `train-gpt2` flow, `webtext train`
and a notebook call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from training.model import CHECKPOINT
from training.settings import TrainSettings, trainer_args
from webtext.stage import Stage, StageWrite, find_version, run_stage
from webtext.store import StageResult, Store, VersionRef

TRAINER_MODULE = "training.train"
STAGE = Stage("model", __name__)
RUNS_ENV = "WEBTEXT_RUNS"  # where training runs' folders go (default ./runs)
METRICS = "metrics.jsonl"
LOSS_PNG = "loss.png"
CARD = "README.md"  # the model card, Hugging Face's name for it
TAIL_LINES = 20  # of the trainer's output, in the error of a failed run


def torchrun_command(
    settings: TrainSettings,
    *,
    tokens_dir: str,
    out_dir: str,
    nodes: int = 1,
    gpus_per_node: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "webtext-train",
    extra_args: Sequence[str] = (),
    init_checkpoint: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command that trains with `settings` on one node; with `nodes` > 1 every node runs it.

    `gpus_per_node=0` is one CPU process without torchrun. One node uses torchrun's
    `--standalone` rendezvous; several nodes meet at `rdzv_endpoint` (host:port of the
    c10d store, e.g. pod 0 of the Indexed Job) under `rdzv_id`. `extra_args` go last.
    `init_checkpoint`: the file `settings.init_from` names on this machine (fine-tuning).
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

    args = ["--tokens", tokens_dir, "--out", out_dir]
    args += ["--device", "cuda" if gpus_per_node else "cpu"]
    if init_checkpoint:
        args += ["--init-checkpoint", init_checkpoint]
    # Settings left at their defaults are the trainer's defaults: the same dataclass.
    return [*launcher, *args, *trainer_args(settings), *extra_args]


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


def metrics_record(line: str) -> dict[str, Any] | None:
    """The trainer's metrics record of a step, when `line` is one (a line cut short is not)."""
    if not line.startswith('{"step": '):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


class DeviceRefused(ValueError):
    """A run that would not fit where it runs (`check_device`), refused before it starts."""


def check_device(
    model: str, gpus_per_node: int, *, allow_cpu: bool = False, cuda: bool | None = None
) -> None:
    """Refuse, in one line, a run that would train a model larger than `tiny` on CPU unless
    `allow_cpu`: 124M takes over a minute a step there, 600,000 steps take years.

    The run is on CPU when `gpus_per_node` is 0, or when this worker has no CUDA device
    (`cuda`: whether it has one; None asks torch, only when it matters). GPUs asked for on a
    worker without any is an error for every model: the trainer would fail on `--device cuda`.
    """
    if gpus_per_node == 0:
        if model == "tiny" or allow_cpu:
            return
        raise DeviceRefused(
            f"refusing to train GPT-2 {model} on CPU (gpus_per_node=0): pass allow_cpu=true "
            "(--allow-cpu) to train it there anyway, or model=tiny"
        )
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        return
    where = f"on CPU (gpus_per_node={gpus_per_node} but no CUDA device on this worker)"
    if model == "tiny":
        raise DeviceRefused(f"cannot train GPT-2 tiny {where}: pass gpus_per_node=0 to use the CPU")
    raise DeviceRefused(
        f"refusing to train GPT-2 {model} {where}: run it on a GPU worker, or pass "
        "gpus_per_node=0 with allow_cpu=true (--allow-cpu), or model=tiny"
    )


def local_version(store: Store, ref: VersionRef, cache_dir: Path) -> str:
    """The version's folder on this machine: the store's own when it is local, else a
    verified copy in `cache_dir` (pulled once; a copy has its manifest only if complete).

    Training memory-maps the files and reads windows at random, so the local folder's
    sha256s are checked here, whole, before use (a pull checks them while copying)."""
    protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
    if "file" in protocols:
        store.verify(ref)
        return store.version_dir(ref)
    cache = Store(str(cache_dir))
    if cache.exists(ref):
        cache.verify(ref)  # pulled by an earlier run: unchanged since?
    else:
        store.pull(ref, str(cache_dir))
    return cache.version_dir(ref)


def training_parameters(
    settings: TrainSettings,
    extra_args: Sequence[str] | None = (),
    nodes: int = 1,
    gpus_per_node: int = 1,
) -> dict[str, Any]:
    """What a `model` version's id covers: everything that changes the trained weights."""
    return {
        **asdict(settings),
        "extra_args": list(extra_args or ()),
        # The global batch is per-rank batch x accumulation x ranks.
        "ranks": nodes * max(gpus_per_node, 1),
    }


def model_ref(
    store: Store, inputs: tuple[VersionRef, ...], parameters: Mapping[str, Any]
) -> VersionRef:
    """The `model` version training these parameters on `inputs` (`model_inputs`) makes."""
    return store.ref_for(STAGE.name, parameters, STAGE.code_version, inputs)


def model_inputs(
    store: Store, tokens: VersionRef, settings: TrainSettings
) -> tuple[VersionRef, ...]:
    """A model version's parents: its tokens, then the model it was fine-tuned from."""
    if settings.init_from is None:
        return (tokens,)
    return (tokens, store.resolve(STAGE.name, settings.init_from))


def fine_tuning(store: Store, tokens: VersionRef, settings: TrainSettings) -> TrainSettings:
    """`settings` with `init_from` resolved to a version id ("latest" would change meaning),
    checked to be a model of the same size trained with the vocabulary `tokens` use."""
    if settings.init_from is None:
        return settings
    from training.tokenizer_stage import tokenizer_version

    init = store.resolve(STAGE.name, settings.init_from)
    size = store.manifest(init).parameters.get("model")
    if size != settings.model:
        raise ValueError(
            f"init_from {init} is GPT-2 {size}; the settings say {settings.model}: pass "
            f"model={size} (--model {size})"
        )
    theirs, ours = tokenizer_version(store, init), tokenizer_version(store, tokens)
    if _vocabulary(store, theirs) != _vocabulary(store, ours):
        hint = f"; encode the data with it (--tokenizer {theirs.version})" if theirs else ""
        raise ValueError(
            f"{tokens} was encoded with {ours}, but {init} was trained with {theirs}: "
            f"another vocabulary{hint}"
        )
    return replace(settings, init_from=init.version)


def _vocabulary(store: Store, tokenizer: VersionRef | None) -> dict[str, str] | None:
    """A tokenizer version's files by sha256: equal for the same vocabulary, whatever made it."""
    if tokenizer is None:
        return None
    return {entry.path: entry.sha256 for entry in store.manifest(tokenizer).files}


def run_dir(runs_dir: str | Path | None, model: str, ref: VersionRef) -> Path:
    """A training run's folder, `<runs_dir>/<model>-<model version>`; runs_dir defaults to
    $WEBTEXT_RUNS, else ./runs. Named by the version it will publish, so a rerun of a killed
    run resumes from its last checkpoint."""
    return Path(runs_dir or os.environ.get(RUNS_ENV, "runs")) / f"{model}-{ref.version}"


def train_model(
    store: Store,
    tokens: VersionRef,
    settings: TrainSettings,
    *,
    nodes: int = 1,
    gpus_per_node: int = 1,
    rdzv_endpoint: str | None = None,
    extra_args: Sequence[str] = (),
    runs_dir: str | Path | None = None,
    allow_cpu: bool = False,
    on_line: Callable[[str], None] = lambda line: None,
    on_metrics: Callable[[dict[str, Any]], None] = lambda record: None,
) -> StageResult:
    """Train on `tokens` with torchrun (`gpus_per_node=0`: one CPU process) in the run's
    folder (`run_dir`), and publish it as a `model` version; an existing one is returned.

    A model larger than `tiny` on CPU is refused before anything starts (`check_device`)
    unless `allow_cpu`, which is how the run is launched, not what it trains: it is not
    in the version's parameters.

    Each metrics record the trainer prints goes to `on_metrics`, every other line of its
    output (and what this function says) to `on_line`. With `nodes` > 1 the other nodes run
    the same command (the Indexed Job of docker/k8s/multinode-job.yaml) and `runs_dir` must
    be a filesystem every node shares, so this process sees what rank 0 writes.
    """
    settings = fine_tuning(store, tokens, settings)
    inputs = model_inputs(store, tokens, settings)
    parameters = training_parameters(settings, extra_args, nodes, gpus_per_node)
    done = find_version(store, STAGE, inputs, parameters)
    if done is not None:  # trained already: no run at all
        return StageResult(done.ref, True, done.stats)
    check_device(settings.model, gpus_per_node, allow_cpu=allow_cpu)
    ref = model_ref(store, inputs, parameters)
    out_dir = run_dir(runs_dir, settings.model, ref)
    cache = out_dir.parent / "versions-cache"
    tokens_dir = local_version(store, tokens, cache)
    init_checkpoint = (
        f"{local_version(store, inputs[1], cache)}/{CHECKPOINT}" if len(inputs) > 1 else None
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    command = torchrun_command(
        settings,
        tokens_dir=tokens_dir,
        out_dir=str(out_dir),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_id=f"train-{ref.version}",
        extra_args=extra_args,
        init_checkpoint=init_checkpoint,
    )
    on_line(f"training {settings.model} on {tokens} in {out_dir}: {' '.join(command)}")
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def route(line: str) -> None:
        tail.append(line)
        record = metrics_record(line)
        if record is None:
            on_line(line)
        else:
            on_metrics(record)

    # Unbuffered, so each line arrives when printed, not when a buffer fills.
    returncode = stream(command, {**os.environ, "PYTHONUNBUFFERED": "1"}, route)
    malformed: list[int] = []
    metrics = read_metrics(out_dir / METRICS, malformed)
    if malformed:
        on_line(f"{len(malformed)} malformed metrics lines skipped (lines {malformed})")
    if returncode != 0:
        last_step = final_metrics(metrics).get("step", "none")
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        raise RuntimeError(
            f"training {settings.model} failed with {how} after step {last_step} (last logged "
            f"step); output in {out_dir}; last lines:\n" + "\n".join(tail)
        )
    if any("loss" in record for record in metrics):
        plot_loss(metrics, out_dir / LOSS_PNG)
    return publish_model(store, inputs, parameters, out_dir, metrics)


def publish_model(
    store: Store,
    inputs: tuple[VersionRef, ...],
    parameters: Mapping[str, Any],
    out_dir: Path,
    metrics: Sequence[Mapping[str, Any]] | None = None,
) -> StageResult:
    """A finished run's folder to a `model` version: the last checkpoint's weights (no
    optimizer state), its metrics and loss plot, a Hugging Face export in `hf/`, and the
    model card (README.md, also in `hf/`). `inputs`: the tokens, then the model fine-tuned
    from (`model_inputs`). `metrics`: the run's metrics.jsonl as read (`read_metrics`),
    read here when not given."""
    import tempfile

    import torch

    from training.model import GPT, GPTConfig, export_hf
    from training.model_card import card_facts, model_card
    from training.train import checkpoints, load_checkpoint

    tokens = inputs[0]

    if metrics is None:
        metrics = read_metrics(out_dir / METRICS)

    def build(work: StageWrite) -> None:
        found = checkpoints(out_dir)
        if not found:
            raise FileNotFoundError(f"training finished without a checkpoint in {out_dir}")
        state = load_checkpoint(found[-1])
        model = GPT(GPTConfig(**state["config"]))
        model.load_state_dict(state["model"])
        tokenizer_files, encoder = _tokenizer_of(store, tokens)
        out = work.out
        with out.open(CHECKPOINT) as handle:
            torch.save({key: state[key] for key in ("model", "config", "step", "args")}, handle)
        out.put(METRICS, (out_dir / METRICS).read_bytes(), rows=len(metrics))
        if (out_dir / LOSS_PNG).is_file():
            out.put(LOSS_PNG, (out_dir / LOSS_PNG).read_bytes())
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
        for key, value in final_metrics(metrics).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                work.counts.add(key, value)
        work.counts.add("parameters", model.num_params())
        work.stats["config"] = state["config"]
        card = model_card(
            card_facts(store, work.ref, parameters, inputs, work.counts.as_dict(), state["config"])
        ).encode()
        out.put(CARD, card)
        out.put(f"hf/{CARD}", card)

    return run_stage(store, STAGE, inputs, parameters, build)


# Our tokenizer versions' files under the names Hugging Face's GPT-2 tokenizers load.
HF_TOKENIZER_NAMES = {
    "tokenizer.json": "tokenizer.json",
    "encoder.json": "vocab.json",
    "vocab.bpe": "merges.txt",
}


def _tokenizer_of(store: Store, tokens: VersionRef):
    """The tokenizer version a tokens version was encoded with: its files for a Hugging Face
    export, and its encoder; nothing when the tokens name none."""
    from training.tokenizer_stage import load_encoder, tokenizer_version

    tokenizer = tokenizer_version(store, tokens)
    if tokenizer is None:
        return {}, None
    files = {
        HF_TOKENIZER_NAMES[entry.path]: store.read_verified(tokenizer, entry)
        for entry in store.manifest(tokenizer).files
        if entry.path in HF_TOKENIZER_NAMES
    }
    return files, load_encoder(store, tokenizer)
