"""The `webtext` command: each stage's plain functions, no Prefect server needed.

`webtext demo` is the exception: it starts a local Prefect server and the process serving the
deployments, and runs `build-webtext/default` as an operator would, on inputs built here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from webtext.config import open_store
from webtext.stage import STAGE_NAMES
from webtext.store import LATEST, IntegrityError, StageResult, Store, StoreError, VersionRef

if TYPE_CHECKING:
    from evaluation.models import ModelSource
    from scraping.extract_stage import ExtractOptions
    from webtext_app.demo_run import DemoRun

app = typer.Typer(
    help="Build GPT-2's WebText: Reddit links, pages, text, dedup, tokens, model, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", help="Store folder or fsspec URL [default: $WEBTEXT_STORE or ./artifacts]"
    ),
]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def links(
    dumps: Annotated[
        list[str] | None,
        typer.Argument(
            help="Pushshift submission dumps (.zst, .bz2, .xz, .ndjson), local or fsspec URLs"
        ),
    ] = None,
    listing: Annotated[
        list[str] | None,
        typer.Option(
            help="Reddit API listing, e.g. r/askreddit/top/all, front/hot, "
            "r/all/search?q=gpt&sort=top (credentials from REDDIT_* env)"
        ),
    ] = None,
    api_url: Annotated[
        str | None, typer.Option(help="Point PRAW at another Reddit API host")
    ] = None,
    min_karma: int = 3,
    keep_self_posts: bool = False,
    keep_nsfw: bool = False,
    keep_wikipedia: bool = False,
    created_after: Annotated[str | None, typer.Option(help="ISO date, UTC; inclusive")] = None,
    created_before: Annotated[
        str | None, typer.Option(help="ISO date, UTC; exclusive (WebText: 2018-01-01)")
    ] = None,
    subreddit_blocklist: Annotated[
        Path | None, typer.Option(help="File, one subreddit a line")
    ] = None,
    domain_blocklist: Annotated[Path | None, typer.Option(help="File, one domain a line")] = None,
    extension_blocklist: Annotated[
        Path | None, typer.Option(help="File, one extension a line")
    ] = None,
    incremental: Annotated[
        bool, typer.Option(help="Merge the submissions of the latest links version")
    ] = False,
    workers: Annotated[int, typer.Option(help="Processes filtering dumps in parallel")] = 2,
    partitions: Annotated[
        int, typer.Option(help="URL hash partitions: memory ~ input / this")
    ] = 16,
    store: StoreOption = None,
) -> None:
    """Collect Reddit outbound links with enough karma into a new `links` version."""
    from scraping.links import LinkOptions, collect_links
    from scraping.reddit_api import ListingSpec, RedditCredentials

    options = LinkOptions.from_user(locals())
    specs = [ListingSpec.parse(text) for text in listing or []]
    credentials = RedditCredentials.from_env() if specs else None
    artifacts = open_store(store)
    previous = artifacts.latest("links") if incremental else None
    with _progress("reading dumps", "bytes") as progress:
        result = collect_links(
            artifacts,
            dumps or [],
            specs,
            options,
            credentials=credentials,
            api_url=api_url,
            previous=previous,
            progress=progress,
        )
    for line in result.stats.get("line_errors", [])[:10]:
        console.print(f"[yellow]skipped[/] {line}")
    for line in result.stats.get("failed_files", []):
        console.print(f"[red]stopped early[/] {line}")
    for line in result.stats.get("failed_listings", []):
        console.print(f"[red]incomplete[/] {line}")
    _report(artifacts, result, "link collection")


@app.command()
def fetch(
    links_version: Annotated[str, typer.Option("--links", help="links version to fetch")] = LATEST,
    archives: Annotated[
        list[str] | None,
        typer.Option(
            "--archive", help="Replay pages from these WARC files instead of the live web"
        ),
    ] = None,
    connections: Annotated[int, typer.Option(help="Requests in flight at once, per shard")] = 64,
    per_host_connections: int = 2,
    per_host_delay: Annotated[float, typer.Option(help="Seconds between a host's requests")] = 1.0,
    total_timeout: Annotated[
        float, typer.Option(help="Network seconds for one URL: every redirect hop and retry")
    ] = 60.0,
    max_bytes: Annotated[int, typer.Option(help="Bodies are cut at this size")] = 5 * 2**20,
    user_agent: Annotated[str | None, typer.Option(help="Also the robots.txt agent")] = None,
    allow_loopback: Annotated[
        bool, typer.Option(help="Fetch from 127.0.0.0/8 (demos and tests only)")
    ] = False,
    shard_size: Annotated[int, typer.Option(help="URLs per committed shard")] = 1_000,
    shards_at_once: Annotated[
        int, typer.Option(help="Shards fetched at once, each with its own connections")
    ] = 4,
    max_fetch_runs: Annotated[
        int, typer.Option(help="Runs that may try a URL whose outcome stays transient")
    ] = 3,
    retry_transient_after: Annotated[
        float, typer.Option(help="Seconds before a later run retries a transient outcome")
    ] = 3600.0,
    store: StoreOption = None,
) -> None:
    """Fetch the pages of a links version into a new `fetches` version (WARC + table)."""
    from scraping.fetch_stage import FetchOptions, fetch_pages
    from webtext.stage import options_from

    options = FetchOptions(**options_from(FetchOptions, locals()))
    artifacts = open_store(store)
    links_ref = artifacts.resolve("links", links_version)
    with _progress("fetching pages", "URLs") as progress:
        result = fetch_pages(artifacts, links_ref, options, progress=progress)
    _report(artifacts, result, "page fetching")


MinWordsOption = Annotated[int, typer.Option(help="Shorter documents are rejected")]
LanguagesOption = Annotated[
    list[str] | None,
    typer.Option("--language", help="Keep these languages (repeat); 'any' keeps all [default: en]"),
]
ExtractWorkersOption = Annotated[int | None, typer.Option(help="Worker processes [default: cores]")]
PageTimeoutOption = Annotated[float, typer.Option(help="Seconds one page may take")]
RowsPerShardOption = Annotated[int, typer.Option(help="Documents per published shard")]


@app.command()
def extract(
    fetches_version: Annotated[
        str, typer.Option("--fetches", help="fetches version to extract")
    ] = LATEST,
    min_words: MinWordsOption = 50,
    languages: LanguagesOption = None,
    workers: ExtractWorkersOption = None,
    page_timeout: PageTimeoutOption = 20.0,
    all_fetches: Annotated[
        bool,
        typer.Option(help="Every page fetched so far, not only this fetches version's"),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Extract main text from fetched pages into a new `documents` version."""
    from scraping.extract_stage import ExtractOptions

    options = ExtractOptions.from_user(locals())
    _extract(open_store(store), fetches_version, options)


