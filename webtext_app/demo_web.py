"""The demo's offline web: a small site of real text, served on loopback, with fault pages.

The text is what every CPython install ships: the documentation topics of
`pydoc_data.topics` and the docstrings of some standard-library modules. Each page wears
the boilerplate of a real site (cookie banner, nav, breadcrumbs, sidebar, comments,
newsletter box, footer), so text extraction has something to strip, and about half the
articles have a near-duplicate on a mirror site, so deduplication has something to find.

`DemoWeb` serves it from a background thread with its own asyncio loop (aiohttp), on
127.0.0.1 and optionally 127.0.0.2 ... 127.0.0.N on the same port (Linux routes all of
127/8 to loopback), so a crawler sees several hosts. `site_urls` lists what it serves.

Pages (all `text/html; charset=utf-8`):

| path                             | what                                                   |
|----------------------------------|--------------------------------------------------------|
| `/`                              | index linking to every page and fault endpoint         |
| `/robots.txt`                    | `User-agent: *` / `Disallow: /private/`                |
| `/docs/<topic>.html`             | one article per `pydoc_data.topics` topic              |
| `/mirror/docs/<topic>.html`      | every other topic again: other site, two words changed |
| `/lib/<module>.html`             | a standard-library module's docstrings                 |
| `/private/docs/<topic>.html`     | every 8th topic, disallowed by robots.txt              |
| `/gen/<n>.html`                  | page n of an unbounded site for scale runs: six        |
|                                  | paragraphs drawn from every topic by n; every tenth    |
|                                  | page a mirror's copy of the one before (`gen_urls`)    |

Fault endpoints (each path is stable):

| path                    | behaviour                                                             |
|-------------------------|-----------------------------------------------------------------------|
| `/status/<code>`        | an HTML error page with that 4xx/5xx status (404, 500, 503 listed)    |
| `/flaky/429/<name>`     | 429 with `Retry-After: 1` the first time per name, then 200           |
| `/flaky/500/<name>`     | 500 the first time per name, then 200                                 |
| `/slow/<seconds>`       | waits that long (a float), then a normal page                         |
| `/slowloris`            | status and headers at once, then one body byte every 0.5 s for 60 s   |
| `/reset`                | the connection is reset (RST) without a response                      |
| `/redirect/<n>`         | 302 to `/redirect/<n-1>`; `/redirect/1` goes to the first article     |
| `/redirect-loop/a`, `b` | 302 to each other forever                                             |
| `/redirect-private`     | 302 to `http://10.255.255.1/secret.html` (a private address)          |
| `/redirect-ftp`         | 302 to `ftp://127.0.0.1/file`                                         |
| `/binary.html`          | a 20 KB PNG served as `text/html`                                     |
| `/image.png`            | the same PNG as `image/png`                                           |
| `/huge.html`            | 20 MiB of HTML, chunked (no Content-Length: a reader must cap it)     |
| `/gzip-bomb.html`       | `Content-Encoding: gzip`, ~64 KB that inflates to 64 MiB              |
| `/wrong-charset.html`   | says `charset=utf-8`, body is cp1252 (café, naïve, —, €)              |
| `/no-content-type.html` | a normal page with no Content-Type header at all                      |
"""

from __future__ import annotations

import asyncio
import functools
import html
import importlib
import inspect
import random
import re
import socket
import struct
import textwrap
import threading
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from http import HTTPStatus
from pydoc_data.topics import topics
from types import TracebackType

from aiohttp import hdrs, web

