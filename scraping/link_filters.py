"""Which Reddit submissions seed WebText, each rule configurable and each drop counted.

Rules are checked in a fixed order and a dropped submission is counted under the first
rule it fails, so the counts of one run add up to its input. The karma rule is not here:
it is applied per URL after aggregation (see `scraping.links`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scraping.dumps import LINE_TOO_LONG, MALFORMED_LINE, RedditRecord
from scraping.urls import UrlError, normalize_url, url_host

# Drop reasons, in the order they are checked (a dump's lines first: see scraping.dumps).
MALFORMED_RECORD = "malformed_record"
OUT_OF_TIME_RANGE = "out_of_time_range"
SELF_POST = "self_post"
NSFW = "nsfw"
SUBREDDIT_BLOCKLIST = "subreddit_blocklist"
INVALID_URL = "invalid_url"
WIKIPEDIA = "wikipedia"
DOMAIN_BLOCKLIST = "domain_blocklist"
EXTENSION_BLOCKLIST = "extension_blocklist"
KARMA_BELOW_MIN = "karma_below_min"
DROP_REASONS = (
    MALFORMED_LINE,
    LINE_TOO_LONG,
    MALFORMED_RECORD,
    OUT_OF_TIME_RANGE,
    SELF_POST,
    NSFW,
    SUBREDDIT_BLOCKLIST,
    INVALID_URL,
    WIKIPEDIA,
    DOMAIN_BLOCKLIST,
    EXTENSION_BLOCKLIST,
    KARMA_BELOW_MIN,
)

# A record outside these bounds is malformed: no Reddit score comes near 2**31 (the
# highest are under a million), and it keeps a URL's summed karma inside int64; a time
# must be one a timestamp column can hold and Python can read back (years 1 to 9999).
MAX_ABS_SCORE = 2**31
EARLIEST_TIME = datetime.min.replace(tzinfo=UTC).timestamp()
LATEST_TIME = datetime.max.replace(tzinfo=UTC).timestamp()


def load_list(name: str) -> tuple[str, ...]:
    """A blocklist shipped in `scraping/blocklists/<name>.txt`."""
    text = resources.files("scraping").joinpath("blocklists", f"{name}.txt").read_text()
    return parse_list(text)


def parse_list(text: str) -> tuple[str, ...]:
    entries = (line.split("#", 1)[0].strip().lower() for line in text.splitlines())
    return tuple(sorted({entry for entry in entries if entry}))


@dataclass(frozen=True)
class LinkFilters:
    """The settings of the link stage. Every field is part of the output's version id."""

    min_karma: int = 3
    keep_self_posts: bool = False
    keep_nsfw: bool = False
    keep_wikipedia: bool = False
    # Unix seconds, half-open [created_after, created_before); None means unbounded.
    # WebText used links up to December 2017: created_before=1514764800.
    created_after: float | None = None
    created_before: float | None = None
    subreddit_blocklist: tuple[str, ...] = field(default_factory=lambda: load_list("subreddits"))
    domain_blocklist: tuple[str, ...] = field(default_factory=lambda: load_list("domains"))
    extension_blocklist: tuple[str, ...] = field(default_factory=lambda: load_list("extensions"))

    @classmethod
    def from_options(
        cls,
        *,
        created_after: str | None = None,
        created_before: str | None = None,
        subreddit_blocklist: str | Path | None = None,
        domain_blocklist: str | Path | None = None,
        extension_blocklist: str | Path | None = None,
        **settings: Any,
    ) -> LinkFilters:
        """Settings as people type them: ISO dates (UTC), blocklists as files (None: ours)."""
        lists = {
            "subreddit_blocklist": subreddit_blocklist,
            "domain_blocklist": domain_blocklist,
            "extension_blocklist": extension_blocklist,
        }
        for name, path in lists.items():
            if path is not None:
                settings[name] = parse_list(Path(path).read_text())
        return cls(
            created_after=utc_timestamp(created_after) if created_after else None,
            created_before=utc_timestamp(created_before) if created_before else None,
            **settings,
        )

    def parameters(self) -> dict[str, object]:
        """JSON-able settings; long lists are summarised by count and hash."""
        params: dict[str, object] = asdict(self)
        for name in ("subreddit_blocklist", "domain_blocklist", "extension_blocklist"):
            entries = params.pop(name)
            digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:12]
            params[name] = {"entries": len(entries), "sha256": digest}
        return params


@dataclass(frozen=True, slots=True)
class Submission:
    """A submission that passed every per-submission rule, with its URL normalised."""

    post_id: str
    url: str
    domain: str
    karma: int
    subreddit: str
    created_utc: int
    title: str


class SubmissionFilter:
    """Applies `LinkFilters` to one record at a time: a `Submission`, or a drop reason."""

    def __init__(self, filters: LinkFilters) -> None:
        self.filters = filters
        self._subreddits = frozenset(filters.subreddit_blocklist)
        self._domains = frozenset(filters.domain_blocklist)
        self._extensions = frozenset(filters.extension_blocklist)

    def __call__(self, record: RedditRecord) -> Submission | str:
        f = self.filters
        created = _as_number(record.created_utc)
        karma = _as_number(record.score)
        if (
            record.id is None
            or record.url is None
            or created is None
            or karma is None
            # Written as "not inside", so that NaN (never inside) is caught too.
            or not EARLIEST_TIME <= created < LATEST_TIME
            or not -MAX_ABS_SCORE < karma < MAX_ABS_SCORE
        ):
            return MALFORMED_RECORD
        if (f.created_after is not None and created < f.created_after) or (
            f.created_before is not None and created >= f.created_before
        ):
            return OUT_OF_TIME_RANGE
        subreddit = record.subreddit or ""
        if not f.keep_self_posts and (
            record.is_self or (record.domain or "").lower().startswith("self.")
        ):
            return SELF_POST
        if not f.keep_nsfw and record.over_18:
            return NSFW
        if subreddit.lower() in self._subreddits:
            return SUBREDDIT_BLOCKLIST
        try:
            url = normalize_url(record.url)
        except UrlError:
            return INVALID_URL
        host = url_host(url)
        if not f.keep_wikipedia and _host_matches(host, ("wikipedia.org",)):
            return WIKIPEDIA
        if _host_matches(host, self._domains):
            return DOMAIN_BLOCKLIST
        if self._extensions and _extension(url) in self._extensions:
            return EXTENSION_BLOCKLIST
        return Submission(
            post_id=str(record.id),
            url=url,
            domain=host,
            karma=int(karma),
            subreddit=subreddit,
            created_utc=int(created),
            title=record.title or "",
        )


def _as_number(value: int | float | str | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return value


def _host_matches(host: str, suffixes: frozenset[str] | tuple[str, ...]) -> bool:
    """True when `host` is an entry or a subdomain of one (`i.imgur.com` of `imgur.com`)."""
    if host in suffixes:
        return True
    dot = host.find(".")
    while dot != -1:
        if host[dot + 1 :] in suffixes:
            return True
        dot = host.find(".", dot + 1)
    return False


def _extension(url: str) -> str:
    last_segment = urlsplit(url).path.rpartition("/")[2]
    stem, dot, suffix = last_segment.rpartition(".")
    return suffix.lower() if dot and stem else ""


def utc_timestamp(text: str) -> float:
    """`2017-12-31` or an ISO date-time (UTC unless it says otherwise) as Unix seconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
