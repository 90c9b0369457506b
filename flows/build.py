"""`build-webtext`: the whole pipeline, one sub-flow per stage.

Stages are added here as they land; today it collects links.
"""

from __future__ import annotations

from prefect import flow

from flows.links import collect_links_flow
from webtext.store import VersionRef


@flow(name="build-webtext")
def build_webtext(
    dumps: list[str] | None = None,
    listings: list[str] | None = None,
    incremental: bool = True,
    store_url: str | None = None,
) -> dict[str, VersionRef]:
    """Build every stage's next version from Reddit dumps and/or API listings."""
    links = collect_links_flow(
        dumps=dumps, listings=listings, incremental=incremental, store_url=store_url
    )
    return {"links": links}
