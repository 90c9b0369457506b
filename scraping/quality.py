"""Document quality filters, in the spirit of WebText's "heuristic based cleaning".

GPT-2's paper names no rules, so these follow the published heuristics of Gopher
(Rae et al., 2021, appendix A.1.1), which target the same failure modes in scraped web
text: pages too short to be documents, lists of links or keywords, symbol and number
soup, and text that repeats itself (boilerplate, spam). Each rule is a setting, each
rejection is counted under the first rule it fails, and `check` says which.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import asdict, dataclass

TOO_SHORT = "too_short"
TOO_LONG = "too_long"
LANGUAGE = "language"
MEAN_WORD_LENGTH = "mean_word_length"
NON_ALPHA_WORDS = "non_alpha_words"
SYMBOL_RATIO = "symbol_ratio"
BULLET_LINES = "bullet_lines"
ELLIPSIS_LINES = "ellipsis_lines"
DUPLICATE_LINES = "duplicate_lines"
REPEATED_NGRAMS = "repeated_ngrams"
QUALITY_REASONS = (
    TOO_SHORT,
    TOO_LONG,
    LANGUAGE,
    MEAN_WORD_LENGTH,
    NON_ALPHA_WORDS,
    SYMBOL_RATIO,
    BULLET_LINES,
    ELLIPSIS_LINES,
    DUPLICATE_LINES,
    REPEATED_NGRAMS,
)

_WORD = re.compile(r"\S+")
_ALPHA = re.compile(r"[^\W\d_]")
_BULLETS = ("•", "●", "○", "▪", "-", "*", "·", "‣", "–")


@dataclass(frozen=True)
class QualityFilters:
    """Thresholds; `None` (or an empty language list) switches a rule off."""

    min_words: int | None = 50
    max_words: int | None = 100_000
    # Empty keeps every language; WebText was an English dataset.
    languages: tuple[str, ...] = ("en",)
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    min_alpha_word_fraction: float | None = 0.8
    max_symbol_word_ratio: float | None = 0.1  # '#' and ellipses per word
    max_bullet_line_fraction: float | None = 0.9
    max_ellipsis_line_fraction: float | None = 0.3
    max_duplicate_line_fraction: float | None = 0.3
    # Characters covered by the most frequent word 2-gram: 0.2 (Gopher: 0.20, 0.18 for
    # 3-grams, 0.16 for 4-grams; the 2-gram rule alone catches most of what they do).
    max_top_bigram_char_fraction: float | None = 0.2

    def parameters(self) -> dict[str, object]:
        return asdict(self)

    def check(self, text: str, language: str | None) -> tuple[str | None, int]:
        """(the first rule `text` fails or None, its word count)."""
        words = _WORD.findall(text)
        count = len(words)
        if self.min_words is not None and count < self.min_words:
            return TOO_SHORT, count
        if self.max_words is not None and count > self.max_words:
            return TOO_LONG, count
        if self.languages and language not in self.languages:
            return LANGUAGE, count
        reason = self._words_rule(words) or self._lines_rule(text) or self._ngram_rule(words)
        return reason, count

    def _words_rule(self, words: list[str]) -> str | None:
        mean_length = sum(map(len, words)) / len(words) if words else 0.0
        if (self.min_mean_word_length is not None and mean_length < self.min_mean_word_length) or (
            self.max_mean_word_length is not None and mean_length > self.max_mean_word_length
        ):
            return MEAN_WORD_LENGTH
        if self.min_alpha_word_fraction is not None and words:
            alpha = sum(1 for word in words if _ALPHA.search(word))
            if alpha / len(words) < self.min_alpha_word_fraction:
                return NON_ALPHA_WORDS
        if self.max_symbol_word_ratio is not None and words:
            symbols = sum(word.count("#") + word.count("...") + word.count("…") for word in words)
            if symbols / len(words) > self.max_symbol_word_ratio:
                return SYMBOL_RATIO
        return None

    def _lines_rule(self, text: str) -> str | None:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            return None
        if self.max_bullet_line_fraction is not None:
            bullets = sum(1 for line in lines if line.startswith(_BULLETS))
            if bullets / len(lines) > self.max_bullet_line_fraction:
                return BULLET_LINES
        if self.max_ellipsis_line_fraction is not None:
            ellipses = sum(1 for line in lines if line.endswith(("...", "…")))
            if ellipses / len(lines) > self.max_ellipsis_line_fraction:
                return ELLIPSIS_LINES
        if self.max_duplicate_line_fraction is not None:
            repeats = len(lines) - len(set(lines))
            if repeats / len(lines) > self.max_duplicate_line_fraction:
                return DUPLICATE_LINES
        return None

    def _ngram_rule(self, words: list[str]) -> str | None:
        if self.max_top_bigram_char_fraction is None or len(words) < 2:
            return None
        lowered = [word.lower() for word in words]
        bigrams = Counter(itertools.pairwise(lowered))
        (first, second), occurrences = bigrams.most_common(1)[0]
        if occurrences < 2:
            return None
        covered = occurrences * (len(first) + len(second))
        if covered / sum(map(len, lowered)) > self.max_top_bigram_char_fraction:
            return REPEATED_NGRAMS
        return None
