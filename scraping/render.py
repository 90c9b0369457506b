"""trafilatura's output tree as plain text, laid out as a browser renders the page.

trafilatura's own `xmltotxt` keeps the HTML source's line wraps and indentation inside a
paragraph, writes lists as `- item` and tables as Markdown (`| a | b |`, `|---|`). A
browser does neither: whitespace inside a block collapses to single spaces, inline elements
(`<span>`, `<a>`, `<em>`, `<code>` in a sentence) flow inside their line, `<br>` breaks it,
and only blocks start new lines. So here:

- a block (paragraph, heading, list item, table row, quote, division) is one line, its
  whitespace runs collapsed to one space, broken only at `<br>` (`lb`);
- list items are plain lines (no bullet); a table row is one line, its cells separated
  by a space; no Markdown syntax anywhere;
- `<pre>` (a `code` element holding line breaks) is kept verbatim, line by line;
- no blank lines, no trailing spaces, Unicode NFC.
"""

from __future__ import annotations

import unicodedata

from lxml import etree

# trafilatura's output vocabulary (plus what its full cascade passes through from
# readability's HTML): the elements that start and end a line
_BLOCKS = frozenset((
    "p", "head", "list", "item", "table", "row", "quote", "div", "body", "section",
    "article", "main", "blockquote", "figure", "ul", "ol", "li", "tr", "h1", "h2", "h3",
    "h4", "h5", "h6", "dl", "dt", "dd", "header", "footer", "aside", "details", "summary",
    "center", "form", "fieldset", "address", "hr", "graphic",
))  # fmt: skip
_CELLS = frozenset(("cell", "td", "th"))
_BREAKS = frozenset(("lb", "br"))
_VERBATIM = frozenset(("code", "pre"))
# zero-width characters that `str.split` keeps: a line of them alone renders as nothing
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff "
_MAX_DEPTH = 400  # deeper output (absurd nesting) is flattened to its text


def render_text(body: etree._Element) -> str:
    """The text of an output tree, one line per block (module docstring)."""
    lines: list[str] = []
    inline: list[str] = []

    def flush() -> None:
        line = " ".join("".join(inline).split()).strip(_INVISIBLE)
        if line:
            lines.append(line)
        inline.clear()

    def walk(element: etree._Element, depth: int) -> None:
        if not isinstance(element.tag, str):  # a comment or processing instruction
            _tail(element)
            return
        tag = element.tag
        if tag in _VERBATIM and "\n" in "".join(element.itertext()).strip():
            flush()
            code = "".join(element.itertext()).strip("\n")
            lines.extend(line.rstrip() for line in code.expandtabs(4).splitlines())
            _tail(element)
            return
        if tag in _BREAKS:
            flush()
            _tail(element)
            return
        block = tag in _BLOCKS
        if block:
            flush()
        if element.text:
            inline.append(element.text)
        for child in element:
            if depth < _MAX_DEPTH:
                walk(child, depth + 1)
            else:
                inline.append(" ".join(child.itertext()))
                _tail(child)
        if tag in _CELLS:
            inline.append(" ")
        if block:
            flush()
        _tail(element)

    def _tail(element: etree._Element) -> None:
        if element.tail:
            inline.append(element.tail)

    walk(body, 0)
    flush()
    text = "\n".join(line for line in lines if line.strip())
    return unicodedata.normalize("NFC", text)
