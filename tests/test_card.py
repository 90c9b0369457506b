"""The dataset card states what the lineage recorded: source, column types, filters."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from dedup.card import dataset_card
from dedup.stage import PUBLISHED_SCHEMA
from scraping import quality
from scraping.quality import QualityFilters
from webtext.store import Manifest, VersionRef


def _manifest(stage: str, version: str, parameters: dict, counts: dict | None = None) -> Manifest:
    return Manifest(
        stage=stage,
        version=version,
        parents=(),
        parameters=parameters,
        code_version="0.1.0+test",
        created_at="2026-11-29T00:00:00Z",
        files=(),
        stats={"counts": counts or {}},
    )


ARCHIVE = {"kind": "archive", "archives": [{"path": "/data/cc.warc.gz", "size": 1}]}
LIVE = {"kind": "live", "user_agent": "webtext/0.1 (+https://example.org)"}
DOCUMENTS = _manifest(
    "documents",
    "d0c",
    {"quality": QualityFilters().parameters()},
    {"pages": 40, "documents": 20, quality.TOO_SHORT: 7, quality.SPAM_TERMS: 2},
)


def _card(source: dict) -> str:
    lineage = [DOCUMENTS, _manifest("fetches", "f37", {"source": source})]
    ref = VersionRef("webtext", "abc")
    return dataset_card(ref, {"published": 20}, {}, lineage, PUBLISHED_SCHEMA)


def test_an_archive_replay_says_so_and_claims_no_robots_txt() -> None:
    card = _card(ARCHIVE)
    assert "archive replay" in card and "`/data/cc.warc.gz`" in card
    assert "robots.txt was not consulted" in card
    assert "robots.txt allowed" not in card and "live crawl" not in card


def test_a_live_crawl_names_its_agent_and_robots_txt() -> None:
    card = _card(LIVE)
    assert "a live crawl by `webtext/0.1 (+https://example.org)`" in card
    assert "obeys robots.txt" in card and "archive replay" not in card


def test_column_types_are_those_a_parquet_reader_gets() -> None:
    buffer = io.BytesIO()
    pq.write_table(PUBLISHED_SCHEMA.empty_table(), buffer)
    read_back = pq.read_schema(io.BytesIO(buffer.getvalue()))
    card = _card(ARCHIVE)
    for field in read_back:
        assert f"| `{field.name}` | `{field.type}`" in card, field
    # Parquet has no seconds: the timestamp[s] columns are read as milliseconds
    assert PUBLISHED_SCHEMA.field("first_seen").type == pa.timestamp("s", tz="UTC")
    assert "| `first_seen` | `timestamp[ms, tz=UTC]`" in card
    assert "timestamp[s" not in card


def test_filters_have_their_thresholds_and_counts() -> None:
    card = _card(ARCHIVE)
    assert "| too_short | min_words = 50 | 7 |" in card
    assert "| spam_terms | spam_terms_in_text = 2 | 2 |" in card
    assert '| language | languages = ["en"] | 0 |' in card
    for reason in quality.QUALITY_REASONS:
        assert f"| {reason} |" in card
