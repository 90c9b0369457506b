"""The stage runtime: the contract every stage shares, so a stage's own code is its work.

A stage declares a `Stage` (its name and the module that runs it, which fixes its code
version) and calls `run_stage` with its inputs, its settings' parameters and a `build`
function. The runtime owns the rest:

- skip-if-done: a version made from the same inputs with the same parameters and code is
  returned as it is (`find_version`, the one comparison every stage uses);
- the write: a new version, published with its counts only when `build` returns;
- parts: `StageWrite.pending` / `commit` give a stage resumable parts. A part is committed
  by a small marker written after its files, holding their row counts and the part's
  counts; a killed run resumes with the parts whose markers exist, and their counts come
  from the markers, never from re-reading the data;
- counts (`Counts`), kept in memory and stored in the manifest's `stats["counts"]`;
- progress: one protocol, `start(total)` then `advance(n)`, that the CLI renders with rich
  and the flows as Prefect progress artifacts;
- executors: a `Map` callable (`map`, a process pool's `map`, a Prefect task runner's)
  that `StageWrite.run_parts` submits independent parts to.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from webtext.config import code_version
from webtext.store import (
    Manifest,
    StageResult,
    Store,
    StoreError,
    VersionRef,
    VersionWriter,
    put_atomic,
)

_MARKERS = ".parts"
# The store's folders, one per stage of the pipeline, in its order (tests check that each
# stage package's `Stage` is here): what the CLI accepts as a stage name.
STAGE_NAMES = (
    "links",
    "fetches",
    "documents",
    "minhash",
    "webtext",
    "tokenizer",
    "tokens",
    "ngram-filter",
    "model",
    "evaluation",
)
log = logging.getLogger(__name__)

# Submits a function over items to an executor, yielding results in the items' order.
Map = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


class Progress(Protocol):
    """How a stage reports progress: the total once known, then units of work done."""

    def start(self, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NoProgress:
    """Progress reported to nobody: the default for stages called from code."""

    def start(self, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


class Counts:
    """Counts by name (a kept/dropped reason, an error class), in the order names were
    declared or first added; declared names show up with 0, so every reason is listed.
    A few stages also report measures here (a model's final loss, a task's score)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._values: dict[str, float] = dict.fromkeys(names, 0)

    def add(self, name: str, n: float = 1) -> None:
        self._values[name] = self._values.get(name, 0) + n

    def update(self, counts: Mapping[str, float]) -> None:
        for name, n in counts.items():
            self.add(name, n)

    def __getitem__(self, name: str) -> float:
        return self._values.get(name, 0)

    def as_dict(self) -> dict[str, float]:
        return dict(self._values)


@dataclass(frozen=True)
class Stage:
    """A stage's name (the store's folder for its versions) and the module that runs it:
    the code version covers that module and every first-party module it imports."""

    name: str
    module: str

    @property
    def code_version(self) -> str:
        return code_version(self.module)


@dataclass(frozen=True)
class PartResult:
    """What one part wrote (file name -> rows) and counted. Plain data, so it pickles
    back from any worker."""

    files: dict[str, int | None]
    counts: dict[str, float] = field(default_factory=dict)


class StageWrite:
    """A version being written: its files (`out`), counts, extra stats and parts."""

    def __init__(self, out: VersionWriter, counts: Counts) -> None:
        self.out = out
        self.counts = counts
        self.stats: dict[str, Any] = {}
        self._committed: set[str] = set()  # parts whose counts are in `counts`

    @property
    def ref(self) -> VersionRef:
        return self.out.ref

    def pending(self, parts: Sequence[str]) -> list[str]:
        """The parts an earlier try of this version did not commit, in order. Committed
        parts have their files registered and their counts added (once), from their
        markers."""
        todo = []
        for part in parts:
            if part in self._committed:
                continue
            marker = self._marker(part)
            if not self.out.fs.exists(marker):
                todo.append(part)
                continue
            try:
                done = json.loads(self.out.fs.cat_file(marker))
                files, counts = done["files"], done["counts"]
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"{self.ref}: corrupt marker of part {part}: {exc!r}") from exc
            for name, rows in files.items():
                self.out.set_rows(name, rows)
            self.counts.update(counts)
            self._committed.add(part)
        return todo

    def commit(self, part: str, result: PartResult) -> None:
        """Register a finished part's files and add its counts; the marker, written last
        and atomically, makes the part done for any later try."""
        for name, rows in result.files.items():
            if not self.out.exists(name):
                raise StoreError(f"{self.ref}: part {part} did not write {name}")
            self.out.set_rows(name, rows)
        marker = self._marker(part)
        self.out.fs.makedirs(marker.rsplit("/", 1)[0], exist_ok=True)
        marker_json = json.dumps({"files": result.files, "counts": result.counts})
        put_atomic(self.out.fs, marker, marker_json.encode())
        if part not in self._committed:
            self.counts.update(result.counts)
            self._committed.add(part)

    def run_parts(
        self,
        parts: Sequence[str],
        work: Callable[[Any], PartResult],
        map: Map = map,
        progress: Progress | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        weights: Mapping[str, int] | None = None,
    ) -> None:
        """Run `work` over the parts not yet committed, on `map`'s executor, committing
        each part as its result comes back (in order, so a killed run keeps every part
        committed before it). `work` gets the part's name, or `(name, inputs[name])` when
        `inputs` hands each part its own data (sent to that part's task only). It writes
        into `self.out.tmp_dir` and must pickle when `map` runs it in other processes.
        Progress counts parts, or each part's `weights` (pages, rows)."""
        todo = self.pending(parts)
        progress = progress or NoProgress()
        progress.start(sum(weights[part] for part in todo) if weights else len(todo))
        items = todo if inputs is None else [(part, inputs[part]) for part in todo]
        for part, result in zip(todo, map(work, items), strict=True):
            self.commit(part, result)
            progress.advance(weights[part] if weights else 1)

    def _marker(self, part: str) -> str:
        return f"{self.out.tmp_dir}/{_MARKERS}/{part.replace('/', '__')}.json"


