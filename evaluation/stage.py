"""The `evaluation` stage: a model and evaluation sets to a versioned results folder.

A version holds `results.json` (every set's metric and the totals behind it, samples and
decontamination), `table.md` (the paper's layout), `samples.jsonl` and one
`tasks/<name>.json` per set. Its id covers the model, every set file's sha256, the settings
and the code, so the same evaluation twice is one version; a killed run resumes with the
sets it had finished. A `model` version is named by its reference (and is the version's
parent), wherever the store holding it is; a checkpoint outside the store or a Hugging
Face GPT-2 folder, and its tokenizer, by their files' sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.datasets import (
    TASKS,
    Choice,
    Cloze,
    Document,
    EvalSet,
    Prompted,
    cbt_split,
    load_task,
)
from evaluation.decontam import build_ngram_filter, load_ngram_filter, overlap
from evaluation.generation import sample_prompts
from evaluation.models import (
    HFModelFolder,
    LanguageModel,
    ModelSource,
    check_model_source,
    checkpoint_model,
    find_checkpoint,
    hf_folder_model,
    load_model_version,
    tokenizer_files,
    tokenizer_from_files,
)
from evaluation.paper import PAPER_SPLITS, other_tasks_table, paper_table
from evaluation.sampling import SampleSettings
from evaluation.scoring import WindowSettings
from evaluation.zero_shot import EvalSettings, evaluate_set
from training.model import hf_weight_files
from webtext.config import eval_data_root
from webtext.markdown import markdown_table
from webtext.stage import PartResult, Stage, StageWrite, options_from, run_stage
from webtext.store import LATEST, StageResult, Store, VersionRef

STAGE = Stage("evaluation", __name__)
# Prompts of the kind the GPT-2 paper shows samples for (a news lede, a question, a story).
DEFAULT_PROMPTS = (
    "In a shocking finding, scientists discovered a herd of unicorns living in a remote, "
    "previously unexplored valley in the Andes Mountains.",
    "The Python programming language is",
    "Q: What is the capital of France?\nA:",
)


@dataclass(frozen=True)
class EvaluationPlan:
    """What to evaluate and how; every field is part of the version's identity."""

    tasks: Sequence[str]
    eval_root: str
    paths: Mapping[str, str] = field(default_factory=dict)  # task -> file, overriding the root
    settings: EvalSettings = field(default_factory=EvalSettings)
    prompts: Sequence[str] = DEFAULT_PROMPTS
    sampling: SampleSettings = field(default_factory=SampleSettings)
    samples_per_prompt: int = 1

    @classmethod
    def from_user(cls, parameters: Mapping[str, Any]) -> EvaluationPlan:
        """From an entry point's parameters, by name (the CLI's and the flow's): `tasks`
        (default: every set found under `eval_data`), `paths`, windows (`context`, `stride`),
        `batch_tokens`, `limit`, `prompts` (default: the paper-like ones) and sampling."""
        root = eval_data_root(parameters.get("eval_data"))
        # "nq_open,coqa" and ["nq_open", "coqa"] alike
        tasks = [t.strip() for ts in parameters.get("tasks") or () for t in ts.split(",") if t]
        tasks = tasks or available_tasks(root)
        if not tasks:
            raise FileNotFoundError(f"no evaluation sets under {root} (set eval_data or paths)")
        paths = parameters.get("paths") or {}
        if not isinstance(paths, Mapping):  # the CLI's "task=path" strings
            paths = dict(_task_path(text) for text in paths)
        unknown = [task for task in [*tasks, *paths] if task not in TASKS]
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r}; known: {', '.join(TASKS)}")
        windows = WindowSettings(**options_from(WindowSettings, parameters))
        settings = options_from(EvalSettings, parameters)
        settings["windows"] = windows
        prompts = parameters.get("prompts")
        given = options_from(cls, parameters)  # samples_per_prompt; the rest is set below
        return cls(
            **{
                **given,
                "tasks": tuple(tasks),
                "eval_root": root,
                "paths": paths,
                "settings": EvalSettings(**settings),
                "prompts": tuple(prompts) if prompts else DEFAULT_PROMPTS,
                "sampling": SampleSettings(**options_from(SampleSettings, parameters)),
            }
        )

    def task_path(self, task: str) -> Path:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        return Path(self.paths.get(task) or Path(self.eval_root) / TASKS[task].path)


