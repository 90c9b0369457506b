"""Cross-check our zero-shot scorer against lm-evaluation-harness, on the same model and text.

    python -m evaluation.crosscheck --checkpoint RUN_DIR_OR_CKPT [--tokenizer PATH]
        [--eval-data DIR] [--limit N] [--device DEV] [--out DIR]

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

The units are lm-eval's, not our WikiText task's: words are `len(re.split(r"\\s+", page))`
and bytes the UTF-8 bytes of the page *before* detokenizing. Our own task counts the words
of the tokenized text its own way; using lm-eval's counts here means a difference can only
come from the scoring (tokens, windows, log-likelihoods), which is what this checks.

A metric whose relative difference exceeds 0.1% fails the check (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from evaluation.datasets import Cloze, load_task
from evaluation.models import LanguageModel, find_checkpoint, load_checkpoint_model
from evaluation.scoring import WindowSettings, perplexity
from evaluation.zero_shot import EvalSettings, cloze_result
from training.bpe import EOT, Encoder
from training.model import GPT, GPTConfig, export_hf
from webtext.store import MANIFEST, Manifest, Store

TOLERANCE = 1e-3  # relative
LAMBADA_FILE = Path("lambada", "lambada_test.jsonl")
WIKITEXT_FILE = Path("wikitext2", "wiki.test.raw")
# Our task names for lm-eval: distinct from its own, which read from the Hugging Face Hub.
LAMBADA_TASK = "crosscheck_lambada_openai"
WIKITEXT_TASK = "crosscheck_wikitext"


@dataclass(frozen=True)
class Comparison:
    task: str
    metric: str
    ours: float
    lm_eval: float

    @property
    def relative_difference(self) -> float:
        if self.ours == self.lm_eval:  # also two zero accuracies
            return 0.0
        return abs(self.ours - self.lm_eval) / max(abs(self.ours), abs(self.lm_eval))

    @property
    def agrees(self) -> bool:
        return self.relative_difference <= TOLERANCE


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


# ---- lm-evaluation-harness ----------------------------------------------------------------


def write_task_configs(folder: Path, lambada: Path, pages: Path, cache: Path) -> None:
    """lm-eval's own lambada_openai and wikitext configs (included, so prompts, targets,
    metrics and `!function` helpers stay theirs), reading our local files instead."""
    tasks = Path(str(resources.files("lm_eval") / "tasks"))

    def local(data: Path) -> dict[str, Any]:
        return {
            "dataset_path": "json",
            "dataset_name": None,
            # A private cache: nothing of these temporary files outlives the run.
            "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(cache)},
            "training_split": None,
            "validation_split": None,
            "test_split": "test",
        }

    configs = {
        LAMBADA_TASK: {"include": str(tasks / "lambada" / "lambada_openai.yaml"), **local(lambada)},
        WIKITEXT_TASK: {"include": str(tasks / "wikitext" / "wikitext.yaml"), **local(pages)},
    }
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
) -> dict[str, dict[str, float]]:
    """lm-eval's metrics by task, from its Python API (float32, no bootstrap); it must have
    scored the `expected` number of documents of each task."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(hf_folder), "dtype": "float32"},
        tasks=[LAMBADA_TASK, WIKITEXT_TASK],
        task_manager=TaskManager(include_path=str(task_folder)),
        device=str(device),
        batch_size=16,
        limit=limit,
        bootstrap_iters=0,  # standard errors: not compared, and slow for perplexities
        log_samples=False,
    )
    if out is None:
        raise RuntimeError("lm_eval.simple_evaluate returned nothing")
    for task, count in out.get("n-samples", {}).items():
        if count["effective"] != expected[task]:
            raise RuntimeError(
                f"lm-eval scored {count['effective']} {task} documents, we {expected[task]}"
            )
    # Its keys are "metric,filter"; these tasks have the one filter "none".
    return {
        task: {key.split(",")[0]: value for key, value in metrics.items() if key.endswith(",none")}
        for task, metrics in out["results"].items()
    }


# ---- our scorer ---------------------------------------------------------------------------


def score_ours(
    model: LanguageModel,
    lambada: Sequence[Cloze],
    pages: Sequence[str],
    detokenize: Callable[[dict[str, str]], str],
) -> dict[str, dict[str, float]]:
    cloze = cloze_result(model, lambada, EvalSettings())
    L = model.max_length
    words = perplexity(
        model,
        [detokenize({"page": page}) for page in pages],
        [lm_eval_word_count(page) for page in pages],
        WindowSettings(context=L, stride=L),
    )
    byte_count = sum(len(page.encode("utf-8")) for page in pages)
    return {
        LAMBADA_TASK: {"acc": cloze["value"], "perplexity": cloze["ppl"]},
        WIKITEXT_TASK: {
            "word_perplexity": words.per_unit(),
            "byte_perplexity": math.exp(words.nll / byte_count),
            "bits_per_byte": words.nll / byte_count / math.log(2),
        },
    }


