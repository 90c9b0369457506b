"""Byte-level BPE: GPT-2 ids against tiktoken built from the same files, training, round trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tokenizers import Tokenizer, pre_tokenizers

from training.bpe import (
    EOT,
    GPT2_PATTERN,
    Encoder,
    encoder_from_tokenizer,
    gpt2_encoder,
    train_tokenizer,
)

REPO = Path(__file__).resolve().parent.parent
SMALL_VOCAB = 1_000


@pytest.fixture(scope="session")
def gpt2(test_data: Path) -> Iterator[Encoder]:
    with gpt2_encoder(test_data / "gpt2-bpe") as encoder:  # its worker processes end with it
        yield encoder


@pytest.fixture(scope="session")
def reference(test_data: Path) -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding from the local files; its download cache off."""
    bpe = test_data / "gpt2-bpe"
    with mock.patch.dict(os.environ, {"TIKTOKEN_CACHE_DIR": ""}):
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(bpe / "vocab.bpe"), encoder_json_file=str(bpe / "encoder.json")
        )
    return tiktoken.Encoding(
        "gpt2-reference", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256}
    )


@pytest.fixture(scope="session")
def lambada(test_data: Path) -> list[str]:
    lines = (test_data / "eval/lambada/lambada_test.jsonl").read_text(encoding="utf-8")
    return [json.loads(line)["text"] for line in lines.splitlines()]


@pytest.fixture(scope="session")
def small(lambada: list[str]) -> Tokenizer:
    return train_tokenizer(lambada[:2_000], vocab_size=SMALL_VOCAB)


def test_gpt2_vocabulary(gpt2: Encoder) -> None:
    assert (gpt2.vocab_size, gpt2.eot_id, gpt2.name) == (50_257, 50_256, "gpt2")
    assert gpt2.encode("hello world") == [31373, 995]  # tiktoken's documented example


def test_gpt2_ids_match_reference_on_lambada(
    gpt2: Encoder, reference: tiktoken.Encoding, lambada: list[str]
) -> None:
    # Over 1 MB, so the worker processes run; two odd texts ride along in the same batch.
    texts = [*lambada, f"a{EOT}b", "lone \ud800 surrogate"]
    assert sum(map(len, texts)) > 1 << 20
    expected = [reference.encode_ordinary(t) for t in texts]
    assert gpt2.encode_batch(texts) == expected
    assert [gpt2.encode(t) for t in texts] == expected


@pytest.mark.parametrize(
    "name", ["wikitext2/wiki.test.raw", "wikitext2/wiki.test.tokens", "ptb/ptb.test.txt"]
)
def test_gpt2_ids_match_reference_on_whole_files(
    gpt2: Encoder, reference: tiktoken.Encoding, test_data: Path, name: str
) -> None:
    text = (test_data / "eval" / name).read_text(encoding="utf-8")
    assert gpt2.encode(text) == reference.encode_ordinary(text)
    lines = text.splitlines(keepends=True)
    assert gpt2.encode_batch(lines) == reference.encode_ordinary_batch(lines)


def test_endoftext_inside_text_is_plain_text(gpt2: Encoder) -> None:
    plain = [27, 91, 437, 1659, 5239, 91, 29]  # "<", "|", "end", "of", "text", "|", ">"
    assert gpt2.encode(EOT) == plain
    assert gpt2.encode_batch(["x", EOT, "", EOT * 2]) == [[87], plain, [], gpt2.encode(EOT * 2)]
    assert gpt2.eot_id not in gpt2.encode_batch([f"a {EOT} b"] * 3)[1]
    assert gpt2.decode([gpt2.eot_id]) == EOT


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_gpt2_round_trip(gpt2: Encoder, text: str) -> None:
    assert gpt2.decode(gpt2.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.text(), st.sampled_from([EOT, f" {EOT}\n", "\n\n  "])), max_size=8))
