"""The dataset card written into every `webtext` version (its README.md).

What it states is read, not written by hand: column types from the schema the Parquet
files are read back with, where the pages came from (live crawl or archive replay) from
the fetch versions' recorded parameters, the quality filters' thresholds and rejection
counts from the extract versions' parameters and counts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scraping.quality import RULE_SETTINGS
from webtext.dataset import documents_in
from webtext.store import Manifest, VersionRef

# the stage names of scraping.fetch_stage and scraping.extract_stage (not imported: their
# code is no part of this stage's code version)
FETCH_STAGE, EXTRACT_STAGE = "fetches", "documents"
COLUMN_MEANING = {
    "doc_id": "16 hex digits of sha256(link URL); stable across versions",
    "text": "the main text: one line per paragraph, heading, list item or table row, as a"
    " browser lays the page out (no Markdown syntax); `<pre>` blocks verbatim",
    "url": "the normalised link URL submitted to Reddit",
    "domain": "the link's host",
    "title": "the page's h1 when it heads the text, else its og/twitter or <title> title",
    "karma": "summed score of every distinct Reddit submission of the URL",
    "subreddits": "where it was submitted",
    "first_seen": "the earliest submission",
    "last_seen": "the latest submission",
    "fetched_at": "when the page was fetched (or, replayed, archived)",
    "published": "the page's own publication date (ISO), htmldate's quick search",
    "word_count": "words as the quality rules count them: whitespace-separated tokens other"
    " than markup alone, one per character in scripts written without spaces (CJK, Thai)",
    "language": "py3langid's label: ISO 639-1 where the language or its macrolanguage has"
    " one (wuu, yue -> zh), its ISO 639-3 code otherwise (zxx: no linguistic content)",
}


def dataset_card(
    ref: VersionRef,
    counts: dict[str, int],
    parameters: dict[str, Any],
    lineage: Sequence[Manifest],
    schema: pa.Schema,
    earlier: Sequence[Manifest] = (),
) -> str:
    """Markdown: what the version holds, the dataset as of it (this version and the
    `earlier` versions it was deduplicated against, oldest first, as `Store.versions` and
    `webtext.dataset.dataset_versions` order them), where the pages came from, how it was
    filtered and made, and how to read it. `schema`: the Arrow schema the data files are
    written with; the card gives the types a Parquet reader gets back."""
    lines = [
        f"# WebText rebuild, version {ref.version}",
        "",
        "Web pages linked from Reddit submissions with enough karma, their main text",
        "extracted, filtered and deduplicated, as in GPT-2's WebText (Radford et al., 2019).",
        "",
        *_dataset_section(ref, counts, parameters, earlier),
        *_source_section(lineage),
        *_filters_section(lineage),
        "## Files",
        "",
        "- `data/part-*.parquet`: the documents this version adds (zstd Parquet), schema",
        "  below; in a `webtext pull`, `data/<version>-part-*.parquet` of every version.",
        "- `clusters/part-00000.parquet`: every dropped duplicate and the document kept.",
        "- `index/`: text hashes, MinHash signatures and band keys of the published",
        "  documents, so later versions are deduplicated against this one.",
        "- `manifest.json`: size, rows and sha256 of every file; parents; parameters.",
        "",
        "## Schema",
        "",
        "| column | type (as read from the Parquet files) | meaning |",
        "|---|---|---|",
        *(
            f"| `{f.name}` | `{f.type}`{'' if f.nullable else ', not null'} |"
            f" {COLUMN_MEANING.get(f.name, '')} |"
            for f in stored_schema(schema)
        ),
        "",
        "## Counts",
        "",
        "| stage | count | value |",
        "|---|---|---|",
        *(f"| dedup | {name} | {value:,} |" for name, value in counts.items()),
    ]
    for manifest in lineage:
        for name, value in manifest.stats.get("counts", {}).items():
            lines.append(f"| {manifest.stage} | {name} | {value:,} |")
    lines += [
        "",
        "## Lineage",
        "",
        *(f"- `{m.ref}` ({m.created_at}, code {m.code_version})" for m in lineage),
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(parameters, indent=2, sort_keys=True),
        "```",
        "",
        "## Reading it",
        "",
        "In the folder of a `webtext pull`, these read the whole dataset; in a version's own",
        "folder, only the documents it adds.",
        "",
        "```python",
        "import pyarrow.dataset as ds",
        'table = ds.dataset("data", format="parquet").to_table()',
        "```",
        "",
        "DuckDB: `SELECT * FROM 'data/*.parquet'`; polars: `pl.scan_parquet('data/*.parquet')`;",
        "Hugging Face: `load_dataset('parquet', data_files='data/*.parquet')`.",
        "",
        "## Licence",
        "",
        "The texts belong to their authors and publishers; this collection is for research,",
        "as WebText was. Honour removal requests by publishing a new version without the",
        "page.",
        "",
    ]
    return "\n".join(lines)


def stored_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` as a Parquet reader gets it back (Parquet has no second-resolution
    timestamps: `timestamp[s]` is stored and read as `timestamp[ms]`)."""
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer, compression="zstd")
    buffer.seek(0)
    return pq.read_schema(buffer).remove_metadata()


