"""The `detection` stage: how well generated text is told apart from WebText, per setting.

Two baselines of OpenAI's gpt-2-output-dataset (detection.md):

- TF-IDF unigrams and bigrams, then a logistic regression (scikit-learn), trained on the
  `train` split, its C chosen by accuracy on `valid`, scored on `test`. OpenAI reports
  88.29% (117M, temperature 1) and 96.79% (117M, top-k 40), down to 74.31% / 92.69% (1542M).
- "Zero-shot": a threshold on the model's own total log-probability of each text, set on
  `train` (direction included), scored on `test`.

Both label WebText 0 and samples 1, with as many of each per split as the outputs version
holds. The version holds `results.json`, `table.md` (the paper's layout: model x
temperature 1 / top-k 40) and `accuracy_by_length.png` (TF-IDF test accuracy by length).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from itertools import pairwise
from typing import Any

import numpy as np

from evaluation.models import LanguageModel, load_model_version
from evaluation.scoring import Request, WindowSettings, rolling_requests, score_requests
from release.outputs import SPLITS, WEBTEXT, read_records, sources
from webtext.markdown import markdown_table
from webtext.stage import Stage, StageWrite, run_stage
from webtext.store import StageResult, Store, VersionRef

STAGE = Stage("detection", __name__)
# The logistic regression's inverse regularisation strengths tried on `valid`.
C_GRID = tuple(2.0**e for e in range(-6, 7))
MAX_FEATURES = 2**21
TABLE = "table.md"
LENGTH_PNG = "accuracy_by_length.png"
# OpenAI's TF-IDF baseline on the gpt-2-output-dataset (detection.md), test accuracy in %.
REFERENCE = {
    "117M": {"temperature-1": 88.29, "top-k-40": 96.79},
    "345M": {"temperature-1": 88.94, "top-k-40": 95.22},
    "762M": {"temperature-1": 77.16, "top-k-40": 94.43},
    "1542M": {"temperature-1": 74.31, "top-k-40": 92.69},
}
HEADERS = {"temperature-1": "Temperature 1", "top-k-40": "Top-K 40"}

Splits = Mapping[str, Sequence[str]]  # split -> texts


@dataclass(frozen=True)
class DetectorResult:
    """A detector's accuracies (fractions) and, per test text, whether it was right."""

    test_accuracy: float
    valid_accuracy: float
    choice: dict[str, float]  # what was chosen on train/valid: C, or threshold and sign
    test_correct: list[bool]  # real test texts first, then generated


