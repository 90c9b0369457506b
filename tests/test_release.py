"""The output dataset (`outputs`) and its baseline detectors (`detection`)."""

from __future__ import annotations

import json
import random
from pydoc_data.topics import topics

import pytest
import torch
from versions import webtext_version

import release.outputs
from release.detection import (
    LENGTH_PNG,
    TABLE,
    accuracy_by_length,
    detect,
    length_buckets,
    tfidf_detector,
    threshold_detector,
)
from release.outputs import SPLITS, OutputOptions, publish_outputs, read_records
from training.model import CONFIGS, GPT
from training.token_shards import ShardSettings, encode_version
from training.tokenizer_stage import load_encoder, train_tokenizer_version
from webtext.store import Store


def _prose(paragraph: str) -> bool:
    """Running text, not a grammar rule or a code example (those are indented)."""
    letters = sum(c.isalpha() or c.isspace() for c in paragraph)
    return len(paragraph) > 200 and not paragraph[0].isspace() and letters > 0.9 * len(paragraph)


# Paragraphs of CPython's documentation, each once (topics repeat some), and the prose ones.
PARAGRAPHS = list(
    dict.fromkeys(p for text in topics.values() for p in text.split("\n\n") if len(p) > 100)
)
PROSE = [p for p in PARAGRAPHS if _prose(p)]


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """A store with documentation paragraphs, their tokens (half held out) and a `model`
    version of random weights: its pure samples are noise, easy to tell from prose."""
    store = Store(str(tmp_path_factory.mktemp("release") / "store"))
    webtext = webtext_version(store, PROSE)
    tokenizer = train_tokenizer_version(store, webtext, vocab_size=500).ref
    encoder = load_encoder(store, tokenizer)
    tokens = encode_version(store, webtext, encoder, tokenizer, ShardSettings(0.5)).ref
    torch.manual_seed(0)
    config = {**CONFIGS["tiny"].__dict__, "vocab_size": 512}
    gpt = GPT(CONFIGS["tiny"].__class__(**config))
    with store.write("model", {"random": True}, "test", (tokens,)) as out:
        with out.open("checkpoint.pt") as handle:
            torch.save({"model": gpt.state_dict(), "config": config, "step": 0}, handle)
        model = out.ref
    return store, model, tokens


def test_outputs_are_the_reference_format_split_three_ways(random_model, test_data) -> None:
    store, model, tokens = random_model
    options = OutputOptions(train_samples=20, valid_samples=8, test_samples=10, max_length=48)
    result = publish_outputs(store, model, options)
    manifest = store.manifest(result.ref)
    assert manifest.parents == (model, tokens)
    reference = test_data / "eval" / "gpt2-output" / "small-117M-k40.test.head.jsonl"
    keys = set(json.loads(reference.read_text().splitlines()[0]))
    wanted = {"train": 20, "valid": 8, "test": 10}
    for source in ("temperature-1", "top-k-40", "webtext"):
        for split in SPLITS:
            rows = read_records(store, result.ref, source, split)
            assert len(rows) == wanted[split], (source, split)
            assert all(set(row) == keys for row in rows)
            assert [row["id"] for row in rows] == list(range(wanted[split]))
            assert all(0 <= row["length"] <= 48 for row in rows)  # a sample may end at once
            if source != "webtext":
                assert all(row["ended"] == (row["length"] < 48) for row in rows)
    counts = manifest.stats["counts"]
    assert counts["top-k-40.train"] == 20 and counts["webtext.test"] == 10
    too_many = OutputOptions(train_samples=500, valid_samples=8, test_samples=10)
    with pytest.raises(ValueError, match=rf"{tokens} holds \d+ held-out documents;.* needs 518"):
        publish_outputs(store, model, too_many)
    # The WebText subset is the held-out documents, each once, none of the training ones.
    encoder = load_encoder(store, store.manifest(tokens).parents[1])
    held_out = {
        encoder.decode(ids[:48])
        for ids in release.outputs.held_out_documents(store, tokens, encoder.eot_id)
    }
    texts = [r["text"] for s in SPLITS for r in read_records(store, result.ref, "webtext", s)]
    assert len(set(texts)) == len(texts) and set(texts) <= held_out
    assert publish_outputs(store, model, options).reused


