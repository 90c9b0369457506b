"""The artifacts every stage flow shows in the Prefect UI: counts, and where its output is."""

from __future__ import annotations

import time
from collections.abc import Mapping

from prefect.artifacts import (
    create_link_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from webtext.store import Store, VersionRef


def publish_version(
    store: Store, ref: VersionRef, counts: Mapping[str, int], reused: bool, description: str
) -> None:
    """A table of counts and a link to the version; artifact keys are per stage."""
    key = ref.stage.replace("_", "-")
    rows = [{"count": name, "value": value} for name, value in counts.items()]
    state = "reused an existing version" if reused else "wrote a new version"
    create_table_artifact(
        key=f"{key}-counts", table=rows, description=f"{description}: {ref} ({state})"
    )
    create_link_artifact(
        key=f"{key}-version",
        link=store.url(ref, "manifest.json"),
        link_text=f"{ref} manifest",
        description=f"The {ref.stage} version this run produced",
    )


class ProgressReporter:
    """The stage runtime's progress protocol (`webtext.stage.Progress`) as a Prefect
    progress artifact: `start(total)`, then `advance(n)`. Updates are throttled: a stage
    reports per page, the UI needs a few a minute, and every update is a call to the
    server; reaching the total is always shown. `key` names the artifact (for readers
    that look it up); `advance` and `finish` can replace its description (a run's latest
    line)."""

    def __init__(
        self, description: str, min_interval_s: float = 2.0, key: str | None = None
    ) -> None:
        self.description = description
        self.min_interval_s = min_interval_s
        self.key = key
        self.total: float = 0
        self.done: float = 0
        self._artifact_id = None
        self._last_update = 0.0

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def start(self, total: float) -> None:
        self.total = total
        self._artifact_id = create_progress_artifact(
            0.0, key=self.key, description=self.description
        )
        self._last_update = time.monotonic()

    def advance(self, n: float = 1, description: str | None = None) -> None:
        self.done += n
        if description is not None:
            self.description = description
        now = time.monotonic()
        reached = self.done - n < self.total <= self.done  # this call reached the total
        due = reached or now - self._last_update >= self.min_interval_s
        if self._artifact_id and due:
            self._last_update = now
            update_progress_artifact(self._artifact_id, self.percent(), self.description)

    def finish(self, description: str | None = None) -> None:
        if description is not None:
            self.description = description
        if self._artifact_id:
            update_progress_artifact(self._artifact_id, 100.0, self.description)

    def percent(self) -> float:
        return min(100.0, 100.0 * self.done / self.total) if self.total else 100.0