def tfidf_detector(real: Splits, generated: Splits) -> DetectorResult:
    """TF-IDF (1-2 grams) + logistic regression: fit on train, C by valid accuracy."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = {split: [*real[split], *generated[split]] for split in SPLITS}
    labels = {split: _labels(real[split], generated[split]) for split in SPLITS}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, max_features=MAX_FEATURES)
    features = {"train": vectorizer.fit_transform(texts["train"])}
    features |= {split: vectorizer.transform(texts[split]) for split in ("valid", "test")}

    def fitted(c: float) -> Any:
        model = LogisticRegression(C=c, solver="liblinear")
        return model.fit(features["train"], labels["train"])

    scored = [(fitted(c).score(features["valid"], labels["valid"]), c) for c in C_GRID]
    valid_accuracy, best_c = max(scored, key=lambda pair: (pair[0], -abs(math.log2(pair[1]))))
    predicted = fitted(best_c).predict(features["test"])
    correct = (predicted == labels["test"]).tolist()
    return DetectorResult(float(np.mean(correct)), float(valid_accuracy), {"C": best_c}, correct)


def threshold_detector(
    real: Mapping[str, Sequence[float]], generated: Mapping[str, Sequence[float]]
) -> DetectorResult:
    """A threshold on a score (total log-probability): the cut and its side that classify
    `train` best, then its accuracy on valid and test."""
    scores = np.array([*real["train"], *generated["train"]], dtype=float)
    labels = _labels(real["train"], generated["train"])
    order = np.argsort(scores, kind="stable")
    ranked, ranked_labels = scores[order], labels[order]
    # Cut after position i: below it "real", above it "generated" (sign +1), or reversed.
    generated_above = np.concatenate([[0], np.cumsum(ranked_labels == 0)]) + np.concatenate(
        [np.cumsum((ranked_labels == 1)[::-1])[::-1], [0]]
    )
    correct_above = generated_above / len(scores)
    best_above, best_below = correct_above.argmax(), (1 - correct_above).argmax()
    sign = 1.0 if correct_above[best_above] >= 1 - correct_above[best_below] else -1.0
    cut = best_above if sign > 0 else best_below
    edges = np.concatenate([[-np.inf], (ranked[:-1] + ranked[1:]) / 2, [np.inf]])
    threshold = float(edges[cut])

    def accuracy(split: str) -> tuple[float, list[bool]]:
        values = np.array([*real[split], *generated[split]], dtype=float)
        predicted = (sign * (values - threshold) > 0).astype(int)
        correct = (predicted == _labels(real[split], generated[split])).tolist()
        return float(np.mean(correct)), correct

    valid_accuracy, _ = accuracy("valid")
    test_accuracy, correct = accuracy("test")
    choice = {"threshold": threshold, "generated_above": float(sign > 0)}
    return DetectorResult(test_accuracy, valid_accuracy, choice, correct)


def _labels(real: Sequence[Any], generated: Sequence[Any]) -> np.ndarray:
    return np.array([0] * len(real) + [1] * len(generated))


def total_logprobs(lm: LanguageModel, texts: Sequence[str], batch_tokens: int) -> list[float]:
    """Each text's total log-probability under `lm`, read as a new document (after
    end-of-text) through sliding windows of the model's context."""
    context, stride = WindowSettings().resolve(lm.max_length)
    requests: list[Request] = []
    owners: list[int] = []
    for index, ids in enumerate(lm.encoder.encode_batch(list(texts), workers=1)):
        for request in rolling_requests(ids, lm.encoder.eot_id, context, stride) if ids else []:
            requests.append(request)
            owners.append(index)
    totals = [0.0] * len(texts)
    scores = score_requests(lm, requests, batch_tokens, greedy=False)
    for owner, score in zip(owners, scores, strict=True):
        totals[owner] += score.logprob
    return totals


def length_buckets(max_length: int) -> list[int]:
    """Bucket edges in tokens: 0, 16, 32, 64 ... up to `max_length` (inclusive)."""
    edges = [0]
    while edges[-1] < max_length:
        edges.append(min(max(16, 2 * edges[-1]), max_length))
    return edges


def accuracy_by_length(
    lengths: Sequence[int], correct: Sequence[bool], edges: Sequence[int]
) -> list[dict[str, Any]]:
    """Accuracy per length bucket (lo, hi] of tokens, with how many texts fell in it."""
    lengths_array, correct_array = np.asarray(lengths), np.asarray(correct, dtype=float)
    rows = []
    for lo, hi in pairwise(edges):
        inside = (lengths_array > lo) & (lengths_array <= hi)
        if inside.any():
            accuracy = float(correct_array[inside].mean())
            texts = int(inside.sum())
            rows.append({"tokens": f"{lo + 1}-{hi}", "texts": texts, "accuracy": accuracy})
    return rows


