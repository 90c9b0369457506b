"""Train GPT-2 on token shards, nanoGPT-style: one process, or DDP under torchrun.

    python -m training.train --tokens DIR --model 124M --out runs/124M
    torchrun --nproc_per_node 8 -m training.train --tokens DIR --model 124M --out runs/124M

Batches are a pure function of (seed, step, row): global row g of a step is drawn by its
own generator seeded with (seed, split, step, g), and rank r takes rows
[r * micro, (r + 1) * micro) of each micro-step. So any world size with the same global
batch draws the same samples, and a resumed run draws what an unbroken one would have.
Checkpoints (`ckpt-NNNNNNNN.pt` in --out) hold model, optimizer, step, config, arguments
and every rank's RNG states; they are written to a temporary file and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from training.model import CONFIGS, GPT, GPTConfig
from training.settings import add_arguments
from training.token_shards import ShardError, TokenDataset

# Dense bf16 peak FLOP/s per device, by a substring of torch.cuda.get_device_name().
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
TRAIN, VAL = 0, 1  # split ids in the batch seeds


@dataclass(frozen=True)
class Dist:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The run's paths and device, and a flag per TrainSettings field (`--max-steps` ...)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", required=True, help="folder with tokens/{train,val}/*.bin")
    p.add_argument("--out", required=True, help="checkpoints and metrics.jsonl")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="continue from the latest checkpoint in --out (default: if there is one)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    p.add_argument(
        "--init-checkpoint",
        help="checkpoint file whose weights and config a new run starts from (fine-tuning); "
        "training.launch resolves --init-from to it",
    )
    add_arguments(p)
    args = p.parse_args(argv)
    if args.init_from and not args.init_checkpoint:
        p.error(
            f"--init-from {args.init_from} names a model version; pass its checkpoint file "
            "as --init-checkpoint (training.launch.train_model does)"
        )
    return args


def setup_distributed(device_type: str) -> Dist:
    """Join the torchrun group when WORLD_SIZE > 1: NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device_type == "cuda" else None)
    return Dist(rank, local_rank, world_size, device)


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of one device, or None where unknown (CPUs: MFU is not reported)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS.items() if key in name), None)


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warmup to --lr, then cosine decay to --min-lr at --decay-steps."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    decay_steps = args.decay_steps or args.max_steps
    if step >= decay_steps:
        return args.min_lr
    progress = (step - args.warmup_steps) / max(1, decay_steps - args.warmup_steps)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (args.lr - args.min_lr)


