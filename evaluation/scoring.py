"""Log-likelihoods of continuations, batched: the one primitive every zero-shot task uses.

A request is (context ids, continuation ids); its score is the sum of log p(continuation
token | everything before it) and whether each continuation token was the model's argmax
(greedy). Long texts become several requests through sliding windows, so a document of
any length is scored with at most `context` tokens of history per prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from evaluation.models import LanguageModel

Request = tuple[Sequence[int], Sequence[int]]


@dataclass(frozen=True)
class Score:
    logprob: float  # natural log, summed over the continuation's tokens
    greedy: bool  # every continuation token was the argmax of its distribution
    tokens: int  # continuation tokens scored


@dataclass(frozen=True)
class WindowSettings:
    """Sliding windows for long texts: each window holds at most `context` tokens and scores
    its last `stride` predictions, so every token after the first window sees at least
    `context - stride` tokens of history. `stride == context` is disjoint windows (what
    lm-evaluation-harness does); smaller strides cost more compute and give lower perplexity.
    """

    context: int | None = None  # None: the model's maximum length
    stride: int | None = None  # None: half the context

    def resolve(self, max_length: int) -> tuple[int, int]:
        context = min(self.context or max_length, max_length)
        stride = self.stride or max(1, context // 2)
        if not 0 < stride <= context:
            raise ValueError(f"stride {stride} must be between 1 and the context {context}")
        return context, stride


def rolling_requests(ids: Sequence[int], prefix: int, context: int, stride: int) -> list[Request]:
    """Requests that together score every token of `ids` exactly once, the first one
    conditioned on `prefix` (end-of-text: "a new document starts here")."""
    sequence = [prefix, *ids]
    requests: list[Request] = []
    scored = 0  # sequence[1 : scored + 1] are scored already
    while scored < len(ids):
        end = min(scored + stride, len(ids))
        start = max(0, end - context)
        # Input sequence[start:end] predicts sequence[start + 1 : end + 1]; keep the new ones.
        requests.append((sequence[start : scored + 1], sequence[scored + 1 : end + 1]))
        scored = end
    return requests


def score_requests(
    model: LanguageModel,
    requests: Sequence[Request],
    batch_tokens: int = 8192,
    on_progress: Callable[[int], None] | None = None,
    greedy: bool = True,
) -> list[Score]:
    """Score every request; batches hold at most `batch_tokens` input positions.
    `greedy=False` skips the argmax (perplexity needs none); `Score.greedy` is then False."""
    limit = model.max_length
    for i, (context, continuation) in enumerate(requests):
        if not continuation or len(continuation) > limit:
            raise ValueError(
                f"request {i}: continuation of {len(continuation)} tokens, must be 1..{limit}"
            )
        if not context:
            raise ValueError(f"request {i}: empty context (prefix end-of-text for a document)")
    # Longest first: similar lengths share a batch, so little padding, and an out-of-memory
    # shows in the first batch instead of hours in.
    order = sorted(range(len(requests)), key=lambda i: -sum(map(len, requests[i])))
    scores: list[Score | None] = [None] * len(requests)
    position = 0
    while position < len(order):
        width = min(limit, sum(map(len, requests[order[position]])) - 1)
        rows = max(1, batch_tokens // width)
        batch = order[position : position + rows]
        batch_scores = _score_batch(model, [requests[i] for i in batch], limit, greedy)
        for index, score in zip(batch, batch_scores, strict=True):
            scores[index] = score
        position += len(batch)
        if on_progress:
            on_progress(len(batch))
    return scores  # type: ignore[return-value]


def _score_batch(
    model: LanguageModel, batch: Sequence[Request], limit: int, greedy: bool
) -> list[Score]:
    # Keep the last limit + 1 tokens: the input is all but the last, the targets all but the
    # first. Right padding never changes a causal model's earlier positions.
    rows = [([*context, *continuation])[-(limit + 1) :] for context, continuation in batch]
    width = max(len(row) for row in rows) - 1
    inputs = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)  # the continuations' positions
    for r, (row, (_, continuation)) in enumerate(zip(rows, batch, strict=True)):
        inputs[r, : len(row) - 1] = torch.tensor(row[:-1])
        targets[r, : len(row) - 1] = torch.tensor(row[1:])
        scored[r, len(row) - 1 - len(continuation) : len(row) - 1] = True
    logprobs, hits = model.target_logprobs(inputs, scored, targets[scored], greedy)
    owner = torch.arange(len(rows))[:, None].expand_as(scored)[scored]  # row of each position
    sums = torch.zeros(len(rows), dtype=torch.float64).index_add_(0, owner, logprobs)
    missed = torch.ones(len(rows), dtype=torch.long)  # not computed: never claimed
    if hits is not None:
        missed = torch.zeros(len(rows), dtype=torch.long).index_add_(0, owner, (~hits).long())
    return [
        Score(float(sums[r]), bool(missed[r] == 0), len(continuation))
        for r, (_, continuation) in enumerate(batch)
    ]


@dataclass(frozen=True)
class Perplexity:
    """Totals over a text: negative log-likelihood in nats, tokens, the original units."""

    nll: float
    tokens: int
    units: int

    def per_unit(self) -> float:
        """Perplexity per original unit (e.g. word): exp(nll / units)."""
        return math.exp(self.nll / self.units)

    def bits_per_unit(self) -> float:
        """Bits per original unit (byte or character)."""
        return self.nll / self.units / math.log(2)

    def per_token(self) -> float:
        return math.exp(self.nll / self.tokens)


def perplexity(
    model: LanguageModel,
    texts: Sequence[str],
    units: Sequence[int],
    windows: WindowSettings = WindowSettings(),
    batch_tokens: int = 8192,
    on_progress: Callable[[int], None] | None = None,
) -> Perplexity:
    """Score each text as its own document (after end-of-text) with sliding windows."""
    context, stride = windows.resolve(model.max_length)
    encoder = model.encoder
    requests: list[Request] = []
    for ids in encoder.encode_batch(list(texts), workers=1):
        if ids:
            requests.extend(rolling_requests(ids, encoder.eot_id, context, stride))
    scores = score_requests(model, requests, batch_tokens, on_progress, greedy=False)
    return Perplexity(
        nll=-sum(s.logprob for s in scores),
        tokens=sum(s.tokens for s in scores),
        units=sum(units),
    )


def continuation_requests(model: LanguageModel, pairs: Sequence[tuple[str, str]]) -> list[Request]:
    """(context, continuation) strings to ids, as lm-evaluation-harness makes them: the
    continuation's ids are the joined text's after the context's, and trailing spaces of the
    context move to the continuation (GPT-2's BPE attaches a space to the word after it)."""
    encoder = model.encoder
    requests: list[Request] = []
    for context, continuation in pairs:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = encoder.encode(context + continuation)
        context_ids = encoder.encode(context)
        if context_ids:
            requests.append((context_ids, whole[len(context_ids) :]))
        else:  # nothing to condition on: start a document
            requests.append(([encoder.eot_id], whole))
    return requests
