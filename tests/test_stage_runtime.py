"""The stage runtime (webtext/stage.py): skip-if-done, parts and their markers, counts,
code versions per stage, and one set of defaults behind the CLI and the flows."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from webtext.stage import PartResult, Stage, StageWrite, find_version, run_stage
from webtext.store import Store

REPO = Path(__file__).resolve().parent.parent
THIS = Stage("numbers", "webtext.stage")


def write_parts(work: StageWrite, parts: list[str], fail_at: str | None = None) -> None:
    """A stage over parts: each part writes one file of its name and counts its letters."""
    for part in work.pending(parts):
        if part == fail_at:
            raise RuntimeError("killed")
        work.out.put(f"data/{part}.txt", part.encode())
        work.commit(part, PartResult({f"data/{part}.txt": 1}, {"letters": len(part)}))
    work.counts.add("parts", len(parts))


def test_a_killed_run_resumes_at_the_uncommitted_part(tmp_path) -> None:
    store = Store(str(tmp_path))
    parts = ["a", "bb", "ccc"]
    with pytest.raises(RuntimeError):
        run_stage(store, THIS, (), {"n": 3}, lambda w: write_parts(w, parts, "ccc"), resumable=True)
    assert store.versions("numbers") == []
    redone: list[str] = []

    def build(work: StageWrite) -> None:
        redone.extend(work.pending(parts))
        write_parts(work, parts)

    result = run_stage(
        store, THIS, (), {"n": 3}, build, count_names=("parts", "letters"), resumable=True
    )
    # The two committed parts were not redone, and their counts came from their markers.
    assert redone == ["ccc"]
    assert result.stats["counts"] == {"parts": 3, "letters": 6}
    manifest = store.manifest(result.ref)
    assert sorted(f.path for f in manifest.files) == ["data/a.txt", "data/bb.txt", "data/ccc.txt"]
    assert not (tmp_path / "numbers" / result.ref.version / ".parts").exists()
    store.verify(result.ref)


def test_the_same_inputs_and_parameters_reuse_the_version(tmp_path) -> None:
    store = Store(str(tmp_path))
    first = run_stage(store, THIS, (), {"sizes": (1, 2)}, lambda w: write_parts(w, ["a"]))
    calls: list[int] = []
    again = run_stage(store, THIS, (), {"sizes": [1, 2]}, lambda w: calls.append(1))
    assert again.reused and again.ref == first.ref and not calls  # a tuple reads back a list
    other = run_stage(store, THIS, (), {"sizes": [1, 3]}, lambda w: write_parts(w, ["a"]))
    assert not other.reused and other.ref != first.ref


def test_a_version_with_more_parents_is_found_by_its_inputs(tmp_path) -> None:
    """An incremental stage records earlier versions as parents; asking again with the same
    inputs finds that version although its id covers those parents too."""
    store = Store(str(tmp_path))
    source = run_stage(store, Stage("source", "webtext.stage"), (), {}, lambda w: None).ref
    earlier = run_stage(store, THIS, (), {"old": 1}, lambda w: None).ref
    made = run_stage(store, THIS, (source,), {}, lambda w: None, parents=(earlier,))
    assert store.manifest(made.ref).parents == (source, earlier)
    found = find_version(store, THIS, (source,), {})
    assert found is not None and found.ref == made.ref


def test_a_corrupt_part_marker_is_named(tmp_path) -> None:
    store = Store(str(tmp_path))
    with pytest.raises(RuntimeError):
        run_stage(store, THIS, (), {}, lambda w: write_parts(w, ["a", "b"], "b"), resumable=True)
    marker = next((tmp_path / "numbers").glob(".staging-*/.parts/a.json"))
    marker.write_text("{not json")
    with pytest.raises(Exception, match="corrupt marker of part a"):
        run_stage(store, THIS, (), {}, lambda w: write_parts(w, ["a", "b"]), resumable=True)


# -- code versions: a stage's id covers the modules it runs, and only those ----------------

_CODE_VERSION = "from webtext.config import code_version; print(code_version({module!r}))"


def _code_version(root: Path, module: str) -> str:
    """The code version of `module` computed over the source tree copied to `root`."""
    done = subprocess.run(
        [sys.executable, "-P", "-c", _CODE_VERSION.format(module=module)],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("source")
    for package in ("webtext", "scraping", "dedup", "training", "evaluation"):
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return root


@pytest.mark.parametrize(
    ("stage_module", "edited", "changes"),
    [
        ("training.token_shards", "training/train.py", False),
        ("training.tokenizer_stage", "training/model.py", False),
        ("training.token_shards", "training/bpe.py", True),
        ("scraping.fetch_stage", "scraping/extract.py", False),
        ("scraping.fetch_stage", "scraping/fetch.py", True),
        ("scraping.extract_stage", "scraping/extract.py", True),
        ("dedup.stage", "scraping/extract.py", False),
        ("scraping.links", "scraping/fetch.py", False),
        ("training.launch", "training/progress.py", False),
        ("evaluation.stage", "training/train.py", False),
        ("evaluation.stage", "training/launch.py", False),
        ("evaluation.stage", "training/tokenizer_stage.py", True),
        ("training.launch", "training/train.py", True),
    ],
)
def test_a_stage_code_version_follows_the_modules_it_runs(
    source_copy, stage_module, edited, changes
) -> None:
    before = _code_version(source_copy, stage_module)
    path = source_copy / edited
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# an edit\n")
        after = _code_version(source_copy, stage_module)
    finally:
        path.write_bytes(original)
    assert (before != after) == changes


# -- one set of defaults: the CLI and the flows agree with the stage's options -------------


def _defaults(function) -> dict:
    function = getattr(function, "fn", function)  # a Prefect flow wraps the function
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def _stage_defaults():
    """(stage, CLI command, flow, {option: default in the stage's options object})."""
    from dedup.stage import DedupOptions
    from evaluation.sampling import SampleSettings
    from evaluation.stage import EvaluationPlan
    from evaluation.zero_shot import EvalSettings
    from flows.dedup import dedup_flow
    from flows.evaluate import evaluate_zero_shot_flow
    from flows.extract import extract_text_flow
    from flows.fetch import fetch_pages_flow
    from flows.links import collect_links_flow
    from flows.release import outputs_flow
    from flows.tokenize import tokenize_flow
    from release.outputs import OutputOptions
    from scraping.extract_stage import ExtractOptions
    from scraping.fetch_stage import FetchOptions
    from scraping.links import LinkOptions
    from training.token_shards import TokenizeOptions
    from webtext_app import cli

    links, fetch, extract = LinkOptions(), FetchOptions(), ExtractOptions()
    dedup, tokenize = DedupOptions(), TokenizeOptions()
    scoring, sampling = EvalSettings(), SampleSettings()
    outputs = OutputOptions()
    return [
        (
            "links",
            cli.links,
            collect_links_flow,
            {
                "min_karma": links.filters.min_karma,
                "keep_self_posts": links.filters.keep_self_posts,
                "keep_nsfw": links.filters.keep_nsfw,
                "keep_wikipedia": links.filters.keep_wikipedia,
                "partitions": links.partitions,
                "workers": links.workers,
            },
        ),
        (
            "fetch",
            cli.fetch,
            fetch_pages_flow,
            {
                name: getattr(fetch, name)
                for name in (
                    "connections",
                    "per_host_connections",
                    "per_host_delay",
                    "total_timeout",
                    "max_bytes",
                    "user_agent",
                    "allow_loopback",
                    "shard_size",
                    "max_fetch_runs",
                    "retry_transient_after",
                )
            },
        ),
        (
            "extract",
            cli.extract,
            extract_text_flow,
            {
                "min_words": extract.quality.min_words,
                "workers": extract.workers,
                "page_timeout": extract.page_timeout,
            },
        ),
        ("dedup", cli.dedup, dedup_flow, {"rows_per_shard": dedup.publish.rows_per_shard}),
        (
            "tokenize",
            cli.tokenize,
            tokenize_flow,
            {
                "gpt2_bpe_dir": tokenize.gpt2_bpe_dir,
                "tokenizer": tokenize.tokenizer,
                "vocab_size": tokenize.vocab_size,
                "val_fraction": tokenize.shards.val_fraction,
                "prefix_template": tokenize.shards.prefix_template,
            },
        ),
        (
            "evaluate",
            cli.evaluate,
            evaluate_zero_shot_flow,
            {
                "context": scoring.windows.context,
                "stride": scoring.windows.stride,
                "batch_tokens": scoring.batch_tokens,
                "limit": scoring.limit,
                "lambada_stopword_filter": scoring.lambada_stopword_filter,
                "samples_per_prompt": EvaluationPlan.__dataclass_fields__[
                    "samples_per_prompt"
                ].default,
                **{name: getattr(sampling, name) for name in SampleSettings.__dataclass_fields__},
            },
        ),
        (
            "outputs",
            cli.outputs,
            outputs_flow,
            {
                **{
                    name: getattr(outputs, name)
                    for name in OutputOptions.__dataclass_fields__
                    if name != "top_k"
                },
                "top_k": None,  # OutputOptions.from_user: the default pair
            },
        ),
    ]


@pytest.mark.parametrize(
    "index",
    range(7),
    ids=["links", "fetch", "extract", "dedup", "tokenize", "evaluate", "outputs"],
)
def test_the_cli_and_the_flow_take_the_stage_defaults(index) -> None:
    _, command, flow, expected = _stage_defaults()[index]
    cli_defaults, flow_defaults = _defaults(command), _defaults(flow)
    for name, value in expected.items():
        assert cli_defaults[name] == value, f"CLI --{name.replace('_', '-')}"
        assert flow_defaults[name] == value, f"flow parameter {name}"
    # Options both take with the same name have the same default (versions: "latest").
    for name in cli_defaults.keys() & flow_defaults.keys():
        assert cli_defaults[name] == flow_defaults[name] or {
            cli_defaults[name],
            flow_defaults[name],
        } <= {None, "latest"}, name


def test_every_language_is_spelled_the_same_way_on_both_entries() -> None:
    from scraping.extract_stage import ExtractOptions

    default = ExtractOptions.from_user({"min_words": 50, "languages": None})
    assert default == ExtractOptions()
    for spelling in (["any"], []):
        options = ExtractOptions.from_user({"languages": spelling, "fetches_version": "x"})
        assert options.quality.languages == ()


def test_an_input_with_nothing_new_publishes_no_empty_version(tmp_path) -> None:
    store = Store(str(tmp_path))
    first = run_stage(store, THIS, (), {"n": 1}, lambda w: write_parts(w, ["a"]))
    latest = store.latest("numbers")
    again = run_stage(
        store, THIS, (), {"n": 2}, lambda w: write_parts(w, []), nothing_new=lambda: True
    )
    assert again.reused and again.ref == first.ref
    assert len(store.versions("numbers")) == 1 and store.latest("numbers") == latest
    # With no earlier version, an empty input still makes its (empty) version.
    other = Stage("others", "webtext.stage")
    empty = run_stage(store, other, (), {}, lambda w: None, nothing_new=lambda: True)
    assert not empty.reused and store.exists(empty.ref)
