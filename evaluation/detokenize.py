"""Invertible detokenizers for the GPT-2 paper's evaluation sets.

The paper scores readable text but reports results per unit of the published, tokenized
dataset, and its detokenizers are invertible so that the dataset's own log-probabilities
can still be computed. Each detokenizer here comes with the retokenizer of its dataset's
convention, and `detokenize_line` keeps a detokenized line only when retokenizing it gives
back the published line exactly; otherwise the line stays as published and is counted.
Invertibility therefore holds by construction; the rules only decide how many lines get
detokenized.

Conventions:
- `WIKITEXT`: Moses tokenization with " @-@ ", " @,@ ", " @.@ " inside words and numbers,
  lines published as " tok tok " (`wiki.test.tokens` and `wiki.test.raw` alike).
- `PTB`, `CBT`: Penn Treebank tokenization (n't, -LRB-, ` ' and `` '' quotes, \\/);
  PTB lines are published as " tok tok ", CBT sentences without that padding.
- `ONE_BILLION_WORD`: plain Moses tokenization (`don 't`, `" quotes "`), a sentence a line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Abbreviations whose period is no full stop (Moses' English non-breaking prefixes, and the
# treebank's company and state abbreviations), compared in lower case.
_ABBREVIATIONS = frozenset(
    "adj adm adv asst bart bldg brig bros capt cmdr col comdr con corp cpl "  # noqa: SIM905
    "dr drs ens gen gov hon hr hosp insp lt maj messrs mlle mme mr mrs ms msgr op ord "
    "pfc ph prof pvt rep reps res rev rt sen sens sfc sgt sr st supt surg jr inc ltd co "
    "cie vs v etc al jan feb mar apr jun jul aug sep sept oct nov dec "
    "ala ariz ark calif colo conn del fla ga ill ind kan ky la md mass mich minn miss mo "
    "mont neb nev okla ore pa tenn tex va vt wash wis wyo".split()
)
_NUMERIC_ONLY = frozenset({"no", "nos", "art", "nr", "pp"})  # abbreviations before a number
_MOSES_CLITICS = frozenset({"'s", "'t", "'re", "'ve", "'m", "'d", "'ll"})
_TREEBANK_CLITICS = frozenset({"'s", "n't", "'re", "'ve", "'m", "'d", "'ll"})
_WIKITEXT_MARKS = {"@-@": "-", "@,@": ",", "@.@": "."}
# Penn Treebank: bracket tokens, and what each character at the edge of a word becomes.
_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
_OPENERS = {"(": "-LRB-", "[": "-LSB-", "{": "-LCB-", '"': "``", "'": "`", "$": "$"}
_CLOSERS = {")": "-RRB-", "]": "-RSB-", "}": "-RCB-", '"': "''", "'": "'"} | {
    c: c for c in (",", ";", ":", "!", "?", "%", "...")
}
_MULTI_DOTS = re.compile(r"\.\.+")
_OUTER_COMMA = re.compile(r"(?<!\d),|,(?!\d)")
_APOSTROPHE = re.compile("'")
_WIKITEXT_HYPHEN = re.compile(r"(?<=[^\W_]|>)-(?=[^\W_]|<)")  # "<unk>" too: it replaced a word
_WIKITEXT_NUMBER = re.compile(r"(?<=\d|>)([,.])(?=\d|<)")
_AFTER_FULL_STOP = frozenset({"'", "''", "-RRB-", "-RSB-", "-RCB-"})
# what the treebank splits off the end of a word: clitics, punctuation, closing quotes
_TREEBANK_TAIL = re.compile(
    r"(?:n't|N'T|'(?:s|re|ve|m|d|ll|S|RE|VE|M|D|LL)|\.\.\.|[,;:!?%)\]}\"'])$"
)


def _is_abbreviation(stem: str) -> bool:
    """Whether `stem` + "." is an abbreviation: "U.S.", "e.g.", "Mr.", "A."."""
    if "." in stem and any(c.isalpha() for c in stem):
        return True
    return stem.lower() in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha())


@dataclass(frozen=True)
class Piece:
    """A token as written in detokenized text, and whether it joins its neighbours."""

    text: str
    join_left: bool = False
    join_right: bool = False


def _join_pieces(pieces: list[Piece]) -> str:
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if i and not (pieces[i - 1].join_right or piece.join_left):
            out.append(" ")
        out.append(piece.text)
    return "".join(out)


class Detokenizer:
    """A detokenizer and the retokenizer that inverts it, for one tokenization convention."""

    def __init__(self, name: str, padded: bool) -> None:
        self.name = name
        self.padded = padded  # published lines look like " tok tok " (WikiText, PTB)

    def detokenize(self, line: str) -> str:
        """Readable text for a tokenized line, before the invertibility check."""
        return _join_pieces(self.pieces(line.split()))

    def retokenize(self, text: str) -> str:
        """The dataset's tokenization of `text`, its padding included."""
        body = " ".join(self.tokens(text))
        return (f" {body} " if body else " ") if self.padded else body

    def checked(self, line: str) -> tuple[str, bool]:
        """(detokenized line, True) when it retokenizes back to `line`, else (line, False)."""
        text = self.detokenize(line)
        return (text, True) if self.retokenize(text) == line else (line, False)

    def detokenize_line(self, line: str) -> str:
        """`detokenize(line)` when it retokenizes back to `line`, else `line` unchanged."""
        return self.checked(line)[0]

    def detokenize_lines(self, lines: Iterable[str]) -> tuple[list[str], int]:
        """The lines detokenized where that inverts, and how many were left as published."""
        out, left_as_is = [], 0
        for line in lines:
            text, ok = self.checked(line)
            out.append(text)
            left_as_is += not ok
        return out, left_as_is

    def pieces(self, tokens: list[str]) -> list[Piece]:
        raise NotImplementedError

    def tokens(self, text: str) -> list[str]:
        raise NotImplementedError


