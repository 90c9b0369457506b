"""Fine-tuning a model version on new data, conditioning prefixes, and the model card."""

from __future__ import annotations

import math

import pytest
from versions import tokens_version, webtext_version

from training.launch import read_metrics, train_model
from training.settings import TrainSettings
from training.token_shards import ShardSettings, TokenDataset, TokenizeOptions, tokenize_dataset
from training.tokenizer_stage import load_encoder, train_tokenizer_version
from webtext.store import Store

# The first dataset: news-like reports (what the "pretrained" model learns).
NEWS = [
    f"Report {i}: the river rose after a week of rain, and the town opened its shelters to "
    f"families from the low streets. Volunteers counted {i * 3} cots by evening."
    for i in range(40)
]
# The second: product reviews with a rating and a category, one rating missing.
REVIEWS = [
    f"The {thing} arrived after a week. It works, and the town shop had none; "
    f"I would buy it again for the {i} families on our street."
    for i, thing in enumerate(["kettle", "lamp", "radio", "blanket"] * 8)
]
RATINGS = [str(1 + i % 5) if i != 3 else None for i in range(len(REVIEWS))]
CATEGORIES = ["home" if i % 2 else "kitchen" for i in range(len(REVIEWS))]
PREFIX = "Rating: {rating}. Category: {category}.\n"
# The demo's model (tiny), a few steps at a small context so CPU runs take seconds.
TINY = {"model": "tiny", "block_size": 32, "batch_size": 8, "warmup_steps": 2}
TINY |= {"eval_interval": 10, "eval_steps": 2, "lr": 3e-3, "min_lr": 3e-4}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A store with a tiny model trained on NEWS, and REVIEWS tokenized with its vocabulary
    under a rating/category prefix."""
    root = tmp_path_factory.mktemp("fine-tune")
    store = Store(str(root / "store"))
    _, tokenizer, _, news_tokens = tokens_version(store, NEWS, vocab_size=300)
    model = train_model(
        store,
        news_tokens,
        TrainSettings(**TINY, max_steps=40),
        gpus_per_node=0,
        runs_dir=root / "runs",
    ).ref
    reviews = webtext_version(store, REVIEWS, columns={"rating": RATINGS, "category": CATEGORIES})
    options = TokenizeOptions(
        tokenizer=tokenizer.version, shards=ShardSettings(0.25, prefix_template=PREFIX)
    )
    _, review_tokens = tokenize_dataset(store, reviews, options)
    return store, root, tokenizer, model, reviews, review_tokens.ref


def test_the_prefix_is_rendered_from_columns_and_a_null_is_counted(pretrained) -> None:
    store, _, tokenizer, _, _, review_tokens = pretrained
    manifest = store.manifest(review_tokens)
    assert manifest.parameters["prefix_template"] == PREFIX
    assert tokenizer in manifest.parents  # encoded with the model's vocabulary, not a new one
    assert manifest.stats["counts"]["documents_without_prefix"] == 1
    encoder = load_encoder(store, tokenizer)
    documents = []
    for split in ("train", "val"):
        ids = TokenDataset(store.version_dir(review_tokens), split).shards[0].tokens.tolist()
        documents += encoder.decode(ids).split("<|endoftext|>")[:-1]
    assert len(documents) == len(REVIEWS)
    assert f"Rating: 1. Category: kitchen.\n{REVIEWS[0]}" in documents
    assert REVIEWS[3] in documents  # no rating: no prefix, the text kept
    with pytest.raises(ValueError, match="no column stars"):
        tokenize_dataset(
            store,
            store.resolve("webtext"),
            TokenizeOptions(
                tokenizer=tokenizer.version, shards=ShardSettings(0.25, prefix_template="{stars}")
            ),
        )


def test_fine_tuning_starts_from_the_model_and_names_it(pretrained) -> None:
    store, root, _, model, _, review_tokens = pretrained
    settings = TrainSettings(**TINY, max_steps=12, init_from="latest")
    tuned = train_model(store, review_tokens, settings, gpus_per_node=0, runs_dir=root / "runs")
    manifest = store.manifest(tuned.ref)
    assert manifest.parents == (review_tokens, model)
    assert manifest.parameters["init_from"] == model.version  # "latest" resolved

    run = root / "runs" / f"tiny-{tuned.ref.version}"
    losses = [record["loss"] for record in read_metrics(run / "metrics.jsonl")]
    scratch = train_model(
        store,
        review_tokens,
        TrainSettings(**TINY, max_steps=1),
        gpus_per_node=0,
        runs_dir=root / "runs",
    )
    scratch_first = store.manifest(scratch.ref).stats["counts"]["loss"]
    # Random weights start near log(vocabulary); the pretrained ones well below from step 1,
    # and they keep learning the new data.
    assert scratch_first > math.log(300) - 0.3
    assert losses[0] < scratch_first - 1.0, (losses[0], scratch_first)
    assert losses[-1] < losses[0]

    card = store.fs.cat_file(f"{store.version_dir(tuned.ref)}/README.md").decode()
    assert card == store.fs.cat_file(f"{store.version_dir(tuned.ref)}/hf/README.md").decode()
    assert f"fine-tuned from `{model}`" in card
    assert f"| tokens seen | {12 * 8 * 32:,} |" in card  # steps x batch x block
    assert str(review_tokens) in card and "prefixed with" in card

    # Rerun: the same version, no run.
    settings = TrainSettings(**TINY, max_steps=12, init_from=model.version)
    again = train_model(store, review_tokens, settings, gpus_per_node=0, runs_dir=root / "runs")
    assert again.reused and again.ref == tuned.ref


def test_fine_tuning_refuses_another_vocabulary_or_size(pretrained) -> None:
    store, root, tokenizer, model, reviews, _ = pretrained
    other = train_tokenizer_version(store, reviews, vocab_size=280).ref
    _, other_tokens = tokenize_dataset(store, reviews, TokenizeOptions(tokenizer=other.version))
    with pytest.raises(ValueError) as refused:
        train_model(
            store,
            other_tokens.ref,
            TrainSettings(**TINY, max_steps=2, init_from=model.version),
            gpus_per_node=0,
            runs_dir=root / "runs",
        )
    message = str(refused.value)
    assert str(other) in message and str(tokenizer) in message and "another vocabulary" in message
    with pytest.raises(ValueError, match="is GPT-2 tiny; the settings say 124M"):
        train_model(
            store,
            other_tokens.ref,
            TrainSettings(init_from=model.version),
            gpus_per_node=0,
            runs_dir=root / "runs",
        )


def test_the_model_card_states_data_tokenizer_size_and_caveats(pretrained) -> None:
    store, _, tokenizer, model, _, _ = pretrained
    manifest = store.manifest(model)
    card = store.fs.cat_file(f"{store.version_dir(model)}/README.md").decode()
    assert card.startswith("---\nlicense: mit\n")
    data = next(p for p in store.manifest(manifest.parents[0]).parents if p.stage == "webtext")
    assert f"`{data}`, {len(NEWS)} documents" in card
    assert store.url(data, "README.md") in card
    assert f"`{tokenizer}` (trained), 300 ids" in card
    assert f"{manifest.stats['counts']['parameters']:,} parameters" in card
    assert "| optimizer steps | 40 of 40 |" in card
    assert f"{manifest.stats['counts']['loss']:.4f} nats/token" in card
    assert "biases" in card and "Licence" in card
    assert "None when this card was written" in card


def test_webtext_card_adds_the_evaluations_made_since(pretrained, tmp_path) -> None:
    from typer.testing import CliRunner

    from webtext_app import cli

    store, _, _, model, _, _ = pretrained
    table = [
        {"model": "GPT-2 117M", "LAMBADA (PPL)": 35.13},
        {"model": "ours", "LAMBADA (PPL)": 9e4},
    ]
    with store.write("evaluation", {"model": str(model)}, "test", (model,)) as out:
        out.put("table.md", b"")
        out.stats["paper_table"] = table
    evaluation = store.resolve("evaluation")
    written = tmp_path / "README.md"
    result = CliRunner().invoke(
        cli.app, ["card", model.version, "--out", str(written), "--store", store.root_url]
    )
    assert result.exit_code == 0, result.output
    card = written.read_text()
    assert f"Zero-shot, `{evaluation}`" in card
    assert "| ours | 90000.0 |" in card
    published = store.fs.cat_file(f"{store.version_dir(model)}/README.md").decode()
    assert card.split("## Evaluation")[0] == published.split("## Evaluation")[0]
