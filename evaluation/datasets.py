"""Readers for the GPT-2 paper's zero-shot evaluation sets, in their published formats.

`load_task(name, root)` reads one set into an `EvalSet` of `Document`s (perplexity and
bits-per-unit tasks), `Cloze`s (LAMBADA), `Choice`s (CBT, Winograd) or `Prompted`s (the
generation tasks: Natural Questions, WMT-14, CoQA, CNN/DailyMail, each with the paper's
prompt format). Readers stream their file line by line; a malformed record is listed in
`EvalSet.skipped` as "path:line: reason" and reading goes on; a file in which nothing
parses is an error. Perplexity tasks keep the
count of the dataset's original units (words with one <eos> per line, bytes, characters)
beside the detokenized text the model scores, so results are reported per original unit.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

from evaluation.detokenize import CBT, ONE_BILLION_WORD, PTB, WIKITEXT, Detokenizer

# enwik8 and text8 are published whole; the test split is the last 5M bytes / characters.
# A file of any other size is taken to be the test split already.
ENWIK8_BYTES = 100_000_000
ENWIK8_TEST_BYTES = 5_000_000
TEXT8_CHARS = 100_000_000
TEXT8_TEST_CHARS = 5_000_000
CHUNK_BYTES = 1 << 20  # enwik8/text8 documents: about this many bytes, cut at a separator
PTB_LINES = 100  # PTB sentences are in order: documents of this many lines keep context

# English stop-words (with the pieces of contractions) for the GPT-2 paper's
# stop-word-filtered LAMBADA accuracy.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your
    yours yourself yourselves also may might must shall upon us
    s t d ll m o re ve y ain aren couldn didn doesn don hadn hasn haven isn ma mightn mustn
    needn shan shouldn wasn weren won wouldn""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Document:
    """A perplexity / bits-per-unit item."""

    text: str  # what the model scores (detokenized when the task has a detokenizer)
    units: int  # the task's original units it holds: words + one <eos> a line, bytes, chars
    original: str  # the text as published


@dataclass(frozen=True)
class Cloze:
    """A LAMBADA passage: predict `target` (scored as " " + target) after `context`."""

    context: str  # the passage without its last word and the space before it
    target: str


@dataclass(frozen=True)
class Choice:
    """A multiple choice: the answer is the option with the likeliest continuation."""

    options: tuple[tuple[str, str], ...]  # (context, continuation starting with its space)
    gold: int


@dataclass(frozen=True)
class Prompted:
    """A generation item: the model continues `document + prompt`, and what it answers is
    scored against `references`. A prompt longer than the model's window loses its start;
    one with a `document` loses the document's end instead (an article keeps its lead)."""

    prompt: str
    references: tuple[str, ...]
    key: str  # where it was read: "line 12", "<story id>:<turn>", a file name
    text: str  # the item's own published text, for the overlap with training data
    document: str = ""


@dataclass(frozen=True)
class Decoding:
    """How a generation task's answers come out of the model."""

    max_new_tokens: int
    stop: tuple[str, ...] = ()
    top_k: int | None = None  # None: greedy; else top-k sampling at temperature 1
    sentences: int | None = None  # the answer: these first sentences; None: the first line


@dataclass
class EvalSet:
    """One evaluation set as read: its items, and what could not be read or detokenized."""

    name: str  # task name, e.g. "wikitext2"
    kind: str  # "perplexity" | "cloze" | "choice" | "generation"
    unit: str | None  # "word" | "byte" | "char" for perplexity tasks, else None
    source: str  # the path read
    items: list  # Documents, Clozes, Choices or Prompteds
    skipped: list[str]  # "path:line: reason" for each malformed record
    lines_not_detokenized: int = 0  # lines kept as published: their detokenization won't invert
    metric: str = ""  # the task's metric (TaskSpec.metric)
    decoding: Decoding | None = None  # generation tasks: how answers are generated


@dataclass
class Parsed:
    """What a reader returns: the items, the records it skipped, the lines not detokenized."""

    items: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    lines_not_detokenized: int = 0


