"""The Reddit API link source, run through real PRAW against replayed real API responses."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prawcore.sessions
import pytest
from fake_reddit import FakeReddit
from hypothesis import given
from hypothesis import strategies as st

from scraping.links import collect_links
from scraping.reddit_api import (
    SEARCH_SORTS,
    SEARCH_SYNTAXES,
    SUBMISSION_FIELDS,
    TIME_FILTERS,
    TIMED_SORTS,
    ListingFailure,
    ListingSpec,
    RedditApiError,
    RedditCredentials,
    iter_listing_submissions,
)
from webtext.store import Store

SECRET = "s3cr3t-value-that-must-not-leak"
CREDENTIALS = RedditCredentials("webtext-client-id", SECRET, "webtext-tests/0.1 (by u/nobody)")
# The secret as it travels in the token request's Basic auth header.
SECRET_BASIC = base64.b64encode(f"{CREDENTIALS.client_id}:{SECRET}".encode()).decode()


# PRAW's cassettes of the listings the shared data lacks (front page, search, rising...).
REPO_CASSETTES = Path(__file__).parent / "cassettes" / "reddit"


@pytest.fixture(scope="session")
def cassettes(test_data: Path) -> Path:
    return test_data / "reddit" / "api-listings"


@pytest.fixture
def fake(cassettes: Path) -> Iterator[FakeReddit]:
    with FakeReddit([cassettes, REPO_CASSETTES]) as server:
        yield server


@pytest.fixture
def no_retry_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep prawcore's retries but skip their 0-4 s random backoff, to keep tests fast."""
    monkeypatch.setattr(prawcore.sessions.FiniteRetryStrategy, "_sleep_seconds", lambda self: None)


