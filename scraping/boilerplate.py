"""Cleaning of trafilatura's output blocks, by general rules (nothing per site).

- blocks that are, on the page, mostly link text ("Read more: <link>", related-story cards
  and lines), unless the same text also stands on the page outside links (a heading that a
  table of contents links to) or the link points at the page itself; an output made only of
  such lines (a navigation page) is no text at all (`only_links`);
- lines of known boilerplate: calls to subscribe, share, comment, follow or download,
  copyright and affiliate notices, bare section labels, datelines, shortcodes;
- a leading heading that repeats the page's meta description (the standfirst).

`clean_and_render` applies them to one output body and renders what is left as text
(scraping/render.py: as a browser lays it out).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from lxml import etree
from lxml.html import HtmlElement

from scraping.render import render_text

if TYPE_CHECKING:  # only for annotations: scraping.extract imports this module
    from scraping.extract import ExtractSettings

LOGGER = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")
_LINK_BLOCKS = ("p", "head", "quote")
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»“”‘’„…–—·•|"
_DESCRIPTION_META = (
    '//meta[@name="description" or @property="og:description" or @name="og:description"'
    ' or @name="twitter:description" or @property="twitter:description"]/@content'
)
# Lines that are page furniture wherever they appear: calls to subscribe, share, comment,
# follow or download; copyright and disclosure notices; bare section labels.
_BOILERPLATE_LABEL = re.compile(
    r"^(?:advertisement|advertising|sponsored(?: content)?|related(?: articles| stories| posts"
    r"| content| links| coverage)?|(?:read|see) (?:more|also)|also read|more(?: stories)?"
    r"|recommended(?: for you)?|you (?:may|might) also like|(?:most )?popular(?: now)?"
    r"|most (?:read|viewed|shared)|trending(?: now)?|don ?t miss|comments?|\d+ comments?"
    r"|no comments(?: yet)?|reply|share(?: this(?: article| story| post)?)?|tweet|email"
    r"|print|tags?|topics|filed under|categor(?:y|ies)|next(?: post| article)?"
    r"|previous(?: post| article)?|back to top|loading|skip to (?:main )?content|sign in"
    r"|log ?in|subscribe|newsletter|menu|search|(?:learn|find out|discover) more|see how"
    r"|view (?:all |open )*(?:jobs|positions|roles|openings)|try (?:the|our) demo|get started)$"
)
_BOILERPLATE_PHRASE = re.compile(
    r"\bour (?:\w+ ){0,3}newsletters?\b|\b(?:sign|subscribe)\b.{0,60}\bnewsletters?\b"
    r"|\bnewsletters?\b.{0,60}\b(?:sign|subscribe|inbox)|\bsign(?:ing)? up (?:for|to)\b"
    r"|\bsubscribe (?:to|now|today|for)\b"
    r"|\bfollow (?:\S+ ){0,6}on (?:twitter|facebook|instagram|linkedin|youtube|tiktok)\b"
    r"|\b(?:we'?d like|we want|we'?d love) to hear (?:what you think|from you)\b"
    r"|\ball rights reserved\b|^(?:copyright|©)|\bcopyright ©"
    r"|\b(?:like|enjoy|enjoyed) this (?:story|article|post)\b|\bshare (?:it|this) with\b"
    r"|\b(?:leave|post|add|write) a (?:comment|reply)\b|\bcomments are (?:closed|moderated)\b"
    r"|\bjoin the (?:discussion|conversation)\b|\btell us what you think\b"
    r"|\bclick here\b|\bdownload (?:the|our) (?:free )?app\b"
    r"|\b(?:earn|get|receive) (?:a )?(?:small )?(?:commission|share of the sale)\b",
    re.I,
)
# an unexpanded WordPress-style shortcode: [button link="..."]Label[/button]
_SHORTCODE = re.compile(r"\[[a-z_][\w-]*(?: [^\]]*)?\].{0,200}\[/[a-z_][\w-]*\]", re.I)
_MONTHS_DAYS_TEXT = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday "
    "friday saturday sunday mon tue tues wed thu thur thurs fri sat sun"
)
_MONTHS_DAYS = frozenset(_MONTHS_DAYS_TEXT.split())
_DATE_CONNECTORS_TEXT = (
    "am pm a p m at on of the updated published posted written modified last date time "
    "first st nd rd th edt est cdt cst mdt mst pdt pst gmt utc bst cet cest ist jst aest"
)
_DATE_WORDS = _MONTHS_DAYS | frozenset(_DATE_CONNECTORS_TEXT.split())
# 2019-11-18, 18/11/2019, 18.11.19, 15:30
_NUMERIC_DATE = re.compile(
    r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b|\b\d{1,2}:\d{2}\b"
)
# where a link's text is counted on the page: its nearest block-level ancestor
_SOURCE_BLOCKS = frozenset((
    "p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "dd", "dt", "blockquote",
    "figcaption", "div", "section", "article", "header", "footer", "nav", "aside", "ul",
    "ol", "table", "form", "main", "body",
))  # fmt: skip
_VISIBLE_TEXT = etree.XPath(
    "//body//text()[not(ancestor::script or ancestor::style or ancestor::noscript"
    " or ancestor::template)]",
    smart_strings=False,
)
_UNLINKED_TEXT_WITH = etree.XPath("//body//text()[contains(., $word)][not(ancestor::a)]")
_UNLINKED_TEXT_IN = etree.XPath(".//text()[not(ancestor::a)]", smart_strings=False)
_LINK_BLOCK_SCAN_WORDS = 60  # longer blocks of the output are not looked up
_LINK_BLOCK_SCAN_CHARS = 600  # nor longer blocks of the page
_NAVIGATION_LINE_WORDS = 8  # median line length below which a text may be all links
_HEADING_MAX_WORDS = 25  # longer "headings" are styled paragraphs
_NEIGHBOUR_CHARS = 60  # how much of a neighbouring block identifies it (normalised)
_NEIGHBOUR_LEVELS = 3  # how far up a block's neighbours are looked for
_FURNITURE = frozenset(("nav", "header", "footer", "aside", "menu", "form"))


def clean_and_render(body: etree._Element, page: PageContext, settings: ExtractSettings) -> str:
    """trafilatura's output `body` as text, without the blocks that the rules drop; NFC,
    no blank lines. `body` is changed in place."""
    blocks = list(body)
    drop: set[int] = set()
    if settings.drop_link_blocks:
        drop.update(_link_blocks(blocks, page, settings))
    if settings.drop_title or settings.drop_standfirst:
        forms, title_tag = page.titles
        for i, block in enumerate(blocks):
            if i in drop:
                continue
            text = norm(" ".join(block.itertext()))
            if not text:
                continue
            if text in forms or (len(text) > 15 and text in title_tag):
                if settings.drop_title:
                    drop.add(i)
                continue
            if settings.drop_standfirst and block.tag == "head" and text in page.descriptions:
                drop.add(i)
                continue
            break
    for i in sorted(drop, reverse=True):
        page.dropped.add(norm(" ".join(blocks[i].itertext())))
        _remove(blocks[i])
    text = render_text(body)
    if settings.drop_boilerplate_lines:  # by rendered line: a block, a line after a <br>, a tail
        limit = settings.boilerplate_max_words
        lines = text.split("\n")
        furniture = {line for line in lines if _is_boilerplate(line, limit)}
        page.dropped.update(norm(line) for line in furniture)
        text = "\n".join(line for line in lines if line not in furniture)
    return text


def restore_blocks(text: str, page: PageContext) -> str:
    """`text` with what trafilatura left out of a section put back where it stands on the
    page: an h2-h6 heading on its own line before the output line whose text comes right
    after it on the page, a `<pre>` block verbatim after the output line whose text comes
    right before it, or before the one right after it (trafilatura drops the section
    headings of some long pages, and code blocks)."""
    lines = text.split("\n")
    normalised = [norm(line) for line in lines]
    known = set(normalised) | page.dropped
    starting = {key[:_NEIGHBOUR_CHARS]: i for i, key in reversed(list(enumerate(normalised)))}
    before: dict[int, list[str]] = {}
    after: dict[int, list[str]] = {}
    for element in page.tree.iter("h2", "h3", "h4", "h5", "h6", "pre"):
        if any(a.tag in _FURNITURE for a in element.iterancestors()):
            continue  # a menu's or a footer's heading
        verbatim = element.tag == "pre"
        raw = element.text_content()
        words = raw.strip("\n") if verbatim else " ".join(raw.split())
        wanted = norm(words)
        if not wanted or wanted in known:
            continue
        if verbatim:
            block = [line.rstrip() for line in words.expandtabs(4).splitlines() if line.strip()]
        elif wanted.count(" ") < _HEADING_MAX_WORDS:
            block = [words]
        else:
            continue
        following = neighbour_text(element)
        if following.count(" ") >= 2 and following in starting:  # a sentence, not a label
            before.setdefault(starting[following], []).extend(block)
        elif verbatim and (previous := neighbour_text(element, preceding=True)):
            ends = [i for i, line in enumerate(normalised) if line.endswith(previous)]
            if not ends:
                continue
            after.setdefault(ends[0], []).extend(block)
        else:
            continue
        known.add(wanted)
    if not before and not after:
        return text
    out: list[str] = []
    for i, line in enumerate(lines):
        out.extend(before.get(i, ()))
        out.append(line)
        out.extend(after.get(i, ()))
    return "\n".join(out)


def neighbour_text(element: etree._Element, preceding: bool = False) -> str:
    """The normalised text that comes right after (or before) `element` on the page: its
    tail, then its siblings' text, then its parent's neighbours, a few levels up. After:
    the first `_NEIGHBOUR_CHARS` characters of it; before: the last ones."""
    node = element
    for _ in range(_NEIGHBOUR_LEVELS):
        parent = node.getparent()
        if parent is None or parent.tag == "body":
            return ""
        for piece in _pieces(node, parent, preceding):
            if found := norm(piece):
                return found[-_NEIGHBOUR_CHARS:] if preceding else found[:_NEIGHBOUR_CHARS]
        node = parent
    return ""


def _some_text(element: etree._Element, from_end: bool) -> str:
    """Enough of an element's text to know what starts (or ends) it, without joining the
    whole text of a big container."""
    if from_end:
        return element.text_content()[-4 * _NEIGHBOUR_CHARS :]
    pieces, total = [], 0
    for piece in element.itertext():
        pieces.append(piece)
        total += len(piece)
        if total >= 4 * _NEIGHBOUR_CHARS:
            break
    return "".join(pieces)


def text_after(element: etree._Element, chars: int) -> str:
    """About the first `chars` characters of normalised text after `element` on the page
    (its tail, its siblings, its parent's next siblings, a few levels up)."""
    found: list[str] = []
    total, node = 0, element
    for _ in range(_NEIGHBOUR_LEVELS):
        parent = node.getparent()
        if parent is None:
            break
        for piece in _pieces(node, parent, preceding=False):
            if words := norm(piece[: 2 * chars]):
                found.append(words)
                total += len(words) + 1
                if total >= chars:
                    return " ".join(found)
        node = parent
    return " ".join(found)


def _pieces(node: etree._Element, parent: etree._Element, preceding: bool) -> Iterator[str]:
    """The texts around `node` inside `parent`, nearest first, computed only as needed."""
    if not preceding:
        yield node.tail or ""
    for sibling in node.itersiblings(preceding=preceding):
        if preceding:
            yield sibling.tail or ""
        if isinstance(sibling.tag, str):
            yield _some_text(sibling, from_end=preceding)
        if not preceding:
            yield sibling.tail or ""
    if preceding:
        yield parent.text or ""
    return ""


def only_links(text: str, page: PageContext) -> bool:
    """Whether every line of a text of short lines is, on the page, mostly links."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return False
    lengths = sorted(len(line.split()) for line in lines)
    if lengths[len(lengths) // 2] > _NAVIGATION_LINE_WORDS:
        return False  # the lines of an article: not worth a look
    candidates = [(0, line, norm(line), 0.5) for line in lines]
    return bool(_dense([c for c in candidates if c[2]], page, every=True))


def norm(text: str | None) -> str:
    """Lower-case words joined by single spaces: how texts of the page and of the output
    are compared (markup, punctuation and spacing differ between the two)."""
    return " ".join(_WORD.findall(text.lower())) if text else ""


class PageContext:
    """What the cleaning rules know about the page, computed once and only when needed."""

    def __init__(self, tree: HtmlElement, title: str | None, url: str = "") -> None:
        self.tree = tree
        self.title = title
        self.url = url
        self._descriptions: set[str] | None = None
        self._titles: tuple[set[str], str] | None = None
        self._text: str | None = None
        # normalised texts that the cleaning rules dropped: never put back
        self.dropped: set[str] = set()
        self._last_segment: str | None = None

    @property
    def text(self) -> str:
        """The page's body text, normalised (`norm`): where output lines are looked up."""
        if self._text is None:
            self._text = norm(" ".join(_VISIBLE_TEXT(self.tree)))
        return self._text

    def link_shares(self, wanted: set[str]) -> dict[str, float]:
        """For the normalised block texts in `wanted`: the largest share of words in links
        that a block with that text has on the page, counting a link's words in its nearest
        block (paragraph, list item, heading, cell...) and a link as a block of its own (a
        card). Only links whose first words occur in `wanted` are looked at."""
        shares: dict[str, float] = {}
        if not wanted:
            return shares
        tokens = {token for text in wanted for token in text.split()}
        linked: dict[Any, int] = {}
        for link in self.tree.iter("a"):
            raw = link.text_content()
            first = raw.split(None, 1)
            if not first or first[0].strip(_PUNCTUATION).lower() not in tokens:
                continue
            if self._links_here(link.get("href")):
                continue  # a permalink on the page's own title is not a link away
            text = norm(raw[:_LINK_BLOCK_SCAN_CHARS])
            if text in wanted:
                shares[text] = 1.0
            block = link.getparent()
            for _ in range(4):  # the nearest block, a few levels up at most
                if block is None or block.tag in _SOURCE_BLOCKS:
                    break
                block = block.getparent()
            if block is not None and block.tag in _SOURCE_BLOCKS:
                linked[block] = linked.get(block, 0) + text.count(" ") + 1
        for block, count in linked.items():
            raw = block.text_content()
            if len(raw) > _LINK_BLOCK_SCAN_CHARS:
                continue
            text = norm(raw)
            if text in wanted:
                share = min(count / (text.count(" ") + 1), 1.0)
                shares[text] = max(share, shares.get(text, 0.0))
        return shares

    def _links_here(self, href: str | None) -> bool:
        """Whether a link points at the page itself (in-page anchors aside)."""
        href = (href or "").strip()
        if not href or not self.url or href.startswith("#"):
            return False
        if self._last_segment is None:
            path = self.url.split("#", 1)[0].split("?", 1)[0].rstrip("/")
            self._last_segment = path.rsplit("/", 1)[-1].lower() if path.count("/") > 2 else ""
        if self._last_segment not in href.lower():
            return False  # cheap: a link to this page names its last path segment
        try:
            target = urljoin(self.url, href)
        except ValueError:
            return False
        return _same_page(target, self.url)

    def stands_unlinked(self, text: str) -> bool:
        """Whether a block text also stands on the page as a block outside links (a heading
        that a table of contents links to): text nodes outside links holding its longest
        word are compared with it, alone or with their block's other unlinked text."""
        words = _WORD.findall(text)
        if not words:
            return False
        wanted = norm(text)
        seen: set[Any] = set()
        for node in _UNLINKED_TEXT_WITH(self.tree, word=max(words, key=len)):
            if len(node) > _LINK_BLOCK_SCAN_CHARS:
                continue
            if norm(node) == wanted:
                return True
            block = node.getparent()  # text split by inline elements: its block's text
            for _ in range(4):
                if block is None or block.tag in _SOURCE_BLOCKS:
                    break
                block = block.getparent()
            if block is None or block in seen:
                continue
            seen.add(block)
            if len(block.text_content()) > _LINK_BLOCK_SCAN_CHARS:
                continue
            if norm(" ".join(_UNLINKED_TEXT_IN(block))) == wanted:
                return True
        return False

    @property
    def descriptions(self) -> set[str]:
        if self._descriptions is None:
            self._descriptions = {norm(str(v)) for v in self.tree.xpath(_DESCRIPTION_META)}
            self._descriptions.discard("")
        return self._descriptions

    @property
    def titles(self) -> tuple[set[str], str]:
        """Normalised forms of the title (metadata, <title>, h1), and the <title> text."""
        if self._titles is None:
            title_tag = norm(" ".join(self.tree.xpath("//head/title//text()")[:20]))
            forms = {norm(self.title), title_tag}
            for h1 in self.tree.iter("h1"):
                forms.add(norm(h1.text_content()[:1000]))
            forms.discard("")
            self._titles = (forms, title_tag)
        return self._titles


def _same_page(a: str, b: str) -> bool:
    """Whether two absolute URLs name the same page (scheme, fragment and a trailing
    slash aside)."""
    a, b = a.split("#", 1)[0], b.split("#", 1)[0]
    a, b = a.split("://", 1)[-1].rstrip("/"), b.split("://", 1)[-1].rstrip("/")
    return a.lower() == b.lower()


def _link_blocks(
    blocks: list[etree._Element], page: PageContext, settings: ExtractSettings
) -> set[int]:
    """Indexes of output blocks that are, on the page, blocks made mostly of links: short
    ones from `link_block_density`, longer ones (to 60 words) from `link_long_block_density`;
    lists when every item is, if `drop_link_lists` or if nothing else is left (a page of
    navigation only)."""
    candidates: list[tuple[int, str, str, float]] = []  # (index, text, normalised, density)
    lists: list[int] = []
    texts: set[int] = set()
    for i, block in enumerate(blocks):
        text = " ".join(block.itertext())
        if not text.strip():
            continue
        texts.add(i)
        if block.tag == "list":
            lists.append(i)
        if block.tag not in _LINK_BLOCKS or len(text) > 20 * _LINK_BLOCK_SCAN_WORDS:
            continue
        words = norm(text)
        count = words.count(" ") + 1
        if not words or count > _LINK_BLOCK_SCAN_WORDS:
            continue
        short = count <= settings.link_block_max_words
        density = settings.link_block_density if short else settings.link_long_block_density
        candidates.append((i, text, words, density))
    dense = _dense(candidates, page)
    rest = texts - dense
    if lists and (settings.drop_link_lists or rest <= set(lists)):
        for i in lists:
            items = [" ".join(item.itertext()) for item in blocks[i].iter("item")]
            items = [(i, text, norm(text), settings.link_block_density) for text in items]
            items = [item for item in items if item[2]]
            if items and _dense(items, page, every=True, unlinked_twin_keeps=False):
                dense.add(i)
        if not settings.drop_link_lists and not texts <= dense:
            dense -= set(lists)  # lists go only with everything else
    return dense


def _dense(
    candidates: list[tuple[int, str, str, float]],
    page: PageContext,
    every: bool = False,
    unlinked_twin_keeps: bool = True,
) -> set[int]:
    """Indexes of the candidates mostly made of links on the page; with `every`, the
    candidates are the items of one block and it is dense if all of them are. With
    `unlinked_twin_keeps`, a candidate that also stands on the page outside links (a
    heading that a table of contents links to) is not dense; a list's items are judged
    without it (the table of contents itself is navigation)."""
    if not candidates:
        return set()
    shares = page.link_shares({words for _, _, words, _ in candidates})
    dense = set()
    for i, text, words, density in candidates:
        linked = shares.get(words, 0.0) >= density and not (
            unlinked_twin_keeps and page.stands_unlinked(text)
        )
        if linked:
            dense.add(i)
        elif every:
            return set()
    return dense


def _is_boilerplate(text: str, max_words: int) -> bool:
    if len(text) > 12 * max_words:  # cheap bound before tokenising
        return False
    words = _WORD.findall(text.lower())
    if not words or len(words) > max_words:
        return False
    return bool(
        _BOILERPLATE_LABEL.match(" ".join(words))
        or _BOILERPLATE_PHRASE.search(text)
        or ("[/" in text and _SHORTCODE.search(text))
        or _is_date_line(text, words)
    )


def _is_date_line(text: str, words: list[str]) -> bool:
    """A dateline or timestamp alone ("Updated: 2019-11-18 15:30", "Nov. 18, 2019 at 1:23
    p.m. EST"): numbers, month and day names and a few connecting words only."""
    return (
        len(words) <= 16
        and any(word.isdigit() for word in words)
        and all(word.isdigit() or word in _DATE_WORDS for word in words)
        and (any(word in _MONTHS_DAYS for word in words) or bool(_NUMERIC_DATE.search(text)))
    )


def _remove(element: etree._Element) -> None:
    """Remove a block, keeping the text that followed it (its tail) on a line of its own:
    glued to the text before it, "Try the demo" + "Prototype" read "Try the demoPrototype"."""
    parent = element.getparent()
    if parent is None:
        return
    tail = element.tail
    if tail and tail.strip():
        line_break = etree.Element("lb")
        line_break.tail = tail
        parent.replace(element, line_break)
    else:
        parent.remove(element)
