"""Settings read from the environment, in one place so every entry point agrees."""

from __future__ import annotations

import ast
import hashlib
import os
import threading
from collections.abc import Iterator
from functools import cache
from importlib.machinery import PathFinder
from importlib.util import find_spec
from pathlib import Path

from webtext import __version__
from webtext.store import Store

STORE_ENV = "WEBTEXT_STORE"
DEFAULT_STORE = "artifacts"


def store_url() -> str:
    """Where versions live: `$WEBTEXT_STORE` (a folder or fsspec URL), else ./artifacts."""
    return os.environ.get(STORE_ENV, DEFAULT_STORE)


def open_store(url: str | None = None) -> Store:
    return Store(url or store_url())


# Packages whose modules can make up a stage's code version. The CLI, the demo and the
# flows are not among them: editing those rebuilds nothing.
STAGE_PACKAGES = ("webtext", "scraping", "dedup", "training", "evaluation", "release")


@cache
def code_version(module: str) -> str:
    """The package version plus a hash of the source of `module` and of every module of
    `STAGE_PACKAGES` it imports, directly or not.

    A stage names the module that runs it; its version ids then change exactly when code
    it runs changes (editing the training loop leaves token shards alone), so outputs made
    by older code are never mistaken for the current code's.
    """
    digest = hashlib.sha256()
    root = Path(__file__).parent.parent
    for source in sorted(module_sources(module)):
        digest.update(str(source.relative_to(root)).encode())
        digest.update(source.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:10]}"


def module_sources(module: str) -> set[Path]:
    """The source files of `module` and of the first-party modules it imports."""
    first = _source_of(module)
    if first is None:
        raise ValueError(f"no module {module!r} in {', '.join(STAGE_PACKAGES)}")
    seen: set[Path] = set()
    todo = [first]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for _, name in imported_modules(path):
            if (found := _source_of(name)) is not None:
                todo.append(found)
    return seen


def _source_of(name: str) -> Path | None:
    """The file of module `name`, found without importing anything: `find_spec` imports a
    dotted name's parents, and `from training.model import GPT` names `training.model.GPT`,
    so it imported torch (3 s for one stage's code version)."""
    parts = name.split(".")
    if parts[0] not in STAGE_PACKAGES:
        return None
    spec = find_spec(parts[0])  # a top-level name: found by every finder, imports nothing
    for part in parts[1:]:
        if spec is None or spec.submodule_search_locations is None:
            return None  # a name inside a module (a function, a class), not a module
        spec = PathFinder.find_spec(part, list(spec.submodule_search_locations))
    return Path(spec.origin) if spec and spec.origin else None


# CPython 3.11 keeps the AST constructor's recursion depth in per-interpreter state, shared
# by threads (see python/cpython#106905): two stages started at once in threads failed with
# "SystemError: AST constructor recursion depth mismatch" computing their code versions.
_PARSING = threading.Lock()


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import in `path`, those inside functions and
    `import_module("...")` calls with a literal name included (`from a import b` names a
    and a.b, as b may be a module)."""
    with _PARSING:
        tree = ast.parse(path.read_bytes(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


EVAL_DATA_ENV = "WEBTEXT_EVAL_DATA"
DEFAULT_EVAL_DATA = "eval-data"


def eval_data_root(path: str | None = None) -> str:
    """Where evaluation sets are read from, in their published layouts: `path`, else
    `$WEBTEXT_EVAL_DATA`, else ./eval-data (nothing is ever downloaded)."""
    return path or os.environ.get(EVAL_DATA_ENV, DEFAULT_EVAL_DATA)
