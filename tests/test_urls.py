"""URL normalisation: canonical spellings, never a merge of two distinct pages."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.provisional import urls

from scraping.urls import UrlError, normalize_url


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTP://Example.COM", "http://example.com/"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("https://example.com:80/a", "https://example.com:80/a"),
        ("http://example.com/a#section-2", "http://example.com/a"),
        ("http://example.com/a?utm_source=reddit&id=7&fbclid=x", "http://example.com/a?id=7"),
        ("http://example.com/?UTM_Campaign=x", "http://example.com/"),
        ("http://example.com/a?", "http://example.com/a"),
        ("http://example.com/%7Euser/%41b", "http://example.com/~user/Ab"),
        ("http://example.com/a%2fb", "http://example.com/a%2Fb"),
        ("http://example.com/a b", "http://example.com/a%20b"),
        ("http://example.com/caf\u00e9", "http://example.com/caf%C3%A9"),
        ("http://example.com/a/./b/../c", "http://example.com/a/c"),
        ("http://example.com/a/b/..", "http://example.com/a/"),
        ("http://b\u00fccher.example/x", "http://xn--bcher-kva.example/x"),
        ("http://[2001:DB8::1]:80/", "http://[2001:db8::1]/"),
        ("  http://example.com/x  ", "http://example.com/x"),
        # Old Pushshift records carry HTML-escaped URLs.
        ("http://example.com/a?b=1&amp;c=2", "http://example.com/a?b=1&c=2"),
        # A hashbang route names a page of its own.
        ("https://twitter.com/#!/user", "https://twitter.com/#!/user"),
        ("http://example.com/100%", "http://example.com/100%25"),
        ("http://Example.com./a", "http://example.com/a"),
    ],
)
def test_examples(raw: str, expected: str) -> None:
    assert normalize_url(raw) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://example.com/a", "http://example.com/a/"),  # a trailing slash can matter
        ("http://example.com/A", "http://example.com/a"),  # paths are case-sensitive
        ("http://example.com/?a=1&b=2", "http://example.com/?b=2&a=1"),  # parameter order
        ("http://example.com/a%2Fb", "http://example.com/a/b"),  # an escaped slash
        ("http://example.com/?q=a%26b", "http://example.com/?q=a&b"),  # an escaped '&'
        ("http://example.com/?q=a+b", "http://example.com/?q=a%20b"),
        ("http://example.com/#!/one", "http://example.com/#!/two"),
        ("http://example.com/", "https://example.com/"),
        ("http://example.com/?ref=a", "http://example.com/?ref=b"),  # not a tracking param
        ("http://www.example.com/", "http://example.com/"),
    ],
)
def test_distinct_pages_stay_distinct(a: str, b: str) -> None:
    assert normalize_url(a) != normalize_url(b)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ftp://example.com/file",
        "javascript:alert(1)",
        "mailto:someone@example.com",
        "/r/python/comments/abc",
        "http://",
        "http://exa mple.com/",
        "http://example.com:99999/",
        "http://[not-ipv6]/",
        "http://example.com/\nx",
        "http://user:secret@example.com/",  # credentials would be sent to the host
    ],
)
def test_malformed_or_non_http_urls_are_refused(bad: str) -> None:
    with pytest.raises(UrlError):
        normalize_url(bad)


@settings(max_examples=400, deadline=None)
@given(urls())
@example("http://example.com/%2e%2E/a")
@example("http://example.com/a?%75tm_source=x")
@example("http://example.com/#!a#b")
def test_normalising_twice_changes_nothing(url: str) -> None:
    once = normalize_url(url)
    assert normalize_url(once) == once


_segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(path=st.lists(_segment, max_size=4), query=st.lists(_segment, max_size=3))
def test_idempotent_on_arbitrary_unicode_paths_and_queries(path: list[str], query: list[str]):
    url = "http://example.com/" + "/".join(path) + ("?" + "&".join(query) if query else "")
    try:
        once = normalize_url(url)
    except UrlError:
        return
    assert normalize_url(once) == once
