"""Training throughput and MFU of one device on random tokens (no data needed).

    python benchmarks/train.py                # the device's config: gpu on CUDA, cpu otherwise
    python benchmarks/train.py --gpu-config --compile   # the GPU figures of docs/architecture.md
    python benchmarks/train.py --quick        # seconds, on either (CI)

Times the same `train_step` that `training.train` runs, skipping the first --warmup steps
(compilation, allocator and autotuning), and prints one JSON line last; each step's time goes
to stderr as it happens. Two configs, picked by the device (the JSON's "config" says which,
and why): "gpu", GPT-2 124M, batch 16 x 1024 tokens, bf16, 30 steps; "cpu", the `tiny`
model, batch 16 x 64, fp32, 20 steps (124M x 16 x 1024 takes minutes a step there).
`--gpu-config` picks the GPU one on any device; options given explicitly win over either.
`--quick`: `tiny`, batch 2 x 32, 3 steps, the same code path (CI runs it so that the script
cannot rot; its figures are not measurements). There is no baseline: MFU compares with the
device's peak, where known (CUDA GPUs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the repository's packages, installed or not

from benchmarks._common import parse  # noqa: E402
from training.model import CONFIGS, FLOPS_FORMULA, GPT  # noqa: E402
from training.train import peak_flops, train_step  # noqa: E402

CONFIGS_BY_NAME = {
    "gpu": dict(model="124M", batch_size=16, block_size=1024, steps=30, warmup=5, dtype="bf16"),
    "cpu": dict(model="tiny", batch_size=16, block_size=64, steps=20, warmup=3, dtype="fp32"),
}
QUICK = dict(model="tiny", batch_size=2, block_size=32, steps=3, warmup=1)  # dtype: the device's


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--gpu-config",
        action="store_true",
        help="the GPU config (124M, 16 x 1024, bf16, 30 steps) on any device [CUDA: yes]",
    )
    p.add_argument("--model", choices=sorted(CONFIGS), help="[124M on CUDA, tiny on CPU]")
    p.add_argument("--batch-size", type=int, help="[16]")
    p.add_argument("--block-size", type=int, help="[1024 on CUDA, 64 on CPU]")
    p.add_argument("--steps", type=int, help="[30 on CUDA, 20 on CPU]")
    p.add_argument("--warmup", type=int, help="untimed first steps [5 on CUDA, 3 on CPU]")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--dtype", choices=["bf16", "fp32"], help="[bf16 on CUDA, fp32 on CPU]")
    p.add_argument(
        "--vocab-size",
        type=int,
        help="default: the model's 50,257; 50,304 (a multiple of 64) suits the GPU's tiles",
    )
    p.add_argument("--quick", action="store_true", help="tiny model and input, seconds (CI)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def pick(args: argparse.Namespace) -> str:  # the device's config, or --gpu-config's
        return "gpu" if args.gpu_config or device.type == "cuda" else "cpu"

    args = parse(p, argv, quick=QUICK, configs=CONFIGS_BY_NAME, pick=pick)  # explicit ones win
    config_name = args.config
    why = {
        "gpu": "--gpu-config" if args.gpu_config else "a CUDA device",
        "cpu": "no CUDA device; --gpu-config for GPT-2 124M x 16 x 1024",
    }[config_name]
    if args.steps <= args.warmup:
        p.error("--steps must exceed --warmup")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    config = replace(CONFIGS[args.model], block_size=args.block_size)
    if args.vocab_size:
        config = replace(config, vocab_size=args.vocab_size)
    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = model.configure_optimizer(0.1, 6e-4, (0.9, 0.95), device.type)
    compiled = torch.compile(model) if args.compile else model
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()
    )
    shape = (args.batch_size, args.block_size)
    print(
        f"{device.type}, {config_name} config ({why}): {args.model} "
        f"({model.num_params():,} parameters), batch "
        f"{args.batch_size} x {args.block_size}, {args.dtype}, {args.steps} steps "
        f"({args.warmup} untimed)",
        file=sys.stderr,
        flush=True,
    )

    started = time.perf_counter()
    for step in range(args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x = torch.randint(0, config.vocab_size, shape, device=device)
        y = torch.randint(0, config.vocab_size, shape, device=device)
        loss, _ = train_step(compiled, optimizer, [(x, y)], 6e-4, 1.0, autocast)
        if step < args.warmup or step == args.steps - 1 or (step - args.warmup) % 10 == 0:
            value = loss.item()  # waits for the device: not every step, not to slow a GPU
            since = time.perf_counter() - (t0 if step >= args.warmup else started)
            kind = "timed" if step >= args.warmup else "warm-up"
            print(
                f"step {step + 1}/{args.steps} ({kind}): loss {value:.3f}, "
                f"{since:.1f} s since the {kind} steps began",
                file=sys.stderr,
                flush=True,
            )
    loss.item()  # wait for the device
    elapsed = time.perf_counter() - t0
    tokens_per_s = (args.steps - args.warmup) * args.batch_size * args.block_size / elapsed
    peak = peak_flops(device) if args.dtype == "bf16" else None
    flops = model.flops_per_token(args.block_size)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "config": config_name,
        "config_reason": why,
        "model": args.model,
        "vocab_size": config.vocab_size,
        "params": model.num_params(),
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "dtype": args.dtype,
        "compile": args.compile,
        "tokens_per_s": round(tokens_per_s, 1),
        "flops_per_token": flops,
        "mfu": None if peak is None else round(flops * tokens_per_s / peak, 4),
        "formula": FLOPS_FORMULA,
        "peak_flops": peak,
        "steps_timed": args.steps - args.warmup,
        "quick": args.quick,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