@dataclass(frozen=True)
class TaskSpec:
    path: str  # default file (or folder), relative to the evaluation root
    reader: Callable[[Path], Parsed]
    kind: str
    unit: str | None
    metric: str  # the paper's metric: "ppl", "acc", "bpb", "bpc", "em", "f1", "bleu", "rouge"
    decoding: Decoding | None = None  # generation tasks only


def _read_lines(path: Path, skipped: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline); a line that is not UTF-8 is skipped."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                skipped.append(f"{path}:{number}: undecodable bytes at {error.start}")
                continue
            yield number, line.removesuffix("\n")


def _read_json_lines(path: Path, parsed: Parsed) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each line holding a JSON object; other lines skipped."""
    for number, line in _read_lines(path, parsed.skipped):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            parsed.skipped.append(f"{path}:{number}: bad JSON ({error.msg})")
            continue
        if isinstance(record, dict):
            yield number, record
        else:
            parsed.skipped.append(f"{path}:{number}: not a JSON object")


# LAMBADA


def read_lambada(path: Path) -> Parsed:
    """{"text": passage} a line; the target is the last word, as OpenAI's GPT-2 evaluation
    and lm-evaluation-harness's lambada_openai split it."""
    parsed = Parsed()
    for number, record in _read_json_lines(path, parsed):
        text = record.get("text")
        context, _, target = text.rpartition(" ") if isinstance(text, str) else ("", "", "")
        if not (context and target):
            parsed.skipped.append(f'{path}:{number}: no "text" of at least two words')
            continue
        parsed.items.append(Cloze(context, target))
    return parsed


# Winograd


def read_winograd(path: Path) -> Parsed:
    """Partial scoring (Trinh & Le, as in GPT-2): each option is the sentence up to the
    pronoun with one candidate in its place; the continuation is the rest of the sentence."""
    parsed = Parsed()
    for number, record in _read_json_lines(path, parsed):
        contexts, continuation, gold = (
            record.get(k) for k in ("context_options", "continuation", "gold")
        )
        valid = (
            isinstance(contexts, list)
            and len(contexts) >= 2
            and all(isinstance(c, str) for c in contexts)
            and isinstance(continuation, str)
            and type(gold) is int
            and 0 <= gold < len(contexts)
        )
        if not valid:
            parsed.skipped.append(
                f'{path}:{number}: needs "context_options" (2+ strings), '
                '"continuation" (a string) and "gold" (an index of an option)'
            )
            continue
        options = tuple((context, " " + continuation) for context in contexts)
        parsed.items.append(Choice(options, gold))
    return parsed


# CBT


def read_cbt(path: Path) -> Parsed:
    """Examples of 21 numbered lines, a blank line between them: sentences 1-20, then
    "21 question with XXXXX<TAB>answer<TAB><TAB>cand1|...|cand10"."""
    parsed = Parsed()
    for number, lines in _cbt_examples(path, parsed.skipped):
        try:
            choice, left_as_is = _cbt_choice(lines)
        except ValueError as error:
            parsed.skipped.append(f"{path}:{number}: {error}")
            continue
        parsed.items.append(choice)
        parsed.lines_not_detokenized += left_as_is
    return parsed


def cbt_split(path: str | Path) -> str:
    """The split a CBT file holds, from its published name (cbtest_CN_valid_2000ex.txt:
    "valid"); the file's name when it does not say."""
    match = re.match(r"cbtest_[A-Z]+_(train|valid|test)", Path(path).name)
    return match.group(1) if match else Path(path).name


