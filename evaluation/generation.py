"""Batched, cached text generation: what the generation tasks, the sampler and `webtext
sample` call.

Prompts are generated in batches (sorted by length, so little padding), left-padded; the
model reads each batch's prompts once (prefill) into its key/value cache
(`training.model.KVCache`), then one position per step. Rows that finish (end-of-text, a
stop string, `max_new_tokens`) leave the batch. Greedy (`temperature=0`) or sampled with
`evaluation.sampling`'s top-k / top-p / temperature, each prompt with its own seeded
generator, so a prompt's text does not depend on the others it shares a batch with
(up to float rounding of padded batches).

Longer than the model: a prompt keeps its last `max_length - max_new_tokens` tokens (at
least half a window), the convention of lm-evaluation-harness; a generation that reaches
the window's end continues from its last half window (read again into a new cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from evaluation.models import LanguageModel
from evaluation.sampling import SampleSettings, next_token_distribution
from training.model import GPT, KVCache

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Generation:
    """One prompt's continuation: its text (cut before the first stop string) and the token
    ids generated (end-of-text excluded; up to the token that completed a stop string)."""

    text: str
    ids: list[int]


def generate(
    model: LanguageModel,
    prompts: Sequence[str],
    settings: SampleSettings,
    *,
    stop: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[str]:
    """The continuation of each prompt, in order.

    `settings`: `max_new_tokens`; `temperature` 0 for greedy, else sampling with `top_k`,
    `top_p` and `temperature`, seeded with `settings.seed` (or `seeds`, one per prompt).
    `stop`: strings that end a continuation (e.g. "\\n"); the text stops before the first
    one. End-of-text always ends it. An empty prompt starts from end-of-text.
    """
    ids = [model.encoder.encode(prompt) for prompt in prompts]
    found = generate_ids(model, ids, settings, stop=stop, seeds=seeds, batch_size=batch_size)
    return [generation.text for generation in found]


def generate_ids(
    model: LanguageModel,
    prompts: Sequence[Sequence[int]],
    settings: SampleSettings,
    *,
    stop: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[Generation]:
    """`generate` on prompts already tokenized; each continuation's text and ids."""
    _gpt(model)  # fails early for a model without our GPT
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if settings.max_new_tokens == 0:
        return [Generation("", []) for _ in prompts]
    eot = model.encoder.eot_id
    # The last new token is never read: prompt + max_new_tokens - 1 positions fill a window.
    keep = max(model.max_length - settings.max_new_tokens + 1, model.max_length // 2)
    rows = [list(ids[-keep:]) or [eot] for ids in prompts]
    row_seeds = list(seeds) if seeds is not None else [settings.seed] * len(rows)
    # Longest first: similar lengths share a batch, and the largest cache comes first.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out: list[Generation | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        found = _generate_batch(
            model, [rows[i] for i in batch], settings, stop, [row_seeds[i] for i in batch]
        )
        for i, generation in zip(batch, found, strict=True):
            out[i] = generation
    return out  # type: ignore[return-value]  # every slot filled above


class _Row:
    """One sequence being generated: its tokens so far, its new ids, its text when done."""

    def __init__(self, prompt: list[int], seed: int, device: torch.device) -> None:
        self.tokens = list(prompt)
        self.new: list[int] = []
        self.text: str | None = None
        self.generator = torch.Generator(device=device).manual_seed(seed)


