"""Reddit API link source: submissions from front page, subreddit, search, domain and user
listings, via PRAW.

The Pushshift dumps are the bulk source of WebText links; this module reads the live API
for listings the dumps do not cover yet. It yields plain dicts with the same field names
as a Pushshift submission record, so everything downstream treats both sources alike.

It authenticates app-only (client credentials: a "script" app's id and secret, no user
password) and only reads public listings.

Behaviour that comes from PRAW/prawcore and is deliberately not reimplemented here:

- Pagination: PRAW's ``ListingGenerator`` follows each page's ``after`` cursor. With
  ``limit=None`` PRAW 8 asks for ``limit=1024`` per request (Reddit caps pages at 100)
  and stops when a page has no ``after``; Reddit serves at most ~1000 items per listing.
- Rate limits: prawcore's ``RateLimiter`` reads Reddit's ``x-ratelimit-remaining``,
  ``x-ratelimit-used`` and ``x-ratelimit-reset`` headers and sleeps before the next
  request (a full ``reset`` seconds once ``remaining`` hits 0).
- Retries: prawcore retries connection errors and 5xx answers twice, with backoff,
  before raising; whatever it raises becomes a ``RedditApiError`` naming the listing.

The client secret never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args
from urllib.parse import parse_qsl, urlencode

import praw
import requests
from praw.exceptions import PRAWException
from praw.models import ListingGenerator, Submission
from prawcore.exceptions import PrawcoreException, ResponseException

log = logging.getLogger(__name__)

ListingKind = Literal["subreddit", "domain", "user", "front"]
ListingSort = Literal["new", "top", "hot", "rising", "controversial", "search"]
TIME_FILTERS = frozenset({"hour", "day", "week", "month", "year", "all"})
TIMED_SORTS = frozenset({"top", "controversial", "search"})  # the sorts Reddit gives a ``t``
SEARCH_SORTS = ("relevance", "hot", "top", "new", "comments")
SEARCH_SYNTAXES = ("lucene", "cloudsearch", "plain")

ENV_CLIENT_ID = "REDDIT_CLIENT_ID"
ENV_CLIENT_SECRET = "REDDIT_CLIENT_SECRET"
ENV_USER_AGENT = "REDDIT_USER_AGENT"

# The field names of a Pushshift submission record that this source fills in.
SUBMISSION_FIELDS = (
    "id",
    "name",
    "url",
    "title",
    "score",
    "created_utc",
    "subreddit",
    "is_self",
    "over_18",
    "domain",
    "permalink",
    "num_comments",
    "author",
)


class RedditApiError(RuntimeError):
    """The Reddit API could not be used: missing credentials, refused auth, or a failed listing."""


@dataclass(frozen=True)
class RedditCredentials:
    """An app's OAuth client id and secret, and the User-Agent Reddit requires."""

    client_id: str
    client_secret: str = field(repr=False)
    user_agent: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RedditCredentials:
        """Read ``REDDIT_CLIENT_ID``, ``REDDIT_CLIENT_SECRET`` and ``REDDIT_USER_AGENT``.

        Raises ``RedditApiError`` naming the missing (or empty) variables, never a value.
        """
        names = (ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_USER_AGENT)
        missing = [name for name in names if not environ.get(name)]
        if missing:
            raise RedditApiError(f"missing Reddit API credentials: set {', '.join(missing)}")
        return cls(*(environ[name] for name in names))


_KIND_PREFIX: dict[str, str] = {
    "subreddit": "r",
    "domain": "domain",
    "user": "user",
    "front": "front",
}
_PREFIX_KIND = {prefix: kind for kind, prefix in _KIND_PREFIX.items()}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_LIMIT = re.compile(r"[0-9]+")
_SYNTAX = (
    "KIND/NAME/SORT[/TIME_FILTER][?limit=N], front/SORT[/TIME_FILTER][?limit=N] or "
    "r/NAME/search?q=QUERY[&sort=S][&t=T][&syntax=X][&limit=N], e.g. "
    "r/askreddit/top/week?limit=500, front/controversial/day, r/all/search?q=gpt-2&sort=top"
)