def _cbt_examples(path: Path, skipped: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) for each block of non-blank lines."""
    block: list[str] = []
    start = 0
    for number, line in _read_lines(path, skipped):
        if line.strip():
            start = start if block else number
            block.append(line)
        elif block:
            yield start, block
            block = []
    if block:
        yield start, block


def _cbt_choice(lines: list[str]) -> tuple[Choice, int]:
    """One example as a Choice, and how many of its lines were left tokenized; raises
    ValueError naming what is malformed.

    The paper scores each candidate together with the rest of the question after it, so a
    continuation is " candidate rest-of-question", its context the 20 sentences and the
    question up to the blank. Text glued to the blank (an opening quote) moves into the
    continuation, which always starts with the space before the word.
    """
    if len(lines) != 21:
        raise ValueError(f"an example has 21 lines, this one {len(lines)}")
    texts = []
    for n, line in enumerate(lines, 1):
        label, _, text = line.partition(" ")
        if label != str(n):
            raise ValueError(f"line {n} of the example is numbered {label!r}")
        texts.append(text)
    fields = texts[20].split("\t")
    if len(fields) != 4:
        raise ValueError("the question line needs question, answer, '' and candidates")
    question, answer, _, candidates = fields
    choices = candidates.split("|")
    if answer not in choices:
        raise ValueError(f"the answer {answer!r} is not among the candidates")
    if question.count("XXXXX") != 1:
        raise ValueError("the question has no single XXXXX blank")
    lines_out, left_as_is = CBT.detokenize_lines([*texts[:20], question])
    prefix, suffix = lines_out[20].split("XXXXX")
    head, _, lead = prefix.rpartition(" ")
    context = " ".join(lines_out[:20]) + (" " + head if head else "")
    options = tuple((context, f" {lead}{choice}{suffix}") for choice in choices)
    return Choice(options, choices.index(answer)), left_as_is


# Word-level perplexity: WikiText, PTB, 1BW


def _line_units(line: str) -> int:
    """The line's words and its <eos>, as the published token counts include them."""
    return len(line.split()) + 1


def _add_word_document(parsed: Parsed, lines: list[str], detokenizer: Detokenizer) -> None:
    """Lines as one Document: detokenized lines joined by newlines, words + <eos> as units."""
    texts, left_as_is = detokenizer.detokenize_lines(lines)
    original = "".join(line + "\n" for line in lines)
    parsed.items.append(Document("\n".join(texts), sum(map(_line_units, lines)), original))
    parsed.lines_not_detokenized += left_as_is


def _is_title(line: str) -> bool:
    """A level-1 WikiText heading, " = Title = " (not " = = Section = = ")."""
    words = line.split()
    return len(words) >= 3 and words[0] == words[-1] == "=" and "=" not in (words[1], words[-2])


def _article_lines(path: Path, skipped: list[str]) -> Iterator[list[str]]:
    """WikiText's lines grouped by article: each starts at a level-1 heading (the blank
    lines before the first heading belong to the first article)."""
    article: list[str] = []
    titled = False
    for _, line in _read_lines(path, skipped):
        if _is_title(line) and titled:
            yield article
            article = []
        titled = titled or _is_title(line)
        article.append(line)
    if article:
        yield article


def wikitext_articles(path: str | Path) -> list[str]:
    """The articles of a WikiText file (`wiki.test.tokens` or `wiki.test.raw`), each as its
    lines with their newlines; undecodable lines are left out."""
    return ["".join(line + "\n" for line in lines) for lines in _article_lines(Path(path), [])]


def read_wikitext(path: Path) -> Parsed:
    """One Document per article; units = words + one <eos> per line, blank lines included."""
    parsed = Parsed()
    for lines in _article_lines(path, parsed.skipped):
        _add_word_document(parsed, lines, WIKITEXT)
    return parsed


def read_ptb(path: Path) -> Parsed:
    """PTB's sentences are in order: Documents of PTB_LINES consecutive lines."""
    parsed = Parsed()
    batch: list[str] = []
    for _, line in _read_lines(path, parsed.skipped):
        batch.append(line)
        if len(batch) == PTB_LINES:
            _add_word_document(parsed, batch, PTB)
            batch = []
    if batch:
        _add_word_document(parsed, batch, PTB)
    return parsed


def read_1bw(path: Path) -> Parsed:
    """One Billion Word's held-out shard: a tokenized sentence a line, shuffled, so each is
    a Document of its own; units = words + one </S> per sentence."""
    parsed = Parsed()
    for number, line in _read_lines(path, parsed.skipped):
        if not line.strip():
            parsed.skipped.append(f"{path}:{number}: empty line")
            continue
        text, detokenized = ONE_BILLION_WORD.checked(line)
        parsed.items.append(Document(text, _line_units(line), line))
        parsed.lines_not_detokenized += not detokenized
    return parsed


# Bits per byte / character: enwik8, text8


