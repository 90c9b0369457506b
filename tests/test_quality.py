"""Quality rules: each one fires on the failure it names and leaves real prose alone."""

from __future__ import annotations

import re
from pydoc_data.topics import topics

import pytest

from scraping import quality
from scraping.quality import QualityFilters

RULES = QualityFilters()
PROSE = " ".join(topics["assignment"].split())  # CPython's reference text: real prose


def test_real_prose_passes() -> None:
    reason, words, detail = RULES.check(PROSE, "en")
    assert reason is None and words > 500 and detail is None


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
    verdict = RULES.check(text, language, 0.99)
    assert verdict.reason == reason
    # the audit says why: the measured value and the threshold (or the language and score)
    assert verdict.detail and re.search(r"\d", verdict.detail), verdict


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
        spam_terms_in_text=None,
    )
    assert anything.check("buy now " * 200, None) == (None, 400, None)
    assert QualityFilters(min_words=10).check("one two three", "en")[0] == quality.TOO_SHORT


def test_the_language_rejection_names_the_language_and_its_score() -> None:
    verdict = RULES.check(PROSE, "de", 0.9731)
    assert verdict.detail == "language de (0.97) not in en"


def test_markup_tokens_are_not_words() -> None:
    """soldaini.net/lineage/ was rejected `non_alpha_words` for 97 `|` and `|---|` tokens
    of a table rendered as Markdown: ratios are of words, not of the renderer's syntax."""
    fields = [word for word in PROSE.split() if word.isalpha()][:280]
    rows = [f"| {' | '.join(fields[i : i + 7])} |" for i in range(0, 280, 7)]
    table = "\n".join(["| a | b |", "|---|---|", *rows])
    words = quality.words_of(table)
    assert "|" not in words and "|---|" not in words and len(words) == 2 + 280
    assert RULES.check(table + "\n" + PROSE[:800], "en").reason is None
    assert "-" not in quality.words_of("- one\n- two\n* three")


def test_unspaced_scripts_count_characters() -> None:
    """2,000 characters of Chinese prose are not 45 words (`too_short`)."""
    sentence = "我们今天去公园散步，天气很好，阳光明媚，孩子们在草地上玩耍。"
    text = "\n".join([sentence] * 40)
    words = quality.words_of(text)
    assert len(words) > 900
    verdict = QualityFilters(languages=("zh",)).check(text, "zh", 0.99)
    assert verdict.reason != quality.TOO_SHORT and verdict.words == len(words)
    assert verdict.reason != quality.MEAN_WORD_LENGTH
    assert quality.words_of("Python 3 是一种语言") == ["Python", "3", "是", "一", "种", "语", "言"]


SPAM_TITLE = "亚洲精品无码免费视频 亚洲精品无码免费视频 含羞草视频独家共享"


def test_spam_terms_in_the_title_or_two_in_the_text() -> None:
    verdict = RULES.check(PROSE, "en", 1.0, title=SPAM_TITLE)
    assert verdict.reason == quality.SPAM_TERMS and "无码" in (verdict.detail or "")
    two = PROSE + " Watch free porn and hentai here."
    assert RULES.check(two, "en", 1.0).reason == quality.SPAM_TERMS
    # one term in passing (a news story) is not spam; nor a word that merely contains one
    assert RULES.check(PROSE + " The porn industry was fined.", "en").reason is None
    assert RULES.check(PROSE + " pornography xxxvideos Pornhubs", "en").reason is None


def test_language_codes_are_iso_639_1_where_one_exists() -> None:
    from scraping.page_metadata import ISO_639_1, identify_language

    assert identify_language("The quick brown fox jumps over the lazy dog again.")[0] == "en"
    assert ISO_639_1["wuu"] == "zh" and ISO_639_1["arz"] == "ar"
    assert all(len(code) == 2 for code in ISO_639_1.values())
