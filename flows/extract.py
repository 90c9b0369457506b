"""`extract-text`: a `fetches` version to a `documents` version (main text, filtered)."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import ProgressReporter, publish_version
from scraping.extract import ExtractSettings
from scraping.extract_stage import extract_documents
from scraping.quality import QualityFilters
from webtext.config import open_store
from webtext.store import StageResult, Store, VersionRef


@task(cache_policy=NO_CACHE, persist_result=False)
def extract_documents_task(
    store: Store,
    fetches: VersionRef,
    filters: QualityFilters,
    workers: int | None,
    page_timeout: float,
) -> StageResult:
    progress = ProgressReporter(f"Pages of {fetches} extracted")
    result = extract_documents(
        store,
        fetches,
        ExtractSettings(),
        filters,
        workers=workers,
        page_timeout=page_timeout,
        on_start=progress.start,
        on_page=progress.advance,
    )
    progress.finish()
    return result


@flow(name="extract-text", log_prints=True)
def extract_text_flow(
    fetches_version: str = "latest",
    min_words: int = 50,
    languages: list[str] | None = None,
    workers: int | None = None,
    page_timeout: float = 20.0,
    store_url: str | None = None,
) -> VersionRef:
    """Extract the main text of every fetched page and keep the documents that pass the
    quality rules; `languages` defaults to English only, `[]` keeps every language."""
    store = open_store(store_url)
    fetches = store.resolve("fetches", fetches_version)
    filters = QualityFilters(
        min_words=min_words, languages=tuple(["en"] if languages is None else languages)
    )
    result = extract_documents_task(store, fetches, filters, workers, page_timeout)
    publish_version(store, result.ref, result.stats["counts"], result.reused, "Text extraction")
    return result.ref