DEMO_PORT = 8642  # the CLI demo's port: fixed, so a dump kept from one run still points here
TOPICS = tuple(sorted(topics))
MIRRORED_TOPICS = TOPICS[::2]
PRIVATE_TOPICS = TOPICS[3::8]
LIBRARY_MODULES = (
    "argparse", "base64", "bisect", "calendar", "collections", "copy", "csv", "difflib",
    "fnmatch", "fractions", "functools", "getopt", "gettext", "heapq", "hmac", "ipaddress",
    "json", "operator", "pprint", "random", "re", "sched", "secrets", "shlex", "statistics",
    "string", "tempfile", "textwrap", "uuid", "zipfile",
)  # fmt: skip
REDIRECT_TARGET = f"/docs/{TOPICS[0]}.html"
HUGE_BYTES = 20 * 1024 * 1024
BOMB_BYTES = 64 << 20  # what the gzip bomb inflates to: over 10x any size limit we use
BOMB_PREFIX = b"<!DOCTYPE html><html><head><title>Inflated</title></head><body><p>"
SLOWLORIS_SECONDS = 60.0
SLOWLORIS_DRIP = 0.5
HTML = "text/html; charset=utf-8"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def site_urls(base_url: str) -> dict[str, list[str]]:
    """Every URL the site serves for a crawler to meet, by kind (pages, then faults)."""
    base = base_url.rstrip("/")

    def urls(*paths: str) -> list[str]:
        return [base + path for path in paths]

    return {
        "article": urls(*(f"/docs/{t}.html" for t in TOPICS)),
        "mirror": urls(*(f"/mirror/docs/{t}.html" for t in MIRRORED_TOPICS)),
        "library": urls(*(f"/lib/{m}.html" for m in LIBRARY_MODULES)),
        "private": urls(*(f"/private/docs/{t}.html" for t in PRIVATE_TOPICS)),
        "status_404": urls("/status/404"),
        "status_500": urls("/status/500"),
        "status_503": urls("/status/503"),
        "flaky_429": urls("/flaky/429/demo-1", "/flaky/429/demo-2"),
        "flaky_500": urls("/flaky/500/demo-1"),
        "slow": urls("/slow/0.5", "/slow/3"),
        "slowloris": urls("/slowloris"),
        "reset": urls("/reset"),
        "redirect_chain": urls("/redirect/3"),
        "redirect_loop": urls("/redirect-loop/a"),
        "redirect_private": urls("/redirect-private"),
        "redirect_ftp": urls("/redirect-ftp"),
        "binary": urls("/binary.html"),
        "image": urls("/image.png"),
        "huge": urls("/huge.html"),
        "gzip_bomb": urls("/gzip-bomb.html"),
        "wrong_charset": urls("/wrong-charset.html"),
        "no_content_type": urls("/no-content-type.html"),
    }


# Of the generated pages, every this-many-th is a near duplicate of the page before it.
GEN_NEAR_DUPLICATE_EVERY = 10
_GEN_PARAGRAPHS = 6


def gen_urls(base_urls: list[str], count: int) -> list[str]:
    """The generated pages 0..count-1, spread over the hosts `base_urls` in turn."""
    return [f"{base_urls[n % len(base_urls)].rstrip('/')}/gen/{n}.html" for n in range(count)]


