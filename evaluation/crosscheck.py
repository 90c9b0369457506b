"""Cross-check our zero-shot scorer against lm-evaluation-harness, on the same model and text.

    python -m evaluation.crosscheck --checkpoint RUN_DIR_OR_CKPT [--tokenizer PATH]
        [--eval-data DIR] [--tasks lambada,wikitext,nq_open,...] [--coqa FILE] [--limit N]
        [--device DEV] [--out DIR]

The checkpoint is exported to Hugging Face format (with a tokenizer that must give our
encoder's ids on every text scored, or the run stops) and lm-evaluation-harness (`lm_eval`,
the `hf` model, float32) runs its own task configs on local copies of the data. Our scorer
then scores the same strings with the same model, and each metric is compared:

- `lambada_openai` (`<eval-data>/lambada/lambada_test.jsonl`): lm-eval's config with only
  the data source changed. Ours: `zero_shot.cloze_result` on our LAMBADA task's items
  (`datasets.load_task`), checked to be the passages split as lm-eval's `doc_to_text` /
  `doc_to_target` split them. `acc` (every token of the last word greedy) and `perplexity`
  (exp of minus the mean log-likelihood of the word).
- `wikitext` (`<eval-data>/wikitext2/wiki.test.raw`, cut into articles the way Hugging
  Face's `wikitext_document_level` cuts it into pages): lm-eval's config with only the data
  source changed. Ours: `scoring.perplexity` on lm-eval's `wikitext_detokenizer(page)`,
  windows of the model's full length with stride == context (lm-eval's rolling windows:
  disjoint, the first token after end-of-text). `word_perplexity`, `byte_perplexity`,
  `bits_per_byte`.

- the generation tasks `nq_open`, `wmt14-fr-en`, `wmt14-en-fr` (our readers' items and
  prompts, in lm-eval's own task configs with only the prompt, the references, the stop
  strings and the token budget made ours) and `coqa` (lm-eval's config unchanged but for
  the data: one document per question of the CoQA file, `--coqa`; its prompt is checked to
  be ours). Ours: `zero_shot.generate_answers` and `score_answers`. Exact match, corpus
  BLEU, CoQA F1 and exact match; and how many answers are the same text.

CoQA's references differ: lm-eval drops an answer that repeats an earlier one (ignoring
case) before leaving one out in turn, the official scorer (ours) keeps every annotator's.
Both are reported; the check compares ours computed on lm-eval's references (`f1 (lm-eval
refs)`), so a difference can only come from the generations or the F1 itself.

The units are lm-eval's, not our WikiText task's: words are `len(re.split(r"\\s+", page))`
and bytes the UTF-8 bytes of the page *before* detokenizing. Our own task counts the words
of the tokenized text its own way; using lm-eval's counts here means a difference can only
come from the scoring (tokens, windows, log-likelihoods), which is what this checks.

A log-likelihood metric whose relative difference exceeds 0.1%, or a generation metric's
beyond 0.5% (greedy decoding of two implementations may part on a near tie), fails the
check (exit status 1); a row with a stated reason to differ is reported, never failed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from evaluation.datasets import TASKS, Cloze, Prompted, load_task
from evaluation.models import LanguageModel, find_checkpoint, load_checkpoint_model
from evaluation.scoring import WindowSettings, perplexity
from evaluation.text_metrics import first_line
from evaluation.zero_shot import EvalSettings, cloze_result, generate_answers, score_answers
from training.bpe import EOT, Encoder
from training.model import GPT, GPTConfig, export_hf
from webtext.store import MANIFEST, Manifest, Store

TOLERANCE = 1e-3  # relative
GENERATION_TOLERANCE = 5e-3  # relative
LAMBADA_FILE = Path("lambada", "lambada_test.jsonl")
WIKITEXT_FILE = Path("wikitext2", "wiki.test.raw")
COQA_FILE = Path("coqa", "coqa-dev-v1.0.json")
COQA_SCORER = "evaluate-v1.0.py"  # the official scorer, looked for beside the CoQA file
# Our task names for lm-eval: distinct from its own, which read from the Hugging Face Hub.
LAMBADA_TASK = "crosscheck_lambada_openai"
WIKITEXT_TASK = "crosscheck_wikitext"
# Our generation task -> (lm-eval's config it includes, relative to its tasks folder).
GENERATION_TASKS = {
    "nq_open": "nq_open/nq_open.yaml",
    "wmt14-fr-en": "translation/wmt14_fr-en.yaml",
    "wmt14-en-fr": "translation/wmt14_en-fr.yaml",
    "coqa": "coqa/default.yaml",
}
LIKELIHOOD_TASKS = ("lambada", "wikitext")
ALL_TASKS = (*LIKELIHOOD_TASKS, *GENERATION_TASKS)
COQA_REFERENCES_DIFFER = (
    "lm-eval drops references that repeat an earlier one (ignoring case); the official "
    "scorer keeps all"
)


@dataclass(frozen=True)
class Comparison:
    task: str
    metric: str
    ours: float
    lm_eval: float
    tolerance: float = TOLERANCE
    reason: str | None = None  # why the two are not the same measure: reported, not failed

    @property
    def relative_difference(self) -> float:
        if self.ours == self.lm_eval:  # also two zero accuracies
            return 0.0
        return abs(self.ours - self.lm_eval) / max(abs(self.ours), abs(self.lm_eval))

    @property
    def agrees(self) -> bool:
        return self.relative_difference <= self.tolerance

    @property
    def fails(self) -> bool:
        return not self.agrees and self.reason is None


# ---- inputs -------------------------------------------------------------------------------


def read_lambada(path: Path, limit: int | None) -> list[str]:
    """The passages as lm-eval reads them: the "text" of each JSON line."""
    texts = [json.loads(line)["text"] for line in path.read_text("utf-8").splitlines() if line]
    return texts[:limit]


def our_lambada(eval_data: Path, texts: Sequence[str]) -> list[Cloze]:
    """Our LAMBADA task's items for the same passages; any difference in how our reader and
    lm-eval's config cut a passage into context and word is an error here."""
    eval_set = load_task("lambada", eval_data)
    items = eval_set.items[: len(texts)]
    if eval_set.skipped or len(items) != len(texts):
        raise ValueError(f"our LAMBADA reader skipped passages: {eval_set.skipped[:3]}")
    for i, (item, text) in enumerate(zip(items, texts, strict=True)):
        # lm-eval: context = the words but the last joined by " ", target = " " + last word.
        if (item.context, item.target) != (" ".join(text.split(" ")[:-1]), text.split(" ")[-1]):
            raise ValueError(
                f"LAMBADA passage {i}: our context/target split differs from lm-eval's"
            )
    return items


