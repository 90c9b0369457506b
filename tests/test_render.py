"""trafilatura's output tree rendered as a browser lays the page out (scraping/render.py)."""

from __future__ import annotations

from lxml import etree

from scraping.render import render_text


def render(xml: str) -> str:
    return render_text(etree.fromstring(xml))


def test_whitespace_inside_a_block_collapses_and_inline_elements_flow() -> None:
    body = """<body><p>
        I am a research scientist.   Previously, I obtained a PhD
          from <hi>CMU</hi>,\tspecializing in <ref>HCI</ref>.
    </p><head rend="h2">Over <hi>250 billion</hi> pages</head></body>"""
    assert render(body) == (
        "I am a research scientist. Previously, I obtained a PhD from CMU, specializing in HCI.\n"
        "Over 250 billion pages"
    )


def test_line_breaks_lists_and_tables_are_plain_lines() -> None:
    body = """<body><p>Entity-Centric Query Refinement<lb/>David Wadden, Kenton Lee<lb/>
    </p><list><item>first item</item><item><p>second</p></item></list>
    <table><row><cell>0</cell><cell>Luca Soldaini</cell><cell>Georgetown</cell></row>
    <row><cell>1</cell><cell>Nazli Goharian</cell></row></table></body>"""
    assert render(body).split("\n") == [
        "Entity-Centric Query Refinement",
        "David Wadden, Kenton Lee",
        "first item",
        "second",
        "0 Luca Soldaini Georgetown",
        "1 Nazli Goharian",
    ]


def test_pre_is_verbatim_and_inline_code_is_not() -> None:
    body = """<body><p>Run <code>pip install x</code> first:</p>
    <code>YOUR_PROJECT/
    setup.py
\tREADME.md</code><p>\u200d</p></body>"""
    assert render(body).split("\n") == [
        "Run pip install x first:",
        "YOUR_PROJECT/",
        "    setup.py",
        "    README.md",
    ]


def test_comments_add_nothing_and_nfc() -> None:
    body = "<body><p>Cafe\u0301 <!-- a note --> open</p></body>"
    assert render(body) == "Café open"