class Hits(Counter[str]):
    """Request paths served (query strings dropped). The server thread counts; `copy()`
    gives a consistent view to iterate while it serves."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, path: str) -> None:
        with self._lock:
            self[path] += 1

    def copy(self) -> Counter[str]:
        with self._lock:
            return Counter(self)


class DemoWeb:
    """The site, served on loopback by a background thread while the context is open."""

    def __init__(self, port: int = 0, latency: float = 0.0, addresses: int = 1) -> None:
        if not 1 <= addresses <= 254:
            raise ValueError(f"addresses must be 1 to 254, not {addresses}")
        self.port = port
        self.latency = latency
        self.hosts = [f"127.0.0.{i}" for i in range(1, addresses + 1)]
        self.hits = Hits()
        self._flaky_served: set[str] = set()  # touched by the server loop only
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_urls(self) -> list[str]:
        return [f"http://{host}:{self.port}" for host in self.hosts]

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    def __enter__(self) -> DemoWeb:
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(),), name="demo-web", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the demo web did not start within 30 s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._loop is not None and self._stop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # Open handlers (a slowloris has 60 s to go) are cancelled after 0.1 s on exit.
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.1)
        try:
            await runner.setup()
            await web.TCPSite(runner, self.hosts[0], self.port).start()
            self.port = runner.addresses[0][1]
            for host in self.hosts[1:]:
                await web.TCPSite(runner, host, self.port).start()
        except BaseException as exc:
            self._error = exc
            await runner.cleanup()
            return
        finally:
            # Sockets are listening (or failed) once setup returns: __enter__ may go on.
            self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._count_and_delay])
        app.on_response_prepare.append(_drop_content_type)
        app.router.add_get("/", _index)
        app.router.add_get("/robots.txt", _robots)
        for prefix, kind in (("", "docs"), ("/mirror", "mirror"), ("/private", "private")):
            article = functools.partial(_article, kind)
            app.router.add_get(f"{prefix}/docs/{{name}}.html", _page_handler(article))
        app.router.add_get("/lib/{name}.html", _page_handler(_library_page))
        app.router.add_get(r"/gen/{name:\d{1,9}}.html", _page_handler(_generated_page))
        app.router.add_get(r"/status/{code:[45]\d\d}", _status)
        app.router.add_get("/flaky/{code:429|500}/{name}", self._flaky)
        app.router.add_get(r"/slow/{seconds:\d+(?:\.\d+)?}", _slow)
        app.router.add_get("/slowloris", _slowloris)
        app.router.add_get("/reset", _reset)
        app.router.add_get(r"/redirect/{n:\d+}", _redirect_chain)
        app.router.add_get("/redirect-loop/{side:a|b}", _redirect_loop)
        app.router.add_get("/redirect-private", _redirect_to("http://10.255.255.1/secret.html"))
        app.router.add_get("/redirect-ftp", _redirect_to("ftp://127.0.0.1/file"))
        app.router.add_get("/binary.html", _binary("text/html"))
        app.router.add_get("/image.png", _binary("image/png"))
        app.router.add_get("/huge.html", _huge)
        app.router.add_get("/gzip-bomb.html", _gzip_bomb_response)
        app.router.add_get("/wrong-charset.html", _wrong_charset)
        app.router.add_get("/no-content-type.html", _no_content_type)
        return app

    @web.middleware
    async def _count_and_delay(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.hits.add(request.path)
        if self.latency:
            await asyncio.sleep(self.latency)
        return await handler(request)

    async def _flaky(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        key = f"{code}/{request.match_info['name']}"
        if key not in self._flaky_served:
            self._flaky_served.add(key)
            response = _error_page(code)
            if code == HTTPStatus.TOO_MANY_REQUESTS:
                response.headers[hdrs.RETRY_AFTER] = "1"
            return response
        return _html(_any_article(key))


# Pages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Site:
    """The boilerplate one site wraps around its articles."""

    name: str
    section: str  # the breadcrumb between Home and the title
    nav: tuple[str, ...]
    cookie: str
    newsletter: str
    footer: str
    notice: str = ""  # a line above the article
    ads: tuple[str, ...] = ()


_SITES = {
    "docs": _Site(
        name="The Python Reader",
        section="Docs",
        nav=("Home", "Tutorials", "Docs", "Library", "Newsletter", "About"),
        cookie="We use cookies to improve your experience and to show you relevant ads. "
        "By continuing to browse you agree to our cookie policy.",
        newsletter="Get the weekly digest: one email every Friday with the best new "
        "articles. No spam, unsubscribe at any time.",
        footer="© 2014–2019 The Python Reader. All rights reserved.",
    ),
    "mirror": _Site(
        name="DevMirror",
        section="Programming",
        nav=("Home", "Trending", "Programming", "Jobs", "Deals", "Login"),
        cookie="This site uses cookies from us and our partners to personalise content "
        "and ads. Click Accept to consent.",
        newsletter="Join 120,000 developers who get our daily roundup of the best "
        "programming articles from around the web.",
        footer="Content is mirrored for educational purposes. © DevMirror Network. "
        "Advertise with us.",
        notice="This article was originally published on The Python Reader.",
        ads=(
            "Master Python in 30 days: 70% off the complete bootcamp, today only.",
            "Hiring? Reach two million developers with a DevMirror job post.",
        ),
    ),
    "private": _Site(
        name="Reader Staff Wiki",
        section="Drafts",
        nav=("Home", "Drafts", "Schedule", "Style guide"),
        cookie="Staff only. Sessions are recorded for security purposes.",
        newsletter="Editors: sign up for the morning planning email.",
        footer="Internal. Do not share outside The Python Reader editorial team.",
        notice="Draft: not yet published.",
    ),
}
_AUTHORS = ("Maria Lindqvist", "Daniel Okafor", "Priya Raman", "Tom Becker", "Sofia Alvarez")
_COMMENTS = (
    ("pyfan42", "Great write-up, this finally made it click for me."),
    ("grumpy_dev", "The official docs say the same thing, but this is easier to read."),
    ("ada_l", "Bookmarked. Would love a follow-up with more examples."),
    ("tim_the_enchanter", "Is this still accurate for the latest release?"),
    ("null_pointer", "First!"),
    ("mkdir_p", "Thanks, shared this with my team."),
    ("lambda_lady", "One small nit: the second example could use a comment."),
    ("segfault_sam", "This is why I love Python."),
    ("curious_george", "How does this compare to the way JavaScript does it?"),
    ("ops_olga", "We hit exactly this in production last week."),
    ("quiet_reader", "Clear and to the point. More like this please."),
    ("bytes_and_bits", "Anyone have a link to the PEP that introduced this?"),
)
_AGES = ("2 hours ago", "5 hours ago", "yesterday", "2 days ago", "last week", "3 weeks ago")
# A mirror rewords one word in its first and last paragraphs, as copy-paste sites do.
_MIRROR_REWORDING = {"the": "this", "is": "was", "can": "may", "a": "one", "and": "plus"}
_FIRST_DATE = date(2014, 1, 6)

Block = tuple[str, str]  # (tag, text): "p", "pre", "h2", "h3" or "li"


def _blocks(text: str) -> list[Block]:
    """Paragraphs, code and headings of pydoc-style plain text, in order."""
    blocks: list[Block] = []
    for chunk in re.split(r"\n\s*\n", text.strip("\n")):
        if not chunk.strip():
            continue
        lines = chunk.rstrip().split("\n")
        words = " ".join(chunk.split())
        if len(lines) == 2 and re.fullmatch(r"([=\-~^\"*])\1+", lines[1].strip()):
            blocks.append(("h2", lines[0].strip()))
        elif chunk.startswith("-[") and chunk.endswith("]-"):
            blocks.append(("h3", chunk.strip("-[] ")))
        elif _is_code(lines):
            code = textwrap.dedent(chunk)
            if blocks and blocks[-1][0] == "pre":  # a blank line inside one sample
                code = blocks.pop()[1] + "\n\n" + code
            blocks.append(("pre", code))
        elif words.startswith(("* ", "- ")):
            blocks.append(("li", words[2:]))
        else:
            blocks.append(("p", words))
    return blocks


def _is_code(lines: list[str]) -> bool:
    """Grammar, doctests, tables and indented samples; indented prose is a note or a
    definition's body, one indent deep and ending like a sentence."""
    text = "\n".join(lines)
    if lines[0].lstrip().startswith((">>>", "+-", "|")) or "::=" in text:
        return True
    indents = {len(line) - len(line.lstrip()) for line in lines if line.strip()}
    if min(indents) == 0:
        return False
    words = " ".join(text.split())
    sentence = words[-1] in ".?!" and len(words.split()) >= 3
    label = re.fullmatch(r"[A-Z][\w ,.'\"-]*:", words)  # "Note:", "Changed in version 3.8:"
    return not (len(indents) == 1 and (sentence or label))


