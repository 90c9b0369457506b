"""`webtext train`, `evaluate` and `sample` on a model version and on its Hugging Face
export (`--hf-model`), as a user types them."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner
from versions import tokens_version

import training.launch
from training.settings import TrainSettings
from webtext.store import StageResult, Store, VersionRef
from webtext_app import cli

TEXTS = [
    f"Report {i}: the river rose after a week of rain, and the town opened its shelters to "
    f"families from the low streets. Volunteers counted {i * 3} cots by evening."
    for i in range(40)
]
# A few steps of the smallest model, with a validation loss on the last one.
TINY = ["--model", "tiny", "--block-size", "32", "--batch-size", "4", "--max-steps", "4"]
TINY += ["--warmup-steps", "1", "--eval-interval", "2", "--eval-steps", "1"]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_train_streams_steps_then_evaluate_and_sample_take_the_model_version(
    tmp_path, test_data
) -> None:
    store = Store(str(tmp_path / "store"))
    tokens_version(store, TEXTS, vocab_size=300)
    runs = str(tmp_path / "runs")
    code, output = run(
        "train", "--store", store.root_url, "--gpus-per-node", "0", "--runs-dir", runs, *TINY
    )
    assert code == 0, output
    assert "warning" not in output  # tiny on CPU is what CPUs are for
    assert [line.split()[1] for line in output.splitlines() if line.startswith("step ")] == [
        "1/4",
        "2/4",
        "3/4",
        "4/4",
    ]
    model = store.resolve("model")
    assert store.manifest(model).parameters["max_steps"] == 4
    assert f"model version {model}" in " ".join(output.split())

    eval_data = str(test_data / "eval")
    args = ["--store", store.root_url, "--eval-data", eval_data, "--task", "lambada"]
    code, output = run("evaluate", *args, "--tasks", "nq_open,wmt14-en-fr", "--limit", "3")
    assert code == 0, output  # --model latest
    assert "lambada: acc = " in output and "nq_open: em = " in output
    assert "wmt14-en-fr: bleu = " in output
    assert "| Natural Questions (EM %) | 4.1 |" in output
    evaluation = store.resolve("evaluation")
    assert model in store.manifest(evaluation).parents

    code, output = run(
        "sample", "--store", store.root_url, "--model", model.version, "--prompt", "The river",
        "--max-new-tokens", "4",
    )  # fmt: skip
    assert code == 0, output
    assert json.loads(output.splitlines()[-1])["prompt"] == "The river"

    # A checkpoint outside the store needs its tokenizer; a model version brings its own.
    with pytest.raises(ValueError, match="needs its tokenizer"):
        run("evaluate", runs, *args)
    with pytest.raises(ValueError, match="not CHECKPOINT and --model"):
        run("evaluate", runs, "--model", "latest", *args)

    # The model version's Hugging Face export, as any GPT-2 folder: the same results.
    hf = f"{store.version_dir(model)}/hf"
    code, output = run("evaluate", "--hf-model", hf, *args, "--limit", "3")
    assert code == 0, output
    from_hf = store.resolve("evaluation")
    assert from_hf != evaluation and "hf_model" in store.manifest(from_hf).parameters
    ours, theirs = (
        json.loads(store.fs.cat_file(store.url(ref, "results.json")))["results"]["lambada"]
        for ref in (evaluation, from_hf)
    )
    assert theirs["value"] == ours["value"]
    assert theirs["ppl"] == pytest.approx(ours["ppl"], rel=1e-5)
    assert f"ours ({model.version}/hf)" in output
    code, output = run(
        "sample", "--store", store.root_url, "--hf-model", hf, "--prompt", "The river",
        "--max-new-tokens", "4", "--temperature", "0",
    )  # fmt: skip
    assert code == 0, output
    code, again = run(
        "sample", "--store", store.root_url, "--model", model.version, "--prompt", "The river",
        "--max-new-tokens", "4", "--temperature", "0",
    )  # fmt: skip
    assert json.loads(output.splitlines()[-1]) == json.loads(again.splitlines()[-1])


def test_train_refuses_gpt2_sizes_on_cpu_unless_allowed(tmp_path, monkeypatch) -> None:
    store = Store(str(tmp_path / "store"))
    runs = tmp_path / "runs"
    with store.write("tokens", {"fake": True}, "test") as out:
        out.put("tokens/train/part-00000.bin", b"\0" * 64)
    trained: list[tuple[TrainSettings, bool]] = []

    def fake_train_model(store, tokens, settings, **kwargs) -> StageResult:
        trained.append((settings, kwargs["allow_cpu"]))
        return StageResult(VersionRef("model", "abc"), True, {"counts": {}})

    # train_model itself refuses (before any run starts), and the command says it with its flag.
    code, output = run(
        "train", "--store", store.root_url, "--gpus-per-node", "0", "--runs-dir", str(runs)
    )
    assert code == 2 and trained == []
    assert " ".join(output.split()) == (
        "refusing to train GPT-2 124M on CPU (--gpus-per-node 0): pass allow_cpu=true "
        "(--allow-cpu) to train it there anyway, or model=tiny"
    )
    assert not runs.exists()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, output = run("train", "--store", store.root_url)  # this machine's GPUs: none
    assert code == 2 and "124M on CPU (no CUDA device on this machine)" in " ".join(output.split())
    monkeypatch.setattr(training.launch, "train_model", fake_train_model)
    code, output = run("train", "--store", store.root_url, "--gpus-per-node", "0", "--allow-cpu")
    assert code == 0, output
    assert "warning: training GPT-2 124M on CPU for 600,000 steps" in " ".join(output.split())
    assert trained == [(TrainSettings(), True)]


def test_train_returns_a_gpt2_size_trained_already_wherever_it_runs(tmp_path) -> None:
    """Only a new run has to fit here: a 124M model made already is the command's answer
    on a machine without a GPU, with no --allow-cpu."""
    store = Store(str(tmp_path / "store"))
    with store.write("tokens", {"fake": True}, "test") as out:
        out.put("tokens/train/part-00000.bin", b"\0" * 64)
    tokens = store.resolve("tokens")
    parameters = training.launch.training_parameters(TrainSettings(), (), 1, 0)
    stage = training.launch.STAGE
    with store.write(stage.name, parameters, stage.code_version, (tokens,)) as out:
        out.put("checkpoint.pt", b"weights")
        out.stats["counts"] = {"step": 600_000}
    model = store.resolve("model")
    code, output = run("train", "--store", store.root_url, "--gpus-per-node", "0")
    assert code == 0, output
    assert f"model version {model} (already built: reused)" in " ".join(output.split())
