"""Document quality filters, in the spirit of WebText's "heuristic based cleaning".

GPT-2's paper names no rules, so these follow the published heuristics of Gopher
(Rae et al., 2021, appendix A.1.1), which target the same failure modes in scraped web
text: pages too short to be documents, lists of links or keywords, symbol and number
soup, and text that repeats itself (boilerplate, spam); and, as C4 and FineWeb do, a short
list of adult and spam terms. Each rule is a setting, each rejection is counted under the
first rule it fails, and `check` says which, with the measured value against its threshold
(`Verdict.detail`).

They judge the text, not its rendering: tokens made only of markup characters (`|`,
`|---|`, a bare `-` or `*`) are not words. Scripts written without spaces (Chinese,
Japanese, Thai, Lao, Khmer, Myanmar, Tibetan) count one word per character, so 2,000
characters of Chinese prose are about 2,000 words, not the 45 whitespace runs they hold;
the mean-word-length rule, which only makes sense for space-separated words, is left to
texts mostly in other scripts.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import cache
from typing import NamedTuple

from scraping.link_filters import load_list

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
SPAM_TERMS = "spam_terms"
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
    SPAM_TERMS,
)

# the settings of each rule (a `None` switches it off), in the order the rules run
RULE_SETTINGS = {
    TOO_SHORT: ("min_words",),
    TOO_LONG: ("max_words",),
    LANGUAGE: ("languages",),
    SPAM_TERMS: ("spam_terms_in_text",),
    MEAN_WORD_LENGTH: ("min_mean_word_length", "max_mean_word_length"),
    NON_ALPHA_WORDS: ("min_alpha_word_fraction",),
    SYMBOL_RATIO: ("max_symbol_word_ratio",),
    BULLET_LINES: ("max_bullet_line_fraction",),
    ELLIPSIS_LINES: ("max_ellipsis_line_fraction",),
    DUPLICATE_LINES: ("max_duplicate_line_fraction",),
    REPEATED_NGRAMS: ("max_top_bigram_char_fraction",),
}

_WORD = re.compile(r"\S+")
_ALPHA = re.compile(r"[^\W\d_]")
# a token of markup alone: table pipes and rules, bullets, Markdown emphasis and headings
_MARKUP = re.compile(r"[|\-*•·#=_~+:>]+")
# scripts written without spaces between words: Han, Hiragana, Katakana, Thai, Lao,
# Tibetan, Myanmar, Khmer
_UNSPACED = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f\u0e80-\u0eff"
    "\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\U00020000-\U0002fa1f]"
)


class Verdict(NamedTuple):
    """What `QualityFilters.check` found: the first rule failed (None: kept), the text's
    word count, and the measured value against the threshold (None when kept)."""

    reason: str | None
    words: int
    detail: str | None = None


def words_of(text: str) -> list[str]:
    """The text's words: whitespace-separated tokens other than markup alone, each
    character of a script without spaces a word of its own."""
    words: list[str] = []
    for token in _WORD.findall(text):
        if _MARKUP.fullmatch(token):
            continue
        if _UNSPACED.search(token):
            words.extend(_UNSPACED.findall(token))
            rest = _UNSPACED.sub(" ", token).split()
            words.extend(piece for piece in rest if _ALPHA.search(piece) or piece.isdigit())
        else:
            words.append(token)
    return words


@cache
def spam_terms() -> tuple[re.Pattern[str], tuple[str, ...]]:
    """(one pattern of the Latin-script terms as whole words, the CJK terms) of
    `scraping/blocklists/spam_terms.txt`."""
    terms = load_list("spam_terms")
    latin = [t for t in terms if t.isascii()]
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, latin)) + r")\b", re.I)
    return pattern, tuple(t for t in terms if not t.isascii())


def spam_terms_in(text: str) -> set[str]:
    """The distinct blocklisted terms in a text, lower-cased."""
    pattern, unspaced = spam_terms()
    found = {match.lower() for match in pattern.findall(text)}
    found.update(term for term in unspaced if term in text)
    return found


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
    # adult/spam terms (scraping/blocklists/spam_terms.txt): rejected with one in the
    # title or this many different ones in the text
    spam_terms_in_text: int | None = 2

    def parameters(self) -> dict[str, object]:
        return asdict(self)

    def check(
        self,
        text: str,
        language: str | None,
        language_score: float | None = None,
        title: str | None = None,
    ) -> Verdict:
        """The first rule `text` fails (or None), its word count, and why."""
        words = words_of(text)
        count = len(words)
        if self.min_words is not None and count < self.min_words:
            return Verdict(TOO_SHORT, count, f"{count} words < {self.min_words}")
        if self.max_words is not None and count > self.max_words:
            return Verdict(TOO_LONG, count, f"{count} words > {self.max_words}")
        if self.languages and language not in self.languages:
            score = "" if language_score is None else f" ({language_score:.2f})"
            wanted = ", ".join(self.languages)
            return Verdict(LANGUAGE, count, f"language {language}{score} not in {wanted}")
        if self.spam_terms_in_text is not None:
            in_title = spam_terms_in(title or "")
            in_text = spam_terms_in(text)
            if in_title or len(in_text) >= self.spam_terms_in_text:
                where = f"title: {sorted(in_title)}; " if in_title else ""
                detail = f"{where}text: {sorted(in_text)} ({len(in_text)} terms)"
                return Verdict(SPAM_TERMS, count, detail[:500])
        found = self._words_rule(words) or self._lines_rule(text) or self._ngram_rule(words)
        return Verdict(found[0], count, found[1]) if found else Verdict(None, count)

    def _words_rule(self, words: list[str]) -> tuple[str, str] | None:
        if not words:
            return None
        spaced = [word for word in words if not _UNSPACED.match(word)]
        if len(spaced) * 2 >= len(words):  # word length means nothing for unspaced scripts
            mean = sum(map(len, spaced)) / len(spaced)
            low, high = self.min_mean_word_length, self.max_mean_word_length
            if low is not None and mean < low:
                return MEAN_WORD_LENGTH, f"mean word length {mean:.2f} < {low}"
            if high is not None and mean > high:
                return MEAN_WORD_LENGTH, f"mean word length {mean:.2f} > {high}"
        if self.min_alpha_word_fraction is not None:
            alpha = sum(1 for word in words if _ALPHA.search(word)) / len(words)
            if alpha < self.min_alpha_word_fraction:
                return NON_ALPHA_WORDS, (
                    f"alphabetic word fraction {alpha:.3f} < {self.min_alpha_word_fraction}"
                )
        if self.max_symbol_word_ratio is not None:
            symbols = sum(word.count("#") + word.count("...") + word.count("…") for word in words)
            ratio = symbols / len(words)
            if ratio > self.max_symbol_word_ratio:
                return (
                    SYMBOL_RATIO,
                    f"'#' and ellipses per word {ratio:.3f} > {self.max_symbol_word_ratio}",
                )
        return None

    def _lines_rule(self, text: str) -> tuple[str, str] | None:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            return None
        if self.max_bullet_line_fraction is not None:
            bullets = sum(1 for line in lines if line.startswith(_BULLETS)) / len(lines)
            if bullets > self.max_bullet_line_fraction:
                return (
                    BULLET_LINES,
                    f"bullet line fraction {bullets:.3f} > {self.max_bullet_line_fraction}",
                )
        if self.max_ellipsis_line_fraction is not None:
            ellipses = sum(1 for line in lines if line.endswith(("...", "…"))) / len(lines)
            if ellipses > self.max_ellipsis_line_fraction:
                return ELLIPSIS_LINES, (
                    f"ellipsis line fraction {ellipses:.3f} > {self.max_ellipsis_line_fraction}"
                )
        if self.max_duplicate_line_fraction is not None:
            repeats = (len(lines) - len(set(lines))) / len(lines)
            if repeats > self.max_duplicate_line_fraction:
                return DUPLICATE_LINES, (
                    f"duplicate line fraction {repeats:.3f} > {self.max_duplicate_line_fraction}"
                )
        return None

    def _ngram_rule(self, words: list[str]) -> tuple[str, str] | None:
        if self.max_top_bigram_char_fraction is None or len(words) < 2:
            return None
        lowered = [word.lower() for word in words]
        bigrams = Counter(itertools.pairwise(lowered))
        (first, second), occurrences = bigrams.most_common(1)[0]
        if occurrences < 2:
            return None
        covered = occurrences * (len(first) + len(second)) / sum(map(len, lowered))
        if covered > self.max_top_bigram_char_fraction:
            return REPEATED_NGRAMS, (
                f"top 2-gram '{first} {second}' covers {covered:.3f} of characters"
                f" > {self.max_top_bigram_char_fraction}"
            )
        return None
