"""`tokenize`: a `webtext` version to a vocabulary and train/val token shards."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import ProgressReporter, publish_version
from flows.runner import parts_map
from training.token_shards import ShardSettings, TokenizeOptions, tokenize_dataset
from webtext.config import open_store
from webtext.store import StageResult, Store, VersionRef


@task(cache_policy=NO_CACHE, persist_result=False)
def tokenize_task(
    store: Store, webtext: VersionRef, options: TokenizeOptions, task_runner: str
) -> tuple[StageResult, StageResult]:
    with ProgressReporter(f"Documents of {webtext} encoded") as progress:
        parts = parts_map(task_runner)
        return tokenize_dataset(store, webtext, options, map=parts, progress=progress)


@flow(name="tokenize", log_prints=True)
def tokenize_flow(
    webtext_version: str = "latest",
    gpt2_bpe_dir: str | None = None,
    tokenizer: str | None = None,
    vocab_size: int = 50_257,
    val_fraction: float = 0.005,
    prefix_template: str | None = None,
    store_url: str | None = None,
    task_runner: str = "threads",
) -> VersionRef:
    """Encode a published dataset: with GPT-2's vocabulary when `gpt2_bpe_dir` holds its
    encoder.json and vocab.bpe, with the `tokenizer` version given, else with a BPE of
    `vocab_size` trained on the dataset. `prefix_template` puts conditioning text made
    from each document's Parquet columns before it ("Rating: {rating}.\n"). Each dataset
    part is encoded by a task on `task_runner` (threads, dask, dask://host:8786, ray)."""
    store = open_store(store_url)
    webtext = store.resolve("webtext", webtext_version)
    options = TokenizeOptions(
        gpt2_bpe_dir=gpt2_bpe_dir,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        shards=ShardSettings(val_fraction=val_fraction, prefix_template=prefix_template),
    )
    tokenizer, tokens = tokenize_task(store, webtext, options, task_runner)
    publish_version(store, tokenizer.ref, tokenizer.stats["counts"], tokenizer.reused, "Vocabulary")
    publish_version(store, tokens.ref, tokens.stats["counts"], tokens.reused, "Token shards")
    return tokens.ref