@dataclass(frozen=True)
class ListingSpec:
    """One Reddit listing to read, written as text (``parse``, ``str``):

    - ``KIND/NAME/SORT[/TIME_FILTER][?limit=N]``: KIND ``r`` (a subreddit), ``domain``
      (links to a site) or ``user`` (a redditor's overview, which mixes comments and
      submissions).
    - ``front/SORT[/TIME_FILTER][?limit=N]``: the front page (app-only auth: logged out).
    - ``r/NAME/search?q=QUERY[&sort=S][&t=T][&syntax=X][&limit=N]``: a subreddit's
      search (``r/all`` searches every subreddit); S is one of ``SEARCH_SORTS``
      (``relevance`` by default), X one of ``SEARCH_SYNTAXES`` (``lucene``).

    SORT: ``new``, ``hot``, ``top``, ``controversial`` or ``rising`` (not for users).
    TIME_FILTER (``top`` and ``controversial``; ``t`` for search): ``hour``, ``day``,
    ``week``, ``month``, ``year`` or ``all`` (the default). ``?limit=N``: stop after N
    items; without it, read the listing to its end.

    Examples: ``r/askreddit/top/all``, ``domain/nytimes.com/new``, ``front/top/week``,
    ``user/spez/controversial/all?limit=100``, ``r/all/search?q=webtext&sort=new``.
    ``str(spec)`` gives the canonical text, which ``parse`` reads back to an equal spec.
    """

    kind: ListingKind
    name: str
    sort: ListingSort
    time_filter: str = "all"
    limit: int | None = None
    query: str | None = None  # search only
    search_sort: str = "relevance"
    syntax: str = "lucene"

    def __post_init__(self) -> None:
        if self.kind not in _KIND_PREFIX:
            raise ValueError(f"listing kind must be one of {sorted(_KIND_PREFIX)}: {self.kind!r}")
        if self.kind == "front" and self.name:
            raise ValueError(f"the front page has no name: {self.name!r}")
        if self.kind != "front" and not _NAME.fullmatch(self.name):
            raise ValueError(f"listing name must match {_NAME.pattern}: {self.name!r}")
        if self.sort not in get_args(ListingSort):
            raise ValueError(f"listing sort must be one of {get_args(ListingSort)}: {self.sort!r}")
        if self.sort == "rising" and self.kind == "user":
            raise ValueError("Reddit has no rising listing for a user")
        if self.time_filter not in TIME_FILTERS:
            raise ValueError(
                f"time filter must be one of {sorted(TIME_FILTERS)}: {self.time_filter!r}"
            )
        # Reddit ignores ``t`` on the other sorts; refusing it keeps one spelling per listing.
        if self.sort not in TIMED_SORTS and self.time_filter != "all":
            raise ValueError(
                f"a time filter only applies to {sorted(TIMED_SORTS)}, not {self.sort!r}"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"listing limit must be a positive integer: {self.limit!r}")
        self._check_search()

    def _check_search(self) -> None:
        if self.sort != "search":
            searching = (self.query, self.search_sort, self.syntax) != (None, "relevance", "lucene")
            if searching:
                raise ValueError("a query, search sort or syntax only applies to search")
            return
        if self.kind != "subreddit":
            raise ValueError("search is a subreddit listing: r/NAME/search (r/all: everywhere)")
        if not (self.query or "").strip():
            raise ValueError("a search needs a query: ?q=...")
        if self.search_sort not in SEARCH_SORTS:
            raise ValueError(f"search sort must be one of {SEARCH_SORTS}: {self.search_sort!r}")
        if self.syntax not in SEARCH_SYNTAXES:
            raise ValueError(f"search syntax must be one of {SEARCH_SYNTAXES}: {self.syntax!r}")

    @classmethod
    def parse(cls, text: str) -> ListingSpec:
        """Read a listing's text (see the class); a ValueError names bad text."""
        try:
            return cls._parse(text)
        except ValueError as exc:
            raise ValueError(f"bad Reddit listing {text!r}: {exc}; expected {_SYNTAX}") from None

    @classmethod
    def _parse(cls, text: str) -> ListingSpec:
        path, has_query, query_string = text.partition("?")
        parts = path.split("/")
        if parts[0] == "front":
            kind, name, rest = "front", "", parts[1:]
        elif parts[0] in _PREFIX_KIND and len(parts) >= 3:
            kind, name, rest = _PREFIX_KIND[parts[0]], parts[1], parts[2:]
        else:
            raise ValueError("not a listing")
        if not 1 <= len(rest) <= 2:
            raise ValueError("too many or too few parts")
        sort = rest[0]
        params = _query_params(query_string) if has_query else {}
        allowed = {"limit", "q", "sort", "t", "syntax"} if sort == "search" else {"limit"}
        if unknown := sorted(params.keys() - allowed):
            raise ValueError(f"unknown parameter {unknown[0]!r} for a {sort!r} listing")
        if sort == "search" and len(rest) == 2:
            raise ValueError("a search's time filter is ?t=")
        limit = params.get("limit")
        if limit is not None and not _LIMIT.fullmatch(limit):
            raise ValueError(f"listing limit must be a positive integer: {limit!r}")
        return cls(
            kind=cast(ListingKind, kind),
            name=name,
            sort=cast(ListingSort, sort),
            time_filter=rest[1] if len(rest) == 2 else params.get("t", "all"),
            limit=int(limit) if limit is not None else None,
            query=params.get("q"),
            search_sort=params.get("sort", "relevance"),
            syntax=params.get("syntax", "lucene"),
        )

    def __str__(self) -> str:
        prefix = _KIND_PREFIX[self.kind]
        text = prefix if self.kind == "front" else f"{prefix}/{self.name}"
        text += f"/{self.sort}"
        params: list[tuple[str, str]] = []
        if self.sort == "search":
            params += [("q", self.query or ""), ("sort", self.search_sort)]
            params += [("t", self.time_filter)]
            if self.syntax != "lucene":
                params.append(("syntax", self.syntax))
        elif self.sort in TIMED_SORTS:
            text += f"/{self.time_filter}"
        if self.limit is not None:
            params.append(("limit", str(self.limit)))
        return f"{text}?{urlencode(params)}" if params else text


