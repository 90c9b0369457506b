"""The GPT-2 paper's zero-shot results (Radford et al. 2019, Table 3 and sections 3.5-3.8),
and our results laid out beside them."""

from __future__ import annotations

from typing import Any

# Columns of Table 3, in its order: (our task, its metric keys in our results by preference,
# header). LAMBADA's accuracy twice: plain (the last word's tokens are the greedy ones) and
# with the paper's stop-word filter (Table 3's figure; section 3.3 gives the plain one).
COLUMNS = (
    ("lambada", ("ppl",), "LAMBADA (PPL)"),
    ("lambada", ("value",), "LAMBADA (ACC)"),
    ("lambada", ("acc_stopword_filtered",), "LAMBADA (ACC, stop-word filter)"),
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
PERCENT = {
    "LAMBADA (ACC)",
    "LAMBADA (ACC, stop-word filter)",
    "CBT-CN (ACC)",
    "CBT-NE (ACC)",
    "Winograd (ACC)",
}

# Table 3 as published (LAMBADA accuracy with the stop-word filter); the plain LAMBADA
# accuracy from section 3.3 (52.66% for the largest model only); Winograd from section 3.5
# (70.70% for the largest model; the smaller sizes appear only in a figure).
PAPER = {  # LAMBADA PPL, ACC, ACC stop-word filter, CBT-CN, CBT-NE, WikiText2 ... Winograd
    "GPT-2 117M": (35.13, None, 45.99, 87.65, 83.4, 29.41, 65.85, 1.16, 1.17, 37.5, 75.2, None),
    "GPT-2 345M": (15.6, None, 55.48, 92.35, 87.1, 22.76, 47.33, 1.01, 1.06, 26.37, 55.72, None),
    "GPT-2 762M": (10.87, None, 60.12, 93.45, 88.0, 19.93, 40.31, 0.97, 1.02, 22.05, 44.575, None),
    "GPT-2 1542M": (8.63, 52.66, 63.24, 93.3, 89.05, 18.34, 35.76, 0.93, 0.98, 17.48, 42.16, 70.7),
}
# The split of the paper's figure where it is not the test set: its CBT row is validation
# accuracy. The header names it, and ours when it differs (`paper_table`'s `splits`).
PAPER_SPLITS = {"cbt-cn": "valid", "cbt-ne": "valid"}


def paper_table(
    results: dict[str, dict[str, Any]], name: str, splits: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Rows in Table 3's layout: the paper's four sizes, then `name` (our model); a task
    we did not run is None. `splits`: the split of each set we ran where PAPER_SPLITS names
    the paper's (CBT: "CBT-CN (ACC, valid)", or "(ACC, paper valid, ours test)")."""
    headers = [_with_split(task, header, splits or {}) for task, _, header in COLUMNS]
    rows = [
        {"model": model, **dict(zip(headers, values, strict=True))}
        for model, values in PAPER.items()
    ]
    ours: dict[str, Any] = {"model": name}
    for (task, keys, header), shown in zip(COLUMNS, headers, strict=True):
        result = results.get(task, {})
        value = next((result[k] for k in keys if result.get(k) is not None), None)
        if value is not None and header in PERCENT:
            value = 100 * value
        ours[shown] = None if value is None else round(value, 4)
    return [*rows, ours]


def _with_split(task: str, header: str, splits: dict[str, str]) -> str:
    paper = PAPER_SPLITS.get(task)
    if paper is None:
        return header
    ours = splits.get(task, paper)
    label = paper if ours == paper else f"paper {paper}, ours {ours}"
    return f"{header[:-1]}, {label})"


# The paper's other zero-shot tasks, published for GPT-2 1542M only: (our task, the key of
# its value in our results, row, the paper's figure). Sections 3.5 (CoQA dev F1), 3.6
# (summarization, Table 4: TL;DR: ROUGE-1/2/L F1 and their average), 3.7 (WMT-14 BLEU),
# 3.8 (Natural Questions exact match, %).
OTHER_TASKS = (
    ("coqa", "value", "CoQA (F1, dev)", 55.0),
    ("nq_open", "value", "Natural Questions (EM %)", 4.1),
    ("wmt14-fr-en", "value", "WMT-14 Fr-En (BLEU, newstest2014)", 11.5),
    ("wmt14-en-fr", "value", "WMT-14 En-Fr (BLEU, newstest2014)", 5.0),
    ("cnn_dailymail", "value", "CNN/DailyMail (ROUGE avg)", 21.40),
    ("cnn_dailymail", "rouge1", "CNN/DailyMail (ROUGE-1 F1)", 29.34),
    ("cnn_dailymail", "rouge2", "CNN/DailyMail (ROUGE-2 F1)", 8.27),
    ("cnn_dailymail", "rougeL", "CNN/DailyMail (ROUGE-L F1)", 26.58),
)
PAPER_OTHER_MODEL = "GPT-2 1542M"
# Our exact match, F1 and ROUGE are fractions, the paper's percentages; BLEU is 0-100 in both.
FRACTION_METRICS = {"em", "f1", "rouge"}


def other_tasks_table(results: dict[str, dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """One row per figure of the paper's other tasks: the paper's (GPT-2 1542M) and ours
    (`name`) on the same scale; a task we did not run is None."""
    rows = []
    for task, key, label, published in OTHER_TASKS:
        result = results.get(task, {})
        value = result.get(key)
        if value is not None and result.get("metric") in FRACTION_METRICS:
            value = 100 * value
        ours = None if value is None else round(value, 2)
        rows.append({"task": label, PAPER_OTHER_MODEL: published, name: ours})
    return rows
