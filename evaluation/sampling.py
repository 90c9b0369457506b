"""How the next token is drawn: top-k (GPT-2's samples used k = 40), top-p, temperature,
seeded; `evaluation.generation` generates with these settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class SampleSettings:
    max_new_tokens: int = 100
    top_k: int | None = 40  # None or 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    temperature: float = 1.0  # 0: greedy
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 0:
            raise ValueError(f"bad sampling settings: {self}")

    def as_dict(self) -> dict:
        return asdict(self)


def next_token_distribution(logits: torch.Tensor, settings: SampleSettings) -> torch.Tensor:
    """Probabilities (..., V) after temperature, the top-k cut and the top-p (nucleus) cut,
    for one row of logits (V,) or a batch (B, V)."""
    logits = logits / settings.temperature
    if settings.top_k:
        kth = torch.topk(logits, min(settings.top_k, logits.size(-1))).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        outside = sorted_probs.cumsum(-1) - sorted_probs >= settings.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs /= probs.sum(-1, keepdim=True)
    return probs
