"""Every benchmark script starts, and its `--quick` run prints its JSON line.

Each script in benchmarks/ runs as a user runs it (`python benchmarks/X.py`, so the script's
folder comes first on sys.path), in a child process: `--help` must answer, and `--quick`
(tiny input, the same code path as the full run) must exit 0 with a JSON object as the last
line of stdout. A new script is picked up by the glob (modules named `_*`, such as the
scripts' shared `_common`, are not scripts); one that needs the shared real data says so in
NEEDS_DATA, and gets the folder of conftest's `test_data` as WEBTEXT_TEST_DATA.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import data_missing

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO_ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("[!_]*.py"))
MODULES = sorted(p.name for p in BENCHMARKS.glob("*.py"))  # the scripts and what they share

# What a script reads from the shared data folder (WEBTEXT_TEST_DATA).
NEEDS_DATA = {
    "bpe_encode.py": ["gpt2-bpe/encoder.json", "eval/wikitext2", "eval/lambada"],
    "evaluate.py": ["gpt2-bpe/encoder.json", "eval/wikitext2"],
    "generate.py": ["gpt2-bpe/encoder.json", "eval/lambada"],
    "extraction.py": ["extraction/article-benchmark/ground-truth.json"],
    "links.py": ["reddit/pushshift/test_submissions.ndjson"],
    "scale.py": ["gpt2-bpe/encoder.json"],
}

# The figure each one compares with its baseline (dedup_scale and train have none: they
# compare with the machine's memory and the device's peak FLOPs).
RATIO_KEY = {
    "bpe_encode.py": "ratio",
    "dask_speedup.py": "ratio",
    "dedup.py": "ratio",
    "evaluate.py": "ratio",
    "extraction.py": "speed_ratio",
    "generate.py": "ratio",
    "fetch.py": "ratio",
    "links.py": "ratio",
    "verified_read.py": "ratio",
}


def _run(
    script: str, *args: str, timeout: float, data: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"WEBTEXT_TEST_DATA": str(data)} if data else {})}
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _data_for(script: str, request: pytest.FixtureRequest) -> Path | None:
    """The shared data folder (conftest's `test_data`) for a script that reads it."""
    if script not in NEEDS_DATA:
        return None
    root: Path = request.getfixturevalue("test_data")
    missing = [p for p in NEEDS_DATA[script] if not (root / p).exists()]
    if missing:
        data_missing(f"{script} needs {missing} under {root} (set WEBTEXT_TEST_DATA)")
    return root


def _no_nan(value: str) -> float:
    raise ValueError(f"{value} in the JSON line")


def test_the_scripts_are_found() -> None:
    assert "bpe_encode.py" in SCRIPTS and len(SCRIPTS) >= 8, SCRIPTS
    assert set(NEEDS_DATA) | set(RATIO_KEY) <= set(SCRIPTS)


@pytest.mark.parametrize("script", MODULES)
def test_no_script_shadows_the_standard_library(script: str) -> None:
    """Python puts the script's folder first on sys.path: benchmarks/tokenize.py once hid
    the standard library's `tokenize`, and four benchmarks died at import."""
    assert Path(script).stem not in sys.stdlib_module_names


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    done = _run(script, "--help", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--quick" in done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run_prints_its_json_line(script: str, request: pytest.FixtureRequest) -> None:
    done = _run(script, "--quick", timeout=300, data=_data_for(script, request))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, f"nothing on stdout; stderr: {done.stderr[-3000:]}"
    result = json.loads(lines[-1], parse_constant=_no_nan)
    assert isinstance(result, dict), lines[-1]
    assert result.get("quick") is True, result
    if script in RATIO_KEY:
        ratio = result[RATIO_KEY[script]]
        assert isinstance(ratio, int | float) and math.isfinite(ratio) and ratio > 0, result