# ---- the check ----------------------------------------------------------------------------


def compare(
    ours: dict[str, dict[str, float]], theirs: dict[str, dict[str, float]]
) -> list[Comparison]:
    rows = []
    for task, metrics in ours.items():
        for metric, value in metrics.items():
            if metric not in theirs.get(task, {}):
                raise KeyError(f"lm-eval reported no {task}/{metric}: {theirs.get(task)}")
            rows.append(Comparison(task, metric, value, float(theirs[task][metric])))
    return rows


def format_table(rows: Sequence[Comparison]) -> str:
    lines = [f"{'metric':<42} {'ours':>16} {'lm-eval':>16} {'rel. diff':>10}"]
    for row in rows:
        name = f"{row.task}/{row.metric}"
        mark = "" if row.agrees else "  <-- differs"
        lines.append(
            f"{name:<42} {row.ours:>16.10g} {row.lm_eval:>16.10g} "
            f"{row.relative_difference:>10.2e}{mark}"
        )
    return "\n".join(lines)


def crosscheck(
    checkpoint: Path,
    tokenizer: Path | None,
    eval_data: Path,
    limit: int | None,
    device: str | None = None,
) -> dict[str, Any]:
    """Run both tools on the same inputs; the comparison as a JSON-ready dict."""
    # Everything is local: no Hub look-ups (read when Hugging Face's libraries are imported).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    checkpoint = find_checkpoint(checkpoint)
    state = load_state(checkpoint)
    source = tokenizer_source(state, tokenizer)
    model = load_checkpoint_model(checkpoint, source, device)
    detokenize = lm_eval_detokenizer()
    lambada = read_lambada(eval_data / LAMBADA_FILE, limit)
    items = our_lambada(eval_data, lambada)
    pages = wikitext_pages((eval_data / WIKITEXT_FILE).read_text("utf-8"))
    scored = [detokenize({"page": page}) for page in pages[:limit]]
    # lm-eval encodes each passage whole and its context alone; ids of both must be ours.
    scored += [*lambada, *(item.context for item in items)]
    counts = {LAMBADA_TASK: len(items), WIKITEXT_TASK: len(pages[:limit])}
    with tempfile.TemporaryDirectory(prefix="crosscheck-") as tmp:
        work = Path(tmp)
        hf_folder = export(state, model.encoder, source, work / "hf")
        check_tokenizer(hf_folder, model.encoder, scored)
        # All pages: lm-eval's own `limit` picks the first ones.
        pages_file = work / "wikitext.jsonl"
        pages_file.write_text("".join(json.dumps({"page": page}) + "\n" for page in pages))
        (work / "tasks").mkdir()
        write_task_configs(work / "tasks", eval_data / LAMBADA_FILE, pages_file, work / "cache")
        theirs = run_lm_eval(hf_folder, work / "tasks", limit, model.device, counts)
    rows = compare(score_ours(model, items, pages[:limit], detokenize), theirs)
    return {
        "checkpoint": str(checkpoint),
        "tokenizer": str(source),
        "device": str(model.device),
        "limit": limit,
        "items": counts,
        "context": model.max_length,
        "tolerance": TOLERANCE,
        "metrics": [
            {**asdict(row), "relative_difference": row.relative_difference, "agrees": row.agrees}
            for row in rows
        ],
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
        help=f"folder with {LAMBADA_FILE} and {WIKITEXT_FILE}",
    )
    p.add_argument("--limit", type=positive, help="only the first N items of each task")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--out", type=Path, help="folder for crosscheck.json (default: stdout only)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = crosscheck(args.checkpoint, args.tokenizer, args.eval_data, args.limit, args.device)
    rows = [Comparison(m["task"], m["metric"], m["ours"], m["lm_eval"]) for m in report["metrics"]]
    print(format_table(rows))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "crosscheck.json").write_text(json.dumps(report, indent=2) + "\n")
    failed = [row for row in rows if not row.agrees]
    for row in failed:
        print(
            f"{row.task}/{row.metric}: ours {row.ours:.6g}, lm-eval {row.lm_eval:.6g}, "
            f"relative difference {row.relative_difference:.2%} > {TOLERANCE:.1%}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
