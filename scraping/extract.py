"""Main text and metadata of one fetched HTML page: the public entry of the extractor.

`extract_page(body, url, content_type)` -> `ExtractedPage` (text, title, date, language,
method) or None when the page has no usable text. Pure, one page at a time, no network:
meant for worker processes. Never raises on bad input.

1. `decode_html` (scraping/charset.py): bytes to text.
2. One lxml parse (trafilatura's loader), shared by every step below.
3. trafilatura's `bare_extraction`, `fast` (no readability/justext comparison), comments
   off. A first pass shorter than `rescue_below_chars`, or one that is trafilatura's dump
   of every text node of the page, runs again with trafilatura's full cascade; the longer
   result wins, keeping the first pass's lines that it lacks. A dump is never kept.
4. Cleaning of trafilatura's output blocks (scraping/boilerplate.py): link blocks,
   boilerplate lines, the standfirst; the rest rendered as a browser lays it out
   (scraping/render.py).
5. A beautifulsoup4 fallback (scraping/soup_fallback.py) when that leaves less than
   `fallback_below_chars`.
6. Metadata (scraping/page_metadata.py): title (the h1 heading the text, else the page's
   og/twitter title...), date, language.

The settings and the measurements behind them: docs/extraction.md; the benchmark:
benchmarks/extraction.py.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

import trafilatura
from lxml import etree
from lxml.html import HtmlElement
from trafilatura.utils import load_html

from scraping.boilerplate import (
    PageContext,
    clean_and_render,
    norm,
    only_links,
    restore_blocks,
)
from scraping.charset import decode_html
from scraping.page_metadata import article_heading, identify_language, page_date, page_title
from scraping.soup_fallback import fallback_text

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractSettings:
    """The extractor's knobs; the defaults are the measured best (docs/extraction.md)."""

    # trafilatura (comments: the gold excludes them; tables: part of the text)
    include_comments: bool = False
    include_tables: bool = True
    favor_precision: bool = False
    favor_recall: bool = False
    fast: bool = True
    # a first pass shorter than this is run again with trafilatura's full cascade
    rescue_below_chars: int = 1000
    # keep the first pass's lines that the rescue lacks (in page order)
    merge_rescue: bool = True
    # drop output blocks of at most `link_block_max_words` words of which this share or
    # more is link text on the page, longer ones (to 60 words) from the second share
    drop_link_blocks: bool = True
    link_block_max_words: int = 15
    link_block_density: float = 0.5
    link_long_block_density: float = 0.9
    # lists whose every item is mostly links: navigation, tables of contents (off: they go
    # only when nothing else is left)
    drop_link_lists: bool = True
    # leading blocks that repeat the title: it is the page's `title`, not a line of the text
    # (chosen on the tuning folds, every fold: docs/extraction.md)
    drop_title: bool = True
    # a leading heading that repeats the page's meta description (the standfirst)
    drop_standfirst: bool = True
    # the page's h2-h6 headings and <pre> blocks that trafilatura left out of a section,
    # put back where they stand
    restore_blocks: bool = True
    # lines of known boilerplate, up to this many words
    drop_boilerplate_lines: bool = True
    boilerplate_max_words: int = 30
    # beautifulsoup4 fallback when the cleaned text is shorter than this
    fallback: bool = True
    fallback_below_chars: int = 200
    # a text shorter than this is "no usable text"
    min_chars: int = 1
    # metadata; language from this many characters of the text (0: none), four times as
    # many when the identifier's probability is below `language_confident`
    with_date: bool = True
    language_sample_chars: int = 500
    language_confident: float = 0.95
    # pathological pages: the decoded document is cut at this many characters
    max_chars: int = 3_000_000

    def parameters(self) -> dict[str, Any]:
        """JSON-able, for version ids."""
        return asdict(self)


@dataclass
class ExtractedPage:
    """What `extract_page` found on a page with usable text."""

    text: str
    title: str | None
    date: str | None
    language: str | None
    language_score: float | None
    method: str  # "trafilatura" | "trafilatura-rescue" (full cascade) | "fallback" (bs4)


# trafilatura's whole-page dump has one line per text node; a real paragraph never has this
# many line breaks inside it (trafilatura turns <br> into elements)
_DUMP_MIN_LINES = 8
# lxml refuses a str that declares an encoding
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*>", re.I)