def _topic(name: str) -> tuple[str, list[Block]]:
    """A topic's title (its first line, underlined with `*`) and body."""
    title, _, body = topics[name].partition("\n")
    return title.strip(), _blocks(body.partition("\n")[2])


def _reword(blocks: list[Block]) -> list[Block]:
    paragraphs = [i for i, (tag, _) in enumerate(blocks) if tag == "p"]
    out = list(blocks)
    for i in {paragraphs[0], paragraphs[-1]} if paragraphs else ():
        words = out[i][1].split(" ")
        for j, word in enumerate(words):
            if word in _MIRROR_REWORDING:
                words[j] = _MIRROR_REWORDING[word]
                break
        out[i] = ("p", " ".join(words))
    return out


@functools.lru_cache(maxsize=1024)  # bounded: names come from requests
def _article(kind: str, name: str) -> bytes | None:
    """The page of topic `name` on site `kind` ("docs", "mirror", "private"), if served."""
    served = {"docs": TOPICS, "mirror": MIRRORED_TOPICS, "private": PRIVATE_TOPICS}[kind]
    if name not in served:
        return None
    title, blocks = _topic(name)
    if kind == "mirror":
        blocks = _reword(blocks)
    index = TOPICS.index(name)
    prefix = {"docs": "/docs/", "mirror": "/mirror/docs/", "private": "/private/docs/"}[kind]
    following = [*served[served.index(name) + 1 :], *served]
    related = [(f"{prefix}{t}.html", _topic(t)[0]) for t in following[:5] if t != name]
    published = _FIRST_DATE + timedelta(days=5 * index + (3 if kind == "mirror" else 0))
    return _render(
        _SITES[kind],
        key=f"{kind}/{name}",
        title=title,
        blocks=blocks,
        author=_AUTHORS[index % len(_AUTHORS)],
        published=published,
        related=related,
    ).encode()


