"""`build-webtext`: the whole pipeline, one sub-flow per stage, each reading and writing versions.

    links -> fetch -> extract -> dedup (publish) -> tokenize -> train -> evaluate [-> outputs]

Every stage is cached by the store: its version id covers its inputs, parameters and code,
so a stage whose version exists returns it at once (a rerun with the same inputs is a cache
hit, shown as "reused"), and a killed stage resumes from what it had committed. Each stage
has its own retries and timeout; a failure names the stage and the version it was reading.
`until` stops early: the scheduled `scrape-dedup` deployment ends at dedup. `outputs` (off
by default) adds a last step: the model's output dataset and its detection baselines.

The build's outcome is a table artifact, OUTCOME_ARTIFACT, republished after every stage: one
row per planned stage, {stage, version, reused, state, error}. Programs (the demo) read it;
the markdown artifact beside it is for people.

Training runs through `train_deployment` (the GPU work pool) and this flow waits for it;
with `train_deployment=None` it runs in this process.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.deployments import run_deployment

from flows.dedup import dedup_flow
from flows.evaluate import evaluate_zero_shot_flow
from flows.extract import extract_text_flow
from flows.fetch import fetch_pages_flow
from flows.links import collect_links_flow
from flows.release import outputs_flow
from flows.runner import parts_map
from flows.tokenize import tokenize_flow
from flows.train import train_gpt2_flow
from training.launch import (
    STAGE,
    check_device,
    fine_tuning,
    model_inputs,
    model_ref,
    training_parameters,
)
from training.settings import TrainSettings
from webtext.config import open_store
from webtext.stage import find_version
from webtext.store import Store, VersionRef

STAGES = ("links", "fetch", "extract", "dedup", "tokenize", "train", "evaluate")
HOUR = 3600
OUTCOME_ARTIFACT = "build-webtext-outcome"
NOTHING_NEW_ARTIFACT = "build-webtext-nothing-new"


@dataclass(frozen=True)
class StagePolicy:
    retries: int
    timeout_s: int


# Fetching resumes from its committed shards, so a retry after a crash loses little; a
# training retry resumes from the last checkpoint.
POLICIES = {
    "links": StagePolicy(retries=2, timeout_s=12 * HOUR),
    "fetch": StagePolicy(retries=2, timeout_s=96 * HOUR),
    "extract": StagePolicy(retries=1, timeout_s=48 * HOUR),
    "dedup": StagePolicy(retries=1, timeout_s=24 * HOUR),
    "tokenize": StagePolicy(retries=1, timeout_s=24 * HOUR),
    "train": StagePolicy(retries=1, timeout_s=30 * 24 * HOUR),
    "evaluate": StagePolicy(retries=1, timeout_s=48 * HOUR),
    "outputs": StagePolicy(retries=1, timeout_s=48 * HOUR),
}
RETRY_DELAY_S = 60


class StageFailed(RuntimeError):
    """A stage of build-webtext failed; the message names the stage and its input."""

    def __init__(self, stage: str, reading: str, cause: BaseException) -> None:
        self.stage = stage
        self.reading = reading
        self.error = f"{type(cause).__name__}: {cause}"
        super().__init__(f"stage {stage!r} failed reading {reading}: {self.error}")


@flow(name="build-webtext")
def build_webtext(
    dumps: list[str] | None = None,
    listings: list[str] | None = None,
    incremental: bool = True,
    links: dict[str, Any] | None = None,
    fetch: dict[str, Any] | None = None,
    extract: dict[str, Any] | None = None,
    dedup: dict[str, Any] | None = None,
    tokenize: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    evaluate: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    train_deployment: str | None = "train-gpt2/default",
    until: str = "evaluate",
    store_url: str | None = None,
    task_runner: str = "threads",
) -> dict[str, VersionRef]:
    """Build every stage's next version from Reddit dumps and/or API listings.

    `links`, `fetch`, `extract`, `dedup`, `tokenize`, `train` and `evaluate` hold options of
    those stages' flows (min_karma; connections, archives; min_words; skip_versions;
    gpt2_bpe_dir, vocab_size;
    model, max_steps, gpus_per_node; tasks, eval_data ...). `until` names the last stage.
    `outputs`: None (the default) skips the output dataset; a dict of the `outputs` flow's
    options ({} for its defaults) runs it after evaluate, when the build goes that far.
    `task_runner` is where the stages that work in parts run them (`flows.runner`:
    threads, dask for a local cluster, dask://host:8786 for an existing one, ray).
    """
    if until not in STAGES:
        raise ValueError(f"until={until!r}: not one of {', '.join(STAGES)}")
    stages = STAGES[: STAGES.index(until) + 1]
    if outputs is not None and until == STAGES[-1]:
        stages = (*stages, "outputs")
    parts_map(task_runner)  # a bad name fails here, before any stage
    store = open_store(store_url)
    store_url = store.root_url
    refs: dict[str, VersionRef] = {}
    outcome = BuildOutcome(store, stages)

    def run(name: str, subflow: Flow, reading: str, **parameters: Any) -> VersionRef | None:
        if name not in stages:
            return None
        configured = _with_policy(name, subflow)
        refs[name] = outcome.run(name, reading, lambda: configured(**parameters))
        publish_summary(store, refs)
        return refs[name]

    inputs = f"{len(dumps or [])} dumps and {len(listings or [])} listings"
    link_ref = run(
        "links",
        collect_links_flow,
        inputs,
        dumps=dumps,
        listings=listings,
        incremental=incremental,
        store_url=store_url,
        task_runner=task_runner,
        **(links or {}),
    )
    fetches = run(
        "fetch",
        fetch_pages_flow,
        str(link_ref),
        links_version=_version(link_ref),
        store_url=store_url,
        task_runner=task_runner,
        **(fetch or {}),
    )
    documents = run(
        "extract",
        extract_text_flow,
        str(fetches),
        fetches_version=_version(fetches),
        store_url=store_url,
        task_runner=task_runner,
        **(extract or {}),
    )
    webtext = run(
        "dedup",
        dedup_flow,
        str(documents),
        documents_version=_version(documents),
        store_url=store_url,
        task_runner=task_runner,
        **(dedup or {}),
    )
    tokens = run(
        "tokenize",
        tokenize_flow,
        str(webtext),
        webtext_version=_version(webtext),
        store_url=store_url,
        task_runner=task_runner,
        **(tokenize or {}),
    )
    if "train" in stages:
        refs["train"] = outcome.run(
            "train", str(tokens), lambda: _train(store, tokens, train or {}, train_deployment)
        )
        publish_summary(store, refs)
    run(
        "evaluate",
        evaluate_zero_shot_flow,
        str(refs.get("train")),
        checkpoint=_version(refs.get("train")),
        decontaminate=_version(webtext),
        store_url=store_url,
        **(evaluate or {}),
    )
    run(
        "outputs",
        outputs_flow,
        str(refs.get("train")),
        model_version=_version(refs.get("train")),
        store_url=store_url,
        **(outputs or {}),
    )
    outcome.say_if_nothing_new()
    return refs


def _version(ref: VersionRef | None) -> str:
    return ref.version if ref else "latest"


def _with_policy(stage: str, subflow: Flow) -> Flow:
    policy = POLICIES[stage]
    return subflow.with_options(
        retries=policy.retries,
        retry_delay_seconds=RETRY_DELAY_S,
        timeout_seconds=policy.timeout_s,
    )


class BuildOutcome:
    """Each planned stage's outcome, published as the OUTCOME_ARTIFACT table as it changes.

    A row: `stage`; `version` ("stage/id", "" until made); `reused` (the version was made
    before this stage started: a cache hit; null until known); `state` ("pending",
    "completed", "failed"); `error` (the failure, "" otherwise).
    """

    def __init__(self, store: Store, stages: tuple[str, ...]) -> None:
        self.store = store
        self.rows = {
            stage: {"stage": stage, "version": "", "reused": None, "state": "pending", "error": ""}
            for stage in stages
        }

    def run(self, stage: str, reading: str, call: Callable[[], VersionRef]) -> VersionRef:
        """`call()`'s version, recorded; a failure recorded and raised as StageFailed."""
        started = datetime.now(UTC)
        try:
            ref = call()
        except Exception as exc:
            failure = StageFailed(stage, reading, exc)
            self.rows[stage].update(state="failed", error=failure.error)
            self.publish()
            raise failure from exc
        reused = datetime.fromisoformat(self.store.manifest(ref).created_at) < started
        self.rows[stage].update(version=str(ref), reused=reused, state="completed")
        self.publish()
        return ref

    def publish(self) -> None:
        create_table_artifact(
            key=OUTCOME_ARTIFACT,
            table=list(self.rows.values()),
            description="Each stage's version, whether it was reused, its state and error",
        )

    def say_if_nothing_new(self) -> None:
        """When every stage reused a version (no input held anything new, so nothing was
        published and no `latest` moved), say so once: in the log and as an artifact."""
        rows = list(self.rows.values())
        if not all(row["reused"] for row in rows):
            return
        since = next((r["version"] for r in rows if r["stage"] == "dedup"), rows[-1]["version"])
        line = (
            f"nothing new since {since}: every stage reused its version ("
            + ", ".join(f"{row['stage']} {row['version']}" for row in rows)
            + ")"
        )
        get_run_logger().info(line)
        create_markdown_artifact(
            key=NOTHING_NEW_ARTIFACT, markdown=f"# Nothing new\n\n{line}\n", description=line
        )


def _train(
    store: Store, tokens: VersionRef | None, options: dict[str, Any], deployment: str | None
) -> VersionRef:
    """Train on `tokens`, in this process or through the deployment: started, then watched
    until it ends, its state and progress (step, loss, tokens/s, ETA) repeated in this run's
    log. A model larger than `tiny` that the deployment would train on CPU (gpus_per_node=0
    in its parameters or ours, and no allow_cpu) is refused before any run starts."""
    from prefect.client.orchestration import get_client

    from flows.train import watch_training

    tokens = tokens or store.resolve("tokens")
    parameters = {
        **options,
        "tokens_version": tokens.version,
        "evaluate_deployment": None,  # build-webtext evaluates next, itself
        "store_url": store.root_url,
    }
    if deployment is None:
        return _with_policy("train", train_gpt2_flow)(**parameters)
    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        deployed = client.read_deployment_by_name(deployment).parameters
    # What the run will get: the flow's defaults, the deployment's parameters, ours over them.
    run_parameters = {**_flow_defaults(train_gpt2_flow), **deployed, **parameters}
    settings = fine_tuning(store, tokens, TrainSettings.from_mapping(run_parameters))
    parameters["init_from"] = settings.init_from  # resolved: "latest" could move meanwhile
    inputs = model_inputs(store, tokens, settings)
    model_parameters = training_parameters(
        settings,
        run_parameters["extra_args"],
        run_parameters["nodes"],
        run_parameters["gpus_per_node"],
    )
    done = find_version(store, STAGE, inputs, model_parameters)
    if done is not None:  # trained already: no GPU job at all
        logger.info("%s already trained on %s: nothing to do", done.ref, tokens)
        return done.ref
    # Whether the worker has CUDA is not ours to see (cuda=True): its run checks that.
    check_device(
        settings.model,
        run_parameters["gpus_per_node"],
        allow_cpu=run_parameters["allow_cpu"],
        cuda=True,
    )
    logger.info(
        "training GPT-2 %s for %s steps through %s", settings.model, settings.max_steps, deployment
    )
    run = run_deployment(deployment, parameters=parameters, timeout=0)
    run = watch_training(run, logger.info, timeout_s=POLICIES["train"].timeout_s)
    if not run.state or not run.state.is_completed():
        state = run.state.name if run.state else "no state"
        message = run.state.message if run.state else ""
        raise RuntimeError(f"{deployment} run {run.name} ended {state}: {message}")
    done = find_version(store, STAGE, inputs, model_parameters)
    if done is None:
        expected = model_ref(store, inputs, model_parameters)
        raise RuntimeError(f"{deployment} run {run.name} completed without publishing {expected}")
    return done.ref


def _flow_defaults(subflow: Flow) -> dict[str, Any]:
    """A flow's parameters that have defaults, with them."""
    return {
        name: p.default
        for name, p in inspect.signature(subflow.fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def publish_summary(store: Store, refs: dict[str, VersionRef]) -> None:
    """One table of every stage's counts so far, and links to the versions made."""
    rows = []
    lines = [
        "# build-webtext outputs\n",
        "| stage | version | created | manifest |",
        "|---|---|---|---|",
    ]
    for stage, ref in refs.items():
        manifest = store.manifest(ref)
        for name, value in manifest.stats.get("counts", {}).items():
            if isinstance(value, int | float | str):
                rows.append({"stage": stage, "count": name, "value": value})
        url = store.url(ref, "manifest.json")
        lines.append(f"| {stage} | `{ref}` | {manifest.created_at} | [manifest]({url}) |")
    create_table_artifact(
        key="build-webtext-counts", table=rows, description="Counts of every stage run so far"
    )
    create_markdown_artifact(
        key="build-webtext-versions",
        markdown="\n".join(lines) + "\n",
        description="The version each stage produced or reused",
    )
