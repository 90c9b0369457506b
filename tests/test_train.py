"""GPT-2 training on CPU with a tiny model: exact resume, DDP equivalence, HF export, sizes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training.model import CONFIGS, GPT, export_hf
from training.token_shards import FORMAT_VERSION, HEADER, MAGIC

REPO_ROOT = Path(__file__).resolve().parent.parent
VOCAB = 256


def _write_shard(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(HEADER.pack(MAGIC, FORMAT_VERSION, VOCAB, len(ids)) + ids.tobytes())


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two train shards and one val shard of a learnable (periodic) token stream."""
    root = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, VOCAB, size=97, dtype=np.uint16)
    for split, part, n in [("train", 0, 6000), ("train", 1, 3000), ("val", 0, 2000)]:
        ids = np.resize(pattern, n)
        noise = rng.random(n) < 0.1
        ids[noise] = rng.integers(0, VOCAB, size=int(noise.sum()), dtype=np.uint16)
        _write_shard(root / "tokens" / split / f"part-{part:05d}.bin", ids)
    return root


def _common(tokens: Path, out: Path, max_steps: int) -> list[str]:
    return [
        *("--tokens", str(tokens), "--out", str(out), "--model", "tiny"),
        *("--block-size", "32", "--max-steps", str(max_steps), "--warmup-steps", "3"),
        *("--lr", "3e-3", "--min-lr", "3e-4", "--eval-interval", "5", "--eval-steps", "2"),
        *("--device", "cpu", "--seed", "7"),
    ]


def _run(args: list[str], launcher: list[str] | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, *(launcher or []), "-m", "training.train", *args]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_a_stop_and_a_torn_checkpoint_gives_identical_losses(
    tokens: Path, tmp_path: Path
) -> None:
    # Dropout on, so restoring the torch RNG state matters too.
    extra = ["--batch-size", "4", "--grad-accum", "2", "--dropout", "0.1"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    _run([*_common(tokens, straight, 20), *extra])
    # The first process stops at step 10 (the lr schedule still spans 20 steps) with a
    # checkpoint; a half-written checkpoint from a kill mid-save must be ignored.
    _run([*_common(tokens, broken, 10), *extra, "--decay-steps", "20"])
    (broken / ".ckpt-00000015.pt.tmp").write_bytes(b"torn write")
    _run([*_common(tokens, broken, 20), *extra, "--checkpoint-interval", "10"])

    expected, got = _metrics(straight), _metrics(broken)
    assert [r["step"] for r in got] == list(range(1, 21))
    assert [r["loss"] for r in got] == [r["loss"] for r in expected]
    assert [r.get("val_loss") for r in got] == [r.get("val_loss") for r in expected]
    assert expected[-1]["loss"] < expected[0]["loss"] - 1.0  # it learns
    state = torch.load(broken / "ckpt-00000020.pt", weights_only=False)
    assert state["step"] == 20 and state["config"]["vocab_size"] == VOCAB
    assert set(state) >= {"model", "optimizer", "rng", "args"}


def test_two_gloo_ranks_match_one_process(tokens: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _run([*_common(tokens, one, 6), "--batch-size", "4", "--grad-accum", "2"])
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*_common(tokens, two, 6), "--batch-size", "2", "--grad-accum", "2"], launcher)

    expected, got = _metrics(one), _metrics(two)
    assert [r["step"] for r in got] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in expected], atol=1e-5)
    np.testing.assert_allclose(got[-1]["val_loss"], expected[-1]["val_loss"], atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_export_matches_hugging_face_logits(tmp_path: Path, bias: bool) -> None:
    transformers = pytest.importorskip("transformers")
    config = replace(CONFIGS["tiny"], vocab_size=VOCAB, bias=bias)
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm weights, so the layout is checked
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    tokenizer = {"tokenizer.json": b'{"fake": true}'}
    export_hf(model, config, tmp_path, tokenizer, eot_id=0)
    assert (tmp_path / "tokenizer.json").read_bytes() == tokenizer["tokenizer.json"]

    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, VOCAB, (2, config.block_size))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_124m_sizes() -> None:
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(CONFIGS["124M"])
    assert model.num_params() == 124_439_808
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_params(non_embedding=True) == 124_439_808 - 1024 * 768
    n = 124_439_808 - 1024 * 768
    assert model.flops_per_token(1024) == 6 * n + 12 * 12 * 768 * 1024
    idx = torch.zeros((2, 16), dtype=torch.long, device="meta")
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 16, 50257) and loss.shape == ()


def test_a_sigkill_mid_run_then_resume_matches_a_straight_run(tokens: Path, tmp_path: Path):
    # Evaluating every step slows the tiny model enough to kill it between checkpoints.
    extra = ["--batch-size", "4", "--dropout", "0.1", "--eval-interval", "1"]
    extra += ["--eval-steps", "30", "--checkpoint-interval", "10"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run([*_common(tokens, straight, 20), *extra])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "training.train", *_common(tokens, killed, 20), *extra]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (killed / "ckpt-00000010.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no step-10 checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "ckpt-00000020.pt").exists(), "the run finished before the kill"
    _run([*_common(tokens, killed, 20), *extra])
    expected, got = _metrics(straight), _metrics(killed)
    assert [r["step"] for r in got] == list(range(1, 21))
    assert [r["loss"] for r in got] == [r["loss"] for r in expected]
