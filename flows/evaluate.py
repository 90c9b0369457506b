"""`evaluate-zero-shot`: a model to an `evaluation` version, shown in the paper's layout."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from evaluation.models import HFModelFolder, ModelSource
from evaluation.stage import EvaluationPlan, evaluate_model, overlap_version
from flows.artifacts import ProgressReporter, publish_version
from webtext.config import open_store
from webtext.store import StageResult, Store, VersionRef


@task(cache_policy=NO_CACHE, persist_result=False)
def evaluate_task(
    store: Store,
    model: ModelSource,
    plan: EvaluationPlan,
    webtext: VersionRef | None,
    tokenizer: str | None,
    device: str | None,
) -> StageResult:
    logger = get_run_logger()
    progress = ProgressReporter(f"Evaluation sets of {model}", min_interval_s=0)
    progress.start(len(plan.tasks))

    def on_task(name: str, result: dict) -> None:
        logger.info("%s: %s = %.4f", name, result["metric"], result["value"])
        progress.advance()

    result = evaluate_model(store, model, plan, webtext, tokenizer, device, on_task)
    progress.finish()
    return result


@flow(name="evaluate-zero-shot", log_prints=True)
def evaluate_zero_shot_flow(
    checkpoint: str = "latest",
    hf_model: str | None = None,
    tasks: list[str] | None = None,
    eval_data: str | None = None,
    paths: dict[str, str] | None = None,
    context: int | None = None,
    stride: int | None = None,
    batch_tokens: int = 8192,
    limit: int | None = None,
    lambada_stopword_filter: bool = False,
    prompts: list[str] | None = None,
    samples_per_prompt: int = 1,
    max_new_tokens: int = 100,
    top_k: int = 40,
    top_p: float = 1.0,
    temperature: float = 1.0,
    seed: int = 0,
    decontaminate: str | None = "latest",
    tokenizer: str | None = None,
    device: str | None = None,
    store_url: str | None = None,
) -> VersionRef:
    """Evaluate a model zero-shot: a `model` version id ("latest"; its tokenizer is the one
    of its lineage), or a checkpoint file or training run's folder on this machine, with
    its `tokenizer` (a tokenizer.json, or a folder of one or of GPT-2's files); or, given
    `hf_model`, a Hugging Face GPT-2 folder on this machine (its own tokenizer.json, or
    `tokenizer`), in place of `checkpoint`.

    `tasks`: names (lambada, wikitext2, wikitext103, ptb, 1bw, enwik8, text8, cbt-cn, cbt-ne,
    winograd, nq_open, wmt14-fr-en, wmt14-en-fr, coqa, cnn_dailymail); default: every one
    whose file is under `eval_data` (default $WEBTEXT_EVAL_DATA, else ./eval-data).
    `decontaminate`: a `webtext` version whose 8-gram overlap with each set is measured
    ("latest"; None to skip).
    """
    plan = EvaluationPlan.from_user(locals())
    store = open_store(store_url)
    model: ModelSource
    if hf_model is not None:
        model = HFModelFolder(Path(hf_model))
    elif Path(checkpoint).exists():
        model = Path(checkpoint)
    else:
        model = store.resolve("model", checkpoint)
    webtext = overlap_version(store, decontaminate)
    if webtext is None:
        get_run_logger().info("no webtext version to measure the overlap with: skipped")
    result = evaluate_task(store, model, plan, webtext, tokenizer, device)
    publish_version(store, result.ref, result.stats["counts"], result.reused, "Zero-shot results")
    create_table_artifact(
        key="evaluate-zero-shot-paper-table",
        table=result.stats["paper_table"],
        description="GPT-2 paper, Table 3 layout: the paper's four sizes, then this checkpoint "
        "(accuracies in %; – = not run)",
    )
    create_table_artifact(
        key="evaluate-zero-shot-other-tasks",
        table=result.stats["other_tasks_table"],
        description="GPT-2 paper, sections 3.5-3.8: reading comprehension, summarization, "
        "translation, question answering; GPT-2 1542M as published, then this checkpoint "
        "(– = not run)",
    )
    create_markdown_artifact(
        key="evaluate-zero-shot-samples",
        markdown=_samples_markdown(store, result.ref),
        description=f"Samples for fixed prompts ({plan.sampling})",
    )
    return result.ref


def _samples_markdown(store: Store, ref: VersionRef) -> str:
    lines = [f"# Samples of {ref}\n"]
    text = store.fs.cat_file(f"{store.version_dir(ref)}/samples.jsonl").decode()
    for row in map(json.loads, text.splitlines()):
        quoted = row["text"].replace("\n", "\n> ")
        lines.append(f"**Prompt** (seed {row['seed']}): {row['prompt']}\n\n> {quoted}\n")
    return "\n".join(lines)
