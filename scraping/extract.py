"""Main text and metadata of one fetched HTML page.

`extract_page(body, url, content_type)` -> `ExtractedPage` (text, title, date, language,
method) or None when the page has no usable text. Pure, one page at a time, no network:
meant for worker processes. Never raises on bad input.

1. `decode_html`: bytes to text. The header's charset if the bytes decode cleanly with it,
   else the document's own declaration, else UTF-8, else detection. A page labelled UTF-8
   that is not (cp1252 bytes) falls through to the next step; a legacy single-byte label
   on bytes that are valid non-ASCII UTF-8 loses to UTF-8; UTF-8 with a few stray bytes
   stays UTF-8 rather than becoming mojibake.
2. One lxml parse (trafilatura's loader), shared by every step below.
3. trafilatura's `bare_extraction`, `fast` (no readability/justext comparison), comments
   off. A first pass shorter than `rescue_below_chars` runs again with trafilatura's full
   cascade; the longer result wins, keeping the first pass's lines that it lacks.
4. Cleaning of trafilatura's output blocks (general rules, nothing per site):
   - blocks that are, on the page, mostly link text ("Read more: <link>", related-story
     cards and lines), unless the same text also stands on the page outside links (a
     heading that a table of contents links to) or the link points at the page itself;
     an output made only of such lines (a navigation page) is no text at all;
   - lines of known boilerplate: calls to subscribe, share, comment, follow or download,
     copyright and affiliate notices, bare section labels, datelines, shortcodes;
   - a leading heading that repeats the page's meta description (the standfirst).
5. A beautifulsoup4 fallback when that leaves less than `fallback_below_chars`: drop
   scripts, navigation, header, footer, aside, forms and containers named for comments,
   sharing, related links...; take the element with the most paragraph text.
6. Metadata: title (og/twitter meta, else trafilatura's title heuristics), date (htmldate,
   quick search, ISO), language (py3langid, whose model ships inside its wheel).

The settings and the measurements behind them: docs/extraction.md; the benchmark:
benchmarks/extraction.py.
"""

from __future__ import annotations

import codecs
import logging
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urljoin

import trafilatura
from lxml import etree
from lxml.html import HtmlElement
from trafilatura.metadata import extract_title
from trafilatura.utils import load_html
from trafilatura.xml import xmltotxt

LOGGER = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Decoding

_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:+-]+)""", re.I)
# <meta charset=...>, <meta http-equiv="Content-Type" content="...; charset=...">, and an
# XML declaration's encoding="...", looked for in the head of the document only.
_DOC_CHARSET = re.compile(
    rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:+-]+)"""
    rb"""|<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9_.:+-]+)""",
    re.I,
)
_DOC_CHARSET_SCAN = 16384
# Labels that browsers read as another encoding (WHATWG Encoding Standard): a page labelled
# latin-1 or ascii is shown as windows-1252 by every browser, so that is what its authors saw.
_ALIASES = {
    "latin_1": "cp1252",
    "ascii": "cp1252",
    "iso8859_9": "cp1254",
    "iso8859_11": "cp874",
    "tis_620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
    "big5": "big5hkscs",
}
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_NON_ASCII = re.compile(rb"[\x80-\xff]")
# single-byte code pages of non-Latin scripts, which detection is trusted to tell apart
_NON_LATIN = (
    "cp1251", "cp1253", "cp1255", "cp1256", "cp866", "cp855", "koi8", "mac_cyrillic",
    "mac_greek", "iso8859_5", "iso8859_6", "iso8859_7", "iso8859_8", "cp874",
)  # fmt: skip
_DETECT_SAMPLE = 65536