@functools.lru_cache(maxsize=1024)  # bounded: names come from requests
def _library_page(name: str) -> bytes | None:
    """A module's docstring and those of its first public functions and classes."""
    if name not in LIBRARY_MODULES:
        return None
    module = importlib.import_module(name)
    blocks = _blocks(inspect.getdoc(module) or "")
    public = getattr(module, "__all__", None) or sorted(dir(module))
    members = [
        (member, obj)
        for member in public
        if not member.startswith("_")
        and (inspect.isroutine(obj := getattr(module, member, None)) or inspect.isclass(obj))
        and inspect.getdoc(obj)
    ]
    for member, obj in members[:8]:
        blocks.append(("h2", f"{name}.{member}"))
        blocks.extend(_blocks(inspect.getdoc(obj) or ""))
    index = LIBRARY_MODULES.index(name)
    neighbours = [*LIBRARY_MODULES[index + 1 :], *LIBRARY_MODULES][:5]
    return _render(
        _SITES["docs"],
        key=f"lib/{name}",
        title=f"The {name} module",
        blocks=blocks,
        author=_AUTHORS[index % len(_AUTHORS)],
        published=_FIRST_DATE + timedelta(days=11 * index + 2),
        related=[(f"/lib/{m}.html", f"The {m} module") for m in neighbours],
        section="Library",
    ).encode()


@functools.cache
def _paragraph_pool() -> tuple[str, ...]:
    """Every prose paragraph of 30 words or more in the topics: what pages are drawn from."""
    return tuple(
        text
        for name in TOPICS
        for tag, text in _topic(name)[1]
        if tag == "p" and len(text.split()) >= 30
    )


def _generated_page(name: str) -> bytes:
    """Page `name` (a number) of the generated site: its own draw of paragraphs, or, for
    every tenth, the draw of the page before it reworded on the mirror site."""
    number = int(name)
    copy = number % GEN_NEAR_DUPLICATE_EVERY == GEN_NEAR_DUPLICATE_EVERY - 1
    source = number - 1 if copy else number
    rng = random.Random(source)
    pool = _paragraph_pool()
    blocks: list[Block] = [("p", pool[i]) for i in rng.sample(range(len(pool)), _GEN_PARAGRAPHS)]
    topic = TOPICS[source % len(TOPICS)]
    kind = "mirror" if copy else "docs"
    return _render(
        _SITES[kind],
        key=f"gen/{number}",
        title=f"{_topic(topic)[0]}, note {source}",
        blocks=_reword(blocks) if copy else blocks,
        author=_AUTHORS[source % len(_AUTHORS)],
        published=_FIRST_DATE + timedelta(days=source % 2000),
        related=[(f"/gen/{source + i}.html", f"Note {source + i}") for i in range(1, 4)],
    ).encode()