def _task_path(text: str) -> tuple[str, str]:
    task, _, path = text.partition("=")
    if not (task and path):
        raise ValueError(f"a set's path is given as TASK=PATH, not {text!r}")
    return task.strip(), path


def overlap_version(store: Store, decontaminate: str | None) -> VersionRef | None:
    """The `webtext` version to measure 8-gram overlap against: None for "" or None, and for
    "latest" in a store with no dataset yet; else that version, checked to exist."""
    if not decontaminate or (decontaminate == LATEST and store.latest("webtext") is None):
        return None
    return store.resolve("webtext", decontaminate)


def available_tasks(eval_root: str | Path) -> list[str]:
    """The tasks whose files (or folders) are under `eval_root` at their default paths."""
    return [name for name, spec in TASKS.items() if (Path(eval_root) / spec.path).exists()]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def input_sha256(path: Path) -> str:
    """A set's file's sha256; for a folder (WMT-14's SGML files, CNN/DailyMail's stories),
    the sha256 of its files' relative names and sha256s, in name order."""
    if not path.is_dir():
        return file_sha256(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = "".join(f"{p.relative_to(path).as_posix()}\t{file_sha256(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def model_source(
    store: Store,
    model: ModelSource,
    tokenizer: str | Path | None,
    device: str | None = None,
) -> tuple[dict[str, Any], Callable[[], LanguageModel]]:
    """What an evaluation's id says of its model, and how to load it, from files checked and
    found once (the id covers the very files loaded): a `model` version's reference, or the
    sha256 of a checkpoint's or a Hugging Face folder's files and of its tokenizer's (never
    a path: paths differ between machines)."""
    check_model_source(model, tokenizer)
    if isinstance(model, VersionRef):
        ref = model
        return {"model": str(ref)}, lambda: load_model_version(store, ref, device)
    if isinstance(model, HFModelFolder):
        folder = model.path
        weights = [folder / "config.json", *hf_weight_files(folder)]
        files = tokenizer_files(tokenizer or folder)
        identity = {
            "hf_model": {path.name: file_sha256(path) for path in weights},
            "tokenizer": {path.name: file_sha256(path) for path in files},
        }
        return identity, lambda: hf_folder_model(folder, tokenizer_from_files(files), device)
    checkpoint = find_checkpoint(model)
    files = tokenizer_files(tokenizer)  # a checkpoint comes with one (checked)
    identity = {
        "checkpoint": {"name": checkpoint.name, "sha256": file_sha256(checkpoint)},
        "tokenizer": {path.name: file_sha256(path) for path in files},
    }
    return identity, lambda: checkpoint_model(checkpoint, tokenizer_from_files(files), device)


def evaluate_model(
    store: Store,
    model: ModelSource,
    plan: EvaluationPlan,
    webtext: VersionRef | None = None,
    tokenizer: str | Path | None = None,
    device: str | None = None,
    on_task: Callable[[str, dict[str, Any]], None] | None = None,
) -> StageResult:
    """Evaluate a model on `plan.tasks`, sample its prompts and, given a `webtext` version,
    measure each set's 8-gram overlap with it; write it all as one version.

    `model`: a `model` version of `store` (its tokenizer is its lineage's), a Hugging Face
    GPT-2 folder (`HFModelFolder`; its own tokenizer, or `tokenizer`), or a checkpoint
    outside the store (a file or a run's folder) with its `tokenizer`.
    """
    files = {task: plan.task_path(task) for task in plan.tasks}
    for task, path in files.items():
        if not path.exists():
            raise FileNotFoundError(f"evaluation set {task!r} not found at {path}")
    identity, load_model = model_source(store, model, tokenizer, device)
    parameters = {
        **identity,
        "tasks": {
            task: {"file": path.name, "sha256": input_sha256(path)} for task, path in files.items()
        },
        "settings": plan.settings.parameters(),
        "prompts": list(plan.prompts),
        "sampling": plan.sampling.as_dict(),
        "samples_per_prompt": plan.samples_per_prompt,
    }
    ngram_filter = build_ngram_filter(store, webtext).ref if webtext else None
    source = model if isinstance(model, VersionRef) else None
    inputs = tuple(ref for ref in (source, ngram_filter) if ref)

    def build(work: StageWrite) -> None:
        lm = load_model()
        out = work.out
        todo = work.pending(list(files))  # each set is a part: a killed run keeps those done
        results: dict[str, dict[str, Any]] = {}
        sets: dict[str, EvalSet] = {}
        for task, path in files.items():
            sets[task] = load_task(task, plan.eval_root, path)
            name = f"tasks/{task}.json"
            if task in todo:
                results[task] = evaluate_set(lm, sets[task], plan.settings)
                out.put(name, json.dumps(results[task], indent=2).encode())
                work.commit(task, PartResult({name: None}))
            else:
                results[task] = json.loads(out.fs.cat_file(out.path(name)))
            if on_task:
                on_task(task, results[task])
        samples = sample_prompts(lm, list(plan.prompts), plan.sampling, plan.samples_per_prompt)
        decontamination = (
            _decontamination(store, ngram_filter, sets, plan.settings.limit) if ngram_filter else {}
        )
        splits = {task: cbt_split(path) for task, path in files.items() if task in PAPER_SPLITS}
        table = paper_table(results, f"ours ({lm.name})", splits)
        other_table = other_tasks_table(results, f"ours ({lm.name})")
        summary = {
            "model": lm.name,
            "tokenizer": lm.encoder.name,
            "results": results,
            "paper_table": table,
            "other_tasks_table": other_table,
            "decontamination": decontamination,
            "samples": samples,
        }
        out.put("results.json", json.dumps(summary, indent=2).encode())
        out.put("table.md", f"{markdown_table(table)}\n{markdown_table(other_table)}".encode())
        out.put(
            "samples.jsonl",
            "".join(json.dumps(s) + "\n" for s in samples).encode(),
            rows=len(samples),
        )
        work.counts.update(_counts(results, decontamination))
        work.stats["paper_table"] = table
        work.stats["other_tasks_table"] = other_table

    return run_stage(store, STAGE, inputs, parameters, build, resumable=True)


def _texts(items: Sequence[Any]) -> list[str]:
    """The text of each item as published: what a training set could have contained."""
    texts = []
    for item in items:
        if isinstance(item, Document):
            texts.append(item.original)
        elif isinstance(item, Cloze):
            texts.append(f"{item.context} {item.target}")
        elif isinstance(item, Choice):
            texts.append("".join(item.options[item.gold]))
        elif isinstance(item, Prompted):
            texts.append(item.text)
    return texts


def _decontamination(
    store: Store, ngram_filter: VersionRef, sets: Mapping[str, EvalSet], limit: int | None
) -> dict[str, Any]:
    bloom = load_ngram_filter(store, ngram_filter)
    report: dict[str, Any] = {"ngram_filter": str(ngram_filter)}
    for task, eval_set in sets.items():
        items = eval_set.items[:limit] if limit else eval_set.items
        report[task] = overlap(bloom, _texts(items))
    return report


def _counts(results: Mapping[str, Mapping[str, Any]], decontamination: Mapping[str, Any]):
    counts: dict[str, Any] = {}
    for task, result in results.items():
        counts[f"{task} {result['metric']}"] = round(result["value"], 4)
        if "ppl" in result:
            counts[f"{task} ppl"] = round(result["ppl"], 4)
        if task in decontamination:
            counts[f"{task} 8-gram overlap"] = round(decontamination[task]["fraction"], 6)
    return counts
