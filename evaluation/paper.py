"""The GPT-2 paper's zero-shot results (Radford et al. 2019, Table 3 and section 3.7), and
our results laid out beside them."""

from __future__ import annotations

from typing import Any

from webtext.markdown import markdown_table  # noqa: F401  (the table's layout, re-exported)

# Columns of Table 3, in its order: (our task, its metric keys in our results by preference,
# header). The paper's LAMBADA accuracy is the stop-word-filtered one, when we have it.
COLUMNS = (
    ("lambada", ("ppl",), "LAMBADA (PPL)"),
    ("lambada", ("acc_stopword_filtered", "value"), "LAMBADA (ACC)"),
    ("cbt-cn", ("value",), "CBT-CN (ACC)"),
    ("cbt-ne", ("value",), "CBT-NE (ACC)"),
    ("wikitext2", ("value",), "WikiText2 (PPL)"),
    ("ptb", ("value",), "PTB (PPL)"),
    ("enwik8", ("value",), "enwik8 (BPB)"),
    ("text8", ("value",), "text8 (BPC)"),
    ("wikitext103", ("value",), "WikiText103 (PPL)"),
    ("1bw", ("value",), "1BW (PPL)"),
    ("winograd", ("value",), "Winograd (ACC)"),
)
# Accuracies in the paper are percentages; ours are fractions.
PERCENT = {"LAMBADA (ACC)", "CBT-CN (ACC)", "CBT-NE (ACC)", "Winograd (ACC)"}

# Table 3 as published (LAMBADA accuracy with the stop-word filter); Winograd from section
# 3.5 (70.70% for the largest model; the smaller sizes appear only in a figure).
PAPER = {
    "GPT-2 117M": (35.13, 45.99, 87.65, 83.4, 29.41, 65.85, 1.16, 1.17, 37.50, 75.20, None),
    "GPT-2 345M": (15.60, 55.48, 92.35, 87.1, 22.76, 47.33, 1.01, 1.06, 26.37, 55.72, None),
    "GPT-2 762M": (10.87, 60.12, 93.45, 88.0, 19.93, 40.31, 0.97, 1.02, 22.05, 44.575, None),
    "GPT-2 1542M": (8.63, 63.24, 93.30, 89.05, 18.34, 35.76, 0.93, 0.98, 17.48, 42.16, 70.70),
}


def paper_table(results: dict[str, dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Rows in Table 3's layout: the paper's four sizes, then `name` (our model); a task
    we did not run is None."""
    rows = [
        {"model": model, **{header: v for (_, _, header), v in zip(COLUMNS, values, strict=True)}}
        for model, values in PAPER.items()
    ]
    ours: dict[str, Any] = {"model": name}
    for task, keys, header in COLUMNS:
        result = results.get(task, {})
        value = next((result[k] for k in keys if result.get(k) is not None), None)
        if value is not None and header in PERCENT:
            value = 100 * value
        ours[header] = None if value is None else round(value, 4)
    return [*rows, ours]
