"""`tokenize`: a `webtext` version to a vocabulary and train/val token shards."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import ProgressReporter, publish_version
from training.token_shards import ShardSettings, encode_version
from training.tokenizer_stage import (
    gpt2_tokenizer_version,
    load_encoder,
    train_tokenizer_version,
)
from webtext.config import open_store
from webtext.store import StageResult, Store, VersionRef


@task(cache_policy=NO_CACHE, persist_result=False)
def vocabulary_task(
    store: Store, webtext: VersionRef, gpt2_bpe_dir: str | None, vocab_size: int
) -> StageResult:
    if gpt2_bpe_dir:
        return gpt2_tokenizer_version(store, Path(gpt2_bpe_dir))
    return train_tokenizer_version(store, webtext, vocab_size)


@task(cache_policy=NO_CACHE, persist_result=False)
def encode_task(
    store: Store, webtext: VersionRef, tokenizer: VersionRef, val_fraction: float
) -> StageResult:
    encoder = load_encoder(store, tokenizer)
    progress = ProgressReporter(f"Documents of {webtext} encoded")
    progress.start(
        sum(f.rows or 0 for f in store.manifest(webtext).files if f.path.startswith("data/"))
    )
    result = encode_version(
        store, webtext, encoder, tokenizer, ShardSettings(val_fraction), progress.advance
    )
    progress.finish()
    return result


@flow(name="tokenize", log_prints=True)
def tokenize_flow(
    webtext_version: str = "latest",
    gpt2_bpe_dir: str | None = None,
    vocab_size: int = 50_257,
    val_fraction: float = 0.005,
    store_url: str | None = None,
) -> VersionRef:
    """Encode a published dataset: with GPT-2's vocabulary when `gpt2_bpe_dir` holds its
    encoder.json and vocab.bpe, else with a BPE of `vocab_size` trained on the dataset."""
    store = open_store(store_url)
    webtext = store.resolve("webtext", webtext_version)
    tokenizer = vocabulary_task(store, webtext, gpt2_bpe_dir, vocab_size)
    publish_version(store, tokenizer.ref, tokenizer.stats["counts"], tokenizer.reused, "Vocabulary")
    tokens = encode_task(store, webtext, tokenizer.ref, val_fraction)
    publish_version(store, tokens.ref, tokens.stats["counts"], tokens.reused, "Token shards")
    return tokens.ref
