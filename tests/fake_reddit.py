"""A loopback fake of Reddit's OAuth API that replays recorded cassettes (test helper).

Cassettes are the betamax JSON files PRAW's own test suite recorded against the real API.
The fake answers the token endpoint with the recorded token, and each GET whose path and
query match a recorded request (ignoring ``raw_json`` and ``limit``, which depend on the
client version) with the recorded status, body and content type. Anything else is a 404
with Reddit's JSON error body, so a client asking for an unrecorded page fails loudly.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

TOKEN_PATH = "/api/v1/access_token"
# Parameters whose value differs between PRAW versions without changing the answer.
IGNORED_PARAMS = frozenset({"raw_json", "limit"})


@dataclass(frozen=True)
class RecordedResponse:
    status: int
    content_type: str
    body: bytes


class ReceivedRequest(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    time: float  # time.monotonic() on arrival


def _match_key(path: str, query: Mapping[str, str]) -> tuple[str, frozenset[tuple[str, str]]]:
    return path, frozenset((k, v) for k, v in query.items() if k not in IGNORED_PARAMS)


def _load_cassettes(
    folders: Iterable[Path],
) -> tuple[RecordedResponse | None, dict[Any, RecordedResponse]]:
    token: RecordedResponse | None = None
    listings: dict[Any, RecordedResponse] = {}
    cassettes = sorted(path for folder in folders for path in folder.glob("*.json*"))
    for cassette in cassettes:
        opener = gzip.open if cassette.suffix == ".gz" else open
        with opener(cassette, "rt", encoding="utf-8") as handle:
            interactions = json.load(handle)["interactions"]
        for interaction in interactions:
            request, response = interaction["request"], interaction["response"]
            headers = {name.lower(): values for name, values in response["headers"].items()}
            recorded = RecordedResponse(
                status=response["status"]["code"],
                content_type=headers.get("content-type", ["application/json"])[0],
                body=response["body"]["string"].encode(),
            )
            uri = urlsplit(request["uri"])
            if uri.path == TOKEN_PATH:
                token = token or recorded
            elif request["method"] == "GET":
                key = _match_key(uri.path, dict(parse_qsl(uri.query)))
                listings.setdefault(key, recorded)
    return token, listings


class FakeReddit:
    """Serve recorded Reddit API responses on ``127.0.0.1`` from a background thread.

    ``cassettes`` is a folder of cassettes (``*.json`` or ``*.json.gz``), or several.

    ``extra_headers`` are added to every response (e.g. ``x-ratelimit-*``);
    ``token_status`` forces the token endpoint's status (e.g. 401 for a bad secret);
    ``get_status`` forces the status of every GET (e.g. 503 for an outage).
    """

    def __init__(
        self,
        cassettes: Path | Iterable[Path],
        *,
        extra_headers: Mapping[str, str] | None = None,
        token_status: int | None = None,
        get_status: int | None = None,
    ) -> None:
        folders = [cassettes] if isinstance(cassettes, Path) else list(cassettes)
        self.token, self.listings = _load_cassettes(folders)
        self.extra_headers = dict(extra_headers or {})
        self.token_status = token_status
        self.get_status = get_status
        self.requests: list[ReceivedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval makes shutdown() return quickly at the end of each test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> FakeReddit:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def gets(self) -> list[ReceivedRequest]:
        """The GET requests received so far, in arrival order."""
        return [r for r in self.requests if r.method == "GET"]

    def respond(self, method: str, path: str, query: dict[str, str]) -> RecordedResponse:
        if method == "POST" and path == TOKEN_PATH and self.token is not None:
            status = self.token_status or self.token.status
            return RecordedResponse(status, self.token.content_type, self.token.body)
        recorded = self.listings.get(_match_key(path, query)) if method == "GET" else None
        if recorded is not None:
            status = self.get_status or recorded.status
            return RecordedResponse(status, recorded.content_type, recorded.body)
        return RecordedResponse(404, "application/json", b'{"message": "Not Found", "error": 404}')

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                arrived = time.monotonic()
                url = urlsplit(self.path)
                query = dict(parse_qsl(url.query))
                if length := int(self.headers.get("Content-Length") or 0):
                    self.rfile.read(length)
                fake.requests.append(
                    ReceivedRequest(self.command, url.path, query, dict(self.headers), arrived)
                )
                response = fake.respond(self.command, url.path, query)
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in fake.extra_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet; requests are kept in ``fake.requests``

        return Handler