def wikitext_pages(raw: str) -> list[str]:
    """WikiText's articles exactly as Hugging Face's `wikitext_document_level` pages them.

    A page starts at each level-1 heading line (` = Title = `, not ` = = Section = = `)
    and runs up to the next, its trailing blank lines included; blank text before the first
    heading is no page; lines are joined by newlines, none after the last but the file's.
    Whitespace matters: lm-eval's byte counts and detokenized text see all of it (our
    `datasets.wikitext_articles` ends every article with a newline and keeps the blank line
    before the first heading: the same words, not the same bytes, so it is not used here).
    """
    pages: list[str] = []
    lines: list[str] = []
    for line in raw.split("\n"):
        squeezed = line.replace("= = =", "===").replace("= =", "==").strip()
        if squeezed.startswith("= ") and squeezed.endswith(" ="):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    pages.append("\n".join(lines))
    return pages


def lm_eval_detokenizer() -> Callable[[dict[str, str]], str]:
    """lm-eval's own WikiText detokenizer (its task config's `doc_to_target`)."""
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    return wikitext_detokenizer


def lm_eval_word_count(page: str) -> int:
    """lm-eval's `process_results` for wikitext: words of the page before detokenizing."""
    return len(re.split(r"\s+", page))


# ---- the Hugging Face export --------------------------------------------------------------


