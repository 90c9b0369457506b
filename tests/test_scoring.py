"""Scoring and the sampling distribution on models whose probabilities are known, and on
a real tiny GPT."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from evaluation.models import LanguageModel, load_checkpoint_model, load_model
from evaluation.sampling import SampleSettings, next_token_distribution
from evaluation.scoring import (
    WindowSettings,
    continuation_requests,
    perplexity,
    rolling_requests,
    score_requests,
)
from training.bpe import encoder_from_tokenizer, train_tokenizer
from training.model import GPT, GPTConfig
from webtext.store import Store

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "A language model assigns probabilities to sequences of words.",
    "Zero-shot evaluation needs no training on the task itself.",
]


@pytest.fixture(scope="module")
def encoder():
    tokenizer = train_tokenizer(TEXTS * 5, vocab_size=300)
    return encoder_from_tokenizer(tokenizer.to_str())


def bigram_model(
    encoder, max_length: int = 16, seed: int = 0
) -> tuple[LanguageModel, torch.Tensor]:
    """p(next | previous) from a fixed random table: every prediction's probability is known
    from one previous token, so any windowing must give the same total."""
    vocab = encoder.vocab_size
    generator = torch.Generator().manual_seed(seed)
    log_table = torch.log_softmax(torch.randn(vocab, vocab + 4, generator=generator), dim=-1)
    # +4 columns: a padded vocabulary whose extra ids must get no probability.
    model = LanguageModel(
        "bigram", lambda ids: log_table[ids], encoder, max_length, torch.device("cpu")
    )
    return model, torch.log_softmax(log_table[:, :vocab], dim=-1)


def uniform_model(encoder, max_length: int = 16) -> LanguageModel:
    return LanguageModel(
        "uniform",
        lambda ids: torch.zeros(*ids.shape, encoder.vocab_size),
        encoder,
        max_length,
        torch.device("cpu"),
    )


def test_uniform_model_gives_vocabulary_size_perplexity(encoder):
    model = uniform_model(encoder)
    tokens = sum(len(encoder.encode(t)) for t in TEXTS)
    words = sum(len(t.split()) for t in TEXTS)
    result = perplexity(model, TEXTS, [len(t.split()) for t in TEXTS])
    assert result.tokens == tokens
    assert result.per_token() == pytest.approx(encoder.vocab_size, rel=1e-6)
    # Per word: V ** (tokens / words), the same log-likelihood spread over fewer units.
    assert result.per_unit() == pytest.approx(encoder.vocab_size ** (tokens / words), rel=1e-6)
    assert result.bits_per_unit() == pytest.approx(tokens * math.log2(encoder.vocab_size) / words)


@pytest.mark.parametrize("context,stride", [(16, 16), (16, 8), (16, 1), (4, 3), (2, 1)])
def test_every_window_setting_scores_each_token_once(encoder, context, stride):
    model, table = bigram_model(encoder)
    expected = 0.0
    for text in TEXTS:
        sequence = [encoder.eot_id, *encoder.encode(text)]
        expected -= sum(float(table[a, b]) for a, b in pairwise(sequence))
    result = perplexity(model, TEXTS, [1] * len(TEXTS), WindowSettings(context, stride))
    assert result.nll == pytest.approx(expected, rel=1e-6)


def test_rolling_requests_cover_each_token_once_with_bounded_windows():
    ids = list(range(1, 24))
    for context, stride in [(8, 8), (8, 3), (5, 1), (30, 10)]:
        requests = rolling_requests(ids, 0, context, stride)
        targets = [t for _, continuation in requests for t in continuation]
        assert targets == ids
        for history, continuation in requests:
            assert len(history) + len(continuation) - 1 <= context
            assert len(continuation) <= stride
        # After the first window each prediction sees at least context - stride tokens.
        assert all(len(h) >= min(context - stride, 1) for h, _ in requests)


def test_bad_window_settings_are_refused():
    with pytest.raises(ValueError, match="stride"):
        WindowSettings(context=8, stride=9).resolve(16)


def test_continuations_greedy_flag_and_logprob(encoder):
    model, table = bigram_model(encoder)
    context = encoder.encode("The quick brown")
    best = int(table[context[-1]].argmax())
    worst = int(table[context[-1]].argmin())
    good, bad = score_requests(model, [(context, [best]), (context, [worst])])
    assert good.greedy and not bad.greedy
    assert good.logprob == pytest.approx(float(table[context[-1], best]), rel=1e-6)
    assert bad.logprob < good.logprob


def test_continuation_ids_split_like_running_text(encoder):
    model = uniform_model(encoder)
    [(context, continuation)] = continuation_requests(model, [("The quick brown ", "fox")])
    # The trailing space moves to the continuation, where GPT-2's BPE attaches it.
    assert encoder.decode(context) == "The quick brown"
    assert encoder.decode(continuation) == " fox"
    [(context, continuation)] = continuation_requests(model, [("", "Zero-shot")])
    assert context == [encoder.eot_id] and encoder.decode(continuation) == "Zero-shot"


def tiny_gpt(encoder) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(block_size=32, vocab_size=320, n_layer=2, n_head=2, n_embd=32)
    return GPT(config).eval()


def test_batching_and_padding_do_not_change_scores(encoder):
    gpt = tiny_gpt(encoder)
    model = LanguageModel("tiny", lambda ids: gpt(ids)[0], encoder, 32, torch.device("cpu"))
    requests = continuation_requests(
        model, [(t[:20], t[20:40]) for t in TEXTS] + [("A", " language model")]
    )
    together = score_requests(model, requests, batch_tokens=4096)
    alone = score_requests(model, requests, batch_tokens=1)
    for a, b in zip(together, alone, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.greedy == b.greedy


def test_checkpoint_model_loads_with_its_tokenizer(tmp_path, encoder):
    gpt = tiny_gpt(encoder)
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(train_tokenizer(TEXTS * 5, vocab_size=300).to_str())
    state = {
        "model": gpt.state_dict(),
        "config": vars(gpt.config),
        "step": 3,
        "args": {"tokens": str(tmp_path / "nowhere")},
    }
    torch.save(state, tmp_path / "ckpt-00000003.pt")
    model = load_checkpoint_model(tmp_path, tokenizer=tokenizer)
    assert model.max_length == 32 and model.encoder.vocab_size == encoder.vocab_size
    ids = torch.tensor([encoder.encode(TEXTS[1])[:10]])
    # The padded vocabulary's extra logits are cut off.
    assert model.logits(ids).shape == (1, 10, encoder.vocab_size)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        load_model(Store(str(tmp_path / "store")), tmp_path)  # a bare checkpoint, no tokenizer


def test_top_k_and_top_p_cut_the_distribution():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    top2 = next_token_distribution(logits, SampleSettings(top_k=2))
    assert top2.tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    nucleus = next_token_distribution(logits, SampleSettings(top_k=None, top_p=0.8))
    assert nucleus.tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])  # 0.5 + 0.3 reaches 0.8
    hot = next_token_distribution(logits, SampleSettings(top_k=None, temperature=2.0))
    assert hot[3] > 0.05  # a higher temperature flattens
    with pytest.raises(ValueError):
        SampleSettings(top_p=0.0)
