"""The beautifulsoup4 rescue path, for pages where trafilatura's cleaned text is too short.

Drop scripts, navigation, header, footer, aside, forms and containers named for comments,
sharing, related links...; take the element with the most paragraph text.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

LOGGER = logging.getLogger(__name__)

_FALLBACK_DROP_TAGS = frozenset((
    "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed",
    "nav", "header", "footer", "aside", "form", "button", "select", "input", "textarea",
    "menu", "dialog", "figure", "figcaption",
))  # fmt: skip
_BOILERPLATE_ATTR = re.compile(
    r"(?:^|[\s_-])(?:comments?|share|sharing|social|related|recommend\w*|newsletter|"
    r"subscri\w*|cookie\w*|consent|sidebar|widget|menu|nav\w*|breadcrumbs?|footer|header|"
    r"masthead|banner|advert\w*|ads?|promo\w*|sponsor\w*|popup|modal|signup|login|tags?)"
    r"(?:$|[\s_-])",
    re.I,
)
_FALLBACK_BLOCKS = ("p", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "pre", "td")
_FALLBACK_MAX_CHARS = 1_000_000
_FALLBACK_MAX_TAGS = 50_000


def fallback_text(html: str) -> str:
    """The densest block of paragraph text, found with beautifulsoup4: drop scripts, styles
    and boilerplate containers (navigation, header, footer, aside, forms, elements whose
    class or id names comments, sharing, related links...), score each element by the
    paragraph text of its children (and half that of its grandchildren), keep the best
    element's text blocks that are not mostly links."""
    try:
        return _fallback(html[:_FALLBACK_MAX_CHARS])
    except Exception:  # RecursionError on absurdly deep trees, parser errors
        LOGGER.debug("fallback failed", exc_info=True)
        return ""


def _fallback(html: str) -> str:
    from bs4 import BeautifulSoup, Comment, Tag

    soup = BeautifulSoup(html, "lxml")
    # One walk (a stack, not recursion: pages can nest thousands deep): the outermost
    # boilerplate elements and the comments go; everything else is kept for scoring.
    doomed: list[Any] = []
    paragraphs: list[Any] = []
    stack: list[Any] = [soup]
    seen = 0
    while stack:
        node = stack.pop()
        for child in node.contents:
            if not isinstance(child, Tag):
                if isinstance(child, Comment):
                    doomed.append(child)
                continue
            seen += 1
            if seen > _FALLBACK_MAX_TAGS:
                return ""
            if child.name in _FALLBACK_DROP_TAGS or _boilerplate_container(child):
                doomed.append(child)
                continue
            if child.name == "p":
                paragraphs.append(child)
            stack.append(child)
    for element in doomed:
        element.extract()
    scores: dict[int, float] = {}
    nodes: dict[int, Any] = {}
    for paragraph in paragraphs:
        length = len(paragraph.get_text(" ", strip=True))
        if length < 25:
            continue
        parent = paragraph.parent
        for weight in (1.0, 0.5):  # the parent, then half as much to the grandparent
            if parent is None or not isinstance(parent, Tag):
                break
            scores[id(parent)] = scores.get(id(parent), 0.0) + weight * length
            nodes[id(parent)] = parent
            parent = parent.parent
    if not scores:
        # no paragraphs: the page's remaining text lines that read like sentences
        root = soup.body or soup
        lines = (" ".join(line.split()) for line in root.get_text("\n").splitlines())
        text = "\n".join(line for line in lines if len(line.split()) >= 8)
        return unicodedata.normalize("NFC", text)
    best = nodes[max(scores, key=scores.__getitem__)]
    blocks = best.find_all(_FALLBACK_BLOCKS)
    # a block holding other blocks (a <li> around <p>s) leaves the text to them; the walk
    # up is bounded, so absurd nesting costs linear time and at worst repeats a line
    containers: set[int] = set()
    for block in blocks:
        parent = block.parent
        for _ in range(8):
            if parent is None or parent is best:
                break
            if parent.name in _FALLBACK_BLOCKS:
                containers.add(id(parent))
                break
            parent = parent.parent
    lines = []
    for block in blocks:
        if id(block) in containers:
            continue
        text = " ".join(block.get_text(" ", strip=True).split())
        if not text:
            continue
        linked = sum(len(a.get_text(" ", strip=True)) for a in block.find_all("a"))
        if linked > 0.5 * len(text):
            continue
        lines.append(text)  # a list item is a plain line, as everywhere (no "- ")
    return unicodedata.normalize("NFC", "\n".join(lines))


def _boilerplate_container(tag: Any) -> bool:
    if tag.name in ("html", "body"):
        return False
    classes = tag.get("class") or []
    names = " ".join(classes) if isinstance(classes, list) else str(classes)
    names = f"{names} {tag.get('id') or ''}"
    return bool(names.strip()) and bool(_BOILERPLATE_ATTR.search(names))
