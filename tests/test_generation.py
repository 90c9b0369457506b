"""Cached, batched generation: the cache against the full forward pass, greedy text against
Hugging Face's `generate` on the export of the same weights, stop strings, seeds, windows,
and a Hugging Face folder loaded as our GPT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evaluation.generation import generate, generate_ids, sample_prompts
from evaluation.models import LanguageModel, load_hf_model
from evaluation.sampling import SampleSettings
from training.bpe import encoder_from_tokenizer, train_tokenizer
from training.model import GPT, GPTConfig, KVCache, export_hf, gpt_from_hf

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "A language model assigns probabilities to sequences of words.\n",
    "Zero-shot evaluation needs no training on the task itself.\n",
]
GREEDY = SampleSettings(max_new_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def tokenizer_json() -> str:
    return train_tokenizer(TEXTS * 5, vocab_size=300).to_str()


@pytest.fixture(scope="module")
def encoder(tokenizer_json):
    return encoder_from_tokenizer(tokenizer_json)


def random_gpt(vocab_size: int, block_size: int = 32) -> GPT:
    """A random GPT whose greedy text varies and depends on positions (scaled embeddings and
    matrices): its top two logits differ by more than 0.006 along the texts generated here,
    far beyond float rounding, so a difference in text is a difference in computation. A
    vocabulary padded past the tokenizer's, as training pads it; non-zero biases."""
    torch.manual_seed(0)
    config = GPTConfig(
        block_size=block_size, vocab_size=vocab_size + 20, n_layer=2, n_head=2, n_embd=32
    )
    gpt = GPT(config).eval()
    with torch.no_grad():
        gpt.transformer.wte.weight.mul_(4)
        gpt.transformer.wpe.weight.mul_(20)
        for name, p in gpt.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
            elif name.startswith("transformer.h.") and p.dim() == 2:
                p.mul_(3)
    return gpt


@pytest.fixture(scope="module")
def model(encoder) -> LanguageModel:
    return LanguageModel.of_gpt(
        "tiny", random_gpt(encoder.vocab_size), encoder, torch.device("cpu")
    )


def test_cached_logits_equal_the_full_forward_pass(model):
    gpt = model.gpt
    prompts = [[5, 9, 17, 40, 3, 8], [11, 2], [7, 7, 30, 1]]
    steps = [[21, 4, 60], [3, 3, 3], [100, 9, 12]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    real = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts])
    cache = KVCache(gpt.config, len(prompts), width + 3, torch.device("cpu"))
    with torch.no_grad():
        cached = [gpt.lm_head(gpt.decode(ids, cache, real))]
        for t in range(3):
            step = torch.tensor([[row[t]] for row in steps])
            cached.append(gpt.lm_head(gpt.decode(step, cache)))
        cached = torch.cat(cached, dim=1)
        for i, (prompt, new) in enumerate(zip(prompts, steps, strict=True)):
            full, _ = gpt(torch.tensor([prompt + new]))
            row = cached[i, width - len(prompt) :]
            torch.testing.assert_close(row, full[0], atol=1e-4, rtol=0)


def test_cache_drops_finished_rows(model):
    gpt = model.gpt
    cache = KVCache(gpt.config, 3, 8, torch.device("cpu"))
    with torch.no_grad():
        gpt.decode(torch.tensor([[1, 2], [3, 4], [5, 6]]), cache)
        cache.keep(torch.tensor([2, 0]))
        after = gpt.lm_head(gpt.decode(torch.tensor([[7], [8]]), cache))[:, -1]
        full, _ = gpt(torch.tensor([[5, 6, 7], [1, 2, 8]]))
    torch.testing.assert_close(after, full[:, -1], atol=1e-4, rtol=0)