def load_state(checkpoint: Path) -> dict[str, Any]:
    """A `training.train` checkpoint, on the CPU."""
    # Our own files; they hold numpy and Python RNG states besides tensors.
    return torch.load(checkpoint, map_location="cpu", weights_only=False)


def tokenizer_source(state: dict[str, Any], tokenizer: Path | None) -> Path:
    """The tokenizer's files: `tokenizer`, or the run's tokenizer version (named by the
    manifest of the tokens folder it trained on, in the same local store)."""
    if tokenizer is not None:
        return tokenizer
    tokens_dir = Path(state["args"]["tokens"])
    manifest = Manifest.from_json((tokens_dir / MANIFEST).read_text("utf-8"), str(tokens_dir))
    found = [parent for parent in manifest.parents if parent.stage == "tokenizer"]
    if not found:
        raise ValueError(f"{tokens_dir}/{MANIFEST} names no tokenizer version: pass --tokenizer")
    return Path(Store(str(tokens_dir.parent.parent)).version_dir(found[0]))


def write_hf_tokenizer(source: Path, folder: Path) -> None:
    """A tokenizer in `folder` that `AutoTokenizer` loads: our trained `tokenizer.json`, or
    GPT-2's `encoder.json` + `vocab.bpe` under their Hugging Face names."""
    from tokenizers import Tokenizer
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

    if source.is_dir() and (source / "tokenizer.json").is_file():
        source = source / "tokenizer.json"
    if source.is_file():
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(source.read_text("utf-8")), eos_token=EOT
        )
    else:
        (folder / "vocab.json").write_bytes((source / "encoder.json").read_bytes())
        (folder / "merges.txt").write_bytes((source / "vocab.bpe").read_bytes())
        # The file-based constructor: its keyword arguments differ across transformers 4/5.
        wrapped = GPT2TokenizerFast.from_pretrained(folder)
    wrapped.save_pretrained(folder)


def export(state: dict[str, Any], encoder: Encoder, source: Path, folder: Path) -> Path:
    """The checkpoint as a Hugging Face GPT-2 with only the tokenizer's ids, and its tokenizer."""
    gpt = GPT(GPTConfig(**state["config"]))
    gpt.load_state_dict(state["model"])
    export_hf(gpt, gpt.config, folder, eot_id=encoder.eot_id, vocab_size=encoder.vocab_size)
    write_hf_tokenizer(source, folder)
    return folder


def check_tokenizer(folder: Path, encoder: Encoder, texts: Sequence[str]) -> None:
    """Fail unless the exported tokenizer gives our ids for every text: lm-eval would score
    other tokens and any agreement or difference would mean nothing."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if hf.eos_token_id != encoder.eot_id:
        raise ValueError(f"exported end-of-text id {hf.eos_token_id}, ours {encoder.eot_id}")
    theirs = hf(list(texts), add_special_tokens=False)["input_ids"]
    for i, (text, ids) in enumerate(zip(texts, theirs, strict=True)):
        if ids != encoder.encode(text):
            raise ValueError(f"text {i} ({text[:60]!r}...): Hugging Face ids differ from ours")


# ---- the generation tasks -----------------------------------------------------------------


def generation_items(
    task: str, eval_data: Path, coqa: Path | None, limit: int | None
) -> list[Prompted]:
    """Our reader's items of `task` (CoQA from the file `coqa`), the first `limit`."""
    eval_set = load_task(task, eval_data, coqa if task == "coqa" else None)
    return eval_set.items[:limit]


