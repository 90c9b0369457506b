"""The GPT-2 paper's zero-shot tasks: one function per kind of task, one result dict per set.

- perplexity sets (WikiText, PTB, 1BW, enwik8, text8): every document scored after an
  end-of-text token with sliding windows; perplexity per original word, or bits per
  original byte/character.
- LAMBADA: the last word's tokens after the passage; accuracy = every token of the word is
  the model's greedy choice, perplexity = exp(-mean log p(word)). Optionally the paper's
  stop-word-filtered accuracy.
- CBT and Winograd: each option's continuation scored after its context; the most likely
  option is the answer.
- generation tasks (Natural Questions, WMT-14, CoQA, CNN/DailyMail): the model continues
  each prompt (`evaluation.generation`) as the task's `Decoding` says; the answer is the
  first line (or the first sentences) of what it wrote, scored with the task's metric
  (`evaluation.text_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from evaluation.datasets import STOP_WORDS, Choice, Cloze, Decoding, EvalSet, Prompted
from evaluation.generation import generate_ids, next_logits, prefill
from evaluation.models import LanguageModel
from evaluation.sampling import SampleSettings
from evaluation.scoring import (
    WindowSettings,
    continuation_requests,
    perplexity,
    score_requests,
)
from evaluation.text_metrics import (
    coqa_turn_scores,
    corpus_bleu,
    exact_match,
    first_line,
    first_sentences,
    rouge_f1,
)

UNIT_METRICS = {"word": "ppl", "byte": "bpb", "char": "bpc"}
GENERATION_CHUNK = 256  # prompts generated per call: progress is reported after each


@dataclass(frozen=True)
class EvalSettings:
    windows: WindowSettings = field(default_factory=WindowSettings)
    batch_tokens: int = 8192
    limit: int | None = None  # score only the first `limit` items of each set (smoke runs)
    lambada_stopword_filter: bool = False

    def parameters(self) -> dict[str, Any]:
        return {
            "context": self.windows.context,
            "stride": self.windows.stride,
            "limit": self.limit,
            "lambada_stopword_filter": self.lambada_stopword_filter,
        }


Progress = Callable[[int], None] | None


def evaluate_set(
    model: LanguageModel, eval_set: EvalSet, settings: EvalSettings, on_progress: Progress = None
) -> dict[str, Any]:
    """Score one evaluation set; the result names its metric, value and the totals behind it."""
    items = eval_set.items[: settings.limit] if settings.limit else eval_set.items
    if not items:
        raise ValueError(f"{eval_set.name}: no items to score in {eval_set.source}")
    if eval_set.kind == "perplexity":
        result = _perplexity_result(model, eval_set.unit, items, settings, on_progress)
    elif eval_set.kind == "cloze":
        result = cloze_result(model, items, settings, on_progress)
    elif eval_set.kind == "choice":
        result = choice_result(model, items, settings, on_progress)
    elif eval_set.kind == "generation" and eval_set.decoding is not None:
        result = generation_result(model, items, eval_set.decoding, eval_set.metric, on_progress)
    else:
        raise ValueError(f"{eval_set.name}: unknown kind of task {eval_set.kind!r}")
    return {
        "task": eval_set.name,
        **result,
        "items": len(items),
        "skipped": len(eval_set.skipped),
        "lines_not_detokenized": eval_set.lines_not_detokenized,
        "source": eval_set.source,
    }


def _perplexity_result(model, unit, documents, settings, on_progress) -> dict[str, Any]:
    totals = perplexity(
        model,
        [d.text for d in documents],
        [d.units for d in documents],
        settings.windows,
        settings.batch_tokens,
        on_progress,
    )
    metric = UNIT_METRICS[unit]
    value = totals.per_unit() if metric == "ppl" else totals.bits_per_unit()
    return {
        "metric": metric,
        "value": value,
        "unit": unit,
        "nll": totals.nll,
        "tokens": totals.tokens,
        "units": totals.units,
        "token_perplexity": totals.per_token(),
    }


def cloze_result(
    model: LanguageModel,
    items: Sequence[Cloze],
    settings: EvalSettings,
    on_progress: Progress = None,
) -> dict[str, Any]:
    requests = continuation_requests(model, [(c.context, " " + c.target) for c in items])
    scores = score_requests(model, requests, settings.batch_tokens, on_progress)
    result: dict[str, Any] = {
        "metric": "acc",
        "value": sum(s.greedy for s in scores) / len(scores),
        "ppl": math.exp(-sum(s.logprob for s in scores) / len(scores)),
    }
    if settings.lambada_stopword_filter:
        result["acc_stopword_filtered"] = stopword_filtered_accuracy(model, items)
    return result


def choice_result(
    model: LanguageModel,
    items: Sequence[Choice],
    settings: EvalSettings,
    on_progress: Progress = None,
) -> dict[str, Any]:
    pairs = [option for item in items for option in item.options]
    scores = score_requests(
        model, continuation_requests(model, pairs), settings.batch_tokens, on_progress
    )
    correct, offset = 0, 0
    for item in items:
        options = scores[offset : offset + len(item.options)]
        offset += len(item.options)
        best = max(range(len(options)), key=lambda i: options[i].logprob)
        correct += best == item.gold
    return {"metric": "acc", "value": correct / len(items)}


def stopword_filtered_accuracy(
    model: LanguageModel, items: Sequence[Cloze], candidates: int = 10, max_word_tokens: int = 8
) -> float:
    """The GPT-2 paper's variant: the model's most likely last word that is not a stop-word.

    For each of the `candidates` most likely first tokens, greedily complete the word (until
    a token that starts something new); answer with the likeliest that is no stop-word.
    """
    correct = 0
    for item in items:
        words = completed_words(model, item.context, candidates, max_word_tokens)
        correct += next((w for w in words if w.lower() not in STOP_WORDS), "") == item.target
    return correct / len(items)


@torch.inference_mode()
def completed_words(
    model: LanguageModel, context: str, candidates: int, max_word_tokens: int
) -> list[str]:
    """The `candidates` likeliest first tokens after `context`, likeliest first, each
    completed greedily into a word. The context is read once into the key/value cache and
    copied per candidate; each step then reads one token per word still growing."""
    encoder = model.encoder
    ids = encoder.encode(context)[-(model.max_length - max_word_tokens) :]
    cache, logits = prefill(model, [ids], len(ids) + max_word_tokens - 1)
    last = torch.topk(logits[0], min(candidates, logits.size(-1))).indices
    words = [[token] for token in last.tolist()]
    cache.keep(torch.zeros(len(words), dtype=torch.long, device=model.device))
    growing = list(range(len(words)))
    for _ in range(max_word_tokens - 1):
        following = next_logits(model, last, cache).argmax(dim=-1)
        still = [
            j
            for j, token in enumerate(following.tolist())
            if not _starts_new_word(encoder.decode([token]))
        ]
        if not still:
            break
        for j in still:
            words[growing[j]].append(int(following[j]))
        index = torch.tensor(still, device=model.device)
        cache.keep(index)
        last, growing = following[index], [growing[j] for j in still]
    return [encoder.decode(word).strip() for word in words]


def _starts_new_word(piece: str) -> bool:
    """GPT-2's BPE puts the space before a word into the word's first token: a piece that
    starts with a space or punctuation begins something new."""
    return not piece or not piece[0].isalnum()


def generation_result(
    model: LanguageModel,
    items: Sequence[Prompted],
    decoding: Decoding,
    metric: str,
    on_progress: Progress = None,
) -> dict[str, Any]:
    """Each item's answer generated and scored with `metric` ("em", "f1", "bleu", "rouge");
    the answers are kept with the result, by item key."""
    answers = generate_answers(model, items, decoding, on_progress)
    return {
        **score_answers(metric, items, answers),
        "decoding": asdict(decoding),
        "answers": {item.key: answer for item, answer in zip(items, answers, strict=True)},
    }


def generate_answers(
    model: LanguageModel,
    items: Sequence[Prompted],
    decoding: Decoding,
    on_progress: Progress = None,
) -> list[str]:
    """The model's answer to each item: greedy, or top-k sampled with seed = the item's
    index; the first non-blank line of the text, or its first `decoding.sentences`."""
    settings = SampleSettings(
        max_new_tokens=decoding.max_new_tokens,
        top_k=decoding.top_k,
        temperature=1.0 if decoding.top_k else 0.0,
    )
    prompts = [prompt_ids(model, item, decoding.max_new_tokens) for item in items]
    texts: list[str] = []
    for start in range(0, len(prompts), GENERATION_CHUNK):
        chunk = prompts[start : start + GENERATION_CHUNK]
        seeds = range(start, start + len(chunk))
        found = generate_ids(model, chunk, settings, stop=decoding.stop, seeds=list(seeds))
        texts += [generation.text for generation in found]
        if on_progress:
            on_progress(len(chunk))
    if decoding.sentences:
        return [first_sentences(text, decoding.sentences) for text in texts]
    return [first_line(text) for text in texts]


def prompt_ids(model: LanguageModel, item: Prompted, max_new_tokens: int) -> list[int]:
    """The item's prompt as ids, fitting the window with `max_new_tokens` to spare (at
    least half the window, as the generator keeps): its last tokens (lm-evaluation-harness's
    cut, so both tools read the same prompt), or, with a `document` before it, the
    document's first tokens and the whole prompt."""
    room = max(model.max_length - max_new_tokens, model.max_length // 2)
    ids = model.encoder.encode(item.prompt)
    if not item.document:
        return ids[-room:]
    return model.encoder.encode(item.document)[: max(room - len(ids), 0)] + ids[-room:]


def score_answers(metric: str, items: Sequence[Prompted], answers: Sequence[str]) -> dict[str, Any]:
    """The task's metric over the answers: exact match against any reference (a fraction),
    CoQA's F1 and exact match (fractions), corpus BLEU (0-100, with sacrebleu's
    signature), ROUGE-1/2/L F1 and their average (fractions)."""
    if metric == "em":
        hits = sum(exact_match(a, item.references) for item, a in zip(items, answers, strict=True))
        return {"metric": "em", "value": hits / len(items)}
    if metric == "f1":
        turns = [coqa_turn_scores(i.references, a) for i, a in zip(items, answers, strict=True)]
        return {
            "metric": "f1",
            "value": sum(f1 for _, f1 in turns) / len(turns),
            "em": sum(em for em, _ in turns) / len(turns),
        }
    if metric == "bleu":
        return {"metric": "bleu", **corpus_bleu(answers, [item.references[0] for item in items])}
    if metric == "rouge":
        scores = rouge_f1(answers, [item.references[0] for item in items])
        return {"metric": "rouge", "value": scores.pop("average"), **scores}
    raise ValueError(f"unknown generation metric {metric!r}")
