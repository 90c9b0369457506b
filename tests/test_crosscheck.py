"""evaluation.crosscheck: our zero-shot scorer and lm-evaluation-harness agree on a small
trained GPT, on real LAMBADA passages and WikiText articles."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from evaluation import crosscheck
from evaluation.datasets import load_task
from training.bpe import encoder_from_tokenizer, gpt2_encoder, train_tokenizer
from training.model import GPT, GPTConfig

LAMBADA_ITEMS = 100
WIKITEXT_ARTICLES = 3
GENERATION_ITEMS = 3
COQA_FIXTURE = Path("coqa", "coqa-dev-v1.0.one-story.json")


@pytest.fixture(scope="module")
def lm_eval_installed() -> None:
    """lm-eval comes with the `dev` extras: skipped without it, a failure under CI."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("lm-eval is not installed (pip install -e '.[dev]')")
        pytest.skip("lm-eval is not installed (pip install -e '.[crosscheck]')")


def train_tiny_run(
    texts: list[str],
    folder: Path,
    block_size: int = 64,
    steps: int = 60,
    vocab_size: int = 500,
    ends: bool = False,
) -> tuple[Path, Path]:
    """A BPE and a 2-layer GPT trained briefly on `texts`, saved as training.train would:
    (the run folder, tokenizer.json). Batches are random windows of the texts joined, or
    with `ends` the last window of a random text each (so the model learns how each ends:
    an answer after its prompt)."""
    tokenizer_file = folder / "tokenizer.json"
    tokenizer_file.write_text(train_tokenizer(texts, vocab_size=vocab_size).to_str())
    encoder = encoder_from_tokenizer(tokenizer_file.read_text())
    # Padded above the tokenizer's ids, like training's multiple of 64: the export drops them.
    config = GPTConfig(
        block_size=block_size,
        vocab_size=-(-(encoder.vocab_size + 1) // 64) * 64,
        n_layer=2,
        n_head=2,
        n_embd=64,
    )
    torch.manual_seed(0)
    model = GPT(config)
    documents = [[encoder.eot_id, *encoder.encode(text)] for text in texts]
    ids = torch.tensor([i for document in documents for i in document])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    # Matrices this small gain nothing from threads, and on a busy machine lose 10x to them.
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            if ends:
                picked = [
                    documents[i][-block_size - 1 :] for i in torch.randint(0, len(texts), (16,))
                ]
                width = min(map(len, picked))
                batch = torch.tensor([window[-width:] for window in picked])
            else:
                starts = torch.randint(0, len(ids) - block_size - 1, (16,))
                batch = torch.stack([ids[s : s + block_size + 1] for s in starts.tolist()])
            _, loss = model(batch[:, :-1], batch[:, 1:].contiguous())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    run = folder / "run"
    run.mkdir()
    state = {
        "model": model.state_dict(),
        "config": asdict(config),
        "step": steps,
        "args": {"tokens": str(folder / "no-tokens")},  # --tokenizer is given instead
    }
    torch.save(state, run / f"ckpt-{steps:08d}.pt")
    return run, tokenizer_file


def small_eval_data(eval_data: Path, folder: Path, articles: int) -> Path:
    """The real LAMBADA file, and WikiText's raw test text cut after its first `articles`
    articles: one `--limit` then takes ~100 passages and only a few (long) articles."""
    (folder / "lambada").mkdir(parents=True)
    (folder / crosscheck.LAMBADA_FILE).write_bytes(
        (eval_data / crosscheck.LAMBADA_FILE).read_bytes()
    )
    pages = crosscheck.wikitext_pages((eval_data / crosscheck.WIKITEXT_FILE).read_text())
    (folder / "wikitext2").mkdir()
    (folder / crosscheck.WIKITEXT_FILE).write_text("\n".join(pages[:articles]) + "\n")
    return folder


def test_our_scorer_agrees_with_lm_eval(lm_eval_installed, test_data: Path, tmp_path: Path):
    eval_data = small_eval_data(test_data / "eval", tmp_path / "eval", WIKITEXT_ARTICLES)
    # Train on passages after the ones scored: real prose, not the test items themselves.
    corpus = crosscheck.read_lambada(eval_data / crosscheck.LAMBADA_FILE, 1_500)[500:]
    run, tokenizer = train_tiny_run(corpus, tmp_path)

    argv = ["--checkpoint", str(run), "--tokenizer", str(tokenizer), "--limit", str(LAMBADA_ITEMS)]
    argv += ["--tasks", "lambada,wikitext"]
    status = crosscheck.main([*argv, "--eval-data", str(eval_data), "--out", str(tmp_path)])
    report = json.loads((tmp_path / "crosscheck.json").read_text())
    assert status == 0, report["metrics"]
    assert report["items"] == {
        crosscheck.LAMBADA_TASK: LAMBADA_ITEMS,
        crosscheck.WIKITEXT_TASK: WIKITEXT_ARTICLES,
    }
    metrics = {m["metric"]: m for m in report["metrics"]}
    assert sorted(metrics) == [
        "acc",
        "bits_per_byte",
        "byte_perplexity",
        "perplexity",
        "word_perplexity",
    ]
    for name, m in metrics.items():
        assert math.isfinite(m["ours"]) and math.isfinite(m["lm_eval"]), name
        assert m["relative_difference"] <= 1e-3, m

    encoder = encoder_from_tokenizer(tokenizer.read_text())
    assert 0 <= metrics["acc"]["ours"] <= 1
    # Better than uniform over the vocabulary, which gives a word of k tokens log p = -k ln V.
    passages = crosscheck.read_lambada(eval_data / crosscheck.LAMBADA_FILE, LAMBADA_ITEMS)
    word_tokens = [
        len(encoder.encode(text)) - len(encoder.encode(text.rsplit(" ", 1)[0])) for text in passages
    ]
    uniform = math.exp(math.log(encoder.vocab_size) * sum(word_tokens) / len(word_tokens))
    assert metrics["perplexity"]["ours"] < uniform / 10
    pages = crosscheck.wikitext_pages((eval_data / crosscheck.WIKITEXT_FILE).read_text())
    detokenize = crosscheck.lm_eval_detokenizer()
    tokens = sum(len(encoder.encode(detokenize({"page": p}))) for p in pages)
    uniform_bits = tokens * math.log2(encoder.vocab_size) / sum(len(p.encode()) for p in pages)
    assert metrics["bits_per_byte"]["ours"] < uniform_bits


def test_generation_tasks_agree_with_lm_eval(lm_eval_installed, test_data: Path, tmp_path: Path):
    """NQ, both WMT-14 directions and CoQA (its one-story fixture) on a GPT that learnt the
    answers of the items scored, so it does answer: the same generations, the same metrics
    (CoQA's official scores reported beside lm-eval's, with the reason they differ)."""
    eval_data = test_data / "eval"
    coqa = eval_data / COQA_FIXTURE
    texts = []
    for task in ("nq_open", "wmt14-fr-en", "wmt14-en-fr"):
        items = load_task(task, eval_data).items[:GENERATION_ITEMS]
        texts += [f"{item.prompt} {item.references[0]}\n" for item in items]
    items = load_task("coqa", eval_data, coqa).items[:GENERATION_ITEMS]
    texts += [f"{item.prompt} {item.references[0]}\n\n" for item in items]
    run, tokenizer = train_tiny_run(texts, tmp_path, 256, steps=200, vocab_size=1000, ends=True)

    tasks = "nq_open,wmt14-fr-en,wmt14-en-fr,coqa"
    argv = ["--checkpoint", str(run), "--tokenizer", str(tokenizer), "--tasks", tasks]
    argv += ["--eval-data", str(eval_data), "--coqa", str(coqa), "--out", str(tmp_path)]
    status = crosscheck.main([*argv, "--limit", str(GENERATION_ITEMS)])
    report = json.loads((tmp_path / "crosscheck.json").read_text())
    assert status == 0, report["metrics"]
    names = [crosscheck.lm_eval_name(task) for task in tasks.split(",")]
    assert report["items"] == dict.fromkeys(names, GENERATION_ITEMS)
    assert report["same_answers"] == dict.fromkeys(names, GENERATION_ITEMS)
    metrics = {(m["task"].removeprefix("crosscheck_"), m["metric"]): m for m in report["metrics"]}
    assert sorted(metrics) == [
        ("coqa", "em"),
        ("coqa", "em (lm-eval refs)"),
        ("coqa", "f1"),
        ("coqa", "f1 (lm-eval refs)"),
        ("nq_open", "exact_match"),
        ("wmt14-en-fr", "bleu"),
        ("wmt14-fr-en", "bleu"),
    ]
    for key, m in metrics.items():
        if m["reason"] is None:
            assert m["relative_difference"] <= crosscheck.GENERATION_TOLERANCE, key
    # It answers (the same text as lm-eval's): some CoQA answers right, translations with
    # shared n-grams (NQ's answers are other questions' words after 200 steps).
    assert all(report["answers"][name] and all(report["answers"][name]) for name in names)
    assert metrics["coqa", "f1"]["ours"] > 0 and metrics["wmt14-fr-en", "bleu"]["ours"] > 1
    assert metrics["coqa", "f1"]["reason"] == crosscheck.COQA_REFERENCES_DIFFER


def test_coqa_documents_are_lm_evals_layout_of_our_items(lm_eval_installed, test_data: Path):
    eval_data = test_data / "eval"
    crosscheck.provide_squad_metrics(eval_data / "coqa" / crosscheck.COQA_SCORER)
    items = load_task("coqa", eval_data, eval_data / COQA_FIXTURE).items
    documents = crosscheck.coqa_documents(eval_data / COQA_FIXTURE, items)  # prompts checked
    assert [len(d["questions"]["input_text"]) for d in documents] == list(range(1, 13))
    from lm_eval.tasks.coqa.utils import doc_to_target

    # Turn 3's answers: "no", "no", "No", "no": one for lm-eval, four for the official scorer.
    assert doc_to_target(documents[2]) == ["no"] and items[2].references == ("no", "no", "No", "no")


def test_wikitext_pages_follow_hugging_face():
    raw = (
        " \n = First = \n \n Text one . \n \n = = Section = = \n \n More . \n \n"
        " = Second = \n \n Text two . \n"
    )
    assert crosscheck.wikitext_pages(raw) == [
        " = First = \n \n Text one . \n \n = = Section = = \n \n More . \n ",
        " = Second = \n \n Text two . \n",
    ]


def test_real_wikitext_pages(test_data: Path):
    raw = (test_data / "eval" / crosscheck.WIKITEXT_FILE).read_text()
    pages = crosscheck.wikitext_pages(raw)
    # wikitext-2-raw-v1 test in Hugging Face's wikitext_document_level: 62 pages.
    assert len(pages) == 62
    assert "".join(f"{p}\n" for p in pages)[:-1] == raw.split("\n", 1)[1]
    assert pages[0].startswith(" = Robert Boulter = \n")


def test_gpt2_tokenizer_export_gives_our_ids(test_data: Path, tmp_path: Path):
    pytest.importorskip("transformers")
    source = test_data / "gpt2-bpe"
    crosscheck.write_hf_tokenizer(source, tmp_path)
    texts = crosscheck.read_lambada(test_data / "eval" / crosscheck.LAMBADA_FILE, 50)
    crosscheck.check_tokenizer(tmp_path, gpt2_encoder(source), texts)


def test_the_tokenizer_is_found_through_the_runs_tokens(tmp_path: Path):
    from versions import tokens_version

    from webtext.store import Store

    store = Store(str(tmp_path / "store"))
    texts = [
        f"Text {i}: the council met on Tuesday about the park by the river." for i in range(20)
    ]
    _, tokenizer, encoder, tokens = tokens_version(store, texts, vocab_size=300)

    state = {"args": {"tokens": store.version_dir(tokens)}}
    source = crosscheck.tokenizer_source(state, None)
    assert source == Path(store.version_dir(tokenizer))
    crosscheck.write_hf_tokenizer(source, tmp_path / "hf")
    crosscheck.check_tokenizer(tmp_path / "hf", encoder, texts)


def test_relative_difference():
    assert crosscheck.Comparison("t", "acc", 0.0, 0.0).relative_difference == 0
    assert crosscheck.Comparison("t", "ppl", 100.0, 100.05).agrees
    assert not crosscheck.Comparison("t", "ppl", 100.0, 100.2).agrees


def test_a_difference_fails_and_names_the_metric(monkeypatch, capsys, tmp_path: Path):
    def fake(*args) -> dict:
        rows = [
            crosscheck.Comparison("t", "acc", 0.5, 0.5),
            crosscheck.Comparison("t", "ppl", 10, 11),
        ]
        return {"metrics": [asdict(row) for row in rows]}

    monkeypatch.setattr(crosscheck, "crosscheck", fake)
    assert crosscheck.main(["--checkpoint", "x", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "t/ppl" in captured.err and "t/acc" not in captured.err
    assert "t/ppl" in captured.out  # the table
    assert (tmp_path / "crosscheck.json").is_file()