class MosesDetokenizer(Detokenizer):
    """Moses: letters, digits and . , ' - make up words; every other character is a token."""

    # a placeholder token, a word, or any other single character
    runs = re.compile(r"<[a-z]+>|(?:[^\W_]|[.,'\-])+|\S")

    def pieces(self, tokens: list[str]) -> list[Piece]:
        pieces, double_open, single_open = [], False, False
        for i, tok in enumerate(tokens):
            prev = tokens[i - 1] if i else ""
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if tok == '"':
                double_open = not double_open
                pieces.append(Piece(tok, join_left=not double_open, join_right=double_open))
            elif tok == "'":
                piece, single_open = _single_quote(prev, nxt, single_open)
                pieces.append(piece)
            else:
                pieces.append(self.piece(tok, prev, nxt))
        return pieces

    def piece(self, tok: str, prev: str, nxt: str) -> Piece:
        if tok == ".":
            return Piece(tok, join_left=_splits_period(prev + ".", nxt))
        if tok in {",", ";", ":", "!", "?", "...", "%", ")", "]", "}", "”"}:
            return Piece(tok, join_left=True)
        if tok in {"(", "[", "{", "$", "#", "“"}:
            return Piece(tok, join_right=True)
        if tok == "/":
            return Piece(tok, join_left=True, join_right=True)
        if tok == "–":  # a range of numbers, "82–73", as Wikipedia writes it
            between = prev[-1:].isdigit() and nxt[:1].isdigit()
            return Piece(tok, join_left=between, join_right=between)
        if tok == "’":  # an apostrophe inside a word ("don ’ t"), else a closing quote
            return Piece(tok, join_left=True, join_right=prev[-1:].isalpha() and nxt[:1].isalpha())
        if tok.startswith("'") and tok[1:2].isalpha():
            return Piece(tok, join_left=self.joins_apostrophe(prev, tok))
        return Piece(tok)

    def joins_apostrophe(self, prev: str, tok: str) -> bool:
        """Whether "'s", "'t", "'Italia" attach to the previous word and Moses splits them
        back: after a letter, "'s" after a digit, a clitic after a non-word ("<unk>")."""
        end = prev[-1:]
        if end.isalpha() or (end.isdigit() and tok == "'s"):
            return True
        return tok in _MOSES_CLITICS and bool(end) and not (end.isalnum() or end in ".,'-")

    def tokens(self, text: str) -> list[str]:
        tokens = []
        for run in self.runs.findall(self.mark(text)):
            tokens.extend([run] if run.isalnum() else self.split_run(run))
        return _split_periods(tokens)

    def mark(self, text: str) -> str:
        """Rewrite text before splitting it (WikiText's @-@ marks)."""
        return text

    def split_run(self, run: str) -> list[str]:
        run = _MULTI_DOTS.sub(r" \g<0> ", run)  # "..." is a token
        run = _OUTER_COMMA.sub(" , ", run)  # commas outside numbers
        return _APOSTROPHE.sub(_moses_apostrophe, run).split()


def _single_quote(prev: str, nxt: str, is_open: bool) -> tuple[Piece, bool]:
    """A lone "'": closes an open quote, else a plural possessive ("ships '"), else opens
    a quote before a word; returns the piece and whether a quote is now open."""
    if is_open or (prev[:1].isalnum() and prev[-1:] in {"s", "S"}):
        return Piece("'", join_left=True), False
    if nxt[:1].isalnum():
        return Piece("'", join_right=True), True
    return Piece("'"), False


def _moses_apostrophe(match: re.Match[str]) -> str:
    """Moses splits "don't" as "don 't" and "1990's" as "1990 's"; any other "'" stands
    alone. A clitic that starts a word ("<unk>'s") stays whole."""
    text, i = match.string, match.start()
    before, after = text[i - 1 : i], text[i + 1 : i + 2]
    if (before.isalpha() and after.isalpha()) or (before.isdigit() and after == "s"):
        return " '"
    if i == 0 and re.match(r"'(s|t|re|ve|m|d|ll)\b", text):
        return "'"
    return " ' "


def _full_stop(word: str) -> bool:
    """Whether the "." ending a sentence's last word is the sentence's own full stop."""
    stem = word[:-1]
    return word.endswith(".") and bool(stem) and stem[-1] != "." and not _is_abbreviation(stem)


