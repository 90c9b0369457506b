"""Decoding an HTTP body in bounded steps, for the live fetcher and archive replay alike.

gzip and deflate are inflated with an output cap per step, so a body never grows past
`max_bytes + 1` in memory whatever it claims to be; a body that inflates more than
`BOMB_RATIO` times its compressed size while doing so is a decompression bomb.
"""

from __future__ import annotations

import zlib
from typing import Any

from scraping import page_source as errors
from scraping.page_source import FetchFailure

# HTML inflates about 5-10 times; a hundred times is a bomb, not a page.
BOMB_RATIO = 100


class BodyDecoder:
    """Feed raw body pieces in; read `body` and `truncated` out."""

    def __init__(self, content_encoding: str | None, max_bytes: int) -> None:
        self.encoding = (content_encoding or "identity").strip().lower()
        self.max_bytes = max_bytes
        self._inflater = _inflater(self.encoding)
        self._out = bytearray()
        self._consumed = 0
        self.truncated = False

    @property
    def decoded(self) -> bool:
        """Whether a content encoding was removed (the headers no longer describe the body)."""
        return self._inflater is not None

    @property
    def body(self) -> bytes:
        return bytes(self._out[: self.max_bytes])

    def feed(self, piece: bytes) -> bool:
        """Add a raw piece; True once the limit is reached and reading should stop."""
        room = self.max_bytes + 1 - len(self._out)
        if self._inflater is None:
            self._out += piece[:room]
        else:
            try:
                self._out += self._inflater.decompress(piece, room)
            except zlib.error as exc:
                raise FetchFailure(errors.PROTOCOL_ERROR, f"{self.encoding} body: {exc}") from exc
            self._consumed += len(piece) - len(self._inflater.unconsumed_tail)
        if len(self._out) <= self.max_bytes:
            return False
        if self._inflater is not None and len(self._out) > BOMB_RATIO * self._consumed:
            raise FetchFailure(
                errors.DECOMPRESSION_BOMB,
                f"{self._consumed} compressed bytes inflate past {self.max_bytes}",
            )
        self.truncated = True
        return True


class _Inflater:
    """'deflate' is zlib-wrapped by the spec and raw in practice: the first bytes tell."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._zlib: Any = None

    @property
    def unconsumed_tail(self) -> bytes:
        return self._zlib.unconsumed_tail if self._zlib is not None else b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._zlib is None:
            if self._gzip:
                wbits = 16 + zlib.MAX_WBITS
            else:
                wrapped = len(data) >= 2 and (data[0] * 256 + data[1]) % 31 == 0
                wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            self._zlib = zlib.decompressobj(wbits)
        return self._zlib.decompress(data, max_length)


def _inflater(encoding: str) -> _Inflater | None:
    if encoding in ("identity", ""):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflater(gzip=encoding != "deflate")
    raise FetchFailure(errors.PROTOCOL_ERROR, f"unsupported Content-Encoding {encoding!r}")


# Headers that describe the raw transfer; when the body stored is decoded they are kept
# under X-Crawler-* names, as Common Crawl's WARC files do.
RAW_PAYLOAD_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def renamed_headers(headers: Any, decoded: bool) -> list[tuple[str, str]]:
    return [
        (f"X-Crawler-{name}" if decoded and name.lower() in RAW_PAYLOAD_HEADERS else name, value)
        for name, value in headers
    ]
