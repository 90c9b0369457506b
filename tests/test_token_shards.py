"""Token shards: format, split, resume, the training reader, and the tokenize stage."""

from __future__ import annotations

import struct
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest
from versions import webtext_version

from training import token_shards
from training.token_shards import (
    HEADER,
    ShardError,
    ShardSettings,
    TokenDataset,
    TokenShard,
    encode_version,
    split_of,
)
from training.tokenizer_stage import load_encoder, train_tokenizer_version
from webtext.store import Store

TEXTS = [text for text in topics.values() if len(text) > 2_000][:60]


@pytest.fixture
def tokenized(tmp_path):
    store = Store(str(tmp_path / "store"))
    webtext = webtext_version(store, TEXTS, parts=2)
    vocabulary = train_tokenizer_version(store, webtext, vocab_size=2_000)
    encoder = load_encoder(store, vocabulary.ref)
    result = encode_version(store, webtext, encoder, vocabulary.ref, ShardSettings(0.2))
    return store, webtext, encoder, result


def test_shards_hold_every_document_once_with_eot(tokenized) -> None:
    store, _, encoder, result = tokenized
    folder = store.version_dir(result.ref)
    decoded = []
    for split in ("train", "val"):
        for path in sorted((Path(folder) / "tokens" / split).glob("*.bin")):
            shard = TokenShard(path)
            assert shard.vocab_size == encoder.vocab_size
            ids = shard.tokens.tolist()
            documents = []
            start = 0
            for position, token in enumerate(ids):
                if token == encoder.eot_id:
                    documents.append(encoder.decode(ids[start:position]))
                    start = position + 1
            assert start == len(ids)  # every document ends with <|endoftext|>
            decoded += documents
    assert sorted(decoded) == sorted(TEXTS)
    counts = result.stats["counts"]
    assert counts["train_tokens"] > counts["val_tokens"] > 0


def test_the_split_is_stable_and_about_the_fraction() -> None:
    ids = [f"doc-{i}" for i in range(20_000)]
    val = sum(split_of(doc, 0.1) == "val" for doc in ids)
    assert 1_800 < val < 2_200
    assert [split_of(doc, 0.1) for doc in ids[:50]] == [split_of(doc, 0.1) for doc in ids[:50]]
    assert all(split_of(doc, 0.0) == "train" for doc in ids[:100])


def test_the_reader_gives_shifted_windows(tokenized) -> None:
    store, _, _, result = tokenized
    data = TokenDataset(store.version_dir(result.ref), "train")
    x, y = data.batch(4, 32, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 32)
    assert (x[:, 1:] == y[:, :-1]).all()


def test_bad_files_are_refused_clearly(tmp_path) -> None:
    bogus = tmp_path / "part-00000.bin"
    bogus.write_bytes(b"not a shard at all, but long enough for a header")
    with pytest.raises(ShardError, match="not a token shard"):
        TokenShard(bogus)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(HEADER.pack(token_shards.MAGIC, 1, 100, 50) + b"\x00" * 10)
    with pytest.raises(ShardError, match="header says"):
        TokenShard(cut)
    future = tmp_path / "future.bin"
    future.write_bytes(struct.pack("<8sIIQ8x", token_shards.MAGIC, 99, 100, 0))
    with pytest.raises(ShardError, match="format version 99"):
        TokenShard(future)


def test_an_interrupted_encoding_resumes_at_the_unfinished_part(tmp_path, monkeypatch) -> None:
    store = Store(str(tmp_path / "store"))
    webtext = webtext_version(store, TEXTS, parts=3)
    vocabulary = train_tokenizer_version(store, webtext, vocab_size=1_000)
    encoder = load_encoder(store, vocabulary.ref)
    original = token_shards._encode_part
    done: list = []

    def fail_after_first(*args, **kwargs):
        if done:
            raise RuntimeError("killed")
        result = original(*args, **kwargs)
        done.append(args[-1][0])  # the part's key
        return result

    monkeypatch.setattr(token_shards, "_encode_part", fail_after_first)
    with pytest.raises(RuntimeError):
        encode_version(store, webtext, encoder, vocabulary.ref)
    encoded: list = []

    def record(*args, **kwargs):
        encoded.append(args[-1][0])
        return original(*args, **kwargs)

    monkeypatch.setattr(token_shards, "_encode_part", record)
    result = encode_version(store, webtext, encoder, vocabulary.ref)
    assert done[0] not in encoded and len(encoded) == 2
    assert result.stats["counts"]["parts"] == 3
    assert encode_version(store, webtext, encoder, vocabulary.ref).reused


def test_an_incremental_version_is_encoded_with_the_versions_before_it(tmp_path) -> None:
    """A webtext version naming an earlier one as parent: training sees both."""
    store = Store(str(tmp_path / "store"))
    first = webtext_version(store, TEXTS[:4])
    new_text = "A new month brings new pages."
    second = webtext_version(store, [new_text], parents=(first,))
    vocabulary = train_tokenizer_version(store, second, vocab_size=1_000)
    encoder = load_encoder(store, vocabulary.ref)
    result = encode_version(store, second, encoder, vocabulary.ref, ShardSettings(0.0))
    names = [f.path for f in store.manifest(result.ref).files if f.path.startswith("tokens/train")]
    assert len(names) == 2 and any(first.version in n for n in names)
    dataset = TokenDataset(store.version_dir(result.ref))
    expected = sum(len(encoder.encode(t)) + 1 for t in [*TEXTS[:4], new_text])
    assert len(dataset) == expected
