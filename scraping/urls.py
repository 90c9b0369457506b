"""URL normalisation: one spelling per page, and never one spelling for two pages.

Only rewrites that cannot change which resource a server returns are applied:

- scheme and host to lower case, IDNA hosts to their ASCII (punycode) form, a trailing
  dot on the host dropped;
- the scheme's default port dropped;
- an empty path becomes `/` (the one trailing-slash rule: `/a` and `/a/` can differ);
- dot segments (`/a/./b/../c`) resolved, as every browser does before sending;
- percent-encoding made canonical: escapes of unreserved characters decoded, other escapes
  upper-cased, characters that must be escaped (spaces, non-ASCII) encoded as UTF-8;
- tracking parameters (utm_*, fbclid, gclid, ...) removed; the other parameters keep their
  order, since some servers read them positionally;
- the fragment dropped (browsers never send it), except `#!` "hashbang" routes, which
  name distinct pages on some sites;
- `&amp;` turned back into `&`: old Pushshift records carry HTML-escaped URLs.

URLs with credentials (`user:pass@host`) are refused: they would be sent to the host.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}

# Parameters that only say where a click came from. Exact names, plus the utm_ prefix.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "__s",
    }
)
TRACKING_PREFIXES = ("utm_",)

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789ABCDEFabcdef")
# Characters left as they are in a path or query besides unreserved ones (RFC 3986
# sub-delims, ':' and '@', '/' and, in the query, '?').
_PATH_SAFE = frozenset(b"!$&'()*+,;=:@/")
_QUERY_SAFE = _PATH_SAFE | frozenset(b"?")


class UrlError(ValueError):
    """A URL that is malformed or not http(s)."""


def normalize_url(url: str) -> str:
    """The canonical spelling of an http(s) URL; `UrlError` for anything else."""
    text = url.strip().replace("&amp;", "&")
    if not text or any(ch in text for ch in "\r\n\t\x00"):
        raise UrlError(f"malformed URL {url!r}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UrlError(f"malformed URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlError(f"not an http(s) URL: {url!r}")
    host = _normalize_host(parts, url)
    netloc = host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        # A stranger's credentials would be sent to whatever host the URL names, and
        # stored in every table and WARC record after it: such links are refused.
        raise UrlError(f"URL carries credentials: {parts.scheme}://…@{parts.hostname}")
    path = _remove_dot_segments(_canonical_escapes(parts.path, _PATH_SAFE)) or "/"
    query = _strip_tracking(_canonical_escapes(parts.query, _QUERY_SAFE))
    fragment = parts.fragment if parts.fragment.startswith("!") else ""
    return urlunsplit((scheme, netloc, path, query, _canonical_escapes(fragment, _QUERY_SAFE)))


def url_host(url: str) -> str:
    """The host of an already normalised URL (lower case, no port)."""
    return urlsplit(url).hostname or ""


def _normalize_host(parts: SplitResult, original: str) -> str:
    host = (parts.hostname or "").rstrip(".")  # "example.com." is the same DNS name
    if not host:
        raise UrlError(f"URL has no host: {original!r}")
    if ":" in host:  # an IPv6 literal, written back in brackets
        try:
            return f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError as exc:
            raise UrlError(f"invalid IPv6 host in URL {original!r}") from exc
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise UrlError(f"invalid host in URL {original!r}: {exc}") from exc
    if not re.fullmatch(r"[a-z0-9_.-]+", host) or ".." in host:
        raise UrlError(f"invalid host in URL {original!r}")
    return host


_ALREADY_CANONICAL = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*")


def _canonical_escapes(component: str, safe: frozenset[int]) -> str:
    """Decode escapes of unreserved bytes, upper-case the rest, escape what must be."""
    if _ALREADY_CANONICAL.fullmatch(component):
        return component  # the common case, and the slow loop below is pure Python
    raw = component.encode("utf-8", "surrogatepass")
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25 and _is_escape(raw, i):  # '%'
            value = int(raw[i + 1 : i + 3], 16)
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + raw[i + 1 : i + 3].upper()
            i += 3
            continue
        if byte in _UNRESERVED or byte in safe:
            out.append(byte)
        else:  # includes a lone '%' not followed by two hex digits
            out += b"%%%02X" % byte
        i += 1
    return out.decode("ascii")


def _is_escape(raw: bytes, i: int) -> bool:
    return i + 2 < len(raw) and raw[i + 1] in _HEX and raw[i + 2] in _HEX


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, for absolute paths."""
    if "." not in path:
        return path
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    result = "/".join(output)
    return result if result.startswith("/") else "/" + result


def _strip_tracking(query: str) -> str:
    if not query:
        return ""
    pairs = query.split("&")
    return "&".join(p for p in pairs if p and not _is_tracking(p.split("=", 1)[0].lower()))


def _is_tracking(name: str) -> bool:
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)