def _source_section(lineage: Sequence[Manifest]) -> list[str]:
    """Where the pages came from, as the fetch versions recorded it."""
    sources = [m.parameters.get("source") or {} for m in lineage if m.stage == FETCH_STAGE]
    lines = ["## Where the pages came from", ""]
    if not sources:
        return [*lines, "No fetch version in this version's lineage names its source.", ""]
    archives = sorted(
        {
            a.get("path", str(a))
            for s in sources
            if s.get("kind") == "archive"
            for a in s.get("archives", [])
        }
    )
    agents = sorted({s.get("user_agent", "?") for s in sources if s.get("kind") == "live"})
    if agents:
        lines += [
            f"- a live crawl by `{'`, `'.join(agents)}`, which obeys robots.txt (RFC 9309) for"
            " that user agent and waits between requests to a host;",
        ]
    if archives:
        lines += [
            "- archive replay: pages read from existing WARC files, not fetched; robots.txt"
            " was not consulted (whoever made the archive decided what to capture):",
            *(f"  - `{path}`" for path in archives),
        ]
    return [*lines, ""]


def _filters_section(lineage: Sequence[Manifest]) -> list[str]:
    """The quality rules with their thresholds and how many pages each rejected."""
    extracts = [m for m in lineage if m.stage == EXTRACT_STAGE]
    if not extracts:
        return []
    quality = extracts[-1].parameters.get("quality", {})
    lines = [
        "## Quality filters",
        "",
        "Each page is rejected under the first rule it fails (scraping/quality.py);",
        f"thresholds of `documents` version `{extracts[-1].version}`, pages rejected summed",
        f"over the {len(extracts)} `documents` version{'s' if len(extracts) > 1 else ''} of the"
        " lineage.",
        "",
        "| rule | threshold | pages rejected |",
        "|---|---|---|",
    ]
    for reason, settings in RULE_SETTINGS.items():
        threshold = ", ".join(f"{name} = {json.dumps(quality.get(name))}" for name in settings)
        rejected = sum(m.stats.get("counts", {}).get(reason, 0) for m in extracts)
        lines.append(f"| {reason} | {threshold} | {rejected:,} |")
    return [*lines, ""]


def _dataset_section(
    ref: VersionRef,
    counts: dict[str, int],
    parameters: dict[str, Any],
    earlier: Sequence[Manifest],
) -> list[str]:
    """Documents added by this version and documents in the dataset as of it."""
    added = counts.get("published", 0)
    total = added + sum(documents_in(m) for m in earlier)
    names = ", ".join(f"`{v}`" for v in [*(m.version for m in earlier), ref.version])
    lines = [
        "## The dataset as of this version",
        "",
        f"- documents added by this version: {added:,}",
        f"- documents in the dataset as of this version: {total:,}, in version"
        f"{'s' if earlier else ''} {names} (oldest first)",
        "",
    ]
    if parameters.get("full"):
        lines += ["A full version: made from every page fetched so far, it is the whole"]
        lines += ["dataset by itself."]
    elif earlier:
        lines += ["An incremental version: it holds only the documents that are new since"]
        lines += ["the versions before it (deduplicated against them), which hold the rest."]
    else:
        lines += ["The first version: it is the whole dataset by itself."]
    lines += [
        "",
        f"`webtext pull {ref.version} DEST` copies the whole dataset into `DEST/data/`;",
        "`--increment-only` copies just this version's documents.",
        "",
    ]
    return lines
