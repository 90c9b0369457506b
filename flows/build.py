"""`build-webtext`: the whole pipeline, one sub-flow per stage.

Stages are added here as they land; today: links, fetch, extract, dedup, tokenize.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.dedup import dedup_flow
from flows.extract import extract_text_flow
from flows.fetch import fetch_pages_flow
from flows.links import collect_links_flow
from flows.tokenize import tokenize_flow
from webtext.store import VersionRef


@flow(name="build-webtext")
def build_webtext(
    dumps: list[str] | None = None,
    listings: list[str] | None = None,
    incremental: bool = True,
    fetch: dict[str, Any] | None = None,
    tokenize: dict[str, Any] | None = None,
    store_url: str | None = None,
) -> dict[str, VersionRef]:
    """Build every stage's next version from Reddit dumps and/or API listings.

    `fetch` and `tokenize` hold options of those flows (connections, per_host_delay,
    archives, ...; gpt2_bpe_dir, vocab_size, ...).
    """
    links = collect_links_flow(
        dumps=dumps, listings=listings, incremental=incremental, store_url=store_url
    )
    fetches = fetch_pages_flow(links_version=links.version, store_url=store_url, **(fetch or {}))
    documents = extract_text_flow(fetches_version=fetches.version, store_url=store_url)
    webtext = dedup_flow(documents_version=documents.version, store_url=store_url)
    tokens = tokenize_flow(webtext_version=webtext.version, store_url=store_url, **(tokenize or {}))
    return {
        "links": links,
        "fetches": fetches,
        "documents": documents,
        "webtext": webtext,
        "tokens": tokens,
    }
