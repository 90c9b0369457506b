"""Reddit API link source: submissions from subreddit, domain and user listings, via PRAW.

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

import praw
import requests
from praw.exceptions import PRAWException
from praw.models import Submission
from prawcore.exceptions import PrawcoreException, ResponseException

log = logging.getLogger(__name__)

ListingKind = Literal["subreddit", "domain", "user"]
ListingSort = Literal["new", "top", "hot"]
TIME_FILTERS = frozenset({"hour", "day", "week", "month", "year", "all"})

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


_KIND_PREFIX: dict[str, str] = {"subreddit": "r", "domain": "domain", "user": "user"}
_PREFIX_KIND = {prefix: kind for kind, prefix in _KIND_PREFIX.items()}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SPEC = re.compile(
    r"(?P<prefix>[a-z]+)/(?P<name>[^/?]+)/(?P<sort>[a-z]+)"
    r"(?:/(?P<time_filter>[a-z]+))?(?:\?limit=(?P<limit>[0-9]+))?"
)
_SYNTAX = "KIND/NAME/SORT[/TIME_FILTER][?limit=N], e.g. r/askreddit/top/week?limit=500"


@dataclass(frozen=True)
class ListingSpec:
    """One Reddit listing to read, written ``KIND/NAME/SORT[/TIME_FILTER][?limit=N]``.

    - KIND: ``r`` (a subreddit), ``domain`` (links to a site) or ``user`` (a redditor's
      overview, which mixes comments and submissions).
    - SORT: ``new``, ``top`` or ``hot``; TIME_FILTER (``top`` only): ``hour``, ``day``,
      ``week``, ``month``, ``year`` or ``all`` (the default).
    - ``?limit=N``: stop after N items; without it, read the listing to its end.

    Examples: ``r/askreddit/top/all``, ``r/askreddit/new``, ``domain/nytimes.com/top/week``,
    ``user/spez/top/all?limit=100``. ``str(spec)`` gives the canonical text, which
    ``parse`` reads back to an equal spec.
    """

    kind: ListingKind
    name: str
    sort: ListingSort
    time_filter: str = "all"
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KIND_PREFIX:
            raise ValueError(f"listing kind must be one of {sorted(_KIND_PREFIX)}: {self.kind!r}")
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"listing name must match {_NAME.pattern}: {self.name!r}")
        if self.sort not in get_args(ListingSort):
            raise ValueError(f"listing sort must be one of {get_args(ListingSort)}: {self.sort!r}")
        if self.time_filter not in TIME_FILTERS:
            raise ValueError(
                f"time filter must be one of {sorted(TIME_FILTERS)}: {self.time_filter!r}"
            )
        # Reddit ignores ``t`` on new/hot; refusing it keeps one spelling per listing.
        if self.sort != "top" and self.time_filter != "all":
            raise ValueError(f"a time filter only applies to top listings, not {self.sort!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"listing limit must be a positive integer: {self.limit!r}")

    @classmethod
    def parse(cls, text: str) -> ListingSpec:
        """Read ``KIND/NAME/SORT[/TIME_FILTER][?limit=N]``; a ValueError names bad text."""
        match = _SPEC.fullmatch(text)
        if match is None or match["prefix"] not in _PREFIX_KIND:
            raise ValueError(f"bad Reddit listing {text!r}: expected {_SYNTAX}")
        if match["sort"] != "top" and match["time_filter"] is not None:
            raise ValueError(
                f"bad Reddit listing {text!r}: a time filter only applies to top; "
                f"expected {_SYNTAX}"
            )
        try:
            return cls(
                kind=cast(ListingKind, _PREFIX_KIND[match["prefix"]]),
                name=match["name"],
                sort=cast(ListingSort, match["sort"]),
                time_filter=match["time_filter"] or "all",
                limit=int(match["limit"]) if match["limit"] else None,
            )
        except ValueError as exc:
            raise ValueError(f"bad Reddit listing {text!r}: {exc}; expected {_SYNTAX}") from None

    def __str__(self) -> str:
        text = f"{_KIND_PREFIX[self.kind]}/{self.name}/{self.sort}"
        if self.sort == "top":
            text += f"/{self.time_filter}"
        if self.limit is not None:
            text += f"?limit={self.limit}"
        return text


def iter_listing_submissions(
    credentials: RedditCredentials,
    listings: Iterable[ListingSpec],
    *,
    api_url: str | None = None,
    stats: Counter[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield every submission in ``listings``, in listing order, as a Pushshift-style dict.

    ``api_url`` replaces both Reddit hosts (``oauth.reddit.com`` for the API and
    ``www.reddit.com`` for the token), e.g. a proxy or a test fake. ``stats`` counts
    ``api_submissions`` (yielded) and ``not_a_submission`` (comments in user listings,
    skipped). Any API failure raises ``RedditApiError`` naming the listing.
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
            yield from _iter_listing(reddit, spec, counts)


def _iter_listing(
    reddit: praw.Reddit, spec: ListingSpec, counts: Counter[str]
) -> Iterator[dict[str, Any]]:
    yielded = 0
    try:
        for item in _listing_generator(reddit, spec):
            if not isinstance(item, Submission):
                counts["not_a_submission"] += 1
                continue
            counts["api_submissions"] += 1
            yielded += 1
            yield _submission_record(item)
    except (PrawcoreException, PRAWException) as exc:
        raise RedditApiError(f"Reddit listing {spec} failed: {_describe(exc)}") from exc
    log.info("Reddit listing %s: %d submissions", spec, yielded)


def _listing_generator(reddit: praw.Reddit, spec: ListingSpec) -> Iterator[Any]:
    if spec.kind == "subreddit":
        source: Any = reddit.subreddit(spec.name)
    elif spec.kind == "domain":
        source = reddit.domain(spec.name)
    else:
        source = reddit.redditor(spec.name)
    if spec.sort == "top":
        return source.top(time_filter=spec.time_filter, limit=spec.limit)
    if spec.sort == "new":
        return source.new(limit=spec.limit)
    return source.hot(limit=spec.limit)


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
    if isinstance(exc, ResponseException) and exc.response.status_code == 401:
        reason += f" (check {ENV_CLIENT_ID}, {ENV_CLIENT_SECRET} and the app's type)"
    return reason
