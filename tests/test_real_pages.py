"""Real pages that the pipeline once published badly (issue 16), each problem a test.

The pages are real Common Crawl / wget WARC records, read in place from the shared test
data (`$WEBTEXT_TEST_DATA/warc/`, provenance in its SOURCES.txt; never copied into the
repository) and run through `extract_page` and the quality rules as the extract stage
runs them. Each assertion names a property a reader of the dataset expects, not the text
of a page: no menu lines, no source line wraps, no Markdown syntax, headings and code
kept, spam rejected, Chinese words counted.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from conftest import _test_data_root, data_missing
from warcio.archiveiterator import ArchiveIterator

from scraping import quality
from scraping.extract import ExtractedPage, extract_page
from scraping.quality import QualityFilters

RULES = QualityFilters()

# url -> (archive in warc/, WARC-Record-ID): a page that is captured more than once is
# named by its record.
PAGES = {
    "http://037426.cn/": (
        "cc-main-2020-34.resiliparse.warc.gz",
        "<urn:uuid:29666a04-2c62-44ca-b0e5-83178f324260>",
    ),
    "http://0513mt.com/index.php/art/detail/id/8884.html": (
        "cc-main-2020-34.resiliparse.warc.gz",
        "<urn:uuid:dda783c9-b4da-466c-b336-d7f0c0dc4ad8>",
    ),
    "https://www.semanticscholar.org/research/research-team": (
        "dolma-sample-0000.warc.gz",
        "<urn:uuid:283E41D7-F686-4C3E-B7DA-E8D248A100C1>",
    ),
    "https://soldaini.net/lineage/": (
        "dolma-sample-0000.warc.gz",
        "<urn:uuid:4EEB300D-ACEE-4C16-B26A-CAA6DDCFAA5C>",
    ),
    "https://joe.cat/": (
        "dolma-sample-0000.warc.gz",
        "<urn:uuid:CA06BC4D-D071-4B11-A57B-5DE877ED358E>",
    ),
    "https://maria-antoniak.github.io/2023/07/04/notes-on-mastodon.html": (
        "dolma-sample-0000.warc.gz",
        "<urn:uuid:BD44DCDA-A6E8-4F18-95A0-8E564C8E8A39>",
    ),
    "https://maria-antoniak.github.io/2020/03/25/pip.html": (
        "dolma-sample-0000.warc.gz",
        "<urn:uuid:6443D6BC-07D9-4559-9D5A-E64D600E264D>",
    ),
    "https://dwadden.github.io/": (
        "dolma-sample-0000.warc.gz",
        "<urn:uuid:BD1C1938-6557-4C18-BDD6-4F4ED52F450B>",
    ),
    "https://homes.cs.washington.edu/~axz/": (
        "dolma-sample-0000.warc.gz",
        "<urn:uuid:993CB2D7-BC21-4635-A922-6962E287AD25>",
    ),
    "https://allenai.org/": (
        "dolma-sample-0001.warc.gz",
        "<urn:uuid:4E3DEF08-49CD-44B7-8211-7D93270996EE>",
    ),
    "https://allenai.org/reviz": (
        "dolma-sample-0001.warc.gz",
        "<urn:uuid:28B43542-8C58-4143-9121-92761B9C58BB>",
    ),
    "https://commoncrawl.org/": (
        "dolma-sample-0001.warc.gz",
        "<urn:uuid:C15F9306-316F-4858-8703-7DE188CE795F>",
    ),
}
ENGLISH = [url for url in PAGES if not url.startswith("http://0")]
_RECORDS: dict[str, tuple[bytes, str | None]] = {}


def _read_records(folder: Path) -> dict[str, tuple[bytes, str | None]]:
    wanted = {record_id: url for url, (_, record_id) in PAGES.items()}
    pages = {}
    for archive in sorted({name for name, _ in PAGES.values()}):
        with (folder / archive).open("rb") as stream:
            for record in ArchiveIterator(stream):
                url = wanted.get(record.rec_headers.get_header("WARC-Record-ID"))
                if url is not None:
                    content_type = record.http_headers.get_header("Content-Type")
                    pages[url] = (record.content_stream().read(), content_type)
    return pages


def record(url: str) -> tuple[bytes, str | None]:
    """The page's body and Content-Type, read once per session from the shared WARCs."""
    if not _RECORDS:
        folder = _test_data_root() / "warc"
        if not folder.is_dir():
            data_missing(f"real WARCs not found at {folder} (set WEBTEXT_TEST_DATA)")
        _RECORDS.update(_read_records(folder))
    return _RECORDS[url]


def extracted(url: str) -> ExtractedPage:
    body, content_type = record(url)
    page = extract_page(body, url, content_type)
    assert page is not None, url
    return page


def verdict(page: ExtractedPage) -> quality.Verdict:
    return RULES.check(page.text, page.language, page.language_score, page.title)


def test_the_shared_archives_hold_every_page() -> None:
    for url in PAGES:
        record(url)
    assert len(_RECORDS) == len(PAGES) == 12 and len(ENGLISH) == 10


@pytest.mark.parametrize("url", ENGLISH)
def test_text_is_laid_out_as_a_browser_renders_it(url: str) -> None:
    """No tabs, no source indentation or wraps, no Markdown table or bullet syntax."""
    page = extracted(url)
    lines = page.text.split("\n")
    code = _code_lines(url)
    for line in lines:
        if line in code:
            continue
        assert "\t" not in line and line == line.strip() and "  " not in line, repr(line)
        assert not line.startswith("|") and "|---" not in line, repr(line)
        assert line not in ("-", "*", "•"), lines
        assert not re.match(r"[-*] ", line), repr(line)
    assert "" not in lines
    assert len(page.language or "") == 2


