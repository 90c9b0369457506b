"""Training throughput and MFU of one device on random tokens (no data needed).

    python benchmarks/train.py --model 124M --batch-size 16 --block-size 1024 --steps 30 \
        --compile --dtype bf16

Times the same `train_step` that `training.train` runs, skipping the first --warmup steps
(compilation, allocator and autotuning), and prints one JSON line last.
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

from training.model import CONFIGS, FLOPS_FORMULA, GPT  # noqa: E402
from training.train import peak_flops, train_step  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="124M", choices=sorted(CONFIGS))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument(
        "--vocab-size",
        type=int,
        help="default: the model's 50,257; 50,304 (a multiple of 64) suits the GPU's tiles",
    )
    args = p.parse_args(argv)
    if args.steps <= args.warmup:
        p.error("--steps must exceed --warmup")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
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

    for step in range(args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x = torch.randint(0, config.vocab_size, shape, device=device)
        y = torch.randint(0, config.vocab_size, shape, device=device)
        loss, _ = train_step(compiled, optimizer, [(x, y)], 6e-4, 1.0, autocast)
    loss.item()  # wait for the device
    elapsed = time.perf_counter() - t0
    tokens_per_s = (args.steps - args.warmup) * args.batch_size * args.block_size / elapsed
    peak = peak_flops(device) if args.dtype == "bf16" else None
    flops = model.flops_per_token(args.block_size)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
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
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
