"""Generation throughput: our batched, cached generator against Hugging Face `generate`.

    python benchmarks/generate.py                  # the device's config: gpu on CUDA, else cpu
    python benchmarks/generate.py --checkpoint runs/124M-abc --tokenizer TOKENIZER
    python benchmarks/generate.py --batch-size 64 --prompts 256 --device cuda
    python benchmarks/generate.py --quick          # a tiny model, 4 prompts (CI)

Both generate greedily from the same weights (ours as our GPT, theirs as the
`GPT2LMHeadModel` that `export_hf` writes of it), the same LAMBADA passages as prompts (GPT-2's
BPE; `--checkpoint` with its own tokenizer), the same length-sorted, left-padded batches,
the same number of new tokens, in the same process. Baseline ("hf-generate"): Hugging Face's
`generate(input_ids, attention_mask, do_sample=False, max_new_tokens)` with its key/value
cache. The texts must be identical, or the run fails. Tokens/s counts generated tokens
(end-of-text ends a row for both). Prints one JSON line last.

Configs, picked by the device (the JSON's "config" says which): "cpu", a random GPT-2 124M,
8 prompts in one batch, 32 new tokens, the faster of 2 alternating runs each; "gpu", the
same model, 256 prompts in batches of 64, 128 new tokens, 3 runs each. Explicit options
win. `--quick`: a random `tiny` model, 4 prompts, 8 new
tokens: the same code path in seconds (CI runs it so that the script cannot rot; its figures
are not measurements).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the repository's packages, installed or not

from benchmarks._common import parse, test_data_root, timed  # noqa: E402
from evaluation.datasets import load_task  # noqa: E402
from evaluation.generation import generate_ids  # noqa: E402
from evaluation.models import (  # noqa: E402
    LanguageModel,
    find_checkpoint,
    load_checkpoint_model,
    load_tokenizer,
    pick_device,
)
from evaluation.sampling import SampleSettings  # noqa: E402
from training.model import CONFIGS, GPT, export_hf  # noqa: E402

CONFIGS_BY_NAME = {
    "gpu": dict(model="124M", prompts=256, batch_size=64, max_new_tokens=128, repeats=3),
    "cpu": dict(model="124M", prompts=8, batch_size=8, max_new_tokens=32, repeats=2),
}
QUICK = dict(model="tiny", prompts=4, batch_size=4, max_new_tokens=8, repeats=1)


def load_model(args: argparse.Namespace, device: torch.device) -> LanguageModel:
    """A checkpoint with its tokenizer, or a random GPT of --model's shape with GPT-2's BPE."""
    if args.checkpoint:
        return load_checkpoint_model(find_checkpoint(args.checkpoint), args.tokenizer, args.device)
    encoder = load_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    gpt = GPT(replace(CONFIGS[args.model], vocab_size=encoder.vocab_size))
    return LanguageModel.of_gpt(f"random {args.model}", gpt.to(device).eval(), encoder, device)


@torch.inference_mode()
def hf_generate(
    hf_model, batches: list[list[list[int]]], new_tokens: int, eot: int, device: torch.device
) -> list[list[int]]:
    """Each prompt's new ids from `generate` on the same batches, cut at end-of-text."""
    out = []
    for batch in batches:
        width = max(map(len, batch))
        ids = torch.tensor([[eot] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        generated = hf_model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=eot,
        )
        for row in generated[:, width:].tolist():
            out.append(row[: row.index(eot)] if eot in row else row)
    return out


def main(argv: list[str] | None = None) -> dict:
    shared = test_data_root()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="a checkpoint or run folder; default: a random model")
    p.add_argument("--model", choices=sorted(CONFIGS), help="random model shape [124M]")
    p.add_argument(
        "--tokenizer",
        default=str(shared / "gpt2-bpe"),
        help="tokenizer.json or dir (a --checkpoint's own tokenizer; default: GPT-2's)",
    )
    p.add_argument("--eval-data", default=str(shared / "eval"), help="where lambada/ is")
    p.add_argument("--prompts", type=int, help="LAMBADA passages [16 on CPU, 256 on CUDA]")
    p.add_argument("--batch-size", type=int, help="prompts per batch [8 on CPU, 64 on CUDA]")
    p.add_argument("--max-new-tokens", type=int, help="[32 on CPU, 128 on CUDA]")
    p.add_argument(
        "--repeats", type=int, help="timed runs of each, alternating; the fastest counts [2, 3]"
    )
    p.add_argument("--threads", type=int, help="CPU threads for both [torch's default]")
    p.add_argument("--device", help="cpu, cuda [cuda if available]")
    p.add_argument("--quick", action="store_true", help="tiny model, 4 prompts, seconds (CI)")

    def pick(args: argparse.Namespace) -> str:
        return "gpu" if pick_device(args.device).type == "cuda" else "cpu"

    args = parse(p, argv, quick=QUICK, configs=CONFIGS_BY_NAME, pick=pick)
    lambada = Path(args.eval_data) / "lambada"
    if not lambada.is_dir():
        raise SystemExit(f"no lambada under {args.eval_data}; set WEBTEXT_TEST_DATA")

    device = pick_device(args.device)
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args, device)
    encoder = model.encoder
    passages = load_task("lambada", args.eval_data).items[: args.prompts]
    # Cut to the window the generator would keep, so both get the very same prompts.
    keep = model.max_length - args.max_new_tokens + 1
    prompts = [encoder.encode(item.context)[-keep:] for item in passages]
    # Our generator sorts by length and batches; the baseline gets the same batches.
    ordered = sorted(prompts, key=len, reverse=True)
    batches = [ordered[i : i + args.batch_size] for i in range(0, len(ordered), args.batch_size)]
    print(
        f"{device.type}, {args.config} config: {model.name}, {len(prompts)} LAMBADA prompts "
        f"({min(map(len, prompts))}-{max(map(len, prompts))} tokens) in batches of "
        f"{args.batch_size}, {args.max_new_tokens} new tokens, greedy",
        file=sys.stderr,
        flush=True,
    )
    settings = SampleSettings(max_new_tokens=args.max_new_tokens, temperature=0)

    def ours_run() -> list[list[int]]:
        found = generate_ids(model, ordered, settings, batch_size=args.batch_size)
        return [generation.ids for generation in found]

    from transformers import GPT2LMHeadModel

    gpt = model.gpt
    assert gpt is not None
    with tempfile.TemporaryDirectory() as folder:
        export_hf(gpt, gpt.config, folder, None, encoder.eot_id, encoder.vocab_size)
        hf_model = GPT2LMHeadModel.from_pretrained(folder).to(device).eval()

    def baseline_run() -> list[list[int]]:
        return hf_generate(hf_model, batches, args.max_new_tokens, encoder.eot_id, device)

    # Warm-up, not timed: one batch each (first-call allocations, kernels).
    generate_ids(model, batches[0], settings, batch_size=args.batch_size)
    hf_generate(hf_model, batches[:1], args.max_new_tokens, encoder.eot_id, device)
    # Alternating runs, the fastest of each: a busy machine slows whichever runs then.
    ours_times, baseline_times = [], []
    for _ in range(args.repeats):
        ours, seconds = timed(ours_run, device.type)
        ours_times.append(seconds)
        theirs, seconds = timed(baseline_run, device.type)
        baseline_times.append(seconds)
    ours_s, baseline_s = min(ours_times), min(baseline_times)
    identical = ours == theirs
    if not identical:
        differ = sum(a != b for a, b in zip(ours, theirs, strict=True))
        raise SystemExit(f"greedy ids differ from Hugging Face's in {differ} of {len(ours)}")
    tokens = sum(map(len, ours))
    result = {
        "model": model.name,
        "tokenizer": encoder.name,
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "new_tokens": tokens,
        "repeats": args.repeats,
        "seconds": round(ours_s, 3),
        "baseline": "hf-generate",
        "baseline_seconds": round(baseline_s, 3),
        "tokens_per_s": round(tokens / ours_s, 1),
        "baseline_tokens_per_s": round(tokens / baseline_s, 1),
        "ratio": round(baseline_s / ours_s, 2),
        "identical": identical,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "config": args.config,
        "quick": args.quick,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