def _render(
    site: _Site,
    *,
    key: str,
    title: str,
    blocks: list[Block],
    author: str,
    published: date,
    related: list[tuple[str, str]],
    section: str | None = None,
) -> str:
    """A full HTML5 page: the article amid the site's boilerplate."""
    esc = html.escape
    rng = random.Random(key)  # str seeds hash with sha512: the same page every run
    minutes = 1 + sum(len(text.split()) for _, text in blocks) // 200
    slug = author.lower().replace(" ", "-")
    nav = "".join(f'<li><a href="/#{esc(item.lower())}">{esc(item)}</a></li>' for item in site.nav)
    lead = next((text for tag, text in blocks if tag == "p"), title)
    comments = rng.sample(_COMMENTS, 3)
    ads = [
        f'<div class="ad" data-slot="{i}"><span>Advertisement</span> {esc(ad)}</div>'
        for i, ad in enumerate(site.ads)
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)} | {esc(site.name)}</title>",
            f'<meta name="description" content="{esc(lead[:155])}">',
            f'<meta property="og:title" content="{esc(title)}">',
            f'<meta property="og:site_name" content="{esc(site.name)}">',
            '<link rel="stylesheet" href="/static/site.css">',
            "<script>window.dataLayer=window.dataLayer||[];"
            "function gtag(){dataLayer.push(arguments)}gtag('js',new Date());</script>",
            "</head>",
            "<body>",
            '<div class="cookie-banner" role="dialog" aria-label="Cookie consent">',
            f"<p>{esc(site.cookie)}</p>",
            '<button type="button">Accept all</button> <button type="button">Manage '
            "preferences</button>",
            "</div>",
            '<header class="site-header">',
            f'<a class="logo" href="/">{esc(site.name)}</a>',
            f'<nav class="main-nav"><ul>{nav}</ul></nav>',
            '<form class="search" action="/search"><input type="search" name="q" '
            'placeholder="Search"></form>',
            "</header>",
            '<nav class="breadcrumbs" aria-label="Breadcrumb"><a href="/">Home</a> › '
            f'<a href="/">{esc(section or site.section)}</a> › <span>{esc(title)}</span></nav>',
            *ads[:1],
            *([f'<p class="notice">{esc(site.notice)}</p>'] if site.notice else []),
            "<main>",
            "<article>",
            f"<h1>{esc(title)}</h1>",
            f'<p class="byline">By <a rel="author" href="/authors/{slug}.html">{esc(author)}'
            f'</a> · <time datetime="{published.isoformat()}">'
            f"{published:%B} {published.day}, {published.year}</time> · {minutes} min read</p>",
            _body(blocks),
            '<p class="share">Share: <a href="#">Twitter</a> · <a href="#">Facebook</a> · '
            '<a href="#">Reddit</a> · <a href="#">Email</a></p>',
            "</article>",
            '<aside class="sidebar">',
            "<h2>Related articles</h2>",
            "<ul>",
            *(f'<li><a href="{esc(href)}">{esc(text)}</a></li>' for href, text in related),
            "</ul>",
            *ads[1:],
            "</aside>",
            '<section class="comments">',
            f"<h2>{len(comments)} comments</h2>",
            *(
                f'<div class="comment"><p class="comment-meta"><b>{esc(user)}</b> · '
                f"{rng.choice(_AGES)}</p><p>{esc(text)}</p></div>"
                for user, text in comments
            ),
            "</section>",
            '<aside class="newsletter">',
            "<h2>Newsletter</h2>",
            f"<p>{esc(site.newsletter)}</p>",
            '<form action="/subscribe" method="post"><input type="email" name="email" '
            'placeholder="you@example.com"><button type="submit">Subscribe</button></form>',
            "</aside>",
            "</main>",
            '<footer class="site-footer">',
            f"<p>{esc(site.footer)}</p>",
            '<p><a href="/about.html">About</a> · <a href="/privacy.html">Privacy</a> · '
            '<a href="/terms.html">Terms</a> · <a href="/contact.html">Contact</a></p>',
            "</footer>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _body(blocks: list[Block]) -> str:
    out: list[str] = []
    items: list[str] = []
    for tag, text in [*blocks, ("", "")]:
        if tag == "li":
            items.append(f"<li>{html.escape(text)}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if tag:
            out.append(f"<{tag}>{html.escape(text)}</{tag}>")
    return "\n".join(out)


def _any_article(key: str) -> bytes:
    """An article picked by a stable hash of `key`: fault pages that end well show one."""
    page = _article("docs", TOPICS[zlib.crc32(key.encode()) % len(TOPICS)])
    assert page is not None
    return page


@functools.cache
def _index_page() -> bytes:
    """Links to everything `site_urls` lists, titled where the page has a title."""
    titles = {f"/{m}.html": f"The {m} module" for m in LIBRARY_MODULES}
    titles.update({f"/{t}.html": _topic(t)[0] for t in TOPICS})
    sections = []
    for kind, paths in site_urls("").items():
        links = "".join(
            f'<li><a href="{html.escape(path)}">'
            f"{html.escape(titles.get(path[path.rfind('/') :], path))}</a></li>"
            for path in paths
        )
        sections.append(f'<h2 id="{kind}">{kind.replace("_", " ")}</h2>\n<ul>{links}</ul>')
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8"><title>The demo web</title></head>',
            "<body>",
            "<h1>The demo web</h1>",
            *sections,
            "</body>",
            "</html>",
            "",
        ]
    ).encode()


