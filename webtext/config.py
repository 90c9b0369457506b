"""Settings read from the environment, in one place so every entry point agrees."""

from __future__ import annotations

import hashlib
import os
from functools import cache
from importlib import import_module
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


# The modules of this package that stage outputs depend on; the CLI, the demo and the UI
# check are not among them, so editing those rebuilds nothing.
STAGE_PLUMBING = ("store.py", "config.py", "dataset.py", "parquet.py")


@cache
def code_version(*packages: str) -> str:
    """The package version plus a hash of the named packages' source files (and of the
    shared plumbing in `STAGE_PLUMBING`).

    A change to a stage's code changes its version ids, so outputs made by older code are
    never mistaken for the current code's.
    """
    here = Path(__file__).parent
    sources = [here / name for name in STAGE_PLUMBING]
    for name in sorted(set(packages)):
        root = Path(import_module(name).__file__).parent  # type: ignore[arg-type]
        sources += sorted(root.rglob("*.py"))
    digest = hashlib.sha256()
    for source in sources:
        digest.update(str(source.relative_to(here.parent)).encode())
        digest.update(source.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:10]}"


EVAL_DATA_ENV = "WEBTEXT_EVAL_DATA"
DEFAULT_EVAL_DATA = "eval-data"


def eval_data_root(path: str | None = None) -> str:
    """Where evaluation sets are read from, in their published layouts: `path`, else
    `$WEBTEXT_EVAL_DATA`, else ./eval-data (nothing is ever downloaded)."""
    return path or os.environ.get(EVAL_DATA_ENV, DEFAULT_EVAL_DATA)
