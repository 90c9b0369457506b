"""Bytes of an HTML page to text: which character encoding the page is really in.

`decode_html(body, content_type)` never raises. The header's charset if the bytes decode
cleanly with it, else the document's own declaration, else UTF-8, else detection. A page
labelled UTF-8 that is not (cp1252 bytes) falls through to the next step; a legacy
single-byte label on bytes that are valid non-ASCII UTF-8 loses to UTF-8; UTF-8 with a few
stray bytes stays UTF-8 rather than becoming mojibake.
"""

from __future__ import annotations

import codecs
import logging
import re

LOGGER = logging.getLogger(__name__)

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