def provide_squad_metrics(scorer: Path) -> None:
    """lm-eval 0.4's CoQA task imports `transformers.data.metrics.squad_metrics`, which
    transformers 5 removed: give it that module's two functions, compute_exact and
    compute_f1 (SQuAD 2.0's), from the official CoQA scorer `scorer` (evaluate-v1.0.py),
    which has them unchanged. Nothing of ours goes into lm-eval's score."""
    name = "transformers.data.metrics.squad_metrics"
    try:
        importlib.import_module(name)
        return
    except ModuleNotFoundError:
        pass
    if not scorer.is_file():
        raise FileNotFoundError(f"lm-eval's CoQA task needs {name} or the CoQA scorer: {scorer}")
    spec = importlib.util.spec_from_file_location("coqa_official_scorer", scorer)
    assert spec is not None and spec.loader is not None
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    metrics = types.ModuleType(name)
    metrics.compute_exact = official.CoQAEvaluator.compute_exact  # type: ignore[attr-defined]
    metrics.compute_f1 = official.CoQAEvaluator.compute_f1  # type: ignore[attr-defined]
    sys.modules.setdefault(
        "transformers.data.metrics", types.ModuleType("transformers.data.metrics")
    )
    sys.modules[name] = metrics


def coqa_documents(path: Path, items: Sequence[Prompted]) -> list[dict[str, Any]]:
    """One document per question in lm-eval's CoQA layout (EleutherAI/coqa: the story, its
    questions and answers up to this turn, so lm-eval asks the last one), checked to give
    our prompt through lm-eval's own `doc_to_text`."""
    from lm_eval.tasks.coqa.utils import doc_to_text

    stories = {story["id"]: story for story in json.loads(path.read_bytes())["data"]}
    documents = []
    for item in items:
        story_id, turn = item.key.rsplit(":", 1)
        story = stories[story_id]

        def upto(turns: list[dict[str, Any]], last: int = int(turn)) -> dict[str, list[str]]:
            return {"input_text": [t["input_text"] for t in turns[:last]]}

        document = {
            "id": story_id,
            "story": story["story"],
            "questions": upto(story["questions"]),
            "answers": upto(story["answers"]),
            "additional_answers": {
                key: upto(answers) for key, answers in story.get("additional_answers", {}).items()
            },
        }
        if doc_to_text(document) != item.prompt:
            raise ValueError(f"CoQA {item.key}: lm-eval's prompt differs from ours")
        documents.append(document)
    return documents


def generation_documents(
    task: str, items: Sequence[Prompted], coqa: Path | None
) -> list[dict[str, Any]]:
    """What lm-eval reads for `task`: CoQA's own layout, else our prompt and references."""
    if task == "coqa":
        assert coqa is not None
        return coqa_documents(coqa, items)
    return [
        {"prompt": item.prompt, "answers": list(item.references), "reference": item.references[0]}
        for item in items
    ]


def score_generation(
    model: LanguageModel,
    task: str,
    items: Sequence[Prompted],
    documents: Sequence[dict[str, Any]],
) -> tuple[dict[str, float], list[str]]:
    """Our answers and metrics, named as lm-eval names its own; for CoQA also ours on
    lm-eval's references (its `doc_to_target`)."""
    decoding = TASKS[task].decoding
    assert decoding is not None
    answers = generate_answers(model, items, decoding)
    scores = score_answers(TASKS[task].metric, items, answers)
    if task == "nq_open":
        return {"exact_match": scores["value"]}, answers
    if task != "coqa":
        return {"bleu": scores["value"]}, answers
    from lm_eval.tasks.coqa.utils import doc_to_target

    theirs = [
        replace(item, references=tuple(doc_to_target(document)))
        for item, document in zip(items, documents, strict=True)
    ]
    on_theirs = score_answers("f1", theirs, answers)
    metrics = {"f1": scores["value"], "em": scores["em"]}
    return {
        **metrics,
        "f1 (lm-eval refs)": on_theirs["value"],
        "em (lm-eval refs)": on_theirs["em"],
    }, answers


# ---- lm-evaluation-harness ----------------------------------------------------------------


def local_data(data: Path, cache: Path) -> dict[str, Any]:
    """Config keys that point a task at a local JSON-lines file."""
    return {
        "dataset_path": "json",
        "dataset_name": None,
        # A private cache: nothing of these temporary files outlives the run.
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(cache)},
        "training_split": None,
        "validation_split": None,
        "fewshot_split": None,
        "test_split": "test",
    }