def test_batch_equals_one_by_one(
    gpt2: Encoder, reference: tiktoken.Encoding, texts: list[str]
) -> None:
    # Batches join texts with <|endoftext|>: no text may leak into its neighbour.
    assert gpt2.encode_batch(texts) == [reference.encode_ordinary(t) for t in texts]


def test_trained_vocabulary_size_and_layout(small: Tokenizer) -> None:
    assert small.get_vocab_size() == SMALL_VOCAB
    assert small.token_to_id(EOT) == 0
    assert len(small.get_vocab()) == SMALL_VOCAB
    encoder = encoder_from_tokenizer(small.to_str())
    assert (encoder.vocab_size, encoder.eot_id) == (SMALL_VOCAB, 0)


def test_training_is_deterministic(lambada: list[str], small: Tokenizer) -> None:
    """Same texts -> byte-identical tokenizer.json, here and in a fresh process."""
    assert train_tokenizer(lambada[:2_000], vocab_size=SMALL_VOCAB).to_str() == small.to_str()
    script = (
        "import json, sys; from training.bpe import train_tokenizer; "
        f"texts = json.load(sys.stdin); sys.stdout.write(train_tokenizer(texts, {SMALL_VOCAB})"
        ".to_str())"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(lambada[:2_000]),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert fresh.stdout == small.to_str()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_trained_round_trip(small: Tokenizer, text: str) -> None:
    encoder = _fast(small)
    ids = encoder.encode(text)
    assert encoder.decode(ids) == text
    assert small.decode(ids) == text
    if EOT not in text:  # HF matches added tokens inside text; ours never does
        assert small.encode(text).ids == ids


def test_fast_encoder_matches_hf_on_real_text(
    lambada: list[str], test_data: Path, small: Tokenizer
) -> None:
    wiki = (test_data / "eval/wikitext2/wiki.test.raw").read_text(encoding="utf-8")
    ptb = (test_data / "eval/ptb/ptb.test.txt").read_text(encoding="utf-8")
    texts = [*lambada[2_000:], *wiki.split("\n \n"), *ptb.splitlines()]
    for tokenizer in (small, train_tokenizer(lambada, vocab_size=8_000)):
        fast = _fast(tokenizer)
        assert fast.encode_batch(texts) == [e.ids for e in tokenizer.encode_batch(texts)]


def test_foreign_tokenizer_is_refused(small: Tokenizer) -> None:
    spec = json.loads(small.to_str())
    spec["pre_tokenizer"]["add_prefix_space"] = True
    with pytest.raises(ValueError, match="add_prefix_space"):
        encoder_from_tokenizer(json.dumps(spec))
    other = Tokenizer.from_str(small.to_str())
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="byte-level"):
        encoder_from_tokenizer(other.to_str())


_FAST: dict[str, Encoder] = {}


def _fast(tokenizer: Tokenizer) -> Encoder:
    """encoder_from_tokenizer, built once per tokenizer (hypothesis calls it many times)."""
    spec = tokenizer.to_str()
    if spec not in _FAST:
        _FAST[spec] = encoder_from_tokenizer(spec)
    return _FAST[spec]


def test_closing_an_encoder_ends_its_worker_processes(
    gpt2: Encoder, reference: tiktoken.Encoding, lambada: list[str]
) -> None:
    """Before: the pool lived as long as the encoder, and a spawned worker kept a process
    that was done from exiting."""
    import multiprocessing

    texts = lambada * (2 * (1 << 20) // sum(map(len, lambada)) + 1)  # over 1 MiB: processes
    with gpt2:
        ids = gpt2.encode_batch(texts[:4] + texts, workers=2)
        running = set(multiprocessing.active_children())  # other tests' too, in this worker
    assert len(running - set(multiprocessing.active_children())) == 2  # the pool's have ended
    assert ids[:4] == [reference.encode_ordinary(t) for t in texts[:4]]
    assert gpt2.encode_batch(texts[:2], workers=2) == ids[:2]  # still usable