@torch.inference_mode()
def _generate_batch(
    model: LanguageModel,
    prompts: list[list[int]],
    settings: SampleSettings,
    stop: Sequence[str],
    seeds: list[int],
) -> list[Generation]:
    encoder = model.encoder
    rows = [_Row(prompt, seed, model.device) for prompt, seed in zip(prompts, seeds, strict=True)]
    active = list(rows)
    longest = max(len(row.tokens) for row in rows)
    capacity = min(model.max_length, longest + settings.max_new_tokens)
    cache, logits = prefill(model, [row.tokens for row in active], capacity)
    for step in range(settings.max_new_tokens):
        tokens = _next_tokens(logits, settings, [row.generator for row in active])
        still: list[int] = []
        for i, (row, token) in enumerate(zip(active, tokens.tolist(), strict=True)):
            if token == encoder.eot_id:
                row.text = encoder.decode(row.new)
                continue
            row.new.append(token)
            row.tokens.append(token)
            cut = _stop_at(encoder.decode(row.new), stop) if stop else None
            if cut is not None:
                row.text = cut
            elif step == settings.max_new_tokens - 1:
                row.text = encoder.decode(row.new)
            else:
                still.append(i)
        if not still:
            break
        if len(still) < len(active):  # finished rows leave the batch and its cache
            index = torch.tensor(still, device=model.device)
            cache.keep(index)
            tokens = tokens[index]
            active = [active[i] for i in still]
        if cache.length == cache.capacity:  # the window is full: go on from its last half
            half = model.max_length // 2
            cache, logits = prefill(model, [row.tokens[-half:] for row in active], capacity)
        else:
            logits = next_logits(model, tokens, cache)
    return [Generation(row.text or "", row.new) for row in rows]


def _stop_at(text: str, stop: Sequence[str]) -> str | None:
    """`text` up to the first stop string in it, or None when it holds none."""
    cut = min((at for at in (text.find(s) for s in stop) if at >= 0), default=-1)
    return text[:cut] if cut >= 0 else None


def prefill(
    model: LanguageModel, sequences: list[list[int]], capacity: int
) -> tuple[KVCache, torch.Tensor]:
    """A new cache of `capacity` positions holding `sequences` (left-padded), and the
    logits after each (B, vocab): the start of any cached decoding."""
    gpt = _gpt(model)
    width = max(len(ids) for ids in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    real = torch.zeros(len(sequences), width, dtype=torch.bool)
    for i, sequence in enumerate(sequences):
        ids[i, width - len(sequence) :] = torch.tensor(sequence)
        real[i, width - len(sequence) :] = True
    dtype = next(gpt.parameters()).dtype
    cache = KVCache(gpt.config, len(sequences), capacity, model.device, dtype)
    hidden = gpt.decode(ids.to(model.device), cache, real.to(model.device))[:, -1]
    return cache, gpt.lm_head(hidden)[:, : model.encoder.vocab_size].float()


def next_logits(model: LanguageModel, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Each row's next-token logits (B, vocab) after appending `tokens` (B,) to `cache`."""
    gpt = _gpt(model)
    hidden = gpt.decode(tokens.to(model.device)[:, None], cache)[:, -1]
    return gpt.lm_head(hidden)[:, : model.encoder.vocab_size].float()


def _gpt(model: LanguageModel) -> GPT:
    if model.gpt is None:
        raise TypeError(f"{model.name}: generation needs our GPT (LanguageModel.of_gpt)")
    return model.gpt


def _next_tokens(
    logits: torch.Tensor, settings: SampleSettings, generators: list[torch.Generator]
) -> torch.Tensor:
    """Each row's next token (B,): the argmax when greedy, else a draw from the cut
    distribution with that row's own generator."""
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    probs = next_token_distribution(logits, settings)
    draws = [
        torch.multinomial(row, 1, generator=generator)
        for row, generator in zip(probs, generators, strict=True)
    ]
    return torch.cat(draws)


def sample_prompts(
    model: LanguageModel, prompts: Sequence[str], settings: SampleSettings, per_prompt: int = 1
) -> list[dict]:
    """`per_prompt` samples of each prompt, seeds settings.seed, seed + 1, ..., generated
    in one batch."""
    rows = [(prompt, settings.seed + i) for prompt in prompts for i in range(per_prompt)]
    texts = generate(
        model, [prompt for prompt, _ in rows], settings, seeds=[seed for _, seed in rows]
    )
    return [
        {"prompt": prompt, "seed": seed, "text": text}
        for (prompt, seed), text in zip(rows, texts, strict=True)
    ]
