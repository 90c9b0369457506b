"""What the benchmark scripts share: their option parsing and the real-data folder.

Each script puts the repository root first on sys.path, then imports this module as
`benchmarks._common` (the same whether it runs as `python benchmarks/X.py` or is loaded from
its file by a test). The leading underscore keeps the test suite from running it as a
benchmark.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


def test_data_root() -> Path:
    """The shared folder of real data: $WEBTEXT_TEST_DATA, else ../shared/data."""
    return Path(os.environ.get("WEBTEXT_TEST_DATA", REPO.parent / "shared" / "data"))


def parse(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    quick: Mapping[str, Any] | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    pick: Callable[[argparse.Namespace], str] | None = None,
) -> argparse.Namespace:
    """The options, where those given explicitly win over the defaults `--quick` and the
    picked config set, and those win over the parser's own (`--quick` over the config).

    `quick`: the defaults under `--quick`. `configs` with `pick`: named sets of defaults, and
    a function of the options as first parsed that names the one to use (the device's); the
    name comes back as `args.config`.
    """
    args = parser.parse_args(argv)
    defaults: dict[str, Any] = {}
    if configs is not None:
        if pick is None:
            raise TypeError("configs needs pick, the function that names the config")
        name = pick(args)
        defaults.update(configs[name], config=name)
    if args.quick and quick:
        defaults.update(quick)
    if not defaults:
        return args
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def vm_hwm_bytes() -> int:
    """This process' peak resident memory (Linux's VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current resident memory, so a later read is one step's peak."""
    Path("/proc/self/clear_refs").write_text("5")


def timed(run: Callable[[], T], device: str = "cpu") -> tuple[T, float]:
    """`run()` and its wall time; on CUDA, once the kernels it queued have finished."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    start = time.perf_counter()
    value = run()
    if device == "cuda":
        torch.cuda.synchronize()
    return value, time.perf_counter() - start