def _extract(artifacts: Store, fetches_version: str, options: ExtractOptions) -> StageResult:
    from scraping.extract_stage import extract_documents

    fetches_ref = artifacts.resolve("fetches", fetches_version)
    with _progress("extracting text", "pages") as progress:
        result = extract_documents(artifacts, fetches_ref, options, progress=progress)
    _report(artifacts, result, "text extraction")
    return result


@app.command()
def dedup(
    documents_version: Annotated[
        str, typer.Option("--documents", help="documents version to deduplicate")
    ] = LATEST,
    rows_per_shard: RowsPerShardOption = 100_000,
    workers: Annotated[int | None, typer.Option(help="Processes for signatures")] = None,
    skip_version: Annotated[
        list[str] | None,
        typer.Option(
            help="Leave this earlier webtext version out (repeat); a corrupt one stops the run"
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Deduplicate documents against themselves and every published version, and
    publish the rest as a new `webtext` version."""
    from concurrent.futures import ProcessPoolExecutor

    from dedup.stage import DedupOptions, PublishSettings, publish_dataset

    artifacts = open_store(store)
    documents = artifacts.resolve("documents", documents_version)
    options = DedupOptions(
        publish=PublishSettings(rows_per_shard=rows_per_shard),
        skip_versions=tuple(skip_version or ()),
    )
    with (
        ProcessPoolExecutor(max_workers=workers) as pool,
        _progress("MinHash signatures", "parts") as progress,
    ):
        result = publish_dataset(artifacts, documents, options, map=pool.map, progress=progress)
    _report(artifacts, result, "deduplication")


@app.command()
def rebuild(
    min_words: MinWordsOption = 50,
    languages: LanguagesOption = None,
    workers: ExtractWorkersOption = None,
    page_timeout: PageTimeoutOption = 20.0,
    rows_per_shard: RowsPerShardOption = 100_000,
    store: StoreOption = None,
) -> None:
    """Re-extract every page fetched so far (nothing is fetched again) with today's
    extractor and filters, and publish a full `webtext` version from them, deduplicated
    against nothing earlier; later incremental runs build on it."""
    from scraping.extract_stage import ExtractOptions

    options = ExtractOptions.from_user({**locals(), "all_fetches": True})
    documents = _extract(open_store(store), LATEST, options)
    dedup(documents.ref.version, rows_per_shard, workers, store=store)


@app.command()
def tokenize(
    webtext_version: Annotated[
        str, typer.Option("--webtext", help="webtext version to encode")
    ] = LATEST,
    gpt2_bpe_dir: Annotated[
        Path | None,
        typer.Option(help="Use OpenAI's GPT-2 vocabulary from encoder.json + vocab.bpe here"),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Encode with this tokenizer version (e.g. a model's, to fine-tune it)"),
    ] = None,
    vocab_size: Annotated[int, typer.Option(help="Size of a vocabulary trained here")] = 50_257,
    val_fraction: Annotated[float, typer.Option(help="Share of documents held out")] = 0.005,
    prefix_template: Annotated[
        str | None,
        typer.Option(
            help="Text before each document from its Parquet columns, e.g. "
            "'Rating: {rating}. Category: {category}.\\n'"
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Train (or load GPT-2's, or reuse a) byte-level BPE and encode a dataset into token
    shards."""
    from training.token_shards import ShardSettings, TokenizeOptions, tokenize_dataset

    artifacts = open_store(store)
    webtext = artifacts.resolve("webtext", webtext_version)
    options = TokenizeOptions(
        gpt2_bpe_dir=str(gpt2_bpe_dir) if gpt2_bpe_dir else None,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        shards=ShardSettings(val_fraction=val_fraction, prefix_template=prefix_template),
    )
    with _progress("encoding documents", "documents") as progress:
        vocabulary, result = tokenize_dataset(artifacts, webtext, options, progress=progress)
    _report(artifacts, vocabulary, "vocabulary")
    _report(artifacts, result, "token shards")


@app.command()
def pull(
    version: Annotated[str, typer.Argument(help="A version id, or latest")] = LATEST,
    dest: Annotated[
        str | None,
        typer.Argument(
            help="Folder or fsspec URL to copy it into [default: ./webtext-data for the "
            "dataset, . for another stage]",
            show_default=False,
        ),
    ] = None,
    stage: Annotated[str, typer.Option(help="Which stage's version")] = "webtext",
    increment_only: Annotated[
        bool,
        typer.Option(
            "--increment-only", help="Only the documents this webtext version adds to the dataset"
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Copy the published dataset as of a version into DEST/data (its Parquet parts), or
    another stage's version into DEST/<stage>/<version>, verifying every sha256."""
    from webtext.dataset import pull_dataset

    artifacts = open_store(store)
    ref = artifacts.resolve(_known_stage(stage), version)
    if stage != "webtext":
        if increment_only:
            raise ValueError("--increment-only is for the webtext dataset only")
        console.print(f"pulled {ref} to {artifacts.pull(ref, dest or '.')}", soft_wrap=True)
        return
    pulled = pull_dataset(artifacts, ref, dest or "webtext-data", increment_only)
    what = "documents added by" if increment_only else "documents of the dataset as of"
    versions = ", ".join(r.version for r in pulled.versions)
    console.print(
        f"pulled {pulled.documents:,} {what} {ref} (versions {versions}) to {pulled.path}/data/ "
        f"({pulled.files} parquet files; README.md is the card, dataset.json lists the sha256s)",
        soft_wrap=True,
    )


@app.command()
def versions(stage: str, store: StoreOption = None) -> None:
    """List a stage's versions, oldest first."""
    artifacts = open_store(store)
    latest = artifacts.latest(_known_stage(stage))
    table = Table("version", "created", "files", "rows", "parents")
    for manifest in artifacts.versions(stage):
        marker = " (latest)" if latest == manifest.ref else ""
        rows = sum(f.rows or 0 for f in manifest.files)
        parents = ", ".join(str(p) for p in manifest.parents)
        table.add_row(
            manifest.version + marker,
            manifest.created_at,
            str(len(manifest.files)),
            str(rows),
            parents,
        )
    Console().print(table)


@app.command()
def show(stage: str, version: str = LATEST, store: StoreOption = None) -> None:
    """Print a version's manifest as JSON."""
    artifacts = open_store(store)
    manifest = artifacts.manifest(artifacts.resolve(_known_stage(stage), version))
    print(manifest.to_json())


@app.command()
def verify(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="[STAGE[/ID]]",
            help="A stage, or one version (ID may be latest) [default: every version]",
            show_default=False,
        ),
    ] = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Also re-hash every file against its sha256")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Check versions against their manifests: each file there with its size, and with
    --deep its sha256. One line per version; exit 1 if any fails."""
    artifacts = open_store(store)
    refs = _versions_to_verify(artifacts, target)
    if not refs:  # an empty answer would read as "all verified" (a mistyped --store, say)
        print(f"no versions to verify in {artifacts.root}{f' for {target}' if target else ''}")
    failed = 0
    for ref in refs:
        try:
            manifest = artifacts.verify(ref, deep=deep)
        except StoreError as exc:
            failed += 1
            print(f"FAILED {exc}")
            continue
        size = sum(entry.size for entry in manifest.files)
        checked = "sha256 checked" if deep else "sizes checked"
        print(f"ok     {ref}: {len(manifest.files)} files, {size:,} bytes, {checked}")
    if failed:
        console.print(f"[red]{failed} version(s) failed verification[/]")
        raise typer.Exit(1)


def _versions_to_verify(artifacts: Store, target: str | None) -> list[VersionRef]:
    """STAGE/ID (or latest): that version; STAGE: every version folder of the stage;
    nothing: every stage's. Folders without a manifest are writes in progress or killed
    (no version yet): said, not failed."""
    if target and "/" in target:
        stage, version = target.split("/", 1)
        return [artifacts.named_version(_known_stage(stage), version)]
    refs = []
    for stage in [_known_stage(target)] if target else STAGE_NAMES:
        for version in artifacts.version_ids(stage):
            ref = VersionRef(stage, version)
            if artifacts.exists(ref):
                refs.append(ref)
            else:
                print(f"skip   {ref}: no manifest (a write in progress, or a killed one)")
    return refs


def _known_stage(name: str) -> str:
    """`name` when it is a stage of the pipeline: never a path into or out of the store."""
    if name not in STAGE_NAMES:
        raise ValueError(f"unknown stage {name!r}: one of {', '.join(STAGE_NAMES)}")
    return name


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    tokens_version: Annotated[
        str, typer.Option("--tokens", help="tokens version to train on")
    ] = LATEST,
    gpus_per_node: Annotated[
        int | None,
        typer.Option(help="GPUs per node; 0 trains one CPU process [default: this machine's]"),
    ] = None,
    nodes: Annotated[int, typer.Option(help="Nodes; each runs the same command")] = 1,
    rdzv_endpoint: Annotated[
        str | None, typer.Option(help="host:port where several nodes meet")
    ] = None,
    runs_dir: Annotated[
        Path | None, typer.Option(help="Run folders [default: $WEBTEXT_RUNS or ./runs]")
    ] = None,
    allow_cpu: Annotated[
        bool,
        typer.Option(
            "--allow-cpu", help="Train a model larger than tiny on CPU (refused otherwise)"
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Train GPT-2 on a tokens version and publish a `model` version, showing every step.

    Every other option is a training setting, as `python -m training.train --help` lists
    them (--model tiny --max-steps 300 --batch-size 16 --lr 6e-4 ...); unset ones take
    training/settings.py's defaults: GPT-2 124M for 600,000 steps, which on a machine
    without a GPU is refused unless --allow-cpu (a first run there: --model tiny
    --max-steps 300).
    """
    import torch

    from training.launch import DeviceRefused, train_model
    from training.progress import StepClock, describe_step
    from training.settings import parse_settings

    settings = parse_settings(ctx.args)
    gpus = torch.cuda.device_count() if gpus_per_node is None else gpus_per_node
    if gpus == 0 and settings.model != "tiny" and allow_cpu:
        console.print(
            f"[bold red]warning: training GPT-2 {settings.model} on CPU for "
            f"{settings.max_steps:,} steps takes months.[/] For a first run: "
            "--model tiny --max-steps 300",
            soft_wrap=True,
        )
    artifacts = open_store(store)
    tokens = artifacts.resolve("tokens", tokens_version)
    clock = StepClock(settings.max_steps)
    try:
        # A model trained already is returned wherever this runs; a new run that does not
        # fit here is refused before it starts.
        result = train_model(
            artifacts,
            tokens,
            settings,
            nodes=nodes,
            gpus_per_node=gpus,
            rdzv_endpoint=rdzv_endpoint,
            runs_dir=runs_dir,
            allow_cpu=allow_cpu,
            on_line=lambda line: console.print(escape(line), style="dim", soft_wrap=True),
            on_metrics=lambda record: console.print(
                describe_step(record, settings.max_steps, clock.eta_s(record["step"]))
            ),
        )
    except DeviceRefused as refused:
        console.print(
            f"[bold red]{escape(_as_flags(str(refused), gpus_per_node))}[/]", soft_wrap=True
        )
        raise typer.Exit(2) from None
    _report(artifacts, result, "trained model")


@app.command()
def card(
    version: Annotated[str, typer.Argument(help="A model version id, or latest")] = LATEST,
    out: Annotated[
        Path | None, typer.Option(help="Write it here (e.g. an hf/README.md) [default: print]")
    ] = None,
    store: StoreOption = None,
) -> None:
    """A model version's card (Hugging Face README.md) as of now: with the zero-shot tables
    of the evaluations made of it since it was published."""
    from training.model_card import version_card

    artifacts = open_store(store)
    text = version_card(artifacts, artifacts.resolve("model", version))
    if out is None:
        print(text)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")


def _as_flags(message: str, gpus_per_node: int | None) -> str:
    """train_model's message, naming what set the GPUs here: `--gpus-per-node`, or this
    machine (no flag: its GPUs, none) where it names the flow's `gpus_per_node`."""
    if gpus_per_node is None:
        message = message.replace("(gpus_per_node=0)", "(no CUDA device on this machine)")
    return message.replace("gpus_per_node=", "--gpus-per-node ")


CheckpointArgument = Annotated[
    Path | None,
    typer.Argument(
        help="A checkpoint outside the store (ckpt-*.pt, or a training run's folder), with "
        "--tokenizer [default: the --model version]",
        show_default=False,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="A `model` version id, or latest; the tokenizer is the one of its lineage "
        "[default: latest, when no CHECKPOINT]",
    ),
]
TokenizerOption = Annotated[
    Path | None,
    typer.Option(
        help="CHECKPOINT's tokenizer: a tokenizer.json, or a folder with one or with "
        "GPT-2's encoder.json + vocab.bpe (--hf-model: instead of the folder's own)"
    ),
]
HFModelOption = Annotated[
    Path | None,
    typer.Option(
        "--hf-model",
        help="A local Hugging Face GPT-2 folder (config.json, model.safetensors; e.g. "
        "OpenAI's converted weights), with its own tokenizer.json or --tokenizer",
    ),
]


def _model_source(
    artifacts: Store, checkpoint: Path | None, model: str | None, hf_model: Path | None = None
) -> ModelSource:
    """CHECKPOINT, --hf-model, or else the `model` version named by --model (latest by
    default)."""
    from evaluation.models import HFModelFolder

    given = [
        name
        for name, value in (
            ("CHECKPOINT", checkpoint),
            ("--model", model),
            ("--hf-model", hf_model),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"pass one of CHECKPOINT, --model, --hf-model, not {' and '.join(given)}")
    if hf_model is not None:
        return HFModelFolder(hf_model)
    if checkpoint is None:
        return artifacts.resolve("model", model or LATEST)
    return checkpoint


@app.command()
def evaluate(
    checkpoint: CheckpointArgument = None,
    model: ModelOption = None,
    hf_model: HFModelOption = None,
    tasks: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            "--tasks",
            help="Tasks, comma-separated or repeated (lambada, nq_open, wmt14-fr-en, coqa, ...) "
            "[default: every one found under --eval-data]",
        ),
    ] = None,
    eval_data: Annotated[
        str | None,
        typer.Option(help="Evaluation sets in their published layouts [$WEBTEXT_EVAL_DATA]"),
    ] = None,
    paths: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            help="TASK=PATH: a set's file or folder elsewhere than under --eval-data "
            "(repeatable), e.g. coqa=coqa-dev-v1.0.json, cnn_dailymail=cnn/stories",
        ),
    ] = None,
    context: Annotated[int | None, typer.Option(help="Window length [the model's]")] = None,
    stride: Annotated[int | None, typer.Option(help="New tokens per window [context/2]")] = None,
    batch_tokens: Annotated[int, typer.Option(help="Tokens scored per forward pass")] = 8192,
    limit: Annotated[int | None, typer.Option(help="Only the first N items of each set")] = None,
    lambada_stopword_filter: bool = False,
    prompts: Annotated[
        list[str] | None,
        typer.Option("--prompt", help="Prompt to sample (repeatable) [default: three fixed]"),
    ] = None,
    samples_per_prompt: int = 1,
    max_new_tokens: int = 100,
    top_k: Annotated[int, typer.Option(help="0: no top-k cut")] = 40,
    top_p: Annotated[float, typer.Option(help="1.0: no nucleus cut")] = 1.0,
    temperature: Annotated[float, typer.Option(help="0: greedy")] = 1.0,
    seed: int = 0,
    decontaminate: Annotated[
        str | None, typer.Option(help="webtext version for the 8-gram overlap ('' to skip)")
    ] = LATEST,
    tokenizer: TokenizerOption = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ...")] = None,
    store: StoreOption = None,
) -> None:
    """Zero-shot evaluation as in the GPT-2 paper; results in an `evaluation` version."""
    from evaluation.stage import EvaluationPlan, evaluate_model, overlap_version
    from webtext.markdown import markdown_table

    plan = EvaluationPlan.from_user(locals())
    artifacts = open_store(store)
    source = _model_source(artifacts, checkpoint, model, hf_model)
    webtext = overlap_version(artifacts, decontaminate)

    def on_task(name: str, result: dict) -> None:
        console.print(f"{name}: {result['metric']} = {result['value']:.4f}")

    result = evaluate_model(artifacts, source, plan, webtext, tokenizer, device, on_task)
    print(markdown_table(result.stats["paper_table"]))
    print(markdown_table(result.stats["other_tasks_table"]))
    _report(artifacts, result, "zero-shot results")


@app.command()
def sample(
    prompt: Annotated[list[str], typer.Option(help="A prompt (repeatable)")],
    checkpoint: CheckpointArgument = None,
    model: ModelOption = None,
    hf_model: HFModelOption = None,
    samples: Annotated[int, typer.Option(help="Samples per prompt (seeds seed, seed+1...)")] = 1,
    max_new_tokens: int = 100,
    top_k: Annotated[int, typer.Option(help="0: no top-k cut")] = 40,
    top_p: Annotated[float, typer.Option(help="1.0: no nucleus cut")] = 1.0,
    temperature: Annotated[float, typer.Option(help="0: greedy")] = 1.0,
    seed: int = 0,
    tokenizer: TokenizerOption = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ...")] = None,
    store: StoreOption = None,
) -> None:
    """Sample continuations of prompts from a model, as JSON lines."""
    import json

    from evaluation.generation import sample_prompts
    from evaluation.models import load_model
    from evaluation.sampling import SampleSettings

    artifacts = open_store(store)
    language_model = load_model(
        artifacts, _model_source(artifacts, checkpoint, model, hf_model), tokenizer, device
    )
    settings = SampleSettings(max_new_tokens, top_k, top_p, temperature, seed)
    for row in sample_prompts(language_model, prompt, settings, samples):
        print(json.dumps(row, ensure_ascii=False))


@app.command()
def outputs(
    model: Annotated[str, typer.Option("--model", help="A model version id, or latest")] = LATEST,
    train_samples: Annotated[int, typer.Option(help="Records per setting in train")] = 5_000,
    valid_samples: Annotated[int, typer.Option(help="... in valid")] = 500,
    test_samples: Annotated[int, typer.Option(help="... in test")] = 500,
    max_length: Annotated[
        int | None, typer.Option(help="Tokens per record at most [the model's context]")
    ] = None,
    top_k: Annotated[
        list[int] | None,
        typer.Option("--top-k", help="A sampling setting per value, 0: none [0 and 40]"),
    ] = None,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: Annotated[int, typer.Option(help="Samples generated at once")] = 32,
    detect_outputs: Annotated[
        bool, typer.Option("--detect/--no-detect", help="Train and score the detectors")
    ] = True,
    batch_tokens: Annotated[int, typer.Option(help="Tokens scored per forward pass")] = 8192,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ...")] = None,
    store: StoreOption = None,
) -> None:
    """A model's output dataset (gpt-2-output-dataset JSONL: samples per sampling setting
    beside held-out WebText, train/valid/test) and the baseline detectors' table."""
    from release.detection import detect
    from release.outputs import OutputOptions, publish_outputs
    from webtext.markdown import markdown_table

    options = OutputOptions.from_user(locals())
    artifacts = open_store(store)
    ref = artifacts.resolve("model", model)
    with _progress("writing samples and documents", "records") as progress:
        result = publish_outputs(artifacts, ref, options, device=device, progress=progress)
    _report(artifacts, result, "output dataset")
    if detect_outputs:
        detection = detect(artifacts, result.ref, batch_tokens=batch_tokens, device=device)
        print(markdown_table(detection.stats["table"]))
        _report(artifacts, detection, "detection baselines")


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo's inputs, Prefect home and training runs go")
    ] = Path("demo-inputs"),
    store: StoreOption = None,
    keep_ui: Annotated[
        bool, typer.Option(help="Keep the Prefect server (its UI) up until Enter or Ctrl-C")
    ] = False,
    max_steps: Annotated[
        int | None,
        typer.Option(help="Training steps of the tiny model [300]", show_default=False),
    ] = None,
) -> None:
    """Run `build-webtext` as a deployment, offline: a local Prefect server, the deployments
    served by `python -m flows.serve`, `prefect deployment run build-webtext/default`; each
    stage is shown starting and finishing. A second run in the same --workdir finds nothing
    new."""
    from webtext_app.demo_run import demo_session, reopen_hint

    train = {"max_steps": max_steps} if max_steps is not None else None
    try:
        with demo_session(workdir, store, train=train, say=_say) as run:
            _report_demo(run)
            console.print(f"Prefect UI of this build run: [bold]{run.run_url}[/]", soft_wrap=True)
            if keep_ui:
                _wait_for_enter("the UI stays up: press Enter (or Ctrl-C) to stop it")
    except RuntimeError as exc:  # a process of the demo did not start; its log is in the message
        console.print("[red]error:[/]", escape(str(exc)), soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print("\n".join(reopen_hint(run.paths.prefect_home, run.flow_run_id)), soft_wrap=True)
    if not run.completed:
        stage = run.failed_stage or "(no stage named)"
        console.print(
            f"[red]error:[/] build-webtext ended {run.state} at stage {stage}:",
            escape(run.message),
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _say(text: str) -> None:
    console.print(escape(text), soft_wrap=True)


def _report_demo(run: DemoRun) -> None:
    """Every stage's counts, the versions and where they are, the evaluation table; or, when
    every stage reused its version, one line saying so."""
    from webtext_app.demo_run import RUN_SEPARATOR

    artifacts = open_store(run.store_url)
    log = (
        f"training runs: {run.paths.runs}; the served runs' log (appended to, each demo run "
        f"from a '{RUN_SEPARATOR}' line): {run.paths.serve_log}"
    )
    if run.nothing_new:
        versions = ", ".join(f"{stage} {ref.version}" for stage, ref in run.versions.items())
        console.print(f"nothing new: every stage reused ({versions})", soft_wrap=True)
        console.print(f"the store: {artifacts.root_url}; {log}", soft_wrap=True)
        return
    for stage, ref in run.versions.items():
        _print_counts(artifacts.manifest(ref).stats.get("counts", {}), f"{stage}: {ref}")
    for stage, ref in run.versions.items():
        console.print(f"{stage}: [bold]{ref}[/] {artifacts.url(ref)}", soft_wrap=True)
    console.print(log, soft_wrap=True)
    evaluation = run.versions.get("evaluate")
    if evaluation is not None:
        table = artifacts.fs.cat_file(f"{artifacts.version_dir(evaluation)}/table.md").decode()
        print(table, flush=True)


def _wait_for_enter(prompt: str) -> None:
    console.print(prompt)
    with suppress(EOFError, KeyboardInterrupt):  # no terminal, or Ctrl-C: stop now
        input()


def _report(artifacts: Store, result: StageResult, title: str) -> None:
    """A stage run's counts, then which version it made (or found) and where."""
    _print_counts(result.stats.get("counts", {}), title)
    note = " (already built: reused)" if result.reused else ""
    where = artifacts.url(result.ref)
    console.print(
        f"{result.ref.stage} version [bold]{result.ref}[/]{note}: {where}", soft_wrap=True
    )


def _print_counts(counts: dict[str, int], title: str) -> None:
    table = Table("count", "value", title=title)
    for name, value in counts.items():
        table.add_row(name, f"{value:,}")
    Console().print(table)


class _RichProgress:
    """The stage runtime's progress protocol (`webtext.stage.Progress`) as a rich bar."""

    def __init__(self, bar: Progress, description: str) -> None:
        self._bar = bar
        self._task = bar.add_task(description, total=None)

    def start(self, total: int) -> None:
        self._bar.update(self._task, total=total)

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)


@contextmanager
def _progress(description: str, unit: str) -> Iterator[_RichProgress]:
    """A progress bar for one stage run; `unit` "bytes" shows sizes, others counts."""
    if unit == "bytes":
        columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn())
        columns += (TimeRemainingColumn(),)
    else:
        columns = (*Progress.get_default_columns(), TextColumn(f"{{task.completed:,}} {unit}"))
    with Progress(*columns, console=console) as bar:
        yield _RichProgress(bar, description)