def draw_rows(
    data: TokenDataset, seed: int, split: int, step: int, rows: range, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global rows `rows` of one step's batch, each from a generator of its own."""
    pairs = [
        data.batch(1, block_size, np.random.default_rng([seed, split, step, row])) for row in rows
    ]
    x = np.concatenate([pair[0] for pair in pairs])
    y = np.concatenate([pair[1] for pair in pairs])
    return torch.from_numpy(x), torch.from_numpy(y)


def rank_rows(d: Dist, micro_batch: int, micro_step: int) -> range:
    """This rank's rows of a micro-step, in the step's global row order."""
    start = (micro_step * d.world_size + d.rank) * micro_batch
    return range(start, start + micro_batch)


def step_batches(
    data: TokenDataset, args: argparse.Namespace, d: Dist, step: int, block_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's --grad-accum micro-batches of training step `step`, on its device."""
    batches = []
    for m in range(args.grad_accum):
        rows = rank_rows(d, args.batch_size, m)
        x, y = draw_rows(data, args.seed, TRAIN, step, rows, block_size)
        batches.append((to_device(x, d.device), to_device(y, d.device)))
    return batches


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def mean_over_ranks(value: torch.Tensor, d: Dist) -> float:
    if d.world_size > 1:
        value = value.clone()
        dist.all_reduce(value)  # SUM: gloo has no AVG
        value /= d.world_size
    return value.item()


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    grad_clip: float,
    autocast: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer update over the micro-batches: (mean loss, grad norm before clipping)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = torch.zeros((), device=micro_batches[0][0].device)
    for i, (x, y) in enumerate(micro_batches):
        if isinstance(model, DDP):
            # All-reduce gradients once, after the last micro-step, not after each.
            model.require_backward_grad_sync = i == len(micro_batches) - 1
        with autocast:
            _, loss = model(x, y)
        loss = loss / len(micro_batches)
        loss.backward()
        total += loss.detach()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: TokenDataset,
    args: argparse.Namespace,
    block_size: int,
    d: Dist,
    autocast: Any,
) -> float:
    """Mean loss over the same --eval-steps val batches every time, across all ranks."""
    model.eval()
    total = torch.zeros((), device=d.device)
    for i in range(args.eval_steps):
        x, y = draw_rows(data, args.seed, VAL, i, rank_rows(d, args.batch_size, 0), block_size)
        with autocast:
            _, loss = model(to_device(x, d.device), to_device(y, d.device))
        total += loss.float()
    model.train()
    return mean_over_ranks(total / args.eval_steps, d)


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files of a killed write are ignored)."""
    return sorted(out.glob("ckpt-*.pt"))


def save_checkpoint(out: Path, state: dict[str, Any], keep: int) -> Path:
    """Write atomically (temporary file, fsync, rename), then drop all but the last `keep`."""
    path = out / f"ckpt-{state['step']:08d}.pt"
    partial = out / f".{path.name}.tmp"
    with partial.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    for old in checkpoints(out)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    # Our own files, and numpy/python RNG states are not plain tensors.
    return torch.load(path, map_location="cpu", weights_only=False)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after `step` by a run that died before its next checkpoint, and a
    last line the kill cut short."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            logged = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            continue
        if logged <= step:
            kept.append(line)
    partial = path.with_suffix(".tmp")
    partial.write_text("".join(f"{line}\n" for line in kept))
    os.replace(partial, path)


def model_config(
    args: argparse.Namespace, data: TokenDataset, init: dict[str, Any] | None = None
) -> GPTConfig:
    """The model's shape: from --model and the shards, or, fine-tuning, the `init`
    checkpoint's (only dropout may change), refusing flags and shards that contradict it."""
    vocab_sizes = {shard.vocab_size for shard in data.shards}
    if init is not None:
        config = GPTConfig(**{**init["config"], "dropout": args.dropout})
        if args.vocab_size not in (None, config.vocab_size):
            raise ValueError(
                f"--vocab-size {args.vocab_size}: the checkpoint has {config.vocab_size} rows"
            )
        if args.block_size not in (None, config.block_size):
            raise ValueError(
                f"--block-size {args.block_size}: the checkpoint's is {config.block_size}"
            )
        if max(vocab_sizes) > config.vocab_size:
            raise ValueError(
                f"the shards' vocabulary ({max(vocab_sizes)} ids) is larger than the "
                f"checkpoint's embedding ({config.vocab_size} rows): another tokenizer"
            )
        return config
    if args.vocab_size is None and len(vocab_sizes) != 1:
        raise ValueError(f"shards disagree on the vocabulary size: {sorted(vocab_sizes)}")
    config = CONFIGS[args.model]
    return replace(
        config,
        vocab_size=args.vocab_size or -(-vocab_sizes.pop() // 64) * 64,
        block_size=args.block_size or config.block_size,
        dropout=args.dropout,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device_type = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    d = setup_distributed(device_type)
    dtype = args.dtype or ("bf16" if device_type == "cuda" else "fp32")
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = (
        torch.autocast(device_type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    )

    train_data = TokenDataset(args.tokens, "train")
    try:
        val_data: TokenDataset | None = TokenDataset(args.tokens, "val")
    except ShardError as exc:  # a small dataset may hold out no document at all
        val_data = None
        if d.master:
            print(f"no validation: {exc}", flush=True)
    init = load_checkpoint(Path(args.init_checkpoint)) if args.init_checkpoint else None
    config = model_config(args, train_data, init)
    T = config.block_size
    out = Path(args.out)
    if d.master:
        out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)  # the same initial weights on every rank
    raw_model = GPT(config)
    if init is not None:  # fine-tuning: its weights; optimizer and schedule start afresh
        raw_model.load_state_dict(init["model"])
        del init
    raw_model.to(d.device)
    optimizer = raw_model.configure_optimizer(
        args.weight_decay, args.lr, (args.beta1, args.beta2), device_type
    )
    torch.manual_seed(args.seed + d.rank)  # distinct dropout masks per rank
    start = 0
    found = checkpoints(out) if out.exists() else []
    if found and args.resume is not False:
        state = load_checkpoint(found[-1])
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        if len(state["rng"]) == d.world_size:
            set_rng_state(state["rng"][d.rank])
        elif d.master:  # batches still match; only dropout masks differ from an unbroken run
            print(f"world size changed from {len(state['rng'])}: RNG states not restored")
        if d.master:
            truncate_metrics(out / "metrics.jsonl", start)
            print(f"resumed from {found[-1]} at step {start}", flush=True)
    model: torch.nn.Module = torch.compile(raw_model) if args.compile else raw_model
    if d.world_size > 1:
        model = DDP(model, device_ids=[d.local_rank] if device_type == "cuda" else None)

    tokens_per_step = args.batch_size * args.grad_accum * d.world_size * T
    flops_per_token = raw_model.flops_per_token(T)
    peak = peak_flops(d.device)
    metrics = (out / "metrics.jsonl").open("a") if d.master else None
    for step in range(start, args.max_steps):
        t0 = time.perf_counter()
        micro_batches = step_batches(train_data, args, d, step, T)
        lr = lr_at(step, args)
        loss, norm = train_step(model, optimizer, micro_batches, lr, args.grad_clip, autocast)
        loss_value = mean_over_ranks(loss, d)  # also waits for the device: honest timing
        tokens_per_s = tokens_per_step / (time.perf_counter() - t0)
        done = step + 1
        record: dict[str, Any] = {
            "step": done,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": None if norm is None else norm.item(),
            "tokens_per_s": tokens_per_s,
            "mfu": None if peak is None else flops_per_token * tokens_per_s / (peak * d.world_size),
            "mfu_formula": "6*N + 12*L*H*Q*T",
        }
        evaluating = done % args.eval_interval == 0 or done == args.max_steps
        if val_data is not None and evaluating:
            record["val_loss"] = evaluate(model, val_data, args, T, d, autocast)
        if metrics is not None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            print(json.dumps(record), flush=True)
        if done % args.checkpoint_interval == 0 or done == args.max_steps:
            rngs = [None] * d.world_size
            if d.world_size > 1:
                dist.all_gather_object(rngs, rng_state())
            else:
                rngs[0] = rng_state()
            if d.master:
                state = {
                    "model": raw_model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": done,
                    "config": asdict(config),
                    "args": vars(args),
                    "rng": rngs,
                }
                save_checkpoint(out, state, args.keep_checkpoints)
    if metrics is not None:
        metrics.close()
    if d.world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
