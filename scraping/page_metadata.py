"""A page's metadata: title (og/twitter meta, else trafilatura's title heuristics), date
(htmldate, quick search, ISO) and the text's language (py3langid, whose model ships inside
its wheel)."""

from __future__ import annotations

import logging
from typing import Any

from lxml.html import HtmlElement
from trafilatura.metadata import extract_title

LOGGER = logging.getLogger(__name__)

_TITLE_META = (
    '//meta[@property="og:title"]/@content',
    '//meta[@name="og:title"]/@content',
    '//meta[@name="twitter:title"]/@content',
    '//meta[@property="twitter:title"]/@content',
)
_MAX_TITLE = 1000


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


def page_date(tree: HtmlElement, url: str) -> str | None:
    """The original publication date (ISO), htmldate's quick search; None if not found."""
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


def identify_language(sample: str) -> tuple[str | None, float | None]:
    """(ISO 639-1 code, probability) of a text sample; (None, None) for a blank one."""
    if not sample.strip():
        return None, None
    identifier = _identifier()  # a missing py3langid is an installation error: let it raise
    try:
        language, score = identifier.classify(sample)
    except Exception:
        LOGGER.debug("language identification failed", exc_info=True)
        return None, None
    return str(language), round(float(score), 4)