def _splits_period(word: str, nxt: str) -> bool:
    """Whether Moses splits the final "." off `word` when `nxt` is the token after it."""
    stem = word[:-1]
    if not word.endswith(".") or not stem or stem.endswith(".") or _is_abbreviation(stem):
        return False
    if stem.lower() in _NUMERIC_ONLY and nxt[:1].isdigit():
        return False
    return not nxt[:1].islower()


def _split_periods(tokens: list[str]) -> list[str]:
    out = []
    for i, tok in enumerate(tokens):
        if _splits_period(tok, tokens[i + 1] if i + 1 < len(tokens) else ""):
            out.extend([tok[:-1], "."])
        else:
            out.append(tok)
    return out


class WikiTextDetokenizer(MosesDetokenizer):
    """WikiText: Moses, with " @-@ ", " @,@ ", " @.@ " inside words and numbers; headings
    " = = Title = = " are written "== Title ==" as in the wiki source."""

    runs = re.compile(r"@[-,.]@|" + MosesDetokenizer.runs.pattern)

    def pieces(self, tokens: list[str]) -> list[Piece]:
        pieces = super().pieces(tokens)
        for i, tok in enumerate(tokens):
            if tok in _WIKITEXT_MARKS:
                pieces[i] = Piece(_WIKITEXT_MARKS[tok], join_left=True, join_right=True)
            elif tok == "=" and tokens[i + 1 : i + 2] == ["="]:
                pieces[i] = Piece(tok, join_right=True)
        return pieces

    def mark(self, text: str) -> str:
        return _WIKITEXT_NUMBER.sub(r" @\1@ ", _WIKITEXT_HYPHEN.sub(" @-@ ", text))

    def split_run(self, run: str) -> list[str]:
        return [run] if run in _WIKITEXT_MARKS else super().split_run(run)


class TreebankDetokenizer(Detokenizer):
    """Penn Treebank (PTB, CBT): punctuation, clitics and quotes are split off the edges
    of words, a sentence's final period off its last word; "-" and "." inside words stay."""

    def pieces(self, tokens: list[str]) -> list[Piece]:
        pieces, quote_open = [], False
        for i, tok in enumerate(tokens):
            prev = tokens[i - 1] if i else ""
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if tok == ".":  # joins only as the sentence's full stop, which retokenizing splits
                last = all(t in _AFTER_FULL_STOP for t in tokens[i + 1 :])
                pieces.append(Piece(tok, join_left=last and _full_stop(prev + ".")))
            elif tok == "'":
                # closes a "`" quote, ends a possessive, or opens a quote: "replied , ' I"
                opens = not quote_open and prev in {",", ":", ";"} and nxt[:1].isupper()
                pieces.append(Piece(tok, join_left=not opens))
                quote_open = False
            else:
                quote_open = quote_open or tok == "`"
                pieces.append(self.piece(tok))
        return pieces

    @staticmethod
    def piece(tok: str) -> Piece:
        """A token other than "." and "'", whose joins depend on their neighbours."""
        if tok in {"``", "`"}:
            return Piece('"' if tok == "``" else "'", join_right=True)
        if tok == "''":
            return Piece('"', join_left=True)
        text = _BRACKETS.get(tok, tok)
        if text in {"(", "[", "{", "$"}:
            return Piece(text, join_right=True)
        if text in _CLOSERS or tok.lower() in _TREEBANK_CLITICS:
            return Piece(text, join_left=True)
        return Piece(tok.replace("\\/", "/").replace("\\*", "*"))

    def tokens(self, text: str) -> list[str]:
        chunks = text.split(" ")
        return [t for i, c in enumerate(chunks) for t in self.split_chunk(c, i + 1 == len(chunks))]

    def split_chunk(self, chunk: str, last: bool) -> list[str]:
        head: list[str] = []
        while len(chunk) > 1 and chunk[0] in _OPENERS:
            head.append(_OPENERS[chunk[0]])
            chunk = chunk[1:]
        tail: list[str] = []
        while len(chunk) > 1:
            if last and all(t in _AFTER_FULL_STOP for t in tail) and _full_stop(chunk):
                tail.append(".")
                chunk = chunk[:-1]
            elif (match := _TREEBANK_TAIL.search(chunk)) and match.start() > 0:
                tail.append(_CLOSERS.get(match.group(), match.group()))
                chunk = chunk[: match.start()]
            else:
                break
        if chunk in _CLOSERS or chunk in _OPENERS:  # a lone quote or bracket
            head.append(_CLOSERS.get(chunk) or _OPENERS[chunk])
        elif chunk:
            head.append(chunk.replace("/", "\\/").replace("*", "\\*"))
        return head + tail[::-1]


WIKITEXT = WikiTextDetokenizer("wikitext", padded=True)
PTB = TreebankDetokenizer("ptb", padded=True)
CBT = TreebankDetokenizer("cbt", padded=False)
ONE_BILLION_WORD = MosesDetokenizer("1bw", padded=False)