def lm_eval_config(task: str, data: Path, cache: Path) -> dict[str, Any]:
    """lm-eval's own config of `task` (included, so prompts, targets, metrics, filters and
    `!function` helpers stay theirs), reading `data`. Generation tasks stop and end as ours
    do; NQ and WMT read our prompt (our few-shot examples are in it) and references."""
    tasks = Path(str(resources.files("lm_eval") / "tasks"))
    if task == "lambada":
        return {
            "include": str(tasks / "lambada" / "lambada_openai.yaml"),
            **local_data(data, cache),
        }
    if task == "wikitext":
        return {"include": str(tasks / "wikitext" / "wikitext.yaml"), **local_data(data, cache)}
    decoding = TASKS[task].decoding
    assert decoding is not None
    config = {
        "include": str(tasks / GENERATION_TASKS[task]),
        **local_data(data, cache),
        "generation_kwargs": {
            "until": list(decoding.stop),
            "max_gen_toks": decoding.max_new_tokens,
            "do_sample": False,
            "temperature": 0.0,
        },
    }
    if task != "coqa":
        # A list target ("['a', 'b']") is lm-eval's multiple-target form: any may match.
        target = "{{answers}}" if task == "nq_open" else "{{reference}}"
        config |= {"doc_to_text": "{{prompt}}", "doc_to_target": target, "description": ""}
    return config


def lm_eval_name(task: str) -> str:
    """Our task names for lm-eval: distinct from its own, which read from the Hugging Face
    Hub."""
    return {"lambada": LAMBADA_TASK, "wikitext": WIKITEXT_TASK}.get(task, f"crosscheck_{task}")


def write_task_configs(folder: Path, configs: dict[str, dict[str, Any]]) -> None:
    for name, config in configs.items():
        # JSON is YAML; the task manager reads every *.yaml of the folder.
        # Tagged ours: lm_eval's `lambada` tag would otherwise be registered a second time.
        config = {**config, "task": name, "tag": "crosscheck"}
        (folder / f"{name}.yaml").write_text(json.dumps(config, indent=2))


def run_lm_eval(
    hf_folder: Path,
    task_folder: Path,
    limit: int | None,
    device: torch.device,
    expected: dict[str, int],
) -> tuple[dict[str, dict[str, float]], dict[str, list[str]]]:
    """lm-eval's metrics by task, from its Python API (float32, no bootstrap), and its raw
    generations by task in document order; it must have scored the `expected` number of
    documents of each task."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(hf_folder), "dtype": "float32"},
        tasks=list(expected),
        task_manager=TaskManager(include_path=str(task_folder)),
        device=str(device),
        batch_size=16,
        limit=limit,
        bootstrap_iters=0,  # standard errors: not compared, and slow for perplexities
        log_samples=True,
    )
    if out is None:
        raise RuntimeError("lm_eval.simple_evaluate returned nothing")
    for task, count in out.get("n-samples", {}).items():
        if count["effective"] != expected[task]:
            raise RuntimeError(
                f"lm-eval scored {count['effective']} {task} documents, we {expected[task]}"
            )
    # Its keys are "metric,filter"; these tasks have one filter, "none" or NQ's own.
    metrics = {
        task: {key.split(",")[0]: value for key, value in found.items() if "," in key}
        for task, found in out["results"].items()
    }
    generations = {
        task: [s["resps"][0][0] for s in sorted(samples, key=lambda s: s["doc_id"])]
        for task, samples in out["samples"].items()
        if samples and isinstance(samples[0]["resps"][0][0], str)
    }
    return metrics, generations


# ---- our scorer ---------------------------------------------------------------------------


def score_lambada(model: LanguageModel, items: Sequence[Cloze]) -> dict[str, float]:
    cloze = cloze_result(model, items, EvalSettings())
    return {"acc": cloze["value"], "perplexity": cloze["ppl"]}


def score_wikitext(
    model: LanguageModel, pages: Sequence[str], detokenize: Callable[[dict[str, str]], str]
) -> dict[str, float]:
    L = model.max_length
    words = perplexity(
        model,
        [detokenize({"page": page}) for page in pages],
        [lm_eval_word_count(page) for page in pages],
        WindowSettings(context=L, stride=L),
    )
    byte_count = sum(len(page.encode("utf-8")) for page in pages)
    return {
        "word_perplexity": words.per_unit(),
        "byte_perplexity": math.exp(words.nll / byte_count),
        "bits_per_byte": words.nll / byte_count / math.log(2),
    }


# ---- the check ----------------------------------------------------------------------------


def compare(
    ours: dict[str, dict[str, float]], theirs: dict[str, dict[str, float]]
) -> list[Comparison]:
    """A row per metric of ours; a generation task's at its tolerance, CoQA's official
    scores with the reason they differ, and ours on lm-eval's references against its own."""
    rows = []
    for task, metrics in ours.items():
        generation = task.removeprefix("crosscheck_") in GENERATION_TASKS
        for metric, value in metrics.items():
            their_name = metric.removesuffix(" (lm-eval refs)")
            if their_name not in theirs.get(task, {}):
                raise KeyError(f"lm-eval reported no {task}/{their_name}: {theirs.get(task)}")
            reason = (
                COQA_REFERENCES_DIFFER
                if task == lm_eval_name("coqa") and metric == their_name
                else None
            )
            tolerance = GENERATION_TOLERANCE if generation else TOLERANCE
            rows.append(
                Comparison(task, metric, value, float(theirs[task][their_name]), tolerance, reason)
            )
    return rows