# A path that is not what the command needs: missing, a folder for a file, a file for a
# folder, not allowed. Reported with the path, as user errors.
_PATH_ERRORS = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    FileExistsError,
)


def main() -> None:
    """The console entry point: an expected failure prints one line naming what failed,
    never a traceback. Exit 2: a user error (a path, an argument, an input file, a stage or
    version that is not there); exit 1: the store failed its integrity checks, or the
    Reddit API failed."""
    from warcio.exceptions import ArchiveLoadFailed

    from scraping.reddit_api import RedditApiError

    try:
        app()
    except (IntegrityError, RedditApiError) as exc:
        _fail(exc, 1)
    except _credential_errors() as exc:
        exc.add_note(
            "the store's credentials come from the environment, ~/.aws or a role "
            "(README: The store on S3, GCS or Azure)"
        )
        _fail(exc, 2)
    except (*_PATH_ERRORS, ValueError, StoreError, ArchiveLoadFailed) as exc:
        # ValueError covers bad arguments and bad input files (DumpError, ArchiveError...)
        _fail(exc, 2)


def _credential_errors() -> tuple[type[Exception], ...]:
    """botocore's errors for missing credentials, when it is installed (the s3 extra)."""
    try:
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError
    except ImportError:
        return ()
    return (NoCredentialsError, PartialCredentialsError)


def _fail(exc: BaseException, code: int) -> None:
    if isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.strerror or exc}: {exc.filename}"
    else:
        message = "; ".join([str(exc), *getattr(exc, "__notes__", ())])
    console.print("[red]error:[/]", escape(" ".join(message.split())), soft_wrap=True)
    raise SystemExit(code) from exc


if __name__ == "__main__":
    main()
