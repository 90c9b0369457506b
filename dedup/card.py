"""The dataset card written into every `webtext` version (its README.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from webtext.dataset import documents_in
from webtext.store import Manifest, VersionRef

SCHEMA_DOC = {
    "doc_id": "string: 16 hex digits of sha256(link URL); stable across versions",
    "text": "string: the main text, paragraphs separated by newlines",
    "url": "string: the normalised link URL submitted to Reddit",
    "domain": "string: the link's host",
    "title": "string or null: the page title",
    "karma": "int64: summed score of every distinct Reddit submission of the URL",
    "subreddits": "list<string>: where it was submitted",
    "first_seen": "timestamp[s, UTC]: the earliest submission",
    "last_seen": "timestamp[s, UTC]: the latest submission",
    "fetched_at": "timestamp[ms, UTC]: when the page was fetched (or archived)",
    "published": "string or null: the page's own publication date (ISO)",
    "word_count": "int32: whitespace-separated words in text",
    "language": "string: ISO 639-1 code from py3langid",
}


def dataset_card(
    ref: VersionRef,
    counts: dict[str, int],
    parameters: dict[str, Any],
    lineage: Sequence[Manifest],
    columns: Sequence[str],
    earlier: Sequence[Manifest] = (),
) -> str:
    """Markdown: what the version holds, the dataset as of it (this version and the
    `earlier` versions it was deduplicated against, oldest first, as `Store.versions` and
    `webtext.dataset.dataset_versions` order them), how it was made, and how to read it."""
    lines = [
        f"# WebText rebuild, version {ref.version}",
        "",
        "Web pages linked from Reddit submissions with enough karma, their main text",
        "extracted, filtered and deduplicated, as in GPT-2's WebText (Radford et al., 2019).",
        "",
        *_dataset_section(ref, counts, parameters, earlier),
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
        "| column | type and meaning |",
        "|---|---|",
        *(f"| `{name}` | {SCHEMA_DOC[name]} |" for name in columns),
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
        "as WebText was. Pages are kept as their servers sent them and their robots.txt",
        "allowed; honour removal requests by publishing a new version without the page.",
        "",
    ]
    return "\n".join(lines)


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
