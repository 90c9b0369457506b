"""The artifacts every stage flow shows in the Prefect UI: counts, and where its output is."""

from __future__ import annotations

from collections.abc import Mapping

from prefect.artifacts import create_link_artifact, create_table_artifact

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