def options_from(build: Callable[..., Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of an entry point's `parameters` (a CLI command's or a flow's, by name)
    that `build` (an options class or its constructor) takes: both entry points hand the
    same names to the same constructor, so neither can set an option the other lacks."""
    accepted = inspect.signature(build).parameters
    return {name: value for name, value in parameters.items() if name in accepted}


def find_version(
    store: Store,
    stage: Stage,
    inputs: tuple[VersionRef, ...],
    parameters: Mapping[str, Any],
) -> Manifest | None:
    """The version of `stage` made from `inputs` (its first parents), with these
    parameters and the current code, if there is one.

    Parameters are compared as stored (a tuple reads back as a list); other parents (the
    earlier versions a run was incremental over) do not matter.
    """
    direct = store.ref_for(stage.name, parameters, stage.code_version, inputs)
    if store.exists(direct):
        return store.manifest(direct)
    wanted = _as_stored(parameters)
    for manifest in store.versions(stage.name):
        if (
            manifest.parents[: len(inputs)] == inputs
            and manifest.code_version == stage.code_version
            and manifest.parameters == wanted
        ):
            return manifest
    return None


def run_stage(
    store: Store,
    stage: Stage,
    inputs: tuple[VersionRef, ...],
    parameters: Mapping[str, Any],
    build: Callable[[StageWrite], None],
    *,
    parents: tuple[VersionRef, ...] = (),
    count_names: Iterable[str] = (),
    resumable: bool = False,
    nothing_new: Callable[[], bool] | None = None,
) -> StageResult:
    """Return the existing version for these inputs and parameters, or build a new one.

    `build` writes the version's files through a `StageWrite` and counts into it; its
    counts (`count_names` first, in order) and stats go into the manifest. `parents` are
    recorded after `inputs` (earlier versions the run was incremental over). `resumable`
    keeps a killed run's committed parts for the next try. When `nothing_new()` says the
    inputs hold nothing this stage has not handled before, no empty version is published:
    the stage's newest version stands for the run, returned as reused.
    """
    done = find_version(store, stage, inputs, parameters)
    if done is not None:
        return StageResult(done.ref, True, done.stats)
    if nothing_new is not None and nothing_new():
        newest = store.versions(stage.name)
        if newest:
            log.info("%s: nothing new in %s; %s stands", stage.name, inputs, newest[-1].ref)
            return StageResult(newest[-1].ref, True, newest[-1].stats)
    all_parents = (*inputs, *(p for p in parents if p not in inputs))
    with store.write(
        stage.name, parameters, stage.code_version, all_parents, resumable=resumable
    ) as out:
        if out.existing is None:  # else another run published it while this one waited
            work = StageWrite(out, Counts(count_names))
            build(work)
            if out.fs.exists(f"{out.tmp_dir}/{_MARKERS}"):  # part markers never publish
                out.fs.rm(f"{out.tmp_dir}/{_MARKERS}", recursive=True)
            out.stats["counts"] = work.counts.as_dict()
            out.stats.update(work.stats)
    manifest = out.existing or store.manifest(out.ref)
    return StageResult(out.ref, out.existing is not None, manifest.stats)


def _as_stored(parameters: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(parameters, default=str))
