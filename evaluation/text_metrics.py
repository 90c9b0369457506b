"""The standard metrics of the GPT-2 paper's generation tasks, on answer strings.

- exact match (Natural Questions open): SQuAD's answer normalisation, any gold counts;
- CoQA F1 and exact match: the official scorer's semantics (`evaluate-v1.0.py`): the same
  normalisation, the best match among the other human answers, averaged leaving each one
  out in turn when a question has several;
- corpus BLEU (WMT-14): sacrebleu with its defaults, the signature kept with the score;
- ROUGE-1/2/L F1 (summarization): Google's `rouge-score` with Porter stemming.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)
# Punkt without training data knows no abbreviation, and would end a sentence at "Mr.":
# these are the common English ones of news text (lower case, without the final period).
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "gen", "gov", "sen", "rep", "rev",
    "col", "lt", "sgt", "capt", "mt", "ft", "no", "vs", "etc", "inc", "ltd", "co", "corp",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "u.s", "u.k", "u.n", "e.g", "i.e", "a.m", "p.m", "d.c",
}  # fmt: skip
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def normalize_answer(text: str) -> str:
    """SQuAD's (and CoQA's official) normalisation: lower case, no punctuation, no
    articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> bool:
    """The normalised prediction equals some normalised gold answer."""
    predicted = normalize_answer(prediction)
    return any(predicted == normalize_answer(gold) for gold in golds)


def answer_f1(gold: str, prediction: str) -> float:
    """Word-level F1 of two normalised answers; 1 when both are empty, 0 when one is."""
    gold_words, predicted_words = (
        normalize_answer(gold).split(),
        normalize_answer(prediction).split(),
    )
    if not gold_words or not predicted_words:
        return float(gold_words == predicted_words)
    same = sum((Counter(gold_words) & Counter(predicted_words)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_words), same / len(gold_words)
    return 2 * precision * recall / (precision + recall)


def coqa_turn_scores(golds: Sequence[str], prediction: str) -> tuple[float, float]:
    """(exact match, F1) of one CoQA answer as the official scorer gives them: with several
    human answers, the best match among the others, averaged over leaving each one out."""
    if len(golds) == 1:
        return float(exact_match(prediction, golds)), answer_f1(golds[0], prediction)
    others = [[*golds[:i], *golds[i + 1 :]] for i in range(len(golds))]
    em = sum(float(exact_match(prediction, rest)) for rest in others)
    f1 = sum(max(answer_f1(gold, prediction) for gold in rest) for rest in others)
    return em / len(golds), f1 / len(golds)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """sacrebleu's corpus BLEU (0-100, one reference a segment) and its signature."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU()
    score = bleu.corpus_score(list(hypotheses), [list(references)])
    return {"value": score.score, "signature": str(bleu.get_signature()), "detail": str(score)}


def rouge_f1(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, -2 and -L F1 (fractions) over the pairs, and their average."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        for name, score in scorer.score(reference, prediction).items():
            totals[name] += score.fmeasure
    means = {name: total / len(predictions) for name, total in totals.items()}
    return {**means, "average": sum(means.values()) / len(means)}


def first_line(text: str) -> str:
    """The first line of `text` with anything but spaces, stripped: a short answer."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def first_sentences(text: str, count: int) -> str:
    """The first `count` sentences of `text` (Punkt's boundaries, common abbreviations
    known), joined by spaces."""
    parameters = PunktParameters()
    parameters.abbrev_types = set(_ABBREVIATIONS)
    sentences = PunktSentenceTokenizer(parameters).tokenize(" ".join(text.split()))
    return " ".join(sentences[:count])