@pytest.mark.parametrize("url", ENGLISH)
def test_good_pages_are_kept(url: str) -> None:
    assert verdict(extracted(url)).reason is None, (url, verdict(extracted(url)))


def test_no_navigation_menu_and_no_sentence_cut_at_inline_tags() -> None:
    """commoncrawl.org opened with 25 menu lines and rendered 'Over\\n250 billion\\n...'."""
    text = extracted("https://commoncrawl.org/").text
    lines = text.split("\n")
    for menu in ("The Data", "Web Graphs", "Mailing List Archive", "Contact Us", "Privacy Policy"):
        assert menu not in lines, lines[:10]
    assert "Over 250 billion pages spanning 15 years." in lines
    assert (
        "Common Crawl maintains a free, open repository of web crawl data that can be used "
        "by anyone." in lines
    )


def test_source_line_wraps_inside_a_paragraph_are_spaces() -> None:
    """joe.cat (the rescue path): 136 sentences broken where the HTML source wraps."""
    lines = extracted("https://joe.cat/").text.split("\n")
    assert any(
        line.startswith(
            "I am a research scientist at AI2. Previously, I obtained a PhD degree from the "
            "Language Technologies Institute at CMU specializing in Human-Computer Interaction"
        )
        for line in lines
    ), lines[:5]
    # a line never starts mid-sentence (lower case) after a line without final punctuation
    for before, after in itertools.pairwise(lines):
        assert not (after[:1].islower() and before[-1:].isalpha()), (before, after)


def test_tables_are_plain_lines_and_the_page_is_not_rejected() -> None:
    """soldaini.net/lineage/: 97 of 526 'words' were | or |---|, rejected non_alpha_words."""
    page = extracted("https://soldaini.net/lineage/")
    assert "|" not in page.text
    assert any(line.startswith("0 Luca Soldaini") for line in page.text.split("\n"))
    assert verdict(page).reason is None


def test_list_items_without_bare_bullets_and_not_rejected() -> None:
    """dwadden.github.io/: rejected duplicate_lines for 15 bare '-' lines."""
    page = extracted("https://dwadden.github.io/")
    assert "-" not in page.text.split("\n")
    assert "Entity-Centric Query Refinement" in page.text.split("\n")
    assert verdict(page).reason is None


def test_headings_kept_and_the_h1_is_the_title() -> None:
    """maria-antoniak.github.io posts: no h2 in the text, title = the site's og:title."""
    page = extracted("https://maria-antoniak.github.io/2023/07/04/notes-on-mastodon.html")
    assert page.title == "Some things to know about Mastodon"
    lines = page.text.split("\n")
    for heading in ("Conversations are broken", "Finding people and posts is hard"):
        assert heading in lines
    follows = lines.index("Conversations are broken") + 1
    assert lines[follows].startswith("When you click on a post to see all of its replies")


def test_pre_blocks_kept_verbatim() -> None:
    """pip.html: 0 of 3 <pre> blocks survived."""
    lines = extracted("https://maria-antoniak.github.io/2020/03/25/pip.html").text.split("\n")
    for code in ("YOUR_PROJECT/", "        __init__.py", "from .little_mallet_wrapper import ("):
        assert code in lines
    assert "import setuptools" in lines


def test_call_to_action_lines_are_dropped() -> None:
    allenai = extracted("https://allenai.org/").text.split("\n")
    assert "Learn more" not in allenai and "View open jobs" not in allenai
    s2 = extracted("https://www.semanticscholar.org/research/research-team").text
    assert "Follow us on Twitter" not in s2


def test_a_removed_block_does_not_glue_its_neighbours() -> None:
    """allenai.org/reviz: 'Try the demoPrototype' where a dropped heading stood between."""
    text = extracted("https://allenai.org/reviz").text
    assert "demoPrototype" not in text and "prototypePrototype" not in text


def test_spam_page_is_rejected_as_spam() -> None:
    """037426.cn: a porn-spam site with a hijacked English blurb, kept as English (1.0)."""
    found = verdict(extracted("http://037426.cn/"))
    assert found.reason == quality.SPAM_TERMS and found.detail


def test_chinese_prose_is_counted_in_characters_and_rejected_for_its_language() -> None:
    """0513mt.com: 2,000 characters of Chinese were 45 words, `too_short`."""
    page = extracted("http://0513mt.com/index.php/art/detail/id/8884.html")
    found = verdict(page)
    assert found.words > 1000
    assert found.reason == quality.LANGUAGE and found.detail.startswith("language zh (")


def _code_lines(url: str) -> set[str]:
    """Lines of the page's <pre> blocks: verbatim, so indentation is theirs."""
    from lxml import html

    body, _ = record(url)
    tree = html.fromstring(body)
    return {line.rstrip() for pre in tree.iter("pre") for line in pre.text_content().splitlines()}


def test_no_publication_date_from_a_cms_record_in_embedded_json() -> None:
    """allenai.org/ (a home page) got `published` 2019-12-21 from a `createdAt` of its
    embedded CMS state; a post keeps the date its page states."""
    assert extracted("https://allenai.org/").date is None
    post = extracted("https://maria-antoniak.github.io/2020/03/25/pip.html")
    assert post.date == "2020-03-25"
