"""A page's metadata: title (the h1 heading the text, else og/twitter meta, else trafilatura's
title heuristics), date
(htmldate, quick search, ISO) and the text's language (py3langid, whose model ships inside
its wheel)."""

from __future__ import annotations

import logging
from typing import Any

from lxml.html import HtmlElement
from trafilatura.metadata import extract_title

from scraping.boilerplate import norm, text_after

LOGGER = logging.getLogger(__name__)

_TITLE_META = (
    '//meta[@property="og:title"]/@content',
    '//meta[@name="og:title"]/@content',
    '//meta[@name="twitter:title"]/@content',
    '//meta[@property="twitter:title"]/@content',
)
_MAX_TITLE = 1000
_NOT_JSON_LD = '//script[not(@type="application/ld+json")]'
_HEADING_GAP = 300  # a byline, a date, a standfirst between the h1 and the text


def page_title(tree: HtmlElement) -> str | None:
    """The og/twitter title, else trafilatura's heuristics; one line, at most 1000 chars."""
    try:
        for path in _TITLE_META:
            for value in tree.xpath(path):
                if title := " ".join(str(value).split()):
                    return title[:_MAX_TITLE]
        title = extract_title(tree)
    except Exception:
        LOGGER.debug("title extraction failed", exc_info=True)
        return None
    return " ".join(title.split())[:_MAX_TITLE] if title else None


def article_heading(tree: HtmlElement, first_line: str) -> str | None:
    """The page's h1 when it heads the extracted text: the only h1 text on the page, being
    the text's first line or followed on the page by it within `_HEADING_GAP` characters
    (normalised). Site-wide og:titles ("Maria Antoniak" on every post) lose to it."""
    elements = list(tree.iter("h1"))
    headings = {" ".join(h.text_content().split())[:_MAX_TITLE] for h in elements}
    headings.discard("")
    if len(headings) != 1:
        return None
    (heading,) = headings
    wanted, first = norm(heading), norm(first_line)[:200]
    if not wanted or not first:
        return None
    if wanted == first:
        return heading
    after = (text_after(h, _HEADING_GAP + len(first)) for h in elements if norm(h.text_content()))
    return heading if any(first in text for text in after) else None


def page_date(tree: HtmlElement, url: str) -> str | None:
    """The original publication date (ISO), htmldate's quick search; None if not found.

    Scripts other than JSON-LD are removed from `tree` first, in place (call it last): a
    CMS's embedded state ("createdAt" of some record, a build time) is no publication date,
    while JSON-LD's datePublished, meta tags, <time> and the URL are."""
    for script in tree.xpath(_NOT_JSON_LD):
        script.drop_tree()
    try:
        from htmldate import find_date

        return find_date(tree, extensive_search=False, original_date=True, url=url)
    except Exception:
        LOGGER.debug("date extraction failed", exc_info=True)
        return None


_IDENTIFIER: Any = None


def _identifier() -> Any:
    """py3langid's identifier with normalised probabilities, loaded once per process from
    the model file inside the package (nothing is downloaded)."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENTIFIER


# py3langid's labels that are not ISO 639-1: the code of the same language, or of the
# macrolanguage an individual language belongs to (ISO 639-3 tables); its other
# three-letter labels (grc, hbo, gom, zxx = no linguistic content...) have no ISO 639-1 code
# and are kept as they are
ISO_639_1 = {
    "kik": "ki",  # Kikuyu
    "arz": "ar",  # Egyptian Arabic
    "ary": "ar",  # Moroccan Arabic
    "wuu": "zh",  # Wu Chinese
    "yue": "zh",  # Cantonese
    "uzs": "uz",  # Southern Uzbek
    "gug": "gn",  # Paraguayan Guarani
    "fuv": "ff",  # Nigerian Fulfulde
    "ltg": "lv",  # Latgalian
}


def identify_language(sample: str) -> tuple[str | None, float | None]:
    """(language code, probability) of a text sample; (None, None) for a blank one. The
    code is ISO 639-1 where the language (or its macrolanguage) has one, py3langid's
    ISO 639-3 label otherwise (`ISO_639_1`)."""
    if not sample.strip():
        return None, None
    identifier = _identifier()  # a missing py3langid is an installation error: let it raise
    try:
        language, score = identifier.classify(sample)
    except Exception:
        LOGGER.debug("language identification failed", exc_info=True)
        return None, None
    return ISO_639_1.get(str(language), str(language)), round(float(score), 4)