def test_a_killed_run_resumes_at_the_first_unfinished_file(random_model, monkeypatch) -> None:
    store, model, _ = random_model
    options = OutputOptions(train_samples=3, valid_samples=2, test_samples=2, max_length=8)
    made: list[str] = []
    original = release.outputs._sample_records

    def dies_on_the_fourth(lm, settings, name, split, count, opts):
        made.append(f"{name}.{split}")
        if len(made) == 4:
            raise KeyboardInterrupt  # a kill, mid-run
        return original(lm, settings, name, split, count, opts)

    monkeypatch.setattr(release.outputs, "_sample_records", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        publish_outputs(store, model, options)
    made.clear()
    monkeypatch.setattr(release.outputs, "_sample_records", original)
    result = publish_outputs(store, model, options)
    assert not result.reused
    assert result.stats["counts"]["temperature-1.train"] == 3
    assert result.stats["counts"]["top-k-40.test"] == 2


def test_a_detector_tells_random_weights_samples_from_prose(random_model) -> None:
    store, model, _ = random_model
    options = OutputOptions(train_samples=80, valid_samples=16, test_samples=30, max_length=96)
    outputs = publish_outputs(store, model, options).ref
    result = detect(store, outputs)
    results = json.loads(store.fs.cat_file(f"{store.version_dir(result.ref)}/results.json"))
    for setting in ("temperature-1", "top-k-40"):
        assert results["results"][setting]["tfidf"]["test_accuracy"] >= 0.95, setting
        assert 0 <= results["results"][setting]["zero_shot"]["test_accuracy"] <= 1
    table = store.fs.cat_file(f"{store.version_dir(result.ref)}/{TABLE}").decode()
    assert table.splitlines()[0] == "| model | Temperature 1 | Top-K 40 |"
    assert "| GPT-2 117M (OpenAI, TF-IDF) | 88.29 | 96.79 |" in table
    assert f"{model} (TF-IDF)" in table and f"{model} (zero-shot log-prob)" in table
    png = store.fs.cat_file(f"{store.version_dir(result.ref)}/{LENGTH_PNG}")
    assert png.startswith(b"\x89PNG")
    assert detect(store, outputs).reused


def test_a_detector_on_two_identical_sources_stays_near_chance() -> None:
    """Both classes drawn from one pool: nothing to learn, so ~50%. A leak between splits
    or labels would show here as a high score."""
    pool = list(PARAGRAPHS)
    random.Random(0).shuffle(pool)
    sizes = {"train": 200, "valid": 60, "test": 200}
    real, generated, start = {}, {}, 0
    for split, n in sizes.items():
        real[split], generated[split] = pool[start : start + n], pool[start + n : start + 2 * n]
        start += 2 * n
    result = tfidf_detector(real, generated)
    assert 0.4 <= result.test_accuracy <= 0.6, result.test_accuracy
    scores = {split: [len(t) for t in texts] for split, texts in real.items()}
    others = {split: [len(t) for t in texts] for split, texts in generated.items()}
    assert 0.4 <= threshold_detector(scores, others).test_accuracy <= 0.6


def test_the_threshold_finds_the_side_and_the_cut() -> None:
    low = {"train": [1.0, 2.0, 3.0], "valid": [2.5], "test": [0.5, 2.9]}
    high = {"train": [5.0, 6.0, 7.0], "valid": [5.5], "test": [8.0, 4.1]}
    above = threshold_detector(low, high)
    assert above.choice == {"threshold": 4.0, "generated_above": 1.0}
    assert above.test_accuracy == 1.0
    below = threshold_detector(high, low)  # generated texts score lower
    assert below.choice["generated_above"] == 0.0 and below.test_accuracy == 1.0


def test_accuracy_by_length_buckets() -> None:
    assert length_buckets(100) == [0, 16, 32, 64, 100]
    rows = accuracy_by_length([5, 10, 20, 100], [True, False, True, True], [0, 16, 32, 64, 100])
    assert rows == [
        {"tokens": "1-16", "texts": 2, "accuracy": 0.5},
        {"tokens": "17-32", "texts": 1, "accuracy": 1.0},
        {"tokens": "65-100", "texts": 1, "accuracy": 1.0},
    ]


@pytest.mark.usefixtures("prefect_server")
def test_the_flow_publishes_the_table_and_the_length_plot(random_model) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.release import outputs_flow

    store, model, _ = random_model
    state = outputs_flow(
        model_version=model.version,
        train_samples=6,
        valid_samples=3,
        test_samples=4,
        max_length=16,
        store_url=store.root_url,
        return_state=True,
    )
    outputs = state.result()
    assert outputs.stage == "outputs" and store.manifest(outputs).parents[0] == model
    keys = ["outputs-detection-table", "outputs-detection-by-length", "detection-counts"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    artifacts = {a.key: a for a in found if a.flow_run_id == state.state_details.flow_run_id}
    assert set(artifacts) == set(keys)
    table = json.loads(artifacts["outputs-detection-table"].data)
    assert table[0] == {"model": "GPT-2 117M (OpenAI, TF-IDF)", "Temperature 1": 88.29,
                        "Top-K 40": 96.79}  # fmt: skip
    assert table[-2]["model"] == f"{model} (TF-IDF)"
    assert artifacts["outputs-detection-by-length"].data.startswith("data:image/png;base64,")


def test_webtext_outputs_prints_the_table(random_model) -> None:
    from typer.testing import CliRunner

    from webtext_app import cli

    store, model, _ = random_model
    args = ["outputs", "--model", model.version, "--store", store.root_url, "--max-length", "12"]
    args += ["--train-samples", "5", "--valid-samples", "2", "--test-samples", "3"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "| model | Temperature 1 | Top-K 40 |" in output
    assert f"| {model} (TF-IDF) |" in output
    assert "outputs version outputs/" in output and "detection version detection/" in output