def read_enwik8(path: Path) -> Parsed:
    """The last ENWIK8_TEST_BYTES of the 100M-byte file, in Documents cut after newlines."""
    return Parsed(items=_byte_documents(path, ENWIK8_BYTES, ENWIK8_TEST_BYTES, b"\n"))


def read_text8(path: Path) -> Parsed:
    """The last TEXT8_TEST_CHARS of the 100M-character file (one line of a-z and spaces,
    so characters are bytes), in Documents cut after spaces."""
    return Parsed(items=_byte_documents(path, TEXT8_CHARS, TEXT8_TEST_CHARS, b" "))


def _byte_documents(path: Path, full_size: int, test_size: int, separator: bytes) -> list[Document]:
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == full_size:
            handle.seek(full_size - test_size)
        return [_byte_document(chunk) for chunk in _chunks(handle, separator)]


def _chunks(handle: BinaryIO, separator: bytes) -> Iterator[bytes]:
    """The rest of `handle` in pieces of at least CHUNK_BYTES, each ending in `separator`
    (except the last)."""
    buffer = b""
    while block := handle.read(CHUNK_BYTES):
        buffer += block
        while (cut := buffer.find(separator, CHUNK_BYTES - 1)) != -1:
            yield buffer[: cut + 1]
            buffer = buffer[cut + 1 :]
    if buffer:
        yield buffer


def _byte_document(chunk: bytes) -> Document:
    # The model's encoder takes str, and bytes that are not UTF-8 (the test split starts at
    # a fixed offset, maybe inside a character) cannot be encoded back: they become U+FFFD
    # in `text`. Units still count the published bytes, and `original` keeps them exactly
    # (surrogateescape: original.encode("utf-8", "surrogateescape") is the chunk).
    return Document(
        chunk.decode("utf-8", errors="replace"),
        len(chunk),
        chunk.decode("utf-8", errors="surrogateescape"),
    )


# Generation tasks (GPT-2 paper, section 3.5-3.8). The paper seeds question answering and
# translation with example pairs; none of their training splits is here, so the first
# items of the file are the examples and the rest are scored.

NQ_SHOTS = 5
WMT_SHOTS = 5
TLDR = "\nTL;DR:"


def read_nq_open(path: Path) -> Parsed:
    """{"question", "answer": [gold, ...]} a line. Prompt: the first NQ_SHOTS questions with
    their first answer as "Q: ...?\\nA: ..." pairs, then "Q: question?\\nA:"."""
    parsed = Parsed()
    pairs: list[tuple[int, str, list[str]]] = []
    for number, record in _read_json_lines(path, parsed):
        question, answers = record.get("question"), record.get("answer")
        if not (
            isinstance(question, str)
            and question.strip()
            and isinstance(answers, list)
            and answers
            and all(isinstance(a, str) and a.strip() for a in answers)
        ):
            parsed.skipped.append(
                f'{path}:{number}: needs "question" (a string) and "answer" (a list of strings)'
            )
            continue
        pairs.append((number, question.strip(), answers))
    examples = "".join(f"Q: {q}?\nA: {answers[0]}\n\n" for _, q, answers in pairs[:NQ_SHOTS])
    parsed.items = [
        Prompted(f"{examples}Q: {q}?\nA:", tuple(answers), f"line {n}", f"{q}? {answers[0]}")
        for n, q, answers in pairs[NQ_SHOTS:]
    ]
    return parsed


_SEGMENT = re.compile(r'<seg id="(?P<id>[^"]*)">(?P<text>.*)</seg>')
_DOC_ID = re.compile(r'docid="(?P<id>[^"]*)"')


def _sgml_segments(path: Path, skipped: list[str]) -> list[tuple[str, int, str]]:
    """(docid:segid, line number, text) of each <seg> line of a WMT SGML file, its text
    with runs of whitespace made one space, as sacrebleu reads these files."""
    segments = []
    doc = ""
    for number, line in _read_lines(path, skipped):
        if line.startswith("<doc "):
            found = _DOC_ID.search(line)
            doc = found["id"] if found else ""
        elif line.startswith("<seg "):
            segment = _SEGMENT.fullmatch(line.strip())
            if segment is None:
                skipped.append(f'{path}:{number}: not a <seg id="...">text</seg> line')
                continue
            segments.append((f"{doc}:{segment['id']}", number, " ".join(segment["text"].split())))
    return segments