def _codec(label: str | bytes | None) -> str | None:
    """A Python codec name for a charset label, None if unknown or not usable for HTML."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "ignore")
    try:
        name = codecs.lookup(label.strip().lower()).name
    except LookupError:
        return None
    name = name.replace("-", "_")
    name = _ALIASES.get(name, name)
    if name.startswith(("utf_16", "utf_32")):
        # HTML in UTF-16/32 comes with a BOM (handled before); a label without one is a
        # copy-paste error on an ASCII-compatible page (WHATWG reads it as UTF-8).
        return "utf_8"
    if name in ("utf_7", "rot_13") or not _is_text_codec(name):
        return None
    return name


def _is_text_codec(name: str) -> bool:
    try:
        return codecs.lookup(name)._is_text_encoding  # type: ignore[attr-defined]
    except (LookupError, AttributeError):
        return False


def _single_byte(name: str) -> bool:
    """Codecs that accept (almost) any byte: a clean decode proves nothing."""
    return name.startswith(("cp12", "iso8859", "latin", "koi8", "mac_", "cp8", "cp4"))


def _utf8_mostly(body: bytes) -> str | None:
    """UTF-8 with replacement characters, if the invalid bytes are rare next to the valid
    multi-byte sequences (a UTF-8 page with a stray legacy byte); else None."""
    text = body.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    good = len(text) - len(text.encode("ascii", "ignore")) - bad  # non-ASCII characters
    return text if good >= 4 * bad and good > 0 else None


def decode_html(body: bytes, content_type: str | None = None) -> str:
    """Bytes of an HTML page to text; never raises.

    Order: byte-order mark; the Content-Type charset, then the document's own declaration
    (<meta charset>, http-equiv, <?xml encoding>), each only if the bytes decode cleanly
    with it (a legacy single-byte label on bytes that are valid non-ASCII UTF-8 loses to
    UTF-8); then UTF-8; then UTF-8 with replacements if nearly all of it is valid UTF-8;
    then detection (charset_normalizer, on pages with many non-ASCII bytes); else cp1252.
    """
    if not body:
        return ""
    try:
        return _decode(bytes(body), content_type)
    except Exception:  # pragma: no cover - decoding is guarded step by step
        LOGGER.debug("decoding failed", exc_info=True)
        return bytes(body).decode("utf-8", "replace")


def _decode(body: bytes, content_type: str | None) -> str:
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(name, "replace")
    labels = []
    if content_type and (match := _HEADER_CHARSET.search(content_type)):
        labels.append(match.group(1))
    if match := _DOC_CHARSET.search(body, 0, _DOC_CHARSET_SCAN):
        labels.append(match.group(1) or match.group(2))
    utf8: str | None = None
    utf8_tried = False
    for label in labels:
        name = _codec(label)
        if name is None:
            continue
        if name == "utf_8" or _single_byte(name):
            if not utf8_tried:
                utf8, utf8_tried = _as_utf8(body), True
            if utf8 is not None:
                return utf8
            if name == "utf_8":
                continue  # declared UTF-8, but it is not: the declaration is wrong
        try:
            return body.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    if not utf8_tried:
        utf8 = _as_utf8(body)
    if utf8 is not None:
        return utf8
    if (text := _utf8_mostly(body)) is not None:
        return text
    non_ascii = len(_NON_ASCII.findall(body, 0, _DETECT_SAMPLE))
    if non_ascii >= 64 and non_ascii > 0.05 * min(len(body), _DETECT_SAMPLE):
        # many high bytes: a non-Latin legacy encoding (Cyrillic, CJK...) rather than a
        # Western page with a few accented letters
        name = _detect(body)
        if name:
            return body.decode(name, "replace")
    return body.decode("cp1252", "replace")


def _as_utf8(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _detect(body: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(body[:_DETECT_SAMPLE]).best()
    except Exception:  # pragma: no cover - a detector failure is not a page failure
        return None
    name = _codec(best.encoding) if best is not None else None
    if name is None or (_single_byte(name) and not name.startswith(_NON_LATIN)):
        # Detectors confuse the Latin code pages with one another on short samples; a
        # Western page is by far the likeliest, and cp1252 is what browsers fall back to.
        return None
    return name


# ---------------------------------------------------------------------------------------
# Settings and result


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
    # lists whose every item is mostly links (off: they go only when nothing else is left)
    drop_link_lists: bool = False
    # leading blocks that repeat the title (off: the title stays the text's first line)
    drop_title: bool = False
    # a leading heading that repeats the page's meta description (the standfirst)
    drop_standfirst: bool = True
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
    text: str
    title: str | None
    date: str | None
    language: str | None
    language_score: float | None
    method: str  # "trafilatura" | "trafilatura-rescue" (full cascade) | "fallback" (bs4)


# ---------------------------------------------------------------------------------------
# Extraction

_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*>", re.I)
_WORD = re.compile(r"\w+")
_LINK_BLOCKS = ("p", "head", "quote")
_LINE_BLOCKS = ("p", "head", "quote", "item", "list")
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
    r"|log ?in|subscribe|newsletter|menu|search)$"
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
_UNLINKED_TEXT_WITH = etree.XPath("//body//text()[contains(., $word)][not(ancestor::a)]")
_UNLINKED_TEXT_IN = etree.XPath(".//text()[not(ancestor::a)]", smart_strings=False)
_LINK_BLOCK_SCAN_WORDS = 60  # longer blocks of the output are not looked up
_LINK_BLOCK_SCAN_CHARS = 600  # nor longer blocks of the page
_NAVIGATION_LINE_WORDS = 8  # median line length below which a text may be all links


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
    title = _title(tree) if tree is not None else None
    text, method = _trafilatura_text(tree, url, title, settings) if tree is not None else ("", "")
    if settings.fallback and len(text) < settings.fallback_below_chars:
        fallback = _fallback_text(html)
        if len(fallback) > len(text):
            text, method = fallback, "fallback"
    if len(text) < max(settings.min_chars, 1):
        return None
    sample = settings.language_sample_chars
    language, score = _language(text[:sample])
    if score is not None and score < settings.language_confident and len(text) > sample:
        language, score = _language(text[: 4 * sample])  # unsure on a short sample: read more
    return ExtractedPage(
        text=text,
        title=title,
        date=_date(tree, url) if settings.with_date and tree is not None else None,
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


def _trafilatura_text(
    tree: HtmlElement, url: str, title: str | None, settings: ExtractSettings
) -> tuple[str, str]:
    page = _Page(tree, title, url)
    body = _trafilatura_body(tree, url, settings, fast=settings.fast)
    text = _clean_and_render(body, page, settings) if body is not None else ""
    method = "trafilatura"
    if settings.fast and len(text) < settings.rescue_below_chars:
        # trafilatura's full cascade (readability and justext comparisons, recall retry)
        body = _trafilatura_body(tree, url, settings, fast=False)
        rescued = _clean_and_render(body, page, settings) if body is not None else ""
        if len(rescued) > len(text):
            if settings.merge_rescue:
                rescued = _merge(text, rescued, tree)
            text, method = rescued, "trafilatura-rescue"
    if settings.drop_link_blocks and _only_links(text, page):
        return "", method  # a page of navigation: trafilatura's last resort dumped its links
    return text, method


def _only_links(text: str, page: _Page) -> bool:
    """Whether every line of a text of short lines is, on the page, mostly links."""
    lines = [line.strip().removeprefix("- ") for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return False
    lengths = sorted(len(line.split()) for line in lines)
    if lengths[len(lengths) // 2] > _NAVIGATION_LINE_WORDS:
        return False  # the lines of an article: not worth a look
    candidates = [(0, line, _norm(line), 0.5) for line in lines]
    return bool(_dense([c for c in candidates if c[2]], page, every=True))


def _merge(first: str, second: str, tree: HtmlElement) -> str:
    """`second`, plus the lines of `first` that it lacks, put before or after it in the
    order in which they come on the page: a short first pass often found a part of the
    page (a question above its answers, a recipe's ingredients) that the rescue missed."""
    known = {_norm(line) for line in second.splitlines()}
    extra = [line for line in first.splitlines() if _norm(line) and _norm(line) not in known]
    if not extra:
        return second
    page = _norm(" ".join(tree.xpath("//body//text()")))
    where_extra = page.find(_norm(extra[0])[:200])
    where_second = page.find(_norm(second.splitlines()[0])[:200])
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


def _norm(text: str | None) -> str:
    return " ".join(_WORD.findall(text.lower())) if text else ""


def _same_page(a: str, b: str) -> bool:
    """Whether two absolute URLs name the same page (scheme, fragment and a trailing
    slash aside)."""
    a, b = a.split("#", 1)[0], b.split("#", 1)[0]
    a, b = a.split("://", 1)[-1].rstrip("/"), b.split("://", 1)[-1].rstrip("/")
    return a.lower() == b.lower()


class _Page:
    """What the cleaning rules know about the page, computed once and only when needed."""

    def __init__(self, tree: HtmlElement, title: str | None, url: str = "") -> None:
        self.tree = tree
        self.title = title
        self.url = url
        self._descriptions: set[str] | None = None
        self._titles: tuple[set[str], str] | None = None

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
            text = _norm(raw[:_LINK_BLOCK_SCAN_CHARS])
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
            text = _norm(raw)
            if text in wanted:
                share = min(count / (text.count(" ") + 1), 1.0)
                shares[text] = max(share, shares.get(text, 0.0))
        return shares

    def _links_here(self, href: str | None) -> bool:
        """Whether a link points at the page itself (in-page anchors aside)."""
        href = (href or "").strip()
        if not href or not self.url or href.startswith("#"):
            return False
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
        wanted = _norm(text)
        seen: set[Any] = set()
        for node in _UNLINKED_TEXT_WITH(self.tree, word=max(words, key=len)):
            if len(node) > _LINK_BLOCK_SCAN_CHARS:
                continue
            if _norm(node) == wanted:
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
            if _norm(" ".join(_UNLINKED_TEXT_IN(block))) == wanted:
                return True
        return False

    @property
    def descriptions(self) -> set[str]:
        if self._descriptions is None:
            self._descriptions = {_norm(str(v)) for v in self.tree.xpath(_DESCRIPTION_META)}
            self._descriptions.discard("")
        return self._descriptions

    @property
    def titles(self) -> tuple[set[str], str]:
        """Normalised forms of the title (metadata, <title>, h1), and the <title> text."""
        if self._titles is None:
            title_tag = _norm(" ".join(self.tree.xpath("//head/title//text()")[:20]))
            forms = {_norm(self.title), title_tag}
            for h1 in self.tree.iter("h1"):
                forms.add(_norm(h1.text_content()[:1000]))
            forms.discard("")
            self._titles = (forms, title_tag)
        return self._titles


def _clean_and_render(body: etree._Element, page: _Page, settings: ExtractSettings) -> str:
    blocks = list(body)
    drop: set[int] = set()
    if settings.drop_link_blocks:
        drop.update(_link_blocks(blocks, page, settings))
    if settings.drop_boilerplate_lines:
        for i, block in enumerate(blocks):
            if block.tag in _LINE_BLOCKS and _is_boilerplate(
                " ".join(block.itertext()), settings.boilerplate_max_words
            ):
                drop.add(i)
    if settings.drop_title or settings.drop_standfirst:
        forms, title_tag = page.titles
        for i, block in enumerate(blocks):
            if i in drop:
                continue
            text = _norm(" ".join(block.itertext()))
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
        _remove(blocks[i])
    try:
        text = xmltotxt(body, False)
    except Exception:  # pragma: no cover - deep trees can exhaust the recursion limit
        LOGGER.debug("rendering failed", exc_info=True)
        text = "\n".join(t.strip() for t in body.itertext() if t.strip())
    # NFC as trafilatura.extract() does; no trailing blanks, no blank lines (list and table
    # markup leaves runs of them)
    lines = (line.rstrip() for line in unicodedata.normalize("NFC", text).splitlines())
    return "\n".join(line for line in lines if line).strip()


def _link_blocks(blocks: list[etree._Element], page: _Page, settings: ExtractSettings) -> set[int]:
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
        words = _norm(text)
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
            items = [(i, text, _norm(text), settings.link_block_density) for text in items]
            items = [item for item in items if item[2]]
            if items and _dense(items, page, every=True):
                dense.add(i)
        if not settings.drop_link_lists and not texts <= dense:
            dense -= set(lists)  # lists go only with everything else
    return dense


def _dense(
    candidates: list[tuple[int, str, str, float]], page: _Page, every: bool = False
) -> set[int]:
    """Indexes of the candidates mostly made of links on the page; with `every`, the
    candidates are the items of one block and it is dense if all of them are."""
    if not candidates:
        return set()
    shares = page.link_shares({words for _, _, words, _ in candidates})
    dense = set()
    for i, text, words, density in candidates:
        linked = shares.get(words, 0.0) >= density and not page.stands_unlinked(text)
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
    parent = element.getparent()
    if parent is None:
        return
    tail = element.tail
    if tail and tail.strip():
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(element)


# ---------------------------------------------------------------------------------------
# beautifulsoup4 fallback

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


def _fallback_text(html: str) -> str:
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
        lines.append(f"- {text}" if block.name == "li" else text)
    return unicodedata.normalize("NFC", "\n".join(lines))


def _boilerplate_container(tag: Any) -> bool:
    if tag.name in ("html", "body"):
        return False
    classes = tag.get("class") or []
    names = " ".join(classes) if isinstance(classes, list) else str(classes)
    names = f"{names} {tag.get('id') or ''}"
    return bool(names.strip()) and bool(_BOILERPLATE_ATTR.search(names))


# ---------------------------------------------------------------------------------------
# Metadata

_TITLE_META = (
    '//meta[@property="og:title"]/@content',
    '//meta[@name="og:title"]/@content',
    '//meta[@name="twitter:title"]/@content',
    '//meta[@property="twitter:title"]/@content',
)
_MAX_TITLE = 1000


def _title(tree: HtmlElement) -> str | None:
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


def _date(tree: HtmlElement, url: str) -> str | None:
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


def _language(sample: str) -> tuple[str | None, float | None]:
    if not sample.strip():
        return None, None
    identifier = _identifier()  # a missing py3langid is an installation error: let it raise
    try:
        language, score = identifier.classify(sample)
    except Exception:
        LOGGER.debug("language identification failed", exc_info=True)
        return None, None
    return str(language), round(float(score), 4)
