"""Quality rules: each one fires on the failure it names and leaves real prose alone."""

from __future__ import annotations

from pydoc_data.topics import topics

import pytest

from scraping import quality
from scraping.quality import QualityFilters

RULES = QualityFilters()
PROSE = " ".join(topics["assignment"].split())  # CPython's reference text: real prose


def test_real_prose_passes() -> None:
    reason, words = RULES.check(PROSE, "en")
    assert reason is None and words > 500


@pytest.mark.parametrize(
    ("text", "language", "reason"),
    [
        ("Too short to be a document.", "en", quality.TOO_SHORT),
        (PROSE, "de", quality.LANGUAGE),
        ("a b c d e f g h i j " * 20, "en", quality.MEAN_WORD_LENGTH),
        ("12 345 6789 10 " * 40 + PROSE[:300], "en", quality.NON_ALPHA_WORDS),
        ("#news #today #viral #follow " * 20 + PROSE[:400], "en", quality.SYMBOL_RATIO),
        (
            "\n".join(f"• the item number {i} of this long list of things" for i in range(60)),
            "en",
            quality.BULLET_LINES,
        ),
        (
            "\n".join(
                f"Read more about the topic number {i} in our archive of stories..."
                for i in range(60)
            ),
            "en",
            quality.ELLIPSIS_LINES,
        ),
        (
            "\n".join(["Share this article on social media"] * 30 + PROSE.split(". ")[:20]),
            "en",
            quality.DUPLICATE_LINES,
        ),
        ("buy now " * 200 + PROSE[:500], "en", quality.REPEATED_NGRAMS),
    ],
)
def test_each_rule_fires_on_its_failure(text: str, language: str, reason: str) -> None:
    assert RULES.check(text, language)[0] == reason


def test_rules_can_be_switched_off() -> None:
    anything = QualityFilters(
        min_words=None,
        max_words=None,
        languages=(),
        min_mean_word_length=None,
        max_mean_word_length=None,
        min_alpha_word_fraction=None,
        max_symbol_word_ratio=None,
        max_bullet_line_fraction=None,
        max_ellipsis_line_fraction=None,
        max_duplicate_line_fraction=None,
        max_top_bigram_char_fraction=None,
    )
    assert anything.check("buy now " * 200, None) == (None, 400)
    assert QualityFilters(min_words=10).check("one two three", "en")[0] == quality.TOO_SHORT
