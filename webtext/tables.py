"""Schemas of the tables one stage hands to another, so a reader need not import the
stage (nor take its code into its own code version) to know their columns."""

from __future__ import annotations

import pyarrow as pa

# A `documents` version's `documents/part-*.parquet`: the extraction stage writes it, the
# dedup stage reads it.
DOCUMENTS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("url", pa.string()),
        ("final_url", pa.string()),
        ("domain", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float32()),
        ("word_count", pa.int32()),
        ("published", pa.string()),
        ("fetched_at", pa.timestamp("ms", tz="UTC")),
        ("karma", pa.int64()),
        ("submissions", pa.int64()),
        ("subreddits", pa.list_(pa.string())),
        ("post_ids", pa.list_(pa.string())),
        ("first_seen", pa.timestamp("s", tz="UTC")),
        ("last_seen", pa.timestamp("s", tz="UTC")),
        ("extraction", pa.string()),
    ]
)