def _png() -> bytes:
    """A valid 96x72 PNG of noise (about 20 KB: noise does not compress)."""
    width, height = 96, 72
    pixels = random.Random(2019).randbytes(width * height * 3)
    rows = b"".join(b"\0" + pixels[y * width * 3 : (y + 1) * width * 3] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


PNG = _png()


@functools.cache
def _gzip_bomb() -> bytes:
    """gzip of BOMB_PREFIX + 64 MiB of spaces, compressed a MiB at a time (~64 KB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    parts = [packer.compress(BOMB_PREFIX)]
    parts.extend(packer.compress(block) for _ in range(BOMB_BYTES // len(block)))
    parts.append(packer.flush())
    return b"".join(parts)


# One worker: the bomb is compressed once even if first asked for twice at once, and off
# the loop's default executor, which asyncio.run would wait for when the server stops.
_BOMB_MAKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-web-gzip-bomb")
_NO_CONTENT_TYPE = web.ResponseKey("no_content_type", bool)
_CP1252_INTRO = (
    "The café on the corner takes euros only: €3 for an espresso — €4 with milk.",
    "A naïve reader that trusts the header decodes these bytes as UTF-8 and fails; a "
    "careful one sniffs the encoding, or replaces what it cannot read.",
)


def _html(page: bytes, status: int = 200) -> web.Response:
    return web.Response(body=page, status=status, content_type="text/html", charset="utf-8")


def _error_page(status: int) -> web.Response:
    phrase = HTTPStatus(status).phrase
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {phrase}</title></head>\n"
        f"<body><h1>{status} {phrase}</h1><p>The server could not complete your request."
        "</p><hr><address>demo web</address></body></html>\n"
    )
    return _html(page.encode(), status)


def _page_handler(build: Callable[[str], bytes | None]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        page = build(request.match_info["name"])
        return _error_page(404) if page is None else _html(page)

    return handler


async def _index(request: web.Request) -> web.Response:
    return _html(_index_page())


async def _robots(request: web.Request) -> web.Response:
    return web.Response(text="User-agent: *\nDisallow: /private/\n", content_type="text/plain")


async def _status(request: web.Request) -> web.Response:
    try:
        return _error_page(HTTPStatus(int(request.match_info["code"])))
    except ValueError:  # 4xx or 5xx, but no status HTTP defines
        return _error_page(HTTPStatus.NOT_FOUND)


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.match_info["seconds"]))
    return _html(_any_article(request.path))


async def _slowloris(request: web.Request) -> web.StreamResponse:
    body = _any_article(request.path)[: int(SLOWLORIS_SECONDS / SLOWLORIS_DRIP)]
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: HTML})
    response.content_length = len(body)  # promised up front, so a reader waits for it all
    await response.prepare(request)
    try:
        for i in range(len(body)):
            await response.write(body[i : i + 1])
            await asyncio.sleep(SLOWLORIS_DRIP)
    except ConnectionError:  # the client gave up, as it should
        pass
    return response


async def _reset(request: web.Request) -> web.Response:
    transport = request.transport
    assert transport is not None
    # Linger 0: closing sends RST instead of FIN, so the client sees a reset, not an EOF.
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # aiohttp's own path for a client that went away: no response, nothing logged.
    raise asyncio.CancelledError


async def _redirect_chain(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    raise web.HTTPFound(f"/redirect/{n - 1}" if n > 1 else REDIRECT_TARGET)


async def _redirect_loop(request: web.Request) -> web.Response:
    raise web.HTTPFound(
        "/redirect-loop/b" if request.match_info["side"] == "a" else "/redirect-loop/a"
    )


def _redirect_to(location: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        raise web.HTTPFound(location)

    return handler


def _binary(content_type: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=PNG, headers={hdrs.CONTENT_TYPE: content_type})

    return handler


async def _huge(request: web.Request) -> web.StreamResponse:
    head = b'<!DOCTYPE html>\n<html lang="en">\n<head><title>Huge</title></head>\n<body>\n'
    tail = b"</body>\n</html>\n"
    paragraph = f"<p>{html.escape(_topic(TOPICS[0])[1][0][1])}</p>\n".encode()
    chunk = paragraph * (64 * 1024 // len(paragraph) + 1)
    full, rest = divmod(HUGE_BYTES - len(head) - len(tail), len(chunk))
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: HTML})
    await response.prepare(request)
    try:
        await response.write(head)
        for _ in range(full):
            await response.write(chunk)
        await response.write(b" " * rest + tail)
    except ConnectionError:  # a reader that caps the size hangs up early
        pass
    return response


async def _gzip_bomb_response(request: web.Request) -> web.Response:
    body = await asyncio.get_running_loop().run_in_executor(_BOMB_MAKER, _gzip_bomb)
    # Content-Encoding set by hand and compression never enabled: aiohttp sends it as is.
    headers = {hdrs.CONTENT_TYPE: HTML, hdrs.CONTENT_ENCODING: "gzip"}
    return web.Response(body=body, headers=headers)


@functools.cache
def _wrong_charset_page() -> bytes:
    title, blocks = _topic(TOPICS[-1])
    page = _render(
        _SITES["docs"],
        key="wrong-charset",
        title=f"Café notes — {title}",
        blocks=[("p", line) for line in _CP1252_INTRO] + blocks,
        author=_AUTHORS[0],
        published=_FIRST_DATE,
        related=[(f"/docs/{t}.html", _topic(t)[0]) for t in TOPICS[:3]],
    )
    return page.encode("cp1252", errors="xmlcharrefreplace")


async def _wrong_charset(request: web.Request) -> web.Response:
    return web.Response(body=_wrong_charset_page(), headers={hdrs.CONTENT_TYPE: HTML})


async def _no_content_type(request: web.Request) -> web.Response:
    response = web.Response(body=_any_article(request.path))
    response[_NO_CONTENT_TYPE] = True
    return response


async def _drop_content_type(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp adds `application/octet-stream` to any body without a type; this signal runs
    # after that and before the headers are sent.
    if response.get(_NO_CONTENT_TYPE):
        response.headers.popall(hdrs.CONTENT_TYPE, None)