def plot_by_length(by_setting: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> bytes:
    """PNG: TF-IDF test accuracy per length bucket, a line per sampling setting."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for setting, rows in by_setting.items():
        axes.plot(
            [row["tokens"] for row in rows],
            [100 * row["accuracy"] for row in rows],
            marker="o",
            label=setting,
        )
    axes.set_xlabel("document length (tokens)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def paper_table(
    name: str, tfidf: Mapping[str, float], zero_shot: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Rows in the layout of OpenAI's table (model x temperature 1 / top-k 40, accuracy in
    %): its four sizes, then ours with each baseline; settings it lacks are extra columns."""
    settings = list(dict.fromkeys([*HEADERS, *tfidf]))

    def row(model: str, values: Mapping[str, float | None]) -> dict[str, Any]:
        return {"model": model, **{HEADERS.get(s, s): values.get(s) for s in settings}}

    def percent(values: Mapping[str, float]) -> dict[str, float]:
        return {s: round(100 * v, 2) for s, v in values.items()}

    return [
        *(row(f"GPT-2 {size} (OpenAI, TF-IDF)", values) for size, values in REFERENCE.items()),
        row(f"{name} (TF-IDF)", percent(tfidf)),
        row(f"{name} (zero-shot log-prob)", percent(zero_shot)),
    ]


def detect(
    store: Store, outputs: VersionRef, *, batch_tokens: int = 8192, device: str | None = None
) -> StageResult:
    """The stage package's entry: both baselines on every sampling setting of `outputs`."""
    manifest = store.manifest(outputs)
    model = manifest.parents[0]
    parameters = {
        "tfidf": {"ngram_range": [1, 2], "max_features": MAX_FEATURES, "C": list(C_GRID)},
        "zero_shot": "total log-probability, threshold set on train",
    }

    def build(work: StageWrite) -> None:
        settings = sources(store, outputs)
        records = {
            (source, split): read_records(store, outputs, source, split)
            for source in (WEBTEXT, *settings)
            for split in SPLITS
        }
        texts = {key: [r["text"] for r in rows] for key, rows in records.items()}
        lm = load_model_version(store, model, device)
        logprobs = {key: total_logprobs(lm, values, batch_tokens) for key, values in texts.items()}
        real = {split: texts[WEBTEXT, split] for split in SPLITS}
        real_scores = {split: logprobs[WEBTEXT, split] for split in SPLITS}
        edges = length_buckets(int(manifest.stats.get("max_length") or lm.max_length))
        results: dict[str, Any] = {}
        by_length: dict[str, list[dict[str, Any]]] = {}
        for setting in settings:
            generated = {split: texts[setting, split] for split in SPLITS}
            tfidf = tfidf_detector(real, generated)
            zero_shot = threshold_detector(
                real_scores, {split: logprobs[setting, split] for split in SPLITS}
            )
            lengths = [r["length"] for r in (*records[WEBTEXT, "test"], *records[setting, "test"])]
            by_length[setting] = accuracy_by_length(lengths, tfidf.test_correct, edges)
            results[setting] = {
                "tfidf": _summary(tfidf),
                "zero_shot": _summary(zero_shot),
                "tfidf_by_length": by_length[setting],
                "test_texts": len(lengths),
            }
            work.counts.add(f"{setting} tfidf accuracy", round(tfidf.test_accuracy, 4))
            work.counts.add(f"{setting} zero-shot accuracy", round(zero_shot.test_accuracy, 4))
        size = store.manifest(model).parameters.get("model", "")
        table = paper_table(
            f"{size} {model}".strip(),
            {s: r["tfidf"]["test_accuracy"] for s, r in results.items()},
            {s: r["zero_shot"]["test_accuracy"] for s, r in results.items()},
        )
        summary = {"model": str(model), "outputs": str(outputs), "results": results}
        work.out.put("results.json", json.dumps(summary, indent=2).encode())
        work.out.put(TABLE, markdown_table(table).encode())
        title = f"TF-IDF detector by length, {model}"
        work.out.put(LENGTH_PNG, plot_by_length(by_length, title))
        work.stats["table"] = table

    return run_stage(store, STAGE, (outputs,), parameters, build)


def _summary(result: DetectorResult) -> dict[str, Any]:
    return {
        "test_accuracy": result.test_accuracy,
        "valid_accuracy": result.valid_accuracy,
        **result.choice,
    }
