"""The floors, checked statically: which package may import which (docs/architecture.md).

    webtext_app        the CLI and the demo (top floor)
    flows              Prefect flows over the stages
    scraping, dedup, training, evaluation, release    the stages
    webtext            settings, store, dataset readers, stage runtime (ground floor)

A package imports only from the floors below it; the stages know nothing of Prefect.
Read from the source with `ast`, so an import inside a function counts as much as one at
the top of a module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from webtext.config import imported_modules

REPO_ROOT = Path(__file__).resolve().parent.parent

STAGES = ("scraping", "dedup", "training", "evaluation", "release")
FORBIDDEN: dict[str, frozenset[str]] = {
    "webtext": frozenset({*STAGES, "flows", "webtext_app", "prefect", "prefect_dask"}),
    **{stage: frozenset({"flows", "webtext_app", "prefect", "prefect_dask"}) for stage in STAGES},
    "flows": frozenset({"webtext_app"}),
}


def violations(package: str) -> list[str]:
    forbidden = FORBIDDEN[package]
    found = []
    for source in sorted((REPO_ROOT / package).rglob("*.py")):
        for line, module in imported_modules(source):
            if module.split(".")[0] in forbidden:
                found.append(f"{source.relative_to(REPO_ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_from_the_floors_below(package: str) -> None:
    assert (REPO_ROOT / package / "__init__.py").exists()
    assert violations(package) == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text(
        "import os\n"
        "def f():\n"
        "    from flows.build import build_webtext\n"
        "    import importlib\n"
        "    return importlib.import_module('webtext_app.cli')\n"
        "from . import sibling\n"
    )
    assert [module for _, module in imported_modules(source)] == [
        "os",
        "flows.build",
        "flows.build.build_webtext",  # `from a import b`: b may be a module
        "importlib",
        "webtext_app.cli",
    ]


def test_every_first_party_package_has_a_floor() -> None:
    """A new top-level package must be placed on a floor here before it ships."""
    import tomllib

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages == set(FORBIDDEN) | {"webtext_app"}
