"""The `outputs` stage: a model's unconditional samples beside WebText, for detection research.

GPT-2's release published "an output dataset" (OpenAI's gpt-2-output-dataset): for every
model, samples with and without top-k truncation, and WebText documents the models never
trained on, split train/valid/test, one JSON object a line:

    {"id": 255001, "text": "...", "length": 1024, "ended": false}

`length` counts tokens; `ended` says the text ended with <|endoftext|> (a sample) or whole
(a document) rather than being cut at `max_length`. A version here holds
`<setting>.<split>.jsonl` for each sampling setting (default `temperature-1`: pure sampling,
and `top-k-40`) and `webtext.<split>.jsonl`: as many documents per split, drawn from the
`val` split of the model's own `tokens` version, decoded (a split too small for the sizes
asked is refused before anything is sampled). Every file is a part of the
stage runtime: a killed run resumes at the first file it had not finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.generation import generate_ids
from evaluation.models import LanguageModel, load_model_version
from evaluation.sampling import SampleSettings
from training.token_shards import HEADER
from webtext.stage import (
    NoProgress,
    PartResult,
    Progress,
    Stage,
    StageWrite,
    options_from,
    run_stage,
)
from webtext.store import StageResult, Store, VersionRef

STAGE = Stage("outputs", __name__)
SPLITS = ("train", "valid", "test")
WEBTEXT = "webtext"  # the human-written source's name in file names and tables
CHUNK = 256  # samples generated (and documents decoded) per write


@dataclass(frozen=True)
class OutputOptions:
    """How many records each split holds (per sampling setting, and of WebText), how long
    they may be, and how they are sampled: one setting per `top_k` value (0: no cut) at
    `temperature`. The only place these defaults live (CLI and flow take the same names)."""

    train_samples: int = 5_000
    valid_samples: int = 500
    test_samples: int = 500
    max_length: int | None = None  # tokens; None: the model's context
    top_k: tuple[int, ...] = (0, 40)
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 32  # how it runs, not what: not in the version id

    def __post_init__(self) -> None:
        sizes = (self.train_samples, self.valid_samples, self.test_samples)
        if min(sizes) < 1 or not self.top_k or min(self.top_k) < 0 or self.temperature <= 0:
            raise ValueError(f"bad output options: {self}")
        object.__setattr__(self, "top_k", tuple(int(k) for k in self.top_k))

    @classmethod
    def from_user(cls, parameters: Mapping[str, Any]) -> OutputOptions:
        """From an entry point's parameters, by name (the CLI's and the flow's); a `top_k`
        of None or empty is the default pair."""
        given = options_from(cls, parameters)
        if not given.get("top_k"):
            given.pop("top_k", None)
        return cls(**given)

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"train": self.train_samples, "valid": self.valid_samples, "test": self.test_samples}

    def settings(self, max_length: int) -> dict[str, SampleSettings]:
        """The sampling settings by name: `temperature-1`, `top-k-40` (the reference's)."""
        named = {}
        for k in self.top_k:
            name = f"top-k-{k}" if k else f"temperature-{self.temperature:g}"
            if k and self.temperature != 1:
                name += f"-temperature-{self.temperature:g}"
            named[name] = SampleSettings(max_length, k, 1.0, self.temperature, self.seed)
        return named


def record(index: int, text: str, length: int, ended: bool) -> str:
    """One line of the reference format."""
    return json.dumps({"id": index, "text": text, "length": length, "ended": ended}) + "\n"


def file_name(source: str, split: str) -> str:
    return f"{source}.{split}.jsonl"


def sample_seed(seed: int, setting: str, split: str, index: int) -> int:
    """Each sample's own seed: no two samples of a version share a generator's stream."""
    digest = hashlib.sha256(f"{seed}/{setting}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def publish_outputs(
    store: Store,
    model: VersionRef,
    options: OutputOptions | None = None,
    *,
    device: str | None = None,
    progress: Progress | None = None,
) -> StageResult:
    """The stage package's entry: samples of `model` and its held-out WebText, as a version.

    `progress` counts records written (samples and documents)."""
    options = options or OutputOptions()
    progress = progress or NoProgress()
    tokens = _tokens_of(store, model)
    sizes = options.split_sizes
    names = list(options.settings(1))
    parameters = {
        "splits": sizes,
        # None (the model's context) is as definite as a number: the model is the input.
        "max_length": options.max_length,
        "settings": names,
        "top_k": list(options.top_k),
        "temperature": options.temperature,
        "seed": options.seed,
    }
    parts = [file_name(source, split) for source in (*names, WEBTEXT) for split in SPLITS]

    def build(work: StageWrite) -> None:
        lm = load_model_version(store, model, device)
        max_length = options.max_length or lm.max_length
        settings = options.settings(max_length)
        work.stats["max_length"] = max_length
        documents = held_out_documents(store, tokens, lm.encoder.eot_id)
        if len(documents) < sum(sizes.values()):
            raise ValueError(
                f"{tokens} holds {len(documents):,} held-out documents; a WebText subset as "
                f"large as the samples needs {sum(sizes.values()):,}: ask for fewer samples, "
                "or train on tokens with a larger val_fraction"
            )
        todo = work.pending(parts)
        progress.start(sum(sizes[part.split(".")[1]] for part in todo))
        for part in todo:
            source, split = part.split(".")[:2]
            if source == WEBTEXT:
                lines = _webtext_records(documents, lm, split, sizes, max_length, options.seed)
            else:
                lines = _sample_records(lm, settings[source], source, split, sizes[split], options)
            work.commit(part, _write_part(work, part, lines, progress))

    return run_stage(
        store,
        STAGE,
        (model,),
        parameters,
        build,
        parents=(tokens,),
        count_names=[
            *(part.removesuffix(".jsonl") for part in parts),
            *(f"{source} ended" for source in (*names, WEBTEXT)),
        ],
        resumable=True,
    )


def _tokens_of(store: Store, model: VersionRef) -> VersionRef:
    tokens = next((p for p in store.manifest(model).parents if p.stage == "tokens"), None)
    if tokens is None:
        raise ValueError(f"{model} names no tokens version: no held-out WebText to compare with")
    return tokens


def _write_part(
    work: StageWrite, part: str, lines: Iterator[tuple[str, bool]], progress: Progress
) -> PartResult:
    """Write a part's records; count them, and those that ended by themselves."""
    rows = ended = 0
    with work.out.open(part, "wb") as handle:
        for line, finished in lines:
            handle.write(line.encode("utf-8"))
            rows += 1
            ended += finished
            progress.advance(1)
    source = part.split(".")[0]
    return PartResult({part: rows}, {part.removesuffix(".jsonl"): rows, f"{source} ended": ended})


def _sample_records(
    lm: LanguageModel,
    settings: SampleSettings,
    name: str,
    split: str,
    count: int,
    options: OutputOptions,
) -> Iterator[tuple[str, bool]]:
    """`count` unconditional samples (each from <|endoftext|> alone), generated in chunks."""
    eot = lm.encoder.eot_id
    for start in range(0, count, CHUNK):
        indices = range(start, min(start + CHUNK, count))
        seeds = [sample_seed(options.seed, name, split, i) for i in indices]
        found = generate_ids(
            lm, [[eot]] * len(seeds), settings, seeds=seeds, batch_size=options.batch_size
        )
        for index, generation in zip(indices, found, strict=True):
            ended = len(generation.ids) < settings.max_new_tokens
            yield record(index, generation.text, len(generation.ids), ended), ended


def _webtext_records(
    documents: Sequence[list[int]],
    lm: LanguageModel,
    split: str,
    sizes: dict[str, int],
    max_length: int,
    seed: int,
) -> Iterator[tuple[str, bool]]:
    """This split's share of the held-out documents (shuffled by `seed`, then train, valid
    and test in turn), each cut at `max_length` tokens."""
    order = np.random.default_rng(seed).permutation(len(documents))
    start = sum(sizes[s] for s in SPLITS[: SPLITS.index(split)])
    for index, position in enumerate(order[start : start + sizes[split]]):
        ids = documents[int(position)]
        ended = len(ids) <= max_length
        kept = ids[:max_length]
        yield record(index, lm.encoder.decode(kept), len(kept), ended), ended


def held_out_documents(store: Store, tokens: VersionRef, eot: int) -> list[list[int]]:
    """The documents of a tokens version's `val` shards, as token ids (end-of-text dropped)."""
    folder = store.version_dir(tokens)
    documents: list[list[int]] = []
    for entry in store.manifest(tokens).files:
        if not entry.path.startswith("tokens/val/"):
            continue
        data = store.fs.cat_file(f"{folder}/{entry.path}")
        ids = np.frombuffer(data, dtype="<u2", offset=HEADER.size).astype(np.int64)
        ends = np.flatnonzero(ids == eot)
        starts = np.concatenate([[0], ends[:-1] + 1])
        documents += [ids[s:e].tolist() for s, e in zip(starts, ends, strict=True) if e > s]
    return documents


def read_records(store: Store, ref: VersionRef, source: str, split: str) -> list[dict[str, Any]]:
    """The records of one file of an outputs version."""
    text = store.fs.cat_file(f"{store.version_dir(ref)}/{file_name(source, split)}").decode()
    return [json.loads(line) for line in text.splitlines() if line]


def sources(store: Store, ref: VersionRef) -> Sequence[str]:
    """An outputs version's sampling settings, in order (WebText not included)."""
    return list(store.manifest(ref).parameters["settings"])