def read_wmt14(folder: Path, source: str, target: str) -> Parsed:
    """newstest2014's "full" French-English set (3,003 segments; sacrebleu's own `wmt14`
    is the filtered release): `newstest2014-fren-src.<source>.sgm` and
    `-ref.<target>.sgm` in `folder`, aligned by document and segment id. Prompt: the paper's
    "source sentence = target sentence" lines for the first WMT_SHOTS segments, then
    "source sentence =". A segment without its counterpart is skipped."""
    files = [
        folder / f"newstest2014-fren-src.{source}.sgm",
        folder / f"newstest2014-fren-ref.{target}.sgm",
    ]
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"wmt14-{source}-{target}: no file at {file}")
    parsed = Parsed()
    sources, references = (_sgml_segments(file, parsed.skipped) for file in files)
    by_key = {key: (number, text) for key, number, text in references}
    pairs = []
    for key, number, text in sources:
        reference = by_key.pop(key, None)
        if reference is None or not text or not reference[1]:
            parsed.skipped.append(f"{files[0]}:{number}: segment {key} has no translation")
            continue
        pairs.append((number, text, reference[1]))
    for key, (number, _) in by_key.items():
        parsed.skipped.append(f"{files[1]}:{number}: segment {key} has no source")
    examples = "".join(f"{text} = {reference}\n" for _, text, reference in pairs[:WMT_SHOTS])
    parsed.items = [
        Prompted(f"{examples}{text} =", (reference,), f"line {n}", f"{text} {reference}")
        for n, text, reference in pairs[WMT_SHOTS:]
    ]
    return parsed


def read_coqa(path: Path) -> Parsed:
    """The official CoQA JSON ({"data": [story, ...]}): one item per question. Prompt: the
    story, the conversation so far as "Q: ...\\n\\nA: ...\\n\\n" turns, then "Q: ...\\n\\nA:"
    (lm-evaluation-harness's layout of the paper's "document, history, final A:").
    References: the answer and the additional answers of that turn, as the scorer reads
    them. A story with missing fields or turns out of order is skipped whole."""
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 (byte {error.start})") from None
    stories = data.get("data") if isinstance(data, dict) else None
    if not isinstance(stories, list):
        raise ValueError(f'{path}: no "data" list of stories')
    parsed = Parsed()
    for index, story in enumerate(stories):
        try:
            parsed.items += _coqa_turns(story)
        except (KeyError, TypeError, IndexError, ValueError) as error:
            name = story.get("id", "?") if isinstance(story, dict) else "?"
            parsed.skipped.append(f"{path}: story {index} ({name}): bad or missing {error}")
    return parsed


def _coqa_turns(story: dict) -> list[Prompted]:
    text, questions = story["story"], story["questions"]
    answer_sets = [story["answers"], *story.get("additional_answers", {}).values()]
    if not isinstance(text, str) or not questions:
        raise ValueError("story or questions")
    items, history = [], ""
    for turn, question in enumerate(questions, 1):
        if question["turn_id"] != turn or any(a[turn - 1]["turn_id"] != turn for a in answer_sets):
            raise ValueError(f"turn_id at turn {turn}")
        asked = question["input_text"]
        references = tuple(str(answers[turn - 1]["input_text"]) for answers in answer_sets)
        prompt = f"{text}\n\n{history}Q: {asked}\n\nA:"
        items.append(
            Prompted(prompt, references, f"{story['id']}:{turn}", f"{asked} {references[0]}")
        )
        history += f"Q: {asked}\n\nA: {references[0]}\n\n"
    return items


