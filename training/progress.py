"""A training run's progress for people: a metrics record as one line, and the time left.

Display only, kept out of `training.launch` so that how a step prints is not part of the
`model` stage's code version (editing it must not rename a run's folder or stop a killed
run from resuming). `webtext train` and the `train-gpt2` flow use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

# How describe_step shows each field of a metrics record, in this order.
STEP_FIELDS = (
    ("loss", "loss {:.4f}"),
    ("val_loss", "val_loss {:.4f}"),
    ("lr", "lr {:.2e}"),
    ("tokens_per_s", "{:,.0f} tokens/s"),
    ("mfu", "mfu {:.1%}"),
)


def describe_step(record: Mapping[str, Any], max_steps: int, eta_s: float | None = None) -> str:
    """A metrics record as one line for people: step, losses, learning rate, speed, and the
    time left when `eta_s` is known."""
    parts = [f"step {record['step']}/{max_steps}"]
    parts += [form.format(record[key]) for key, form in STEP_FIELDS if record.get(key) is not None]
    if eta_s is not None:
        parts.append(f"ETA {format_duration(eta_s)}")
    return "  ".join(parts)


def format_duration(seconds: float) -> str:
    """42s, 12m05s, 3h07m, 41d06h: the two largest units."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class StepClock:
    """The time left to `max_steps`, at the pace of the steps seen since the first one (a
    resumed run starts its clock at its first new step, not at step 0)."""

    def __init__(self, max_steps: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_steps = max_steps
        self.clock = clock
        self.first: tuple[int, float] | None = None

    def eta_s(self, step: int) -> float | None:
        """Seconds until the last step, from the pace so far; None before two steps."""
        now = self.clock()
        if self.first is None:
            self.first = (step, now)
            return None
        first_step, started = self.first
        if step <= first_step:
            return None
        return (self.max_steps - step) * (now - started) / (step - first_step)