def test_greedy_equals_hugging_face_generate(model, encoder, tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    gpt = model.gpt
    export_hf(gpt, gpt.config, tmp_path, eot_id=encoder.eot_id, vocab_size=encoder.vocab_size)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    prompts = [encoder.encode(text[:n]) for text, n in zip(TEXTS, (40, 9, 25), strict=True)]
    ours = generate_ids(model, prompts, GREEDY, batch_size=3)
    width = max(map(len, prompts))
    ids = torch.tensor([[encoder.eot_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=GREEDY.max_new_tokens,
            do_sample=False,
            pad_token_id=encoder.eot_id,
        )
    for generation, row in zip(ours, out[:, width:].tolist(), strict=True):
        theirs = row[: row.index(encoder.eot_id)] if encoder.eot_id in row else row
        assert generation.ids == theirs
        assert generation.text == encoder.decode(theirs)
    assert sum(len(g.ids) for g in ours) > 12  # something was generated


def test_batches_and_order_do_not_change_greedy_text(model):
    prompts = [TEXTS[0][:30], TEXTS[1][:5], "", TEXTS[2][:50], TEXTS[1]]
    alone = [generate(model, [p], GREEDY)[0] for p in prompts]
    assert generate(model, prompts, GREEDY, batch_size=2) == alone
    assert generate(model, prompts, GREEDY, batch_size=16) == alone


def test_sampling_is_seeded_and_top_k_one_is_greedy(model):
    settings = SampleSettings(max_new_tokens=12, seed=7)
    prompts = ["The quick", "A language"]
    first = generate(model, prompts, settings)
    assert generate(model, prompts, settings) == first
    # A prompt's draws come from its own generator: its batch does not change them.
    assert generate(model, prompts[:1], settings) == first[:1]
    other_seed = generate(model, prompts, SampleSettings(max_new_tokens=12, seed=8))
    assert other_seed != first
    greedy = generate(model, prompts, SampleSettings(max_new_tokens=12, temperature=0))
    top1 = generate(model, prompts, SampleSettings(max_new_tokens=12, top_k=1, seed=3))
    assert top1 == greedy


def test_stop_strings_cut_the_text_and_end_the_row(model, encoder):
    settings = SampleSettings(max_new_tokens=20, temperature=0)
    prompt = [encoder.encode("The quick")]
    [full] = generate_ids(model, prompt, settings)
    assert len(full.text) > 4
    stop = full.text[3:5]  # a string the greedy text contains
    [cut] = generate_ids(model, prompt, settings, stop=[stop, "never in it"])
    assert cut.text == full.text[: full.text.index(stop)]
    assert full.ids[: len(cut.ids)] == cut.ids and len(cut.ids) < len(full.ids)
    assert stop in encoder.decode(cut.ids)  # the ids end with the token that completed it


def test_generation_runs_past_the_window(model):
    """32 positions, 40 new tokens: the prompt keeps its last half window and the
    generation slides on from its last half window."""
    long = SampleSettings(max_new_tokens=40, temperature=0)
    [generation] = generate_ids(model, [list(range(1, 60))], long)
    assert 0 < len(generation.ids) <= 40


def test_sample_prompts_seeds_each_sample(model):
    rows = sample_prompts(model, ["The quick", "A"], SampleSettings(max_new_tokens=6), 2)
    assert [(r["prompt"], r["seed"]) for r in rows] == [
        ("The quick", 0),
        ("The quick", 1),
        ("A", 0),
        ("A", 1),
    ]
    alone = generate(model, ["A"], SampleSettings(max_new_tokens=6, seed=1))
    assert rows[3]["text"] == alone[0]


def test_a_model_without_our_gpt_cannot_generate(encoder):
    scorer_only = LanguageModel(
        "uniform", lambda ids: torch.zeros(*ids.shape, 300), encoder, 16, torch.device("cpu")
    )
    with pytest.raises(TypeError, match="needs our GPT"):
        generate(scorer_only, ["x"], GREEDY)


def test_hugging_face_folder_loads_as_our_gpt(model, encoder, tokenizer_json, tmp_path: Path):
    gpt = model.gpt
    tokenizer = {"tokenizer.json": tokenizer_json.encode()}
    export_hf(gpt, gpt.config, tmp_path, tokenizer, encoder.eot_id, encoder.vocab_size)
    loaded = load_hf_model(tmp_path, device="cpu")
    assert loaded.encoder.name == encoder.name and loaded.max_length == gpt.config.block_size
    ids = torch.tensor([encoder.encode(TEXTS[1][:40])])
    torch.testing.assert_close(loaded.logits(ids), model.logits(ids), atol=1e-5, rtol=0)
    assert generate(loaded, TEXTS[:2], GREEDY) == generate(model, TEXTS[:2], GREEDY)


def test_unsupported_hugging_face_models_are_refused(model, tmp_path: Path):
    import json

    gpt = model.gpt
    export_hf(gpt, gpt.config, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(ValueError, match=r"config.json: activation_function = 'relu'"):
        gpt_from_hf(tmp_path)
    del config["n_positions"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: no integer n_positions"):
        gpt_from_hf(tmp_path)
    config["n_positions"] = gpt.config.block_size
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        gpt_from_hf(tmp_path)


def words_without_cache(model, context: str, candidates: int, max_word_tokens: int):
    """The stop-word filter's candidate words as first written: every step reads the whole
    context again (the reference the cached version must equal)."""
    from evaluation.zero_shot import _starts_new_word

    encoder = model.encoder
    ids = encoder.encode(context)[-(model.max_length - max_word_tokens) :]
    first = model.logits(torch.tensor([ids]))[0, -1]
    words = [[int(t)] for t in torch.topk(first, candidates).indices]
    growing = list(range(len(words)))
    for _ in range(max_word_tokens - 1):
        batch = torch.tensor([ids + words[i] for i in growing])
        following = model.logits(batch)[:, -1].argmax(dim=-1).tolist()
        still = []
        for i, token in zip(growing, following, strict=True):
            if not _starts_new_word(encoder.decode([token])):
                words[i].append(token)
                still.append(i)
        growing = still
        if not growing:
            break
    return [encoder.decode(word).strip() for word in words]


def test_stop_word_filter_words_equal_the_uncached_reference(model):
    from evaluation.datasets import STOP_WORDS, Cloze
    from evaluation.zero_shot import completed_words, stopword_filtered_accuracy

    contexts = [TEXTS[0][:60], TEXTS[1][:30], TEXTS[2][:45], "The"]
    for context in contexts:
        cached = completed_words(model, context, 10, 8)
        assert cached == words_without_cache(model, context, 10, 8)
        assert len(cached) == 10 and any(len(model.encoder.encode(w)) > 1 for w in cached)
    # The accuracy answers with the first word that is not a stop-word.
    words = completed_words(model, contexts[0], 10, 8)
    answer = next(w for w in words if w.lower() not in STOP_WORDS)
    items = [Cloze(contexts[0], answer), Cloze(contexts[0], answer + "x")]
    assert stopword_filtered_accuracy(model, items) == 0.5


def test_gpt2s_files_under_hugging_face_names_are_its_tokenizer(test_data, tmp_path: Path):
    from evaluation.models import load_tokenizer, tokenizer_files
    from training.bpe import gpt2_encoder

    bpe = test_data / "gpt2-bpe"
    (tmp_path / "vocab.json").write_bytes((bpe / "encoder.json").read_bytes())
    (tmp_path / "merges.txt").write_bytes((bpe / "vocab.bpe").read_bytes())
    assert [p.name for p in tokenizer_files(tmp_path)] == ["vocab.json", "merges.txt"]
    ours, gpt2 = load_tokenizer(tmp_path), gpt2_encoder(bpe)
    text = "Hello world, it's 2026!  Two spaces,\n\nnew lines and ünïcode <|endoftext|>"
    assert ours.encode(text) == gpt2.encode(text) and ours.eot_id == gpt2.eot_id
    assert ours.vocab_size == gpt2.vocab_size == 50257