def extract_page(
    body: bytes,
    url: str,
    content_type: str | None = None,
    settings: ExtractSettings = ExtractSettings(),
) -> ExtractedPage | None:
    """Main text and metadata of one HTML page; None when it has no usable text."""
    html = decode_html(body, content_type)
    if len(html) > settings.max_chars:
        html = html[: settings.max_chars]
    html = _XML_DECLARATION.sub("", html, count=1)
    if not html.strip():
        return None
    tree = _parse(html)
    title = page_title(tree) if tree is not None else None
    page = PageContext(tree, title, url) if tree is not None else None
    text, method = _trafilatura_text(page, settings) if page is not None else ("", "")
    if settings.fallback and len(text) < settings.fallback_below_chars:
        # also where trafilatura found only a dump of the page (text = "")
        fallback = fallback_text(html)
        if len(fallback) > len(text):
            text, method = fallback, "fallback"
    if len(text) < max(settings.min_chars, 1):
        return None
    if page is not None:
        title = article_heading(page.tree, text.split("\n", 1)[0]) or title
    sample = settings.language_sample_chars
    language, score = identify_language(text[:sample])
    if score is not None and score < settings.language_confident and len(text) > sample:
        # unsure on a short sample: read more
        language, score = identify_language(text[: 4 * sample])
    return ExtractedPage(
        text=text,
        title=title,
        date=page_date(tree, url) if settings.with_date and tree is not None else None,
        language=language,
        language_score=score,
        method=method,
    )


def _parse(html: str) -> HtmlElement | None:
    try:
        tree = load_html(html)
    except Exception:
        LOGGER.debug("parsing failed", exc_info=True)
        return None
    return tree if isinstance(tree, HtmlElement) else None


def _trafilatura_text(page: PageContext, settings: ExtractSettings) -> tuple[str, str]:
    """(text, method); an empty text when trafilatura found nothing but a dump of the page."""
    tree, url = page.tree, page.url
    body = _trafilatura_body(tree, url, settings, fast=settings.fast)
    dumped = _is_dump(body)
    text = clean_and_render(body, page, settings) if body is not None and not dumped else ""
    method = "trafilatura"
    if settings.fast and (dumped or len(text) < settings.rescue_below_chars):
        # trafilatura's full cascade (readability and justext comparisons, recall retry)
        body = _trafilatura_body(tree, url, settings, fast=False)
        full_dumped = _is_dump(body)
        rescued = (
            clean_and_render(body, page, settings) if body is not None and not full_dumped else ""
        )
        if len(rescued) > len(text):
            if settings.merge_rescue:
                rescued = _merge(text, rescued, page)
            text, method = rescued, "trafilatura-rescue"
        dumped = dumped and full_dumped
    if dumped and not text:
        return "", method  # every text node of the page, menus and all: the fallback's turn
    if settings.drop_link_blocks and only_links(text, page):
        return "", method  # a page of navigation: trafilatura's last resort dumped its links
    if settings.restore_blocks and text:
        text = restore_blocks(text, page)
    return text, method


def _is_dump(body: etree._Element | None) -> bool:
    """Whether trafilatura's output is its last resort: every text node of the page, one a
    line, in a single paragraph (menus, footers and sentences cut at each inline tag)."""
    if body is None or len(body) != 1 or body[0].tag != "p" or len(body[0]):
        return False
    return (body[0].text or "").count("\n") >= _DUMP_MIN_LINES


def _merge(first: str, second: str, page: PageContext) -> str:
    """`second`, plus the lines of `first` that it lacks, put before or after it in the
    order in which they come on the page: a short first pass often found a part of the
    page (a question above its answers, a recipe's ingredients) that the rescue missed."""
    known = {norm(line) for line in second.splitlines()}
    extra = [line for line in first.splitlines() if norm(line) and norm(line) not in known]
    if not extra:
        return second
    where_extra = page.text.find(norm(extra[0])[:200])
    where_second = page.text.find(norm(second.splitlines()[0])[:200])
    if where_extra != -1 and (where_second == -1 or where_extra < where_second):
        return "\n".join([*extra, second])
    return "\n".join([second, *extra])


def _trafilatura_body(
    tree: HtmlElement, url: str, settings: ExtractSettings, fast: bool
) -> etree._Element | None:
    try:
        document = trafilatura.bare_extraction(
            tree,  # copied by trafilatura before it prunes
            url=url,
            fast=fast,
            include_comments=settings.include_comments,
            include_tables=settings.include_tables,
            favor_precision=settings.favor_precision,
            favor_recall=settings.favor_recall,
            with_metadata=False,
        )
    except Exception:  # trafilatura on a pathological tree (recursion, lxml limits)
        LOGGER.debug("trafilatura failed on %s", url, exc_info=True)
        return None
    if document is None or document.body is None:
        return None
    return document.body