def format_table(rows: Sequence[Comparison]) -> str:
    lines = [f"{'metric':<48} {'ours':>16} {'lm-eval':>16} {'rel. diff':>10}"]
    for row in rows:
        name = f"{row.task}/{row.metric}"
        mark = "  <-- differs" if row.fails else (f"  ({row.reason})" if not row.agrees else "")
        lines.append(
            f"{name:<48} {row.ours:>16.10g} {row.lm_eval:>16.10g} "
            f"{row.relative_difference:>10.2e}{mark}"
        )
    return "\n".join(lines)


def crosscheck(
    checkpoint: Path,
    tokenizer: Path | None,
    eval_data: Path,
    limit: int | None,
    device: str | None = None,
    tasks: Sequence[str] = ALL_TASKS,
    coqa: Path | None = None,
    coqa_scorer: Path | None = None,
) -> dict[str, Any]:
    """Run both tools on the same inputs; the comparison as a JSON-ready dict."""
    # Everything is local: no Hub look-ups (read when Hugging Face's libraries are imported).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    unknown = [task for task in tasks if task not in ALL_TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; known: {', '.join(ALL_TASKS)}")
    coqa = coqa or eval_data / COQA_FILE
    if "coqa" in tasks:
        provide_squad_metrics(coqa_scorer or coqa.parent / COQA_SCORER)
    checkpoint = find_checkpoint(checkpoint)
    state = load_state(checkpoint)
    source = tokenizer_source(state, tokenizer)
    model = load_checkpoint_model(checkpoint, source, device)
    ours: dict[str, dict[str, float]] = {}
    answers: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    scored: list[str] = []  # every text lm-eval encodes: its ids must be ours
    with tempfile.TemporaryDirectory(prefix="crosscheck-") as tmp:
        work = Path(tmp)
        configs: dict[str, dict[str, Any]] = {}
        if "lambada" in tasks:
            lambada = read_lambada(eval_data / LAMBADA_FILE, limit)
            items = our_lambada(eval_data, lambada)
            # lm-eval encodes each passage whole and its context alone.
            scored += [*lambada, *(item.context for item in items)]
            counts[LAMBADA_TASK] = len(items)
            ours[LAMBADA_TASK] = score_lambada(model, items)
            configs[LAMBADA_TASK] = lm_eval_config("lambada", eval_data / LAMBADA_FILE, work)
        if "wikitext" in tasks:
            detokenize = lm_eval_detokenizer()
            pages = wikitext_pages((eval_data / WIKITEXT_FILE).read_text("utf-8"))
            scored += [detokenize({"page": page}) for page in pages[:limit]]
            counts[WIKITEXT_TASK] = len(pages[:limit])
            ours[WIKITEXT_TASK] = score_wikitext(model, pages[:limit], detokenize)
            # All pages: lm-eval's own `limit` picks the first ones.
            pages_file = work / "wikitext.jsonl"
            pages_file.write_text("".join(json.dumps({"page": page}) + "\n" for page in pages))
            configs[WIKITEXT_TASK] = lm_eval_config("wikitext", pages_file, work)
        for task in (task for task in tasks if task in GENERATION_TASKS):
            items = generation_items(task, eval_data, coqa, limit)
            documents = generation_documents(task, items, coqa)
            name = lm_eval_name(task)
            scored += [item.prompt for item in items]
            counts[name] = len(items)
            ours[name], answers[name] = score_generation(model, task, items, documents)
            data = work / f"{task}.jsonl"
            data.write_text("".join(json.dumps(d) + "\n" for d in documents))
            configs[name] = lm_eval_config(task, data, work)
        hf_folder = export(state, model.encoder, source, work / "hf")
        check_tokenizer(hf_folder, model.encoder, scored)
        (work / "tasks").mkdir()
        write_task_configs(work / "tasks", configs)
        theirs, generations = run_lm_eval(hf_folder, work / "tasks", limit, model.device, counts)
    rows = compare(ours, theirs)
    same = {
        task: sum(a == first_line(g) for a, g in zip(ours_, generations[task], strict=True))
        for task, ours_ in answers.items()
    }
    return {
        "checkpoint": str(checkpoint),
        "tokenizer": str(source),
        "device": str(model.device),
        "limit": limit,
        "items": counts,
        "context": model.max_length,
        "tolerance": {"log-likelihood": TOLERANCE, "generation": GENERATION_TOLERANCE},
        "metrics": [
            {**asdict(row), "relative_difference": row.relative_difference, "agrees": row.agrees}
            for row in rows
        ],
        "same_answers": same,
        "answers": answers,
    }


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a ckpt-*.pt or a run folder")
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer.json, or a folder with it or with encoder.json + vocab.bpe; default: "
        "the tokenizer version of the run's tokens",
    )
    p.add_argument(
        "--eval-data",
        type=Path,
        default=Path("data/eval"),
        help=f"folder with {LAMBADA_FILE}, {WIKITEXT_FILE}, and the generation tasks' files "
        "at their default paths",
    )
    p.add_argument(
        "--tasks",
        type=lambda text: [task for task in text.split(",") if task],
        default=list(ALL_TASKS),
        help=f"comma-separated, of {','.join(ALL_TASKS)} (default: all)",
    )
    p.add_argument("--coqa", type=Path, help=f"the CoQA file (default: EVAL_DATA/{COQA_FILE})")
    p.add_argument(
        "--coqa-scorer",
        type=Path,
        help=f"the official CoQA scorer, for lm-eval under transformers 5 (default: "
        f"{COQA_SCORER} beside the CoQA file)",
    )
    p.add_argument("--limit", type=positive, help="only the first N items of each task")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--out", type=Path, help="folder for crosscheck.json (default: stdout only)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = crosscheck(
        args.checkpoint,
        args.tokenizer,
        args.eval_data,
        args.limit,
        args.device,
        args.tasks,
        args.coqa,
        args.coqa_scorer,
    )
    names = [f.name for f in fields(Comparison)]
    rows = [Comparison(**{k: m[k] for k in names if k in m}) for m in report["metrics"]]
    print(format_table(rows))
    for task, same in report.get("same_answers", {}).items():
        print(f"{task}: {same} of {report['items'][task]} answers the same text")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "crosscheck.json").write_text(json.dumps(report, indent=2) + "\n")
    failed = [row for row in rows if row.fails]
    for row in failed:
        print(
            f"{row.task}/{row.metric}: ours {row.ours:.6g}, lm-eval {row.lm_eval:.6g}, "
            f"relative difference {row.relative_difference:.2%} > {row.tolerance:.1%}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
