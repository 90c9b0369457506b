"""The generation tasks' readers (real NQ-open, WMT-14 and CoQA files; CNN/DailyMail stories
built here) and metrics, CoQA's checked against the official scorer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from evaluation import text_metrics
from evaluation.datasets import NQ_SHOTS, TASKS, TLDR, WMT_SHOTS, load_task
from evaluation.paper import OTHER_TASKS, other_tasks_table
from evaluation.stage import EvaluationPlan
from evaluation.zero_shot import EvalSettings, evaluate_set, prompt_ids, score_answers

COQA_FIXTURE = "coqa/coqa-dev-v1.0.one-story.json"


@pytest.fixture(scope="module")
def eval_root(test_data: Path) -> Path:
    return test_data / "eval"


@pytest.fixture(scope="module")
def official_coqa(eval_root: Path):
    """The official CoQA scorer (evaluate-v1.0.py), imported from the shared data."""
    spec = importlib.util.spec_from_file_location(
        "coqa_official", eval_root / "coqa" / "evaluate-v1.0.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CoQAEvaluator


# Natural Questions


def test_nq_open(eval_root: Path) -> None:
    eval_set = load_task("nq_open", eval_root)
    assert eval_set.kind == "generation" and eval_set.metric == "em"
    assert len(eval_set.items) == 3_610 - NQ_SHOTS and not eval_set.skipped
    first = eval_set.items[0]
    # The first questions and their first answers are the examples; then the question.
    assert first.prompt.startswith(
        "Q: when was the last time anyone was on the moon?\nA: 14 December 1972 UTC\n\n"
    )
    assert first.prompt.count("\nA: ") == NQ_SHOTS
    assert first.prompt.endswith("Q: when did the isle of wight become an island?\nA:")
    assert first.references == ("During the last Ice Age",) and first.key == "line 6"


def test_malformed_nq_lines_are_named(eval_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "nq.jsonl"
    lines = (eval_root / TASKS["nq_open"].path).read_text().splitlines()[:8]
    lines[2] = '{"question": "who?", "answer": "not a list"}'
    lines[4] = "{oops"
    path.write_text("\n".join(lines) + "\n")
    eval_set = load_task("nq_open", eval_root, path)
    assert eval_set.skipped == [
        f'{path}:3: needs "question" (a string) and "answer" (a list of strings)',
        f"{path}:5: bad JSON (Expecting property name enclosed in double quotes)",
    ]
    assert len(eval_set.items) == 6 - NQ_SHOTS


def test_exact_match_normalises_as_squad() -> None:
    assert text_metrics.normalize_answer("The  Beatles!") == "beatles"
    assert text_metrics.exact_match(" the Beatles.", ["Beatles", "John Lennon"])
    assert text_metrics.exact_match("John lennon", ["Beatles", "John Lennon"])
    assert not text_metrics.exact_match("Lennon", ["John Lennon"])
    assert not text_metrics.exact_match("", ["John Lennon"])


# WMT-14


@pytest.mark.parametrize(
    ("task", "source", "reference"), [("wmt14-fr-en", "fr", "en"), ("wmt14-en-fr", "en", "fr")]
)
def test_wmt14_full_set(eval_root: Path, task: str, source: str, reference: str) -> None:
    eval_set = load_task(task, eval_root)
    assert eval_set.metric == "bleu" and not eval_set.skipped
    assert len(eval_set.items) == 3_003 - WMT_SHOTS  # newstest2014 "full"
    examples = {
        "en": "Spectacular Wingsuit Jump Over Bogota",
        "fr": 'Spectaculaire saut en "wingsuit" au-dessus de Bogota',
    }
    first = eval_set.items[0]
    assert first.prompt.startswith(f"{examples[source]} = {examples[reference]}\n")
    assert first.prompt.count(" = ") == WMT_SHOTS and first.prompt.endswith(" =")
    assert "\n" not in first.prompt.rsplit("\n", 1)[1]  # the source segment on its own line
    lines = (eval_root / "wmt14" / f"newstest2014-fren-src.{source}.sgm").read_text().splitlines()
    last_segment = max(n for n, line in enumerate(lines, 1) if line.startswith("<seg "))
    assert eval_set.items[-1].key == f"line {last_segment}"


def test_wmt14_bad_segment_and_missing_reference(eval_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "wmt14"
    folder.mkdir()
    for name in ("newstest2014-fren-src.fr.sgm", "newstest2014-fren-ref.en.sgm"):
        lines = (eval_root / "wmt14" / name).read_text().splitlines()[:20]
        if name.endswith("src.fr.sgm"):
            lines[4] = lines[4].replace("</seg>", "")  # line 5: the segment is cut
        (folder / name).write_text("\n".join(lines) + "\n")
    eval_set = load_task("wmt14-fr-en", eval_root, folder)
    source = folder / "newstest2014-fren-src.fr.sgm"
    reference = folder / "newstest2014-fren-ref.en.sgm"
    assert eval_set.skipped == [
        f'{source}:5: not a <seg id="...">text</seg> line',
        f"{reference}:5: segment 1009-lemondefr:3 has no source",
    ]
    (folder / "newstest2014-fren-ref.en.sgm").unlink()
    with pytest.raises(FileNotFoundError, match=f"wmt14-fr-en: no file at {reference}"):
        load_task("wmt14-fr-en", eval_root, folder)


def test_corpus_bleu_keeps_sacrebleus_signature() -> None:
    bleu = text_metrics.corpus_bleu(["The cat sat on the mat."], ["The cat sat on the mat."])
    assert bleu["value"] == pytest.approx(100.0)
    assert bleu["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert text_metrics.corpus_bleu(["a dog"], ["The cat sat on the mat."])["value"] < 5


# CoQA


def test_coqa_reader_gives_the_official_scorers_references(eval_root: Path, official_coqa) -> None:
    path = eval_root / COQA_FIXTURE
    eval_set = load_task("coqa", eval_root, path)
    gold = official_coqa(str(path)).gold_data
    assert eval_set.metric == "f1" and not eval_set.skipped
    assert {tuple(item.key.split(":")): list(item.references) for item in eval_set.items} == {
        (story, str(turn)): answers for (story, turn), answers in gold.items()
    }
    third = eval_set.items[2]
    assert third.prompt.endswith(
        "Q: What color was Cotton?\n\nA: white\n\nQ: Where did she live?\n\nA: in a barn\n\n"
        "Q: Did she live alone?\n\nA:"
    )
    story = json.loads(path.read_text())["data"][0]["story"]
    assert third.prompt.startswith(story + "\n\n")


def synthetic_predictions(references: tuple[str, ...]) -> list[str]:
    """Answers of every kind the scorer treats differently: exact, differently cased and
    punctuated, partly overlapping, longer, wrong, empty, another annotator's."""
    first = references[0]
    words = first.split()
    return [
        first,
        f"The {first.upper()}!",
        " ".join(words[: max(1, len(words) // 2)]),
        f"{first} and more words here",
        "completely unrelated",
        "",
        references[-1],
        "a an the",
    ]


def test_coqa_scores_equal_the_official_scorers(eval_root: Path, official_coqa) -> None:
    path = eval_root / COQA_FIXTURE
    items = load_task("coqa", eval_root, path).items
    for item in items:
        for prediction in synthetic_predictions(item.references):
            theirs = official_coqa._compute_turn_score(list(item.references), prediction)
            assert text_metrics.coqa_turn_scores(item.references, prediction) == pytest.approx(
                (theirs["em"], theirs["f1"]), abs=1e-12
            ), (item.key, prediction)
    # Whole-set F1 and EM, as the official script reports them (percent, one decimal).
    evaluator = official_coqa(str(path))
    for pick in range(len(synthetic_predictions(("x",)))):
        answers = [synthetic_predictions(item.references)[pick] for item in items]
        story_turns = [item.key.split(":") for item in items]
        official = evaluator.model_performance(
            {(story, int(turn)): a for (story, turn), a in zip(story_turns, answers, strict=True)}
        )["overall"]
        ours = score_answers("f1", items, answers)
        assert (round(100 * ours["value"], 1), round(100 * ours["em"], 1)) == (
            official["f1"],
            official["em"],
        )


def test_a_broken_coqa_file_is_named(eval_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "coqa.json"
    path.write_text('{"version": "1.0",\n "data": [\n  {"story": "x",}\n]}')
    with pytest.raises(ValueError, match=f"{path}:3: not JSON"):
        load_task("coqa", eval_root, path)
    data = json.loads((eval_root / COQA_FIXTURE).read_text())
    broken = json.loads(json.dumps(data["data"][0]))
    del broken["answers"][3]  # turn 4's answer missing: turn ids no longer match
    path.write_text(json.dumps({"version": "1.0", "data": [broken, data["data"][0]]}))
    eval_set = load_task("coqa", eval_root, path)
    assert len(eval_set.items) == 12
    assert eval_set.skipped == [
        f"{path}: story 0 (3dr23u6we5exclen4th8uq9rb42tel): bad or missing turn_id at turn 4"
    ]


# CNN/DailyMail


def write_story(folder: Path, name: str, article: list[str], highlights: list[str]) -> None:
    parts = [*article, *(f"@highlight\n\n{h}" for h in highlights)]
    (folder / f"{name}.story").write_text("\n\n".join(parts) + "\n")


def test_cnn_dailymail_stories(tmp_path: Path) -> None:
    folder = tmp_path / "stories"
    folder.mkdir()
    write_story(
        folder,
        "b",
        ["(CNN) -- The council met on Tuesday.", "Residents said the park would help."],
        ["Council meets about the park", "Residents approve"],
    )
    write_story(folder, "a", ["An article without its summary."], [])
    (folder / "notes.txt").write_text("not a story")
    eval_set = load_task("cnn_dailymail", tmp_path, folder)
    assert eval_set.metric == "rouge" and eval_set.decoding is not None
    assert eval_set.decoding.top_k == 2 and eval_set.decoding.sentences == 3
    assert eval_set.skipped == [f"{folder / 'a.story'}: no @highlight"]
    (item,) = eval_set.items
    assert (
        item.document == "(CNN) -- The council met on Tuesday.\nResidents said the park would help."
    )
    assert item.prompt == TLDR == "\nTL;DR:"
    assert item.references == ("Council meets about the park\nResidents approve",)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"cnn_dailymail: no .story files in {tmp_path}"):
        load_task("cnn_dailymail", tmp_path, tmp_path / "empty")


def tiny_model(texts: list[str], block_size: int = 64):
    """A random 2-layer GPT with a BPE trained on `texts`, as the generator takes it."""
    import torch

    from evaluation.models import LanguageModel
    from training.bpe import encoder_from_tokenizer, train_tokenizer
    from training.model import GPT, GPTConfig

    encoder = encoder_from_tokenizer(train_tokenizer(texts, vocab_size=300).to_str())
    torch.manual_seed(0)
    config = GPTConfig(block_size=block_size, vocab_size=320, n_layer=2, n_head=2, n_embd=32)
    gpt = GPT(config).eval()
    return LanguageModel.of_gpt("tiny", gpt, encoder, torch.device("cpu"))


def test_summaries_are_sampled_cut_to_three_sentences_and_scored(tmp_path: Path) -> None:
    folder = tmp_path / "stories"
    folder.mkdir()
    lead = "The council met on Tuesday. Residents said the new park would help families. "
    for i in range(2):
        write_story(
            folder, f"s{i}", [lead * 20, f"Story {i} ends here."], [f"Park plan {i} approved"]
        )
    eval_set = load_task("cnn_dailymail", tmp_path, folder)
    model = tiny_model([lead, "Park plan approved", "TL;DR:"], block_size=256)
    # A long article loses its end, never "TL;DR:", and leaves room for the 100 tokens.
    ids = prompt_ids(model, eval_set.items[0], 100)
    assert (
        len(ids) == model.max_length - 100 < len(model.encoder.encode(eval_set.items[0].document))
    )
    assert model.encoder.decode(ids).endswith(TLDR)
    assert model.encoder.decode(ids).startswith("The council met on Tuesday.")

    result = evaluate_set(model, eval_set, EvalSettings())
    assert result["metric"] == "rouge" and result["items"] == 2
    assert result["decoding"] == {"max_new_tokens": 100, "stop": (), "top_k": 2, "sentences": 3}
    assert result["value"] == pytest.approx(
        (result["rouge1"] + result["rouge2"] + result["rougeL"]) / 3
    )
    for answer in result["answers"].values():
        assert answer == text_metrics.first_sentences(answer, 3)  # at most three sentences
    assert evaluate_set(model, eval_set, EvalSettings())["answers"] == result["answers"]  # seeded


def test_first_sentences_and_rouge() -> None:
    text = "Mr. Smith went to Washington. He met Dr. Jones at 3 p.m. on Friday! Was it fun? Yes."
    assert text_metrics.first_sentences(text, 3) == (
        "Mr. Smith went to Washington. He met Dr. Jones at 3 p.m. on Friday! Was it fun?"
    )
    assert text_metrics.first_sentences("One.\n\nTwo.", 5) == "One. Two."
    same = text_metrics.rouge_f1(["the cats sat down"], ["the cat sat down"])
    assert same == pytest.approx({"rouge1": 1, "rouge2": 1, "rougeL": 1, "average": 1})  # stemmed
    half = text_metrics.rouge_f1(["the cat"], ["the cat sat down"])
    assert half["rouge1"] == pytest.approx(2 * 1 * 0.5 / 1.5)


# Plans and the paper's rows


def test_tasks_are_named_comma_separated_and_unknown_ones_listed(eval_root: Path) -> None:
    given = {"eval_data": str(eval_root), "tasks": ["nq_open,coqa", "ptb"]}
    plan = EvaluationPlan.from_user({**given, "paths": ["coqa=/data/coqa-dev-v1.0.json"]})
    assert plan.tasks == ("nq_open", "coqa", "ptb")
    assert plan.task_path("coqa") == Path("/data/coqa-dev-v1.0.json")
    assert plan.task_path("nq_open") == eval_root / "nq_open" / "NQ-open.dev.jsonl"
    with pytest.raises(ValueError, match="TASK=PATH, not 'coqa'"):
        EvaluationPlan.from_user({**given, "paths": ["coqa"]})
    with pytest.raises(ValueError, match="unknown task 'squad'"):
        EvaluationPlan.from_user({**given, "paths": {"squad": "x.json"}})
    with pytest.raises(
        ValueError, match=r"unknown task 'squad'; known: lambada, .*nq_open, wmt14-fr-en"
    ):
        EvaluationPlan.from_user({"eval_data": str(eval_root), "tasks": ["nq_open,squad"]})


def test_other_tasks_table() -> None:
    results = {
        "nq_open": {"metric": "em", "value": 0.05},
        "wmt14-fr-en": {"metric": "bleu", "value": 7.123},
        "cnn_dailymail": {
            "metric": "rouge",
            "value": 0.2,
            "rouge1": 0.3,
            "rouge2": 0.05,
            "rougeL": 0.25,
        },
    }
    rows = {row["task"]: row for row in other_tasks_table(results, "ours")}
    assert len(rows) == len(OTHER_TASKS)
    assert rows["Natural Questions (EM %)"] == {
        "task": "Natural Questions (EM %)",
        "GPT-2 1542M": 4.1,
        "ours": 5.0,
    }
    assert rows["WMT-14 Fr-En (BLEU, newstest2014)"]["ours"] == 7.12
    assert rows["WMT-14 En-Fr (BLEU, newstest2014)"] == {
        "task": "WMT-14 En-Fr (BLEU, newstest2014)", "GPT-2 1542M": 5.0, "ours": None,
    }  # fmt: skip
    assert rows["CoQA (F1, dev)"]["GPT-2 1542M"] == 55.0 and rows["CoQA (F1, dev)"]["ours"] is None
    assert rows["CNN/DailyMail (ROUGE avg)"]["ours"] == 20.0
    assert rows["CNN/DailyMail (ROUGE-2 F1)"] == {
        "task": "CNN/DailyMail (ROUGE-2 F1)", "GPT-2 1542M": 8.27, "ours": 5.0,
    }  # fmt: skip