def recorded_pages(cassettes: Path, name: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(query of the recorded request, listing data of its response) for each GET."""
    path = cassettes / name
    if not path.exists():
        path = REPO_CASSETTES / f"{name}.gz"
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as handle:
        interactions = json.load(handle)["interactions"]
    pages = []
    for interaction in interactions:
        request = interaction["request"]
        if request["method"] == "GET":
            query = dict(pair.split("=", 1) for pair in request["uri"].split("?", 1)[1].split("&"))
            body = json.loads(interaction["response"]["body"]["string"])
            pages.append((query, body["data"]))
    return pages


def expected_record(child: dict[str, Any]) -> dict[str, Any]:
    """A submission record computed from the raw JSON, independently of PRAW."""
    data = child["data"]
    record = {name: data[name] for name in SUBMISSION_FIELDS}
    if record["author"] == "[deleted]":
        record["author"] = None
    return record


def read(fake: FakeReddit, *specs: str, stats: Counter[str] | None = None) -> list[dict]:
    listings = [ListingSpec.parse(spec) for spec in specs]
    return list(iter_listing_submissions(CREDENTIALS, listings, api_url=fake.url, stats=stats))


@pytest.mark.parametrize(
    ("spec", "posts"),
    # Reddit serves hot's stickied posts on top of the 100 asked for.
    [("r/askreddit/top/all", 100), ("r/askreddit/new", 100), ("r/askreddit/hot", 102)],
)
def test_subreddit_listing_yields_the_recorded_posts(
    fake: FakeReddit, cassettes: Path, spec: str, posts: int
) -> None:
    sort = spec.split("/")[2]
    [(recorded_query, page)] = recorded_pages(cassettes, f"TestSubredditListings.test_{sort}.json")
    assert len(page["children"]) == posts
    assert page["after"] is not None
    stats: Counter[str] = Counter()

    # The recorded page has an ``after``; the limit keeps PRAW from asking for page two.
    records = read(fake, f"{spec}?limit={posts}", stats=stats)

    assert records == [expected_record(child) for child in page["children"]]
    assert [r["id"] for r in records] == [c["data"]["id"] for c in page["children"]]
    assert stats == Counter(api_submissions=posts)
    [token, get] = fake.requests
    assert (token.method, token.path) == ("POST", "/api/v1/access_token")
    assert token.headers["Authorization"] == f"Basic {SECRET_BASIC}"
    assert (get.path, get.query.get("t")) == (f"/r/askreddit/{sort}", recorded_query.get("t"))
    assert get.headers["Authorization"] == "bearer <ACCESS_TOKEN>"
    assert get.headers["User-Agent"].startswith(CREDENTIALS.user_agent)


def test_user_listing_follows_after_through_all_pages(fake: FakeReddit, cassettes: Path) -> None:
    pages = recorded_pages(cassettes, "TestListingGenerator.test_exhaust_items.json")
    children = [child for _, page in pages for child in page["children"]]
    submissions = [child for child in children if child["kind"] == "t3"]
    comments = [child for child in children if child["kind"] == "t1"]
    assert (len(pages), len(submissions), len(comments)) == (11, 11, 990)
    stats: Counter[str] = Counter()

    records = read(fake, "user/spez/top/all", stats=stats)

    assert records == [expected_record(child) for child in submissions]
    assert stats == Counter(api_submissions=11, not_a_submission=990)
    gets = fake.gets()
    assert [g.path for g in gets] == ["/user/spez/"] * 11
    assert all((g.query["sort"], g.query["t"]) == ("top", "all") for g in gets)
    # Each request carries the previous page's ``after``, exactly as recorded.
    requested_after = [g.query.get("after") for g in gets]
    assert requested_after == [query.get("after") for query, _ in pages]
    assert requested_after == [None] + [page["after"] for _, page in pages[:-1]]
    assert pages[-1][1]["after"] is None


def test_empty_listing_yields_nothing(fake: FakeReddit) -> None:
    stats: Counter[str] = Counter()
    assert read(fake, "user/spez/top/hour", stats=stats) == []
    assert stats == Counter()
    [get] = fake.gets()
    assert (get.path, get.query["sort"], get.query["t"]) == ("/user/spez/", "top", "hour")


@pytest.mark.parametrize(
    ("spec", "path", "params"),
    [
        ("domain/nytimes.com/top/week", "/domain/nytimes.com/top", {"t": "week"}),
        ("domain/nytimes.com/new", "/domain/nytimes.com/new", {}),
        ("user/spez/hot", "/user/spez/", {"sort": "hot"}),
        ("r/python/top/day", "/r/python/top", {"t": "day"}),
    ],
)
def test_unrecorded_listing_requests_the_right_path_and_fails_clearly(
    fake: FakeReddit, spec: str, path: str, params: dict[str, str]
) -> None:
    first_page = r"failed after 0 submissions \(on its first page\): NotFound"
    failed = rf"listing {re.escape(spec)} {first_page}"
    with pytest.raises(RedditApiError, match=failed):
        read(fake, spec)
    [get] = fake.gets()
    assert get.path == path
    assert {k: v for k, v in get.query.items() if k not in ("limit", "raw_json")} == params


def test_rate_limit_headers_make_prawcore_wait(cassettes: Path) -> None:
    specs = ("r/askreddit/new?limit=100", "r/askreddit/hot?limit=100")
    with FakeReddit(cassettes) as unlimited:
        read(unlimited, *specs)
    first, second = unlimited.gets()
    assert second.time - first.time < 0.5

    exhausted = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1", "x-ratelimit-used": "600"}
    with FakeReddit(cassettes, extra_headers=exhausted) as limited:
        records = read(limited, *specs)
    first, second = limited.gets()
    assert len(records) == 200
    assert second.time - first.time >= 0.9


def test_auth_failure_raises_without_leaking_the_secret(cassettes: Path) -> None:
    with FakeReddit(cassettes, token_status=401) as fake:
        with pytest.raises(RedditApiError) as caught:
            read(fake, "r/askreddit/top/all?limit=100")
        [token] = fake.requests
    # The secret really was sent, so its absence below is meaningful.
    assert token.headers["Authorization"] == f"Basic {SECRET_BASIC}"
    message = str(caught.value)
    assert "r/askreddit/top/all?limit=100" in message
    assert "401" in message
    error: BaseException | None = caught.value
    while error is not None:
        assert SECRET not in f"{error} {error!r}"
        assert SECRET_BASIC not in f"{error} {error!r}"
        error = error.__cause__ or error.__context__
    assert SECRET not in repr(CREDENTIALS)
    assert SECRET not in str(CREDENTIALS)


def test_debug_logs_never_contain_the_secret(
    cassettes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for logger in (None, "prawcore", "urllib3", "scraping.reddit_api"):
        caplog.set_level(logging.DEBUG, logger=logger)
    with FakeReddit(cassettes) as fake:
        read(fake, "user/spez/top/all", "r/askreddit/top/all?limit=100")
    with FakeReddit(cassettes, token_status=401) as failing, pytest.raises(RedditApiError):
        read(failing, "r/askreddit/new")

    loggers = {record.name.split(".")[0] for record in caplog.records}
    assert {"prawcore", "urllib3", "scraping"} <= loggers  # the DEBUG capture really worked
    for record in caplog.records:
        text = f"{record.getMessage()} {record.args!r}"
        assert SECRET not in text
        assert SECRET_BASIC not in text


def test_server_errors_are_retried_then_raised(cassettes: Path, no_retry_backoff: None) -> None:
    with FakeReddit(cassettes, get_status=503) as fake, pytest.raises(RedditApiError) as caught:
        read(fake, "r/askreddit/hot?limit=100")
    assert "r/askreddit/hot?limit=100" in str(caught.value)
    assert "ServerError" in str(caught.value)
    assert len(fake.gets()) == 3  # prawcore's first try and two retries


def test_connection_error_raises_reddit_api_error(no_retry_backoff: None) -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listing = ListingSpec.parse("r/askreddit/new")
    with pytest.raises(RedditApiError, match="RequestException") as caught:
        list(iter_listing_submissions(CREDENTIALS, [listing], api_url=f"http://127.0.0.1:{port}"))
    assert "r/askreddit/new" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_credentials_from_env() -> None:
    environ = {
        "REDDIT_CLIENT_ID": "an-id",
        "REDDIT_CLIENT_SECRET": SECRET,
        "REDDIT_USER_AGENT": "webtext/0.1",
    }
    credentials = RedditCredentials.from_env(environ)
    assert credentials == RedditCredentials("an-id", SECRET, "webtext/0.1")
    assert SECRET not in repr(credentials)


def test_credentials_from_env_names_missing_variables_only() -> None:
    with pytest.raises(RedditApiError) as caught:
        RedditCredentials.from_env({})
    assert all(
        name in str(caught.value)
        for name in ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USER_AGENT")
    )

    partial = {"REDDIT_CLIENT_SECRET": SECRET, "REDDIT_USER_AGENT": "", "OTHER": "x"}
    with pytest.raises(RedditApiError) as caught:
        RedditCredentials.from_env(partial)
    message = str(caught.value)
    assert "REDDIT_CLIENT_ID" in message
    assert "REDDIT_USER_AGENT" in message  # empty counts as missing
    assert "REDDIT_CLIENT_SECRET" not in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("r/askreddit/top/all", ListingSpec("subreddit", "askreddit", "top"), None),
        ("r/askreddit/top", ListingSpec("subreddit", "askreddit", "top"), "r/askreddit/top/all"),
        ("r/askreddit/new", ListingSpec("subreddit", "askreddit", "new"), None),
        (
            "domain/nytimes.com/top/week",
            ListingSpec("domain", "nytimes.com", "top", "week"),
            None,
        ),
        ("user/spez/top/all", ListingSpec("user", "spez", "top"), None),
        ("user/spez/hot?limit=25", ListingSpec("user", "spez", "hot", limit=25), None),
        (
            "r/AskReddit/top/year?limit=1000",
            ListingSpec("subreddit", "AskReddit", "top", "year", 1000),
            None,
        ),
        ("front/top/all", ListingSpec("front", "", "top"), None),
        ("front/hot?limit=5", ListingSpec("front", "", "hot", limit=5), None),
        (
            "front/controversial",
            ListingSpec("front", "", "controversial"),
            "front/controversial/all",
        ),
        ("r/askreddit/rising", ListingSpec("subreddit", "askreddit", "rising"), None),
        ("domain/nytimes.com/rising", ListingSpec("domain", "nytimes.com", "rising"), None),
        (
            "user/spez/controversial/week",
            ListingSpec("user", "spez", "controversial", "week"),
            None,
        ),
        (
            "r/all/search?q=gpt-2 webtext",
            ListingSpec("subreddit", "all", "search", query="gpt-2 webtext"),
            "r/all/search?q=gpt-2+webtext&sort=relevance&t=all",
        ),
        (
            "r/science/search?t=year&q=title%3Acrispr&sort=top&syntax=lucene&limit=50",
            ListingSpec("subreddit", "science", "search", "year", 50, "title:crispr", "top"),
            "r/science/search?q=title%3Acrispr&sort=top&t=year&limit=50",
        ),
    ],
)
def test_listing_spec_parse(text: str, expected: ListingSpec, canonical: str | None) -> None:
    spec = ListingSpec.parse(text)
    assert spec == expected
    assert str(spec) == (canonical or text)
    assert ListingSpec.parse(str(spec)) == spec


@st.composite
def listing_specs(draw: st.DrawFn) -> ListingSpec:
    kind = draw(st.sampled_from(["subreddit", "domain", "user", "front"]))
    sorts = ["new", "top", "hot", "controversial"]
    sorts += [] if kind == "user" else ["rising"]
    sorts += ["search"] if kind == "subreddit" else []
    sort = draw(st.sampled_from(sorts))
    search: dict[str, Any] = {}
    if sort == "search":
        text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
        search = {
            "query": draw(text.filter(str.strip)),
            "search_sort": draw(st.sampled_from(SEARCH_SORTS)),
            "syntax": draw(st.sampled_from(SEARCH_SYNTAXES)),
        }
    name = st.from_regex(r"[A-Za-z0-9_.-]{1,24}", fullmatch=True)
    return ListingSpec(
        kind=kind,
        name="" if kind == "front" else draw(name),
        sort=sort,
        time_filter=draw(st.sampled_from(sorted(TIME_FILTERS))) if sort in TIMED_SORTS else "all",
        limit=draw(st.none() | st.integers(min_value=1, max_value=10_000)),
        **search,
    )


@given(listing_specs())
def test_listing_spec_str_round_trips(spec: ListingSpec) -> None:
    assert ListingSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        "askreddit",
        "r/askreddit",
        "/r/askreddit/top",
        "subreddit/askreddit/top",
        "user/spez/rising",
        "front/new/week",
        "front/askreddit/top",
        "r/all/search",
        "r/all/search?q=",
        "r/all/search/week?q=gpt",
        "r/all/search?q=gpt&sort=rising",
        "r/all/search?q=gpt&syntax=regex",
        "r/all/search?q=gpt&q=again",
        "r/askreddit/top?q=gpt",
        "domain/nytimes.com/search?q=gpt",
        "r/askreddit/top/forever",
        "r/askreddit/new/week",
        "r/askreddit/top/all/extra",
        "r/ask reddit/top",
        "r/askreddit/top?limit=0",
        "r/askreddit/top?limit=ten",
        "r/askreddit/top:100",
    ],
)
def test_listing_spec_parse_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        ListingSpec.parse(text)
    assert repr(text) in str(caught.value)
    assert "KIND/NAME/SORT[/TIME_FILTER][?limit=N]" in str(caught.value)


def test_listing_spec_validates_direct_construction() -> None:
    with pytest.raises(ValueError, match="time filter"):
        ListingSpec("subreddit", "askreddit", "top", "forever")
    with pytest.raises(ValueError, match="only applies to"):
        ListingSpec("subreddit", "askreddit", "hot", "week")
    with pytest.raises(ValueError, match="positive"):
        ListingSpec("user", "spez", "new", limit=0)


@pytest.mark.parametrize(
    ("spec", "cassette", "path", "params"),
    [
        ("front/top/all?limit=100", "TestFront.test_top", "/top", {"t": "all"}),
        (
            "front/controversial/all?limit=100",
            "TestFront.test_controversial",
            "/controversial",
            {"t": "all"},
        ),
        (
            "r/askreddit/rising?limit=100",
            "TestSubredditListings.test_rising",
            "/r/askreddit/rising",
            {},
        ),
        (
            "r/all/search?q=praw oauth search&syntax=cloudsearch",
            "TestSubreddit.test_search",
            "/r/all/search/",
            {
                "q": "praw oauth search",
                "sort": "relevance",
                "t": "all",
                "syntax": "cloudsearch",
                "restrict_sr": "False",  # r/all searches every subreddit
            },
        ),
    ],
)
def test_front_page_search_rising_and_controversial_yield_the_recorded_posts(
    fake: FakeReddit, spec: str, cassette: str, path: str, params: dict[str, str]
) -> None:
    [(_, page)] = recorded_pages(REPO_CASSETTES, f"{cassette}.json")
    stats: Counter[str] = Counter()

    records = read(fake, spec, stats=stats)

    assert records == [expected_record(child) for child in page["children"]]
    assert stats == Counter(api_submissions=len(page["children"])) and records
    [get] = fake.gets()
    assert get.path == path
    assert {k: v for k, v in get.query.items() if k not in ("limit", "raw_json")} == params


def test_a_failed_page_keeps_what_was_read_and_names_the_listing(
    fake: FakeReddit, cassettes: Path
) -> None:
    [(_, page)] = recorded_pages(cassettes, "TestSubredditListings.test_new.json")
    failures: list[ListingFailure] = []
    listings = [ListingSpec.parse(s) for s in ("r/askreddit/new", "r/askreddit/top?limit=100")]

    # No limit: PRAW asks for page two, which was never recorded: a 404.
    records = list(
        iter_listing_submissions(CREDENTIALS, listings, api_url=fake.url, failures=failures)
    )

    assert len(records) == 200  # page one of new, then the next listing, top
    assert records[:100] == [expected_record(child) for child in page["children"]]
    [failure] = failures
    assert (failure.listing, failure.submissions, failure.after) == (
        "r/askreddit/new",
        100,
        page["after"],
    )
    assert "NotFound" in failure.reason
    where = f"after 100 submissions (on the page after {page['after']})"
    assert f"r/askreddit/new failed {where}" in str(failure)
    assert [g.query.get("after") for g in fake.gets()] == [None, page["after"], None]


def test_a_listing_stage_with_a_failed_page_publishes_what_was_read_marked_incomplete(
    tmp_path: Path, fake: FakeReddit
) -> None:
    store = Store(str(tmp_path / "store"))
    listings = [ListingSpec.parse(s) for s in ("r/askreddit/new", "r/askreddit/top?limit=100")]

    result = collect_links(store, listings=listings, credentials=CREDENTIALS, api_url=fake.url)

    stats = store.manifest(result.ref).stats
    assert stats["counts"]["api_submissions"] == 200 and stats["counts"]["records"] == 200
    assert stats["incomplete"] is True
    [failed] = stats["failed_listings"]
    assert failed.startswith("Reddit listing r/askreddit/new failed after 100 submissions")
    assert SECRET not in json.dumps(stats)


def test_a_listing_stage_that_read_nothing_fails_naming_the_listing(
    tmp_path: Path, cassettes: Path
) -> None:
    store = Store(str(tmp_path / "store"))
    with FakeReddit(cassettes) as fake, pytest.raises(RedditApiError, match="r/python/new failed"):
        collect_links(
            store,
            listings=[ListingSpec.parse("r/python/new")],
            credentials=CREDENTIALS,
            api_url=fake.url,
        )
    # Refused credentials fail the run whatever was read: no listing could succeed.
    listings = [ListingSpec.parse("r/askreddit/new?limit=100")]
    with FakeReddit(cassettes, token_status=401) as fake, pytest.raises(RedditApiError) as caught:
        collect_links(store, listings=listings, credentials=CREDENTIALS, api_url=fake.url)
    assert "401" in str(caught.value) and SECRET not in str(caught.value)
    assert store.versions("links") == []
