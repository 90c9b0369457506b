"""The evaluation stage end to end: a tiny model version (or checkpoint), the real evaluation
sets, a version; and the same model evaluated from a copy of its versions elsewhere."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from versions import tokens_version

from evaluation import zero_shot
from evaluation.models import load_model_version
from evaluation.paper import PAPER
from evaluation.sampling import SampleSettings
from evaluation.stage import EvaluationPlan, evaluate_model
from evaluation.zero_shot import EvalSettings
from training.launch import METRICS, publish_model, training_parameters
from training.model import GPT, GPTConfig
from training.settings import TrainSettings
from webtext.store import Store, VersionRef

TEXTS = [
    f"Document {i}: the city council met on Tuesday to discuss the new park, and residents "
    f"said the plan would help families who live near the river. Number {i * 7}."
    for i in range(40)
]
TASKS = ["lambada", "wikitext2", "ptb", "winograd"]


@dataclass(frozen=True)
class Setup:
    store: Store
    webtext: VersionRef
    model: VersionRef  # trained on tokens encoded with `tokenizer`
    tokenizer: Path  # the tokenizer version's folder
    run: Path  # the training run's folder: the model's checkpoint outside the store
    plan: EvaluationPlan


def make_model(store: Store, run: Path) -> tuple[VersionRef, VersionRef, VersionRef]:
    """(webtext, tokenizer, model): a tokens version with its tokenizer, a small GPT
    checkpoint trained 'on' it in `run`, published as a `model` version."""
    webtext, tokenizer, _, tokens = tokens_version(store, TEXTS, vocab_size=400)
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=448, n_layer=2, n_head=2, n_embd=32)
    state = {
        "model": GPT(config).state_dict(),
        "config": vars(config),
        "step": 1,
        "args": {"tokens": store.version_dir(tokens)},
    }
    run.mkdir(parents=True, exist_ok=True)
    torch.save(state, run / "ckpt-00000001.pt")
    (run / METRICS).write_text('{"step": 1, "loss": 6.0}\n')
    parameters = training_parameters(TrainSettings(model="tiny", max_steps=1))
    return webtext, tokenizer, publish_model(store, (tokens,), parameters, run).ref


@pytest.fixture
def setup(tmp_path, test_data) -> Setup:
    store = Store(str(tmp_path / "store"))
    webtext, tokenizer, model = make_model(store, tmp_path / "run")
    plan = EvaluationPlan(
        tasks=TASKS,
        eval_root=str(test_data / "eval"),
        settings=EvalSettings(limit=3),
        prompts=("The city council",),
        sampling=SampleSettings(max_new_tokens=8),
    )
    return Setup(store, webtext, model, Path(store.version_dir(tokenizer)), tmp_path / "run", plan)


def results(store: Store, ref: VersionRef) -> dict:
    return json.loads(store.fs.cat_file(store.url(ref, "results.json")))


def test_a_model_version_finds_its_tokenizer_through_its_lineage(setup):
    model = load_model_version(setup.store, setup.model)
    assert model.encoder.vocab_size < 448 and model.max_length == 64
    assert model.name == str(setup.model)


def test_evaluation_writes_a_version_in_the_papers_layout(setup):
    store, plan = setup.store, setup.plan
    result = evaluate_model(store, setup.model, plan, setup.webtext)
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
    assert {p.stage for p in manifest.parents} == {"model", "ngram-filter"}
    assert setup.model in manifest.parents and manifest.parameters["model"] == str(setup.model)
    # The same evaluation again: the same version, nothing scored.
    assert evaluate_model(store, setup.model, plan, setup.webtext).reused


def test_a_pulled_model_version_evaluates_the_same_without_its_original_store(setup, tmp_path):
    """The model, its tokens and its tokenizer copied to another store; the original store
    moved away (the checkpoint's recorded tokens path is gone): the copy evaluates alone,
    to the same version and the same numbers."""
    original = evaluate_model(setup.store, setup.model, setup.plan)
    (tokens,) = setup.store.manifest(setup.model).parents
    tokenizer = next(p for p in setup.store.manifest(tokens).parents if p.stage == "tokenizer")
    copy = Store(str(tmp_path / "elsewhere" / "store"))
    for ref in (setup.model, tokens, tokenizer):
        setup.store.pull(ref, copy.root_url)
    Path(setup.store.root).rename(tmp_path / "moved-away")

    pulled = evaluate_model(copy, setup.model, setup.plan)
    assert not pulled.reused and pulled.ref == original.ref
    assert copy.manifest(pulled.ref).parents == (setup.model,)
    assert (
        results(copy, pulled.ref)["results"]
        == results(Store(str(tmp_path / "moved-away")), original.ref)["results"]
    )


def test_a_checkpoint_outside_the_store_needs_its_tokenizer(setup):
    """A bare checkpoint is named by its sha256 and its tokenizer's, and scores as the model
    version holding its weights does."""
    store, plan = setup.store, setup.plan
    with pytest.raises(ValueError, match="needs its tokenizer"):
        evaluate_model(store, setup.run, plan)
    with pytest.raises(ValueError, match="brings its tokenizer"):
        evaluate_model(store, setup.model, plan, tokenizer=setup.tokenizer)
    bare = evaluate_model(store, setup.run, plan, tokenizer=setup.tokenizer)
    manifest = store.manifest(bare.ref)
    assert manifest.parents == ()
    assert manifest.parameters["checkpoint"]["name"] == "ckpt-00000001.pt"
    assert set(manifest.parameters["tokenizer"]) == {"tokenizer.json"}
    assert str(setup.run) not in json.dumps(manifest.parameters)  # no paths in the identity
    version = evaluate_model(store, setup.model, plan)
    assert results(store, bare.ref)["results"] == results(store, version.ref)["results"]


def test_a_killed_evaluation_resumes_with_the_sets_it_finished(setup, monkeypatch):
    store, plan = setup.store, setup.plan
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
        evaluate_model(store, setup.model, plan)
    assert scored == ["lambada", "wikitext2"]
    scored.append("resumed")
    result = evaluate_model(store, setup.model, plan)
    assert scored[3:] == ["ptb", "winograd"]  # the finished sets were not scored again
    assert set(results(store, result.ref)["results"]) == set(TASKS)


def test_generation_tasks_in_a_version(setup, test_data):
    """NQ, WMT-14 and CoQA (its one-story fixture) through the stage: answers generated,
    scored, kept by item, and laid out beside the paper's figures."""
    eval_root = test_data / "eval"
    plan = EvaluationPlan.from_user(
        {
            "tasks": ["nq_open,wmt14-fr-en", "coqa"],
            "eval_data": str(eval_root),
            "paths": {"coqa": str(eval_root / "coqa" / "coqa-dev-v1.0.one-story.json")},
            "limit": 3,
            "prompts": ["Hello"],
            "max_new_tokens": 4,
        }
    )
    result = evaluate_model(setup.store, setup.model, plan)
    summary = results(setup.store, result.ref)
    found = summary["results"]
    assert [found[t]["metric"] for t in ("nq_open", "wmt14-fr-en", "coqa")] == ["em", "bleu", "f1"]
    assert list(found["nq_open"]["answers"]) == ["line 6", "line 7", "line 8"]
    assert found["nq_open"]["decoding"]["stop"] == ["\n"]
    assert list(found["coqa"]["answers"]) == [
        f"3dr23u6we5exclen4th8uq9rb42tel:{t}" for t in (1, 2, 3)
    ]
    assert 0 <= found["coqa"]["value"] <= 1 and 0 <= found["coqa"]["em"] <= 1
    assert found["wmt14-fr-en"]["signature"].startswith("nrefs:1|case:mixed")
    assert all("\n" not in answer for answer in found["wmt14-fr-en"]["answers"].values())
    rows = {row["task"]: row for row in summary["other_tasks_table"]}
    ours = f"ours ({setup.model})"
    assert rows["WMT-14 Fr-En (BLEU, newstest2014)"][ours] == round(
        found["wmt14-fr-en"]["value"], 2
    )
    assert rows["CoQA (F1, dev)"][ours] == round(100 * found["coqa"]["value"], 2)
    assert rows["WMT-14 En-Fr (BLEU, newstest2014)"][ours] is None
    table = Path(setup.store.version_dir(result.ref), "table.md").read_text()
    assert "| GPT-2 1542M |" in table and "| CoQA (F1, dev) | 55.0 |" in table
    # The WMT folder's files are in the version's identity.
    assert len(setup.store.manifest(result.ref).parameters["tasks"]["wmt14-fr-en"]["sha256"]) == 64


def test_a_missing_set_is_named(setup, tmp_path):
    store, model = setup.store, setup.model
    missing = EvaluationPlan(tasks=["enwik8"], eval_root=str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="enwik8"):
        evaluate_model(store, model, missing)
    with pytest.raises(ValueError, match="unknown task"):
        evaluate_model(store, model, EvaluationPlan(tasks=["squad"], eval_root="."))


@pytest.mark.usefixtures("prefect_server")
def test_the_flow_publishes_the_table_and_samples_of_a_version_or_an_hf_folder(setup):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.evaluate import evaluate_zero_shot_flow

    store, plan = setup.store, setup.plan
    state = evaluate_zero_shot_flow(
        checkpoint=setup.model.version,
        tasks=["lambada", "winograd", "nq_open"],
        eval_data=plan.eval_root,
        limit=10,
        prompts=["Hello"],
        max_new_tokens=4,
        store_url=store.root_url,
        return_state=True,
    )
    assert state.result().stage == "evaluation"
    keys = [
        "evaluate-zero-shot-paper-table",
        "evaluate-zero-shot-other-tasks",
        "evaluate-zero-shot-samples",
        "evaluation-counts",
    ]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    # The demo's evaluation shares the server: keep this run's artifacts.
    artifacts = {a.key: a for a in found if a.flow_run_id == state.state_details.flow_run_id}
    assert set(artifacts) == set(keys)
    table = json.loads(artifacts["evaluate-zero-shot-paper-table"].data)
    assert table[3]["LAMBADA (ACC, stop-word filter)"] == 63.24
    assert table[3]["LAMBADA (ACC)"] == 52.66 and table[-1]["model"].startswith("ours")
    other = {
        row["task"]: row for row in json.loads(artifacts["evaluate-zero-shot-other-tasks"].data)
    }
    nq = other["Natural Questions (EM %)"]
    assert nq["GPT-2 1542M"] == 4.1 and 0 <= nq[f"ours ({setup.model})"] <= 100
    assert other["CoQA (F1, dev)"][f"ours ({setup.model})"] is None  # not run
    assert "Hello" in artifacts["evaluate-zero-shot-samples"].data

    # Any GPT-2 folder in place of the checkpoint: the model version's own HF export.
    hf = f"{store.version_dir(setup.model)}/hf"
    from_hf = evaluate_zero_shot_flow(
        hf_model=hf,
        tasks=["lambada", "winograd"],
        eval_data=plan.eval_root,
        limit=10,
        prompts=["Hello"],
        max_new_tokens=4,
        store_url=store.root_url,
    )
    assert from_hf != state.result() and "hf_model" in store.manifest(from_hf).parameters
    hf_table = json.loads(store.fs.cat_file(store.url(from_hf, "results.json")))["paper_table"]
    assert hf_table[-1]["model"] == f"ours ({setup.model.version}/hf)"
    assert hf_table[-1]["LAMBADA (ACC)"] == table[-1]["LAMBADA (ACC)"]
    assert hf_table[-1]["Winograd (ACC)"] == table[-1]["Winograd (ACC)"]


def test_the_table_labels_cbt_splits_and_both_lambada_accuracies():
    from evaluation.datasets import cbt_split
    from evaluation.paper import paper_table

    results = {
        "lambada": {"value": 0.5, "ppl": 10.0, "acc_stopword_filtered": 0.625},
        "cbt-cn": {"value": 0.8},
    }
    splits = {"cbt-cn": cbt_split("eval/cbt/cbtest_CN_test_2500ex.txt")}
    table = paper_table(results, "ours", splits)
    paper, ours = table[3], table[-1]
    assert ours["LAMBADA (ACC)"] == 50.0 and ours["LAMBADA (ACC, stop-word filter)"] == 62.5
    assert paper["LAMBADA (ACC)"] == 52.66 and paper["LAMBADA (ACC, stop-word filter)"] == 63.24
    # The paper's CBT figures are validation accuracy; ours here is on the test file.
    assert paper["CBT-CN (ACC, paper valid, ours test)"] == 93.3
    assert ours["CBT-CN (ACC, paper valid, ours test)"] == 80.0
    assert ours["CBT-NE (ACC, valid)"] is None  # not run: the paper's split alone
    valid = paper_table(results, "ours", {"cbt-cn": cbt_split("cbtest_CN_valid_2000ex.txt")})
    assert valid[-1]["CBT-CN (ACC, valid)"] == 80.0
    assert cbt_split("my_cbt.txt") == "my_cbt.txt"  # a name that does not say: the name
