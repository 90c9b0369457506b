"""Zero-shot scoring throughput on WikiText-2: our batched scorer against the usual loop.

    python benchmarks/evaluate.py                  # the device's config: gpu on CUDA, else cpu
    python benchmarks/evaluate.py --gpu-config     # random GPT-2 124M, every article
    python benchmarks/evaluate.py --checkpoint runs/124M-abc --device cuda
    python benchmarks/evaluate.py --quick          # one article (CI)

Two configs, picked by the device (the JSON's "config" says which, and why): "cpu", a random
`tiny` GPT on 4 articles in batches of 8,192 tokens; "gpu", a random GPT-2 124M on all of
them in batches of 65,536. `--gpu-config` picks the GPU one on any device; options given
explicitly win over either.

Baseline ("hf-stride-loop"): the recipe most people use for the perplexity of a fixed-length
model (Hugging Face's "Perplexity of fixed-length models" guide): a `GPT2LMHeadModel`, one
window at a time, `labels` masked to the window's new tokens. It runs on the same weights
(exported with `export_hf`), windows and text, so the totals must agree; both runs cover
the first `--articles` articles. Prints one JSON line last. Data: WikiText-2 and GPT-2's
BPE files under WEBTEXT_TEST_DATA (default ../shared/data). `--quick`: one article, the
same code path, seconds once imported (CI runs it so that the script cannot rot; its figures
are not measurements).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the repository's packages, installed or not

from benchmarks._common import parse, test_data_root, timed  # noqa: E402
from evaluation.datasets import load_task  # noqa: E402
from evaluation.models import LanguageModel, load_tokenizer, pick_device  # noqa: E402
from evaluation.scoring import WindowSettings, perplexity, rolling_requests  # noqa: E402
from training.model import CONFIGS, GPT, GPTConfig, export_hf  # noqa: E402

CONFIGS_BY_NAME = {  # articles=0: all of them
    "gpu": dict(model="124M", articles=0, batch_tokens=65536),
    "cpu": dict(model="tiny", articles=4, batch_tokens=8192),
}
QUICK = dict(articles=1)


def load_gpt(args: argparse.Namespace, device: torch.device):
    """(GPT module, tokenizer): a checkpoint's, or a random model of --model's shape."""
    encoder = load_tokenizer(args.tokenizer)
    if args.checkpoint:
        from evaluation.models import find_checkpoint

        path = find_checkpoint(args.checkpoint)
        state = torch.load(path, map_location="cpu", weights_only=False)
        model = GPT(GPTConfig(**state["config"]))
        model.load_state_dict(state["model"])
    else:
        torch.manual_seed(0)
        model = GPT(replace(CONFIGS[args.model], vocab_size=encoder.vocab_size))
    return model.to(device).eval(), encoder


@torch.inference_mode()
def baseline_nll(hf_model, requests, device: torch.device) -> float:
    """One window per forward pass, loss over the window's new tokens (the HF guide)."""
    total = 0.0
    for context, continuation in requests:
        ids = torch.tensor([[*context, *continuation][:-1]], device=device)
        labels = torch.tensor([[*context, *continuation][1:]], device=device)
        labels[:, : len(context) - 1] = -100  # only the new tokens count
        logits = hf_model(ids).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.size(-1)), labels.view(-1), reduction="sum"
        )
        total += float(loss)
    return total


