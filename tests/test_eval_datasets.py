"""Evaluation-set readers and invertible detokenizers, on the real sets where we have them
and on small files in each published format where we do not (full CBT, enwik8, text8, 1BW)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation import datasets
from evaluation.datasets import (
    STOP_WORDS,
    TASKS,
    Choice,
    Cloze,
    Document,
    load_task,
    wikitext_articles,
)
from evaluation.detokenize import CBT, ONE_BILLION_WORD, PTB, WIKITEXT, Detokenizer

CBT_SLICES = "cbt_format_only/cbtest_{}.SLICE.txt"


@pytest.fixture(scope="module")
def eval_root(test_data: Path) -> Path:
    return test_data / "eval"


# Detokenizers: hand examples


@pytest.mark.parametrize(
    ("detokenizer", "line", "text"),
    [
        (WIKITEXT, " the 1 @,@ 000 @-@ year @-@ old ", "the 1,000-year-old"),
        (WIKITEXT, " = Robert Boulter = ", "= Robert Boulter ="),
        (WIKITEXT, " = = Early life = = ", "== Early life =="),
        (WIKITEXT, " ", ""),
        (
            WIKITEXT,
            ' In 2004 he landed a role as " Craig " in " Teddy \'s Story " ( 2005 ) . ',
            'In 2004 he landed a role as "Craig" in "Teddy\'s Story" (2005).',
        ),
        (WIKITEXT, " it was 3 @.@ 5 km / h ; I don 't know . ", "it was 3.5 km/h; I don't know."),
        (
            WIKITEXT,
            " the ships ' guns , No. 1 in the U.S. Navy . ",
            "the ships' guns, No. 1 in the U.S. Navy.",
        ),
        (PTB, " no it was n't black monday ", "no it wasn't black monday"),
        (PTB, " the mgm\\/ua deal was $ N million ", "the mgm/ua deal was $N million"),
        (PTB, " investors ' shares in u.s. corp. ", "investors' shares in u.s. corp."),
        (CBT, "-LRB- 3 -RRB- Hollenmadchen .", "(3) Hollenmadchen."),
        (
            CBT,
            "` Willingly , if you like , ' said the other .",
            "'Willingly, if you like,' said the other.",
        ),
        (CBT, "`` No matter , '' said Little Toomai .", '"No matter," said Little Toomai.'),
        (
            CBT,
            "The other replied , ' I do not know , ' he said .",
            "The other replied, ' I do not know,' he said.",
        ),
        (
            ONE_BILLION_WORD,
            '" We \'re pleased , " Mr. Smith said .',
            '"We\'re pleased," Mr. Smith said.',
        ),
        (ONE_BILLION_WORD, "He didn 't say it in the 1990 's .", "He didn't say it in the 1990's."),
    ],
)
def test_hand_examples(detokenizer: Detokenizer, line: str, text: str) -> None:
    print(repr(line), "->", repr(text))
    assert detokenizer.checked(line) == (text, True)
    assert detokenizer.detokenize_line(line) == text
    assert detokenizer.retokenize(text) == line


def test_a_line_that_does_not_invert_is_kept_and_counted() -> None:
    # WikiText splits "1,000" as "1 @,@ 000"; a published "1,000th" cannot come back
    line = " the 1,000th visitor , a 2 @,@ 000 @-@ year tradition "
    assert WIKITEXT.retokenize(WIKITEXT.detokenize(line)) != line
    assert WIKITEXT.detokenize_line(line) == line
    lines, left_as_is = WIKITEXT.detokenize_lines([line, " = Title = "])
    assert lines == [line, "= Title ="] and left_as_is == 1


# Detokenizers: every line of the real sets


def share_detokenized(detokenizer: Detokenizer, lines: list[str]) -> float:
    """Check every line inverts; return the share detokenized of those with something to
    detokenize (more than the padding)."""
    candidates = changed = 0
    for line in lines:
        out, detokenized = detokenizer.checked(line)
        assert detokenizer.retokenize(out) == line if detokenized else out == line, line
        if detokenizer.detokenize(line) != " ".join(line.split()):
            candidates += 1
            changed += detokenized
    return changed / candidates


@pytest.mark.parametrize(
    ("detokenizer", "path"),
    [
        (WIKITEXT, "wikitext2/wiki.test.tokens"),
        (WIKITEXT, "wikitext2/wiki.test.raw"),
        (WIKITEXT, "wikitext103/wiki.test.tokens"),
        (PTB, "ptb/ptb.test.txt"),
    ],
)
def test_real_lines_invert(eval_root: Path, detokenizer: Detokenizer, path: str) -> None:
    lines = (eval_root / path).read_text(encoding="utf-8").splitlines()
    share = share_detokenized(detokenizer, lines)
    print(path, f"{share:.4f} of lines with something to detokenize detokenized")
    assert share >= 0.99


def test_cbt_lines_invert(eval_root: Path) -> None:
    sentences = []
    for kind in ("CN_test_2500ex", "NE_test_2500ex", "CN_valid_2000ex", "NE_valid_2000ex"):
        text = (eval_root / CBT_SLICES.format(kind)).read_text(encoding="utf-8")
        sentences += [line.split(" ", 1)[1].split("\t")[0] for line in text.splitlines() if line]
    assert len(sentences) == 84
    assert share_detokenized(CBT, sentences) == 1.0


# Real sets: counts and known items


def test_wikitext_units_and_articles(eval_root: Path) -> None:
    for task, path in [
        ("wikitext2", None),
        ("wikitext103", None),
        ("wikitext2", eval_root / "wikitext2/wiki.test.raw"),
    ]:
        eval_set = load_task(task, eval_root, path)
        assert sum(d.units for d in eval_set.items) == 245_569
        assert len(eval_set.items) == 62 and not eval_set.skipped
        assert eval_set.lines_not_detokenized < 25
        assert (eval_set.kind, eval_set.unit) == ("perplexity", "word")
    first = eval_set.items[0]
    assert first.text.startswith("\n= Robert Boulter =\n\nRobert Boulter is an English film,")
    assert "guest-starring role" in first.text
    assert first.original.startswith(" \n = Robert Boulter = \n \n Robert Boulter is")
    raw = eval_root / "wikitext2/wiki.test.raw"
    articles = wikitext_articles(raw)
    assert "".join(articles) == raw.read_text(encoding="utf-8")
    assert [a.split("\n")[0] for a in articles[1:3]] == [
        " = Du Fu = ",
        " = Kiss You ( One Direction song ) = ",
    ]


def test_ptb(eval_root: Path) -> None:
    eval_set = load_task("ptb", eval_root)
    assert sum(d.units for d in eval_set.items) == 82_430
    assert len(eval_set.items) == 38 and eval_set.lines_not_detokenized == 0
    first = eval_set.items[0]
    assert first.text.startswith("no it wasn't black monday\nbut while the new york stock")
    assert first.text.count("\n") == 99 and first.original.count("\n") == 100


def test_lambada(eval_root: Path) -> None:
    eval_set = load_task("lambada", eval_root)
    assert len(eval_set.items) == 5153 and not eval_set.skipped
    first = eval_set.items[0]
    assert isinstance(first, Cloze) and first.target == "signs"
    assert first.context.startswith("In my palm is a clear stone, and inside it is a small")
    assert first.context.endswith("his mouth curved in a confident grin, I don't care about")
    assert (eval_set.kind, eval_set.unit) == ("cloze", None)


def test_winograd(eval_root: Path) -> None:
    eval_set = load_task("winograd", eval_root)
    assert len(eval_set.items) == 273
    assert all(len(c.options) == 2 and c.gold in (0, 1) for c in eval_set.items)
    assert eval_set.items[0] == Choice(
        (
            (
                "The city councilmen refused the demonstrators a permit because the city "
                "councilmen",
                " feared violence.",
            ),
            (
                "The city councilmen refused the demonstrators a permit because the demonstrators",
                " feared violence.",
            ),
        ),
        0,
    )


@pytest.mark.parametrize(
    ("task", "kind", "gold", "answer", "context_end", "continuation"),
    [
        (
            "cbt-cn",
            "CN_test_2500ex",
            3,
            "man",
            "maiden comes to the spring. Do you think she will see that young",
            " man sitting under the tree?'",
        ),
        (
            "cbt-ne",
            "NE_valid_2000ex",
            0,
            "Chuck",
            "Suddenly Polly gave a little scream of fright. Johnny",
            " Chuck looked up to see a dog almost upon her.",
        ),
    ],
)
def test_cbt_slices(
    eval_root: Path,
    task: str,
    kind: str,
    gold: int,
    answer: str,
    context_end: str,
    continuation: str,
) -> None:
    eval_set = load_task(task, eval_root, eval_root / CBT_SLICES.format(kind))
    assert len(eval_set.items) == 1 and not eval_set.skipped
    choice = eval_set.items[0]
    assert len(choice.options) == 10 and choice.gold == gold
    context, text = choice.options[gold]
    assert context.endswith(context_end) and text == continuation
    assert all(c == context for c, _ in choice.options)
    assert all(
        t.startswith(" ") and t.endswith(continuation[len(answer) + 1 :]) for _, t in choice.options
    )


def test_cbt_text_glued_to_the_blank_moves_to_the_continuation(tmp_path: Path) -> None:
    lines = [f"{n} Sentence number {n} ." for n in range(1, 21)]
    lines.append("21 He cried , ` XXXXX ! '\tdog\t\tcat|dog")
    path = tmp_path / "cbt.txt"
    path.write_text("\n".join(lines) + "\n")
    (choice,) = load_task("cbt-cn", tmp_path, path).items
    assert choice.options[1] == (
        " ".join(f"Sentence number {n}." for n in range(1, 21)) + " He cried,",
        " 'dog!'",
    )


# Malformed records: skipped, reported with path:line, reading goes on


def test_malformed_lambada_lines_are_skipped(eval_root: Path, tmp_path: Path) -> None:
    good = (eval_root / "lambada/lambada_test.jsonl").read_bytes().splitlines(keepends=True)
    bad = [b"{not json\n", b'{"txt": "a b"}\n', b"[1, 2]\n", b'{"text": "\xff\xfe oops"}\n']
    path = tmp_path / "lambada.jsonl"
    path.write_bytes(b"".join([good[0], *bad, b"\n", good[1]]))
    eval_set = load_task("lambada", tmp_path, path)
    assert len(eval_set.items) == 2
    assert [s.split(": ", 1)[0] for s in eval_set.skipped] == [f"{path}:{n}" for n in range(2, 7)]
    assert "bad JSON" in eval_set.skipped[0] and "undecodable" in eval_set.skipped[3]


def test_malformed_winograd_lines_are_skipped(eval_root: Path, tmp_path: Path) -> None:
    good = (eval_root / "winograd/winograd_wsc273.llm-foundry.jsonl").read_text().splitlines()
    bad = json.loads(good[0]) | {"gold": 2}
    path = tmp_path / "wsc.jsonl"
    path.write_text("\n".join([good[0], json.dumps(bad), good[1]]) + "\n")
    eval_set = load_task("winograd", tmp_path, path)
    assert len(eval_set.items) == 2 and eval_set.skipped[0].startswith(f"{path}:2: ")


def test_malformed_cbt_examples_are_skipped(eval_root: Path, tmp_path: Path) -> None:
    example = (eval_root / CBT_SLICES.format("CN_test_2500ex")).read_text().strip().split("\n")
    short = example[:19] + example[20:]
    wrong_answer = [*example[:20], example[20].replace("\tman\t", "\twoman\t")]
    path = tmp_path / "cbt.txt"
    path.write_text("\n\n".join("\n".join(e) for e in [short, wrong_answer, example]) + "\n")
    eval_set = load_task("cbt-cn", tmp_path, path)
    assert len(eval_set.items) == 1 and eval_set.items[0].gold == 3
    assert eval_set.skipped == [
        f"{path}:1: an example has 21 lines, this one 20",
        f"{path}:22: the answer 'woman' is not among the candidates",
    ]


def test_undecodable_wikitext_line_is_skipped(eval_root: Path, tmp_path: Path) -> None:
    lines = (eval_root / "wikitext2/wiki.test.tokens").read_bytes().splitlines(keepends=True)
    path = tmp_path / "wiki.test.tokens"
    path.write_bytes(b"".join(lines[:10]) + b" caf\xe9 \n" + b"".join(lines[10:200]))
    eval_set = load_task("wikitext2", tmp_path, path)
    assert eval_set.skipped == [f"{path}:11: undecodable bytes at 4"]
    assert sum(d.units for d in eval_set.items) == sum(len(x.split()) + 1 for x in lines[:200])


def test_file_where_nothing_parses(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text("{oops\n[]\n")
    with pytest.raises(ValueError, match=f"lambada: nothing could be read from {path}"):
        load_task("lambada", tmp_path, path)


def test_unknown_task_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown task 'wikitext4'.*wikitext2.*1bw"):
        load_task("wikitext4", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"enwik8: no file at .*enwik8/enwik8"):
        load_task("enwik8", tmp_path)


def test_tasks(eval_root: Path) -> None:
    assert set(TASKS) == {
        "lambada", "wikitext2", "wikitext103", "ptb", "1bw", "enwik8", "text8", "cbt-cn",
        "cbt-ne", "winograd", "nq_open", "wmt14-fr-en", "wmt14-en-fr", "coqa", "cnn_dailymail",
    }  # fmt: skip
    present = {name for name, spec in TASKS.items() if (eval_root / spec.path).exists()}
    assert present == {
        "lambada", "wikitext2", "wikitext103", "ptb", "winograd", "nq_open", "wmt14-fr-en",
        "wmt14-en-fr",
    }  # fmt: skip
    assert {TASKS[n].unit for n in ("enwik8", "text8", "ptb")} == {"byte", "char", "word"}
    assert {"the", "a", "of", "and", "to"} <= STOP_WORDS and "signs" not in STOP_WORDS
    assert 120 <= len(STOP_WORDS) <= 200


# Sets not available offline: small files in their published formats


def test_one_billion_word(tmp_path: Path) -> None:
    sentences = [
        '" We \'re pleased with the results , " Mr. Smith said .',
        "Shares of Apple Inc. rose 2.5 percent to $ 185.50 on Tuesday .",
        "",
        "He didn 't say ( or know ) how much the U.S. would pay .",
    ]
    path = tmp_path / "news.en.heldout-00000-of-00050"
    path.write_text("\n".join(sentences) + "\n")
    eval_set = load_task("1bw", tmp_path / "none", path)
    assert [d.text for d in eval_set.items] == [
        '"We\'re pleased with the results," Mr. Smith said.',
        "Shares of Apple Inc. rose 2.5 percent to $185.50 on Tuesday.",
        "He didn't say (or know) how much the U.S. would pay.",
    ]
    assert [d.units for d in eval_set.items] == [14, 14, 16]  # words + </S>
    assert [d.original for d in eval_set.items] == sentences[:2] + sentences[3:]
    assert eval_set.skipped == [f"{path}:3: empty line"] and eval_set.lines_not_detokenized == 0


@pytest.fixture
def small_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    """enwik8/text8 of 1,000 bytes with a 100-byte test split, in 16-byte-ish documents."""
    for name, size in [("ENWIK8_BYTES", 1000), ("ENWIK8_TEST_BYTES", 100)]:
        monkeypatch.setattr(datasets, name, size)
    for name, size in [("TEXT8_CHARS", 1000), ("TEXT8_TEST_CHARS", 100), ("CHUNK_BYTES", 16)]:
        monkeypatch.setattr(datasets, name, size)


def test_enwik8_test_split(small_splits: None, tmp_path: Path) -> None:
    # 900 bytes before the test split, which starts inside "é" and holds a byte that is
    # no UTF-8 at all
    e_acute = "é".encode()
    test = e_acute[1:] + b"ab\n<text>caf\xc3\xa9 \xff</text>\n" + b"x" * 30 + b"\n"
    test += b"q" * (100 - len(test) - 1) + b"\n"
    (tmp_path / "enwik8").mkdir()
    path = tmp_path / "enwik8" / "enwik8"
    path.write_bytes(b"<" * 899 + e_acute[:1] + test)
    assert path.stat().st_size == 1000 and len(test) == 100
    eval_set = load_task("enwik8", tmp_path)
    docs = eval_set.items
    assert b"".join(d.original.encode("utf-8", "surrogateescape") for d in docs) == test
    assert [d.units for d in docs] == [
        len(d.original.encode("utf-8", "surrogateescape")) for d in docs
    ]
    assert sum(d.units for d in docs) == 100
    assert all(d.units >= 16 and d.original.endswith("\n") for d in docs)
    assert docs[0].text == "\ufffdab\n<text>café \ufffd</text>\n"
    assert (eval_set.unit, TASKS["enwik8"].metric) == ("byte", "bpb")
    # a file of any other size is the test split already
    path.write_bytes(test[1:])
    assert sum(d.units for d in load_task("enwik8", tmp_path).items) == 99


def test_text8_test_split(small_splits: None, tmp_path: Path) -> None:
    words = " ".join(f"word{'abcdefghij'[i % 10] * (1 + i % 7)}" for i in range(200))
    text = (" anarchism originated as a term of abuse " + words)[:1000]
    (tmp_path / "text8").mkdir()
    path = tmp_path / "text8" / "text8"
    path.write_text(text)
    docs = load_task("text8", tmp_path).items
    assert "".join(d.text for d in docs) == text[-100:]
    assert [d.units for d in docs] == [len(d.text) for d in docs] and sum(
        d.units for d in docs
    ) == 100
    assert all(d.text.endswith(" ") and len(d.text) >= 16 for d in docs[:-1])
    assert all(isinstance(d, Document) and d.original == d.text for d in docs)
