"""The evaluation stage end to end: a tiny checkpoint, the real evaluation sets, a version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from versions import tokens_version

from evaluation import zero_shot
from evaluation.models import load_checkpoint_model
from evaluation.paper import PAPER
from evaluation.sampling import SampleSettings
from evaluation.stage import EvaluationPlan, evaluate_checkpoint
from evaluation.zero_shot import EvalSettings
from training.model import GPT, GPTConfig
from webtext.store import Store

TEXTS = [
    f"Document {i}: the city council met on Tuesday to discuss the new park, and residents "
    f"said the plan would help families who live near the river. Number {i * 7}."
    for i in range(40)
]
TASKS = ["lambada", "wikitext2", "ptb", "winograd"]


def make_checkpoint(store: Store, folder) -> None:
    """A tokens version with its tokenizer, and a small GPT checkpoint trained 'on' it."""
    webtext, _, _, tokens = tokens_version(store, TEXTS, vocab_size=400)
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=448, n_layer=2, n_head=2, n_embd=32)
    state = {
        "model": GPT(config).state_dict(),
        "config": vars(config),
        "step": 1,
        "args": {"tokens": store.version_dir(tokens)},
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "ckpt-00000001.pt")
    return webtext


@pytest.fixture
def setup(tmp_path, test_data):
    store = Store(str(tmp_path / "store"))
    webtext = make_checkpoint(store, tmp_path / "run")
    plan = EvaluationPlan(
        tasks=TASKS,
        eval_root=str(test_data / "eval"),
        settings=EvalSettings(limit=3),
        prompts=("The city council",),
        sampling=SampleSettings(max_new_tokens=8),
    )
    return store, webtext, tmp_path / "run", plan


def test_checkpoint_finds_its_tokenizer_through_the_store(setup):
    _, _, run, _ = setup
    model = load_checkpoint_model(run)
    assert model.encoder.vocab_size < 448 and model.max_length == 64


def test_evaluation_writes_a_version_in_the_papers_layout(setup):
    store, webtext, run, plan = setup
    result = evaluate_checkpoint(store, run, plan, webtext)
    assert not result.reused
    folder = store.version_dir(result.ref)
    summary = json.loads(Path(folder, "results.json").read_text())
    results = summary["results"]
    assert set(results) == set(TASKS)
    assert results["lambada"]["metric"] == "acc" and results["lambada"]["items"] == 3
    assert 0 <= results["lambada"]["value"] <= 1 and results["lambada"]["ppl"] > 1
    assert results["wikitext2"]["metric"] == "ppl" and results["wikitext2"]["unit"] == "word"
    # A random model is near uniform over the vocabulary, per token.
    assert 100 < results["wikitext2"]["token_perplexity"] < 1_000
    assert results["winograd"]["metric"] == "acc"
    table = summary["paper_table"]
    assert [row["model"] for row in table[:4]] == list(PAPER)
    assert table[-1]["WikiText2 (PPL)"] == round(results["wikitext2"]["value"], 4)
    assert table[-1]["1BW (PPL)"] is None  # not run
    assert "| GPT-2 1542M |" in Path(folder, "table.md").read_text()
    samples = [json.loads(line) for line in Path(folder, "samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"] == "The city council" and samples[0]["seed"] == 0
    overlap = summary["decontamination"]["lambada"]
    assert overlap["ngrams"] > 0 and overlap["fraction"] < 0.01  # these sets never met TEXTS
    manifest = store.manifest(result.ref)
    assert {p.stage for p in manifest.parents} == {"tokens", "ngram-filter"}
    # The same evaluation again: the same version, nothing scored.
    assert evaluate_checkpoint(store, run, plan, webtext).reused


def test_a_killed_evaluation_resumes_with_the_sets_it_finished(setup, monkeypatch):
    store, _, run, plan = setup
    import evaluation.stage as stage

    original = zero_shot.evaluate_set
    scored: list[str] = []

    def fail_on_ptb(model, eval_set, settings, on_progress=None):
        if eval_set.name == "ptb" and not scored.count("resumed"):
            raise RuntimeError("killed")
        scored.append(eval_set.name)
        return original(model, eval_set, settings, on_progress)

    monkeypatch.setattr(stage, "evaluate_set", fail_on_ptb)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate_checkpoint(store, run, plan)
    assert scored == ["lambada", "wikitext2"]
    scored.append("resumed")
    result = evaluate_checkpoint(store, run, plan)
    assert scored[3:] == ["ptb", "winograd"]  # the finished sets were not scored again
    assert set(
        json.loads(store.fs.cat_file(store.url(result.ref, "results.json")))["results"]
    ) == set(TASKS)


def test_a_missing_set_is_named(setup, tmp_path):
    store, _, run, _ = setup
    missing = EvaluationPlan(tasks=["enwik8"], eval_root=str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="enwik8"):
        evaluate_checkpoint(store, run, missing)
    with pytest.raises(ValueError, match="unknown task"):
        evaluate_checkpoint(store, run, EvaluationPlan(tasks=["squad"], eval_root="."))


@pytest.mark.usefixtures("prefect_server")
def test_the_flow_publishes_the_table_and_samples(setup):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.evaluate import evaluate_zero_shot_flow

    store, _, run, plan = setup
    state = evaluate_zero_shot_flow(
        checkpoint=str(run),
        tasks=["lambada", "winograd"],
        eval_data=plan.eval_root,
        limit=10,
        prompts=["Hello"],
        max_new_tokens=4,
        store_url=store.root_url,
        return_state=True,
    )
    assert state.result().stage == "evaluation"
    keys = ["evaluate-zero-shot-paper-table", "evaluate-zero-shot-samples", "evaluation-counts"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    # The demo's evaluation shares the server: keep this run's artifacts.
    artifacts = {a.key: a for a in found if a.flow_run_id == state.state_details.flow_run_id}
    assert set(artifacts) == set(keys)
    table = json.loads(artifacts["evaluate-zero-shot-paper-table"].data)
    assert table[3]["LAMBADA (ACC)"] == 63.24 and table[-1]["model"].startswith("ours")
    assert "Hello" in artifacts["evaluate-zero-shot-samples"].data