def main(argv: list[str] | None = None) -> dict:
    shared = test_data_root()
    default_eval = os.environ.get("WEBTEXT_EVAL_DATA", str(shared / "eval"))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="a checkpoint or run folder; default: a random model")
    p.add_argument(
        "--gpu-config",
        action="store_true",
        help="the GPU config (random 124M, every article) on any device [CUDA: yes]",
    )
    p.add_argument(
        "--model", choices=sorted(CONFIGS), help="random model shape [124M on CUDA, tiny on CPU]"
    )
    p.add_argument(
        "--tokenizer",
        default=str(shared / "gpt2-bpe"),
        help="tokenizer.json or dir (a --checkpoint's own tokenizer; default: GPT-2's)",
    )
    p.add_argument("--eval-data", default=default_eval)
    p.add_argument(
        "--articles", type=int, help="WikiText-2 articles to score, 0: all [all on CUDA, 4 on CPU]"
    )
    p.add_argument("--context", type=int, help="window length [the model's]")
    p.add_argument("--stride", type=int, help="new tokens per window [context/2]")
    p.add_argument("--batch-tokens", type=int, help="[65,536 on CUDA, 8,192 on CPU]")
    p.add_argument("--device", help="cpu, cuda [cuda if available]")
    p.add_argument("--no-baseline", action="store_true", help="ours only (large models)")
    p.add_argument("--quick", action="store_true", help="one article, seconds (CI)")

    def pick(args: argparse.Namespace) -> str:  # the device's config, or --gpu-config's
        return "gpu" if args.gpu_config or pick_device(args.device).type == "cuda" else "cpu"

    args = parse(p, argv, quick=QUICK, configs=CONFIGS_BY_NAME, pick=pick)  # explicit ones win
    if not Path(args.eval_data, "wikitext2").is_dir():
        raise SystemExit(f"no wikitext2 under {args.eval_data}; set WEBTEXT_TEST_DATA")

    device = pick_device(args.device)
    config_name = args.config
    why = {
        "gpu": "--gpu-config" if args.gpu_config else "a CUDA device",
        "cpu": "no CUDA device; --gpu-config for a random GPT-2 124M on every article",
    }[config_name]
    print(
        f"{device.type}, {config_name} config ({why}): "
        f"{args.checkpoint or 'random ' + args.model}, "
        f"{args.articles or 'all'} articles, batches of {args.batch_tokens:,} tokens",
        file=sys.stderr,
        flush=True,
    )
    torch.set_grad_enabled(False)
    gpt, encoder = load_gpt(args, device)
    model = LanguageModel(
        "bench", gpt.hidden_states, encoder, gpt.config.block_size, device, head=gpt.lm_head
    )
    documents = load_task("wikitext2", args.eval_data).items[: args.articles or None]
    texts = [d.text for d in documents]
    windows = WindowSettings(args.context, args.stride)

    perplexity(model, texts[:1], [1], windows, args.batch_tokens)  # warm-up, not timed
    ours, ours_s = timed(
        lambda: perplexity(model, texts, [d.units for d in documents], windows, args.batch_tokens),
        device.type,
    )
    result = {
        "model": args.checkpoint or f"random {args.model}",
        "tokenizer": encoder.name,
        "articles": len(texts),
        "tokens": ours.tokens,
        "words": ours.units,
        "word_perplexity": ours.per_unit(),
        "seconds": round(ours_s, 3),
    }
    if not args.no_baseline:
        from transformers import GPT2LMHeadModel

        context, stride = windows.resolve(model.max_length)
        requests = [
            request
            for ids in encoder.encode_batch(texts, workers=1)
            for request in rolling_requests(ids, encoder.eot_id, context, stride)
        ]
        with tempfile.TemporaryDirectory() as folder:
            export_hf(gpt, gpt.config, folder, None, encoder.eot_id, encoder.vocab_size)
            hf_model = GPT2LMHeadModel.from_pretrained(folder).to(device).eval()
        nll, baseline_s = timed(lambda: baseline_nll(hf_model, requests, device), device.type)
        result.update(
            baseline="hf-stride-loop",
            baseline_seconds=round(baseline_s, 3),
            baseline_tokens_per_s=round(ours.tokens / baseline_s, 1),
            # The same windows over the same weights: the totals agree, or the speed is moot.
            nll_relative_difference=abs(nll - ours.nll) / ours.nll,
            ratio=round(baseline_s / ours_s, 2),
        )
        if not math.isclose(nll, ours.nll, rel_tol=1e-4):
            raise SystemExit(f"baseline and ours disagree: {nll} vs {ours.nll} nats")
    result["tokens_per_s"] = round(ours.tokens / ours_s, 1)
    result["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result["config"] = config_name
    result["config_reason"] = why
    result["batch_tokens"] = args.batch_tokens
    result["quick"] = args.quick
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
