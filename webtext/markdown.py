"""Markdown tables of records: one layout for every table a stage writes into a file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-flavoured table with the first row's keys as headers; None shows as "–"."""
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = ("–" if row.get(h) is None else str(row[h]) for h in headers)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