def _query_params(query_string: str) -> dict[str, str]:
    pairs = parse_qsl(query_string, keep_blank_values=True, strict_parsing=True)
    params = dict(pairs)
    if len(params) != len(pairs):
        raise ValueError("a parameter is given twice")
    return params


@dataclass(frozen=True)
class ListingFailure:
    """A listing that failed part way: what was read of it is kept, and this says so."""

    listing: str
    submissions: int  # yielded before the failure
    after: str | None  # the cursor of the page that failed: where a rerun would resume
    reason: str

    def __str__(self) -> str:
        where = f"the page after {self.after}" if self.after else "its first page"
        return (
            f"Reddit listing {self.listing} failed after {self.submissions} submissions "
            f"(on {where}): {self.reason}"
        )


def iter_listing_submissions(
    credentials: RedditCredentials,
    listings: Iterable[ListingSpec],
    *,
    api_url: str | None = None,
    stats: Counter[str] | None = None,
    failures: list[ListingFailure] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield every submission in ``listings``, in listing order, as a Pushshift-style dict.

    ``api_url`` replaces both Reddit hosts (``oauth.reddit.com`` for the API and
    ``www.reddit.com`` for the token), e.g. a proxy or a test fake. ``stats`` counts
    ``api_submissions`` (yielded) and ``not_a_submission`` (comments in user listings,
    skipped). A listing that fails raises ``RedditApiError`` naming it, or, when
    ``failures`` is given, is appended there (what it yielded stays yielded) and the next
    listing is read. Refused credentials (401) always raise: no listing could succeed.
    """
    counts: Counter[str] = stats if stats is not None else Counter()
    hosts = (
        {} if api_url is None else dict.fromkeys(("oauth_url", "reddit_url"), api_url.rstrip("/"))
    )
    # Our own HTTP session, so its connections are closed when the iteration ends.
    with requests.Session() as http:
        try:
            reddit = praw.Reddit(
                client_id=credentials.client_id,
                client_secret=credentials.client_secret,
                user_agent=credentials.user_agent,
                check_for_updates=False,
                requestor_kwargs={"session": http},
                **hosts,
            )
        except (PrawcoreException, PRAWException) as exc:
            raise RedditApiError(f"cannot set up the Reddit client: {_describe(exc)}") from exc
        for spec in listings:
            yield from _iter_listing(reddit, spec, counts, failures)


def _iter_listing(
    reddit: praw.Reddit,
    spec: ListingSpec,
    counts: Counter[str],
    failures: list[ListingFailure] | None,
) -> Iterator[dict[str, Any]]:
    yielded = 0
    generator = _listing_generator(reddit, spec)
    try:
        for item in generator:
            if not isinstance(item, Submission):
                counts["not_a_submission"] += 1
                continue
            counts["api_submissions"] += 1
            yielded += 1
            yield _submission_record(item)
    except (PrawcoreException, PRAWException) as exc:
        failure = ListingFailure(str(spec), yielded, generator.params.get("after"), _describe(exc))
        if failures is None or _refused_credentials(exc):
            raise RedditApiError(str(failure)) from exc
        log.error("%s", failure)
        failures.append(failure)
        return
    log.info("Reddit listing %s: %d submissions", spec, yielded)


def _listing_generator(reddit: praw.Reddit, spec: ListingSpec) -> ListingGenerator:
    source: Any
    if spec.kind == "front":
        source = reddit.front
    elif spec.kind == "subreddit":
        source = reddit.subreddit(spec.name)
    elif spec.kind == "domain":
        source = reddit.domain(spec.name)
    else:
        source = reddit.redditor(spec.name)
    if spec.sort == "search":
        return source.search(
            spec.query,
            sort=spec.search_sort,
            syntax=spec.syntax,
            time_filter=spec.time_filter,
            limit=spec.limit,
        )
    if spec.sort in TIMED_SORTS:
        return getattr(source, spec.sort)(time_filter=spec.time_filter, limit=spec.limit)
    return getattr(source, spec.sort)(limit=spec.limit)


def _refused_credentials(exc: Exception) -> bool:
    return isinstance(exc, ResponseException) and exc.response.status_code == 401


def _submission_record(submission: Submission) -> dict[str, Any]:
    # Read the listing's own data: attribute access on a PRAW object that lacks a field
    # would fetch the whole submission, one extra request per post.
    data = vars(submission)
    record = {name: data.get(name) for name in SUBMISSION_FIELDS}
    # PRAW wraps these two in lazy objects; their str() is the display name / username.
    # A deleted author is already None (PRAW maps "[deleted]" to None).
    record["subreddit"] = str(data["subreddit"]) if data.get("subreddit") is not None else None
    record["author"] = str(data["author"]) if data.get("author") is not None else None
    return record


def _describe(exc: Exception) -> str:
    """A short reason for an error message; prawcore's messages carry no credentials."""
    reason = f"{type(exc).__name__}: {exc}"
    if _refused_credentials(exc):
        reason += f" (check {ENV_CLIENT_ID}, {ENV_CLIENT_SECRET} and the app's type)"
    return reason