def read_cnn_dailymail(folder: Path) -> Parsed:
    """CNN/DailyMail `.story` files (the article's paragraphs, then "@highlight" and one
    highlight each), in name order. Prompt: the article, then "\\nTL;DR:"; reference: the
    highlights, one a line. A story without article or highlights is skipped."""
    if not folder.is_dir():
        raise NotADirectoryError(f"cnn_dailymail: {folder} is not a folder of .story files")
    files = sorted(folder.glob("*.story"))
    if not files:
        raise FileNotFoundError(f"cnn_dailymail: no .story files in {folder}")
    parsed = Parsed()
    for path in files:
        paragraphs: list[str] = []
        highlights: list[str] = []
        for _, line in _read_lines(path, parsed.skipped):
            if line.strip() == "@highlight":
                highlights.append("")
            elif line.strip() and highlights:
                highlights[-1] = f"{highlights[-1]} {line.strip()}".strip()
            elif line.strip():
                paragraphs.append(line.strip())
        highlights = [h for h in highlights if h]
        if not paragraphs or not highlights:
            parsed.skipped.append(f"{path}: no {'article' if not paragraphs else '@highlight'}")
            continue
        article, summary = "\n".join(paragraphs), "\n".join(highlights)
        parsed.items.append(Prompted(TLDR, (summary,), path.name, f"{article}\n{summary}", article))
    return parsed


TASKS: dict[str, TaskSpec] = {
    "lambada": TaskSpec("lambada/lambada_test.jsonl", read_lambada, "cloze", None, "acc"),
    "cbt-cn": TaskSpec("cbt/cbtest_CN_test_2500ex.txt", read_cbt, "choice", None, "acc"),
    "cbt-ne": TaskSpec("cbt/cbtest_NE_test_2500ex.txt", read_cbt, "choice", None, "acc"),
    "wikitext2": TaskSpec("wikitext2/wiki.test.tokens", read_wikitext, "perplexity", "word", "ppl"),
    "ptb": TaskSpec("ptb/ptb.test.txt", read_ptb, "perplexity", "word", "ppl"),
    "enwik8": TaskSpec("enwik8/enwik8", read_enwik8, "perplexity", "byte", "bpb"),
    "text8": TaskSpec("text8/text8", read_text8, "perplexity", "char", "bpc"),
    "wikitext103": TaskSpec(
        "wikitext103/wiki.test.tokens", read_wikitext, "perplexity", "word", "ppl"
    ),
    "1bw": TaskSpec("1bw/news.en.heldout-00000-of-00050", read_1bw, "perplexity", "word", "ppl"),
    "winograd": TaskSpec(
        "winograd/winograd_wsc273.llm-foundry.jsonl", read_winograd, "choice", None, "acc"
    ),
    # Greedy answers cut at the stop string; summaries sampled with top-k 2 (the paper's).
    "nq_open": TaskSpec(
        "nq_open/NQ-open.dev.jsonl", read_nq_open, "generation", None, "em", Decoding(32, ("\n",))
    ),
    "wmt14-fr-en": TaskSpec(
        "wmt14",
        partial(read_wmt14, source="fr", target="en"),
        "generation",
        None,
        "bleu",
        Decoding(128, ("\n",)),
    ),
    "wmt14-en-fr": TaskSpec(
        "wmt14",
        partial(read_wmt14, source="en", target="fr"),
        "generation",
        None,
        "bleu",
        Decoding(128, ("\n",)),
    ),
    "coqa": TaskSpec(
        "coqa/coqa-dev-v1.0.json", read_coqa, "generation", None, "f1", Decoding(48, ("\nQ:",))
    ),
    "cnn_dailymail": TaskSpec(
        "cnn_dailymail/stories",
        read_cnn_dailymail,
        "generation",
        None,
        "rouge",
        Decoding(100, top_k=2, sentences=3),
    ),
}


def load_task(name: str, root: str | Path, path: str | Path | None = None) -> EvalSet:
    """Read task `name` from `path`, or from its default file under the evaluation `root`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    spec = TASKS[name]
    source = Path(path) if path is not None else Path(root) / spec.path
    if not source.exists():
        raise FileNotFoundError(f"{name}: no file at {source}")
    parsed = spec.reader(source)
    if not parsed.items:
        raise ValueError(
            f"{name}: nothing could be read from {source} ({len(parsed.skipped)} records skipped)"
        )
    return EvalSet(
        name,
        spec.kind,
        spec.unit,
        str(source),
        parsed.items,
        parsed.skipped,
        parsed.lines_not_detokenized,
        spec.metric,
        spec.decoding,
    )
