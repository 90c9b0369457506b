"""Main-text extraction: candidates scored on folds they were not tuned on, against
trafilatura, same pages, same run.

    python benchmarks/extraction.py [--data DIR] [--snippets DIR] [--limit N] [--folds K]
                                    [--repeat R] [--set name=value ...] [--quick]

Quality, on the article benchmark (`DIR/html/<id>.html.gz`, `DIR/ground-truth.json`), as
the public article-extraction benchmark (scrapinghub/article-extraction-benchmark,
`evaluate.py`) defines it:

- tokens: `re.findall(r"\\w+", text)`, case kept (the benchmark does not lowercase);
- shingles: word 4-grams of those tokens, as a multiset (a text with fewer than 4 tokens is
  one shorter shingle; an empty text has none);
- per page: tp = the multiset intersection, fp = predicted minus gold, fn = gold minus
  predicted, each divided by tp + fp + fn so that long pages do not weigh more;
- precision = the mean over pages with tp + fp > 0 of tp / (tp + fp) (1 if fp = fn = 0),
  recall = the mean over pages with tp + fn > 0 of tp / (tp + fn), F1 = their harmonic mean.

Snippets, on trafilatura's evaluation set (`--snippets DIR`: `html/<file>.gz`,
`evaldata.json`): the share of `with` snippets found in the text (kept) and of `without`
snippets not found in it (dropped), whitespace runs collapsed on both sides.

Folds: every page of both sets goes to fold `int(sha256(url)[:16 hex], 16) % K` (K = 5),
fixed and independent of the order or the number of pages (`fold_of`). A setting chosen by
measurement is chosen on the tuning folds only: for each fold, the `extract_page` setting
of `TUNING_GRID` with the best article F1 on the other folds is scored on it, and the
held-out F1 is the benchmark's F1 over every page, each scored by the setting chosen
without it. The baseline is chosen the same way between trafilatura's defaults and
`include_comments=False` (the better plain setting on the tuning folds). Every candidate's
F1 is printed per fold and pooled; fixed candidates (no setting chosen) score the same on
any split.

Speed: pages per second, one process, the same pages, after a warm-up pass; each page is
timed for both extractors back to back, `--repeat` times, and its fastest run counts (a
load spike from other work on the machine then does not). Both extractors start from the
same bytes and the same `decode_html`, so the comparison is of the extraction. The
"one pass" pages/s of the other candidates is a single untimed-quality pass: a rough cost.

Human lines go to stderr; the last line on stdout is one JSON object. `--set` overrides an
`ExtractSettings` field for every candidate built on `extract_page`, which is how the
settings were measured (docs/extraction.md). `--quick`: the first 5 pages of each set, one
timed pass, the same code path, a few seconds (CI runs it so that the script cannot rot;
its figures are not measurements).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import logging
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import justext  # noqa: E402
import lxml.html  # noqa: E402
import trafilatura  # noqa: E402
from readability import Document  # noqa: E402
from resiliparse.extract.html2text import extract_plain_text  # noqa: E402
from resiliparse.parse.html import HTMLTree  # noqa: E402

from benchmarks._common import parse, test_data_root  # noqa: E402
from scraping.boilerplate import norm  # noqa: E402
from scraping.charset import decode_html  # noqa: E402
from scraping.extract import ExtractSettings, extract_page  # noqa: E402

_TOKEN = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")
FOLDS = 5
VOTE_MAX_WORDS = 10  # lines this short are the ones extractors disagree on (menus, labels)


# ---------------------------------------------------------------------------------------
# Metrics (importable by tests)


def shingles(text: str | None, n: int = 4) -> Counter:
    """Word n-gram multiset of `\\w+` tokens, as the article-extraction benchmark counts."""
    tokens = _TOKEN.findall(text or "")
    return Counter(tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1)) if tokens)


def shingle_counts(predicted: str | None, gold: str | None) -> tuple[float, float, float]:
    """(tp, fp, fn) of one page, normalised to sum to 1 (all 0 when both texts are empty)."""
    pred, true = shingles(predicted), shingles(gold)
    tp = sum((pred & true).values())
    fp = sum((pred - true).values())
    fn = sum((true - pred).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def _precision(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fp == 0 else tp / (tp + fp)


def _recall(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fn == 0 else tp / (tp + fn)


def shingle_scores(predicted: str | None, gold: str | None) -> tuple[float, float, float]:
    """(precision, recall, f1) of one page."""
    counts = shingle_counts(predicted, gold)
    p, r = _precision(*counts), _recall(*counts)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def macro_scores(pairs: Iterable[tuple[str | None, str | None]]) -> dict[str, float]:
    """Benchmark-level precision, recall and F1 over (predicted, gold) pairs."""
    counts = [shingle_counts(pred, gold) for pred, gold in pairs]
    precisions = [_precision(*c) for c in counts if c[0] + c[1] > 0]
    recalls = [_recall(*c) for c in counts if c[0] + c[2] > 0]
    p = statistics.mean(precisions) if precisions else 0.0
    r = statistics.mean(recalls) if recalls else 0.0
    return {"f1": 2 * p * r / (p + r) if p + r else 0.0, "precision": p, "recall": r}


def snippet_rates(
    texts: Iterable[str | None], items: Iterable[tuple[list[str], list[str]]]
) -> tuple[float, float]:
    """(kept, dropped): share of `with` snippets found, of `without` snippets not found."""
    kept = with_total = dropped = without_total = 0
    for text, (with_snippets, without_snippets) in zip(texts, items, strict=True):
        flat = _SPACES.sub(" ", text or "")
        for snippet in filter(None, with_snippets):
            with_total += 1
            kept += _SPACES.sub(" ", snippet).strip() in flat
        for snippet in filter(None, without_snippets):
            without_total += 1
            dropped += _SPACES.sub(" ", snippet).strip() not in flat
    return kept / max(with_total, 1), dropped / max(without_total, 1)


# ---------------------------------------------------------------------------------------
# Data


def default_data() -> Path:
    return test_data_root() / "extraction" / "article-benchmark"


def default_snippets() -> Path:
    return test_data_root() / "extraction" / "trafilatura-eval"


def load_articles(folder: Path, limit: int | None = None) -> list[tuple[str, bytes, str]]:
    """(url, html bytes, gold text) per page, sorted by id."""
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for key in sorted(truth)[:limit]:
        html = gzip.decompress((folder / "html" / f"{key}.html.gz").read_bytes())
        pages.append((truth[key]["url"], html, truth[key].get("articleBody") or ""))
    return pages


def load_snippets(
    folder: Path, limit: int | None = None
) -> list[tuple[str, bytes, list[str], list[str]]]:
    """(url, html bytes, with, without) per page, sorted by URL."""
    data = json.loads((folder / "evaldata.json").read_text(encoding="utf-8"))
    pages = []
    for url in sorted(data)[:limit]:
        item = data[url]
        path = folder / "html" / item["file"]
        if not path.exists():
            path = path.with_name(path.name + ".gz")
        if not path.exists():
            continue
        raw = path.read_bytes()
        html = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        pages.append((url, html, list(item.get("with") or []), list(item.get("without") or [])))
    return pages


# ---------------------------------------------------------------------------------------
# Folds


def fold_of(url: str, folds: int = FOLDS) -> int:
    """The fold of a page: a hash of its URL, so adding or removing pages moves no other."""
    return int(hashlib.sha256(url.encode("utf-8")).hexdigest()[:16], 16) % folds


class Scored(NamedTuple):
    """One candidate's texts on both sets, and how long its pass took."""

    name: str
    articles: list[str]
    snippets: list[str]
    seconds: float


def fold_f1(texts: list[str], gold: list[str], folds: list[int], fold: int) -> float:
    """Article F1 over the pages of one fold (`fold` >= 0) or of all but one (`-1 - fold`)."""
    if fold >= 0:
        pairs = [(t, g) for t, g, f in zip(texts, gold, folds, strict=True) if f == fold]
    else:
        pairs = [(t, g) for t, g, f in zip(texts, gold, folds, strict=True) if f != -1 - fold]
    return macro_scores(pairs)["f1"] if pairs else float("nan")


def cross_validate(
    candidates: list[Scored],
    gold: list[str],
    folds: list[int],
    k: int,
    eligible: Callable[[Scored, int], bool] | None = None,
) -> tuple[list[str], list[str]]:
    """(the held-out texts, the name chosen for each fold): each fold's pages get the text of
    the candidate with the best article F1 on the other folds (the first on a tie), among
    those `eligible(candidate, fold)` allows, judged on the other folds too (all if none)."""
    chosen: list[str] = []
    held_out = [""] * len(gold)
    for fold in range(k):
        tuning = [fold_f1(c.articles, gold, folds, -1 - fold) for c in candidates]
        allowed = [i for i, c in enumerate(candidates) if eligible is None or eligible(c, fold)]
        best = max(allowed or range(len(candidates)), key=lambda i: (tuning[i], -i))
        chosen.append(candidates[best].name)
        for i, f in enumerate(folds):
            if f == fold:
                held_out[i] = candidates[best].articles[i]
    return held_out, chosen


# ---------------------------------------------------------------------------------------
# Extractors

Extractor = Callable[[bytes, str], str]

# The `extract_page` settings chosen between by cross-validation (overrides of the
# defaults; one equal to the defaults is measured once).
TUNING_GRID: tuple[dict[str, object], ...] = (
    {},
    {"drop_title": True},
    {"drop_title": False},
    {"fast": False},
    {"favor_precision": True},
    {"drop_link_lists": False},
    {"restore_blocks": False},
)


def ours_factory(settings: ExtractSettings) -> Extractor:
    def ours(html: bytes, url: str) -> str:
        page = extract_page(html, url, None, settings)
        return page.text if page is not None else ""

    return ours


def baseline(html: bytes, url: str) -> str:
    """trafilatura's defaults, on the same decoded text that ours starts from."""
    return trafilatura.extract(decode_html(html, None), url=url) or ""


def trafilatura_no_comments(html: bytes, url: str) -> str:
    return trafilatura.extract(decode_html(html, None), url=url, include_comments=False) or ""


def resiliparse_main(html: bytes, url: str) -> str:
    """resiliparse's main-content heuristics (C++), as Bevendorff et al. (2023) ran it."""
    tree = HTMLTree.parse(decode_html(html, None))
    return extract_plain_text(tree, main_content=True, alt_texts=False, links=False) or ""


_READABILITY_BLOCKS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "pre", "td", "blockquote")


def readability_text(html: bytes, url: str) -> str:
    """readability-lxml's article, its text blocks one a line."""
    summary = Document(decode_html(html, None), url=url).summary(html_partial=True)
    if not summary.strip():
        return ""
    root = lxml.html.fromstring(summary)
    lines = (" ".join(block.text_content().split()) for block in root.iter(*_READABILITY_BLOCKS))
    return "\n".join(line for line in lines if line)


def justext_text(html: bytes, url: str) -> str:
    """jusText's non-boilerplate paragraphs, English stoplist."""
    body = decode_html(html, None).encode("utf-8")
    paragraphs = justext.justext(body, justext.get_stoplist("English"))
    return "\n".join(p.text for p in paragraphs if not p.is_boilerplate)


def vote_lines(base: str, others: list[str], max_words: int = VOTE_MAX_WORDS) -> str:
    """A per-line vote (Bevendorff et al., 2023: ensembles of extractors beat each one):
    `base`'s lines of at most `max_words` words are kept only when another extractor's text
    holds at least half of their word 3-grams; longer lines are kept as they are."""
    grams = [_trigrams(norm(other)) for other in others]
    kept = []
    for line in base.splitlines():
        words = norm(line)
        if not words:
            continue
        mine = _trigrams(words)
        if words.count(" ") + 1 > max_words or any(len(mine & g) * 2 >= len(mine) for g in grams):
            kept.append(line)
    return "\n".join(kept)


def _trigrams(words: str) -> set[tuple[str, ...]]:
    tokens = words.split()
    return {tuple(tokens[i : i + 3]) for i in range(max(1, len(tokens) - 2))} if tokens else set()


def run(extractor: Extractor, pages: list[tuple[str, bytes]]) -> list[str]:
    out = []
    for url, html in pages:
        try:
            out.append(extractor(html, url))
        except Exception as error:  # a candidate failing on a page scores an empty text
            print(f"  {getattr(extractor, '__name__', extractor)} failed on {url}: {error!r}",
                  file=sys.stderr)  # fmt: skip
            out.append("")
    return out


def score_candidate(
    name: str,
    extractor: Extractor,
    articles: list[tuple[str, bytes]],
    snippets: list[tuple[str, bytes]],
) -> Scored:
    start = time.perf_counter()
    texts_a, texts_s = run(extractor, articles), run(extractor, snippets)
    return Scored(name, texts_a, texts_s, time.perf_counter() - start)


def pages_per_second(
    extractors: list[Extractor], pages: list[tuple[str, bytes]], repeat: int
) -> list[float]:
    """Pages per second of each extractor, one process. Each page is run by every extractor
    back to back (their order alternating), `repeat` times; a page's time is its fastest
    run, so that a busy moment of the machine, which hits one run, does not count. The
    caller has made one untimed pass of each extractor (imports, caches)."""
    best = [[float("inf")] * len(pages) for _ in extractors]
    for round_ in range(repeat):
        for p, (url, html) in enumerate(pages):
            order = range(len(extractors))
            for i in order if (round_ + p) % 2 == 0 else reversed(order):
                start = time.perf_counter()
                extractors[i](html, url)
                best[i][p] = min(best[i][p], time.perf_counter() - start)
    return [len(pages) / sum(times) for times in best]


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    fields = {f.name: f for f in dataclasses.fields(ExtractSettings)}
    out: dict[str, object] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in fields:
            raise SystemExit(f"unknown setting {name!r}; known: {', '.join(fields)}")
        default = getattr(ExtractSettings(), name)
        if isinstance(default, bool):
            out[name] = value.lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            out[name] = int(value)
        elif isinstance(default, float):
            out[name] = float(value)
        else:
            out[name] = value
    return out


def grid_settings(overrides: dict[str, object]) -> list[tuple[str, ExtractSettings]]:
    """(name, settings) of each distinct `TUNING_GRID` entry over `overrides`, defaults first."""
    base = ExtractSettings(**overrides)
    out: list[tuple[str, ExtractSettings]] = []
    for change in TUNING_GRID:
        settings = dataclasses.replace(base, **change)
        if any(settings == known for _, known in out):
            continue
        label = ", ".join(f"{k}={v}" for k, v in change.items()) or "defaults"
        out.append((f"extract_page {label}", settings))
    return out


# ---------------------------------------------------------------------------------------
# The run


def _row(name: str, per_fold: list[float], pooled: dict[str, float], extra: str) -> str:
    folds = " ".join(f"{v:6.4f}" if v == v else "   -  " for v in per_fold)
    scores = " ".join(f"{pooled[key]:6.4f}" for key in ("f1", "precision", "recall"))
    return f"  {name[:44]:44s} {folds}  {scores}  {extra}"


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--snippets", type=Path, default=default_snippets())
    parser.add_argument("--limit", type=int, default=None, help="first N pages of each set")
    parser.add_argument("--folds", type=int, default=FOLDS, help="K of the fold rule")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes, best kept")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override an ExtractSettings field (measurement sweeps)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny input, seconds (CI)")
    # --quick: smaller defaults; options given explicitly still win
    args = parse(parser, argv, quick=dict(limit=5, repeat=1))
    if not (args.data / "ground-truth.json").exists():
        raise SystemExit(f"no ground-truth.json in {args.data}; set WEBTEXT_TEST_DATA or --data")
    if args.folds < 2:
        raise SystemExit(f"--folds {args.folds}: cross-validation needs at least 2")
    logging.disable(logging.CRITICAL)  # trafilatura logs every discarded page

    overrides = parse_overrides(args.set)
    articles = load_articles(args.data, args.limit)
    pages = [(url, html) for url, html, _ in articles]
    gold = [text for *_, text in articles]
    items = []
    if args.snippets and (args.snippets / "evaldata.json").exists():
        items = load_snippets(args.snippets, args.limit)
    snippet_pages = [(url, html) for url, html, _, _ in items]
    snippet_gold = [(w, wo) for _, _, w, wo in items]
    k = args.folds
    folds = [fold_of(url, k) for url, _ in pages]
    snippet_folds = [fold_of(url, k) for url, _ in snippet_pages]
    print(f"{len(pages)} article pages from {args.data}, {len(items)} snippet pages from "
          f"{args.snippets}; pages per fold: "
          f"{[folds.count(f) for f in range(k)]} and {[snippet_folds.count(f) for f in range(k)]}",
          file=sys.stderr)  # fmt: skip

    plain = [
        score_candidate("trafilatura defaults", baseline, pages, snippet_pages),
        score_candidate(
            "trafilatura include_comments=False", trafilatura_no_comments, pages, snippet_pages
        ),
    ]
    grid = [
        score_candidate(n, ours_factory(s), pages, snippet_pages)
        for n, s in grid_settings(overrides)
    ]
    others = [
        score_candidate("resiliparse main_content", resiliparse_main, pages, snippet_pages),
        score_candidate("readability-lxml", readability_text, pages, snippet_pages),
        score_candidate("jusText", justext_text, pages, snippet_pages),
    ]
    shipped = grid[0]  # extract_page with the defaults (and --set)
    voters = [others[0], others[1]]
    vote = Scored(
        f"vote: {shipped.name.removeprefix('extract_page ')} + resiliparse/readability",
        [vote_lines(t, [v.articles[i] for v in voters]) for i, t in enumerate(shipped.articles)],
        [vote_lines(t, [v.snippets[i] for v in voters]) for i, t in enumerate(shipped.snippets)],
        shipped.seconds + sum(v.seconds for v in voters),
    )

    base_held_out, base_chosen = cross_validate(plain, gold, folds, k)

    def kept_on_tuning_folds(candidate: Scored, fold: int) -> float:
        pairs = [
            (t, g)
            for t, g, f in zip(candidate.snippets, snippet_gold, snippet_folds, strict=True)
            if f != fold
        ]
        return snippet_rates([t for t, _ in pairs], [g for _, g in pairs])[0]

    def keeps_the_snippets(candidate: Scored, fold: int) -> bool:
        """The project's rule: no setting is chosen that keeps fewer `with` snippets than
        the baseline chosen for that fold, on the tuning folds (both golds must hold)."""
        reference = next(c for c in plain if c.name == base_chosen[fold])
        return kept_on_tuning_folds(candidate, fold) >= kept_on_tuning_folds(reference, fold)

    held_out, chosen = cross_validate(grid, gold, folds, k, keeps_the_snippets if items else None)
    f1_only_held_out, f1_only_chosen = cross_validate(grid, gold, folds, k)
    n_pages = len(pages) + len(snippet_pages)
    print(f"\n  {'article F1 per held-out fold, pooled':44s} "
          + " ".join(f"fold{f}" for f in range(k))
          + "  pooled   P      R       snippets kept/dropped, one-pass pages/s",
          file=sys.stderr)  # fmt: skip
    for candidate in [*plain, *grid, *others, vote]:
        per_fold = [fold_f1(candidate.articles, gold, folds, f) for f in range(k)]
        pooled = macro_scores(zip(candidate.articles, gold, strict=True))
        kept, dropped = snippet_rates(candidate.snippets, snippet_gold)
        speed = n_pages / candidate.seconds if candidate.seconds else float("nan")
        print(_row(candidate.name, per_fold, pooled, f"{kept:.4f} {dropped:.4f}  {speed:6.1f}"),
              file=sys.stderr)  # fmt: skip
    held = macro_scores(zip(held_out, gold, strict=True))
    base_held = macro_scores(zip(base_held_out, gold, strict=True))
    held_folds = [fold_f1(held_out, gold, folds, f) for f in range(k)]
    base_folds = [fold_f1(base_held_out, gold, folds, f) for f in range(k)]
    print(
        _row("held out: extract_page, chosen on the others", held_folds, held, ""), file=sys.stderr
    )
    f1_only = macro_scores(zip(f1_only_held_out, gold, strict=True))
    f1_only_folds = [fold_f1(f1_only_held_out, gold, folds, f) for f in range(k)]
    print(_row("held out: chosen by article F1 alone", f1_only_folds, f1_only, ""), file=sys.stderr)
    print(_row("held out: better plain trafilatura", base_folds, base_held, ""), file=sys.stderr)
    print(f"  chosen per fold: {chosen}\n  by F1 alone: {f1_only_chosen}\n"
          f"  baseline per fold: {base_chosen}", file=sys.stderr)  # fmt: skip

    ours = ours_factory(ExtractSettings(**overrides))
    ours_speed, base_speed = pages_per_second([ours, baseline], pages, args.repeat)
    shipped_q = macro_scores(zip(shipped.articles, gold, strict=True))
    base_q = macro_scores(zip(plain[0].articles, gold, strict=True))
    result: dict[str, float] = {
        "f1": shipped_q["f1"],
        "precision": shipped_q["precision"],
        "recall": shipped_q["recall"],
        "baseline_f1": base_q["f1"],
        "baseline_precision": base_q["precision"],
        "baseline_recall": base_q["recall"],
        "no_comments_f1": macro_scores(zip(plain[1].articles, gold, strict=True))["f1"],
        "heldout_f1": held["f1"],
        "heldout_baseline_f1": base_held["f1"],
        "heldout_margin": held["f1"] - base_held["f1"],
        "heldout_f1_by_f1_alone": f1_only["f1"],
        "pages_per_s": ours_speed,
        "baseline_pages_per_s": base_speed,
        "speed_ratio": ours_speed / base_speed,
    }
    if items:
        kept, dropped = snippet_rates(shipped.snippets, snippet_gold)
        base_kept, base_dropped = snippet_rates(plain[0].snippets, snippet_gold)
        result.update(
            snippets_kept=kept,
            snippets_dropped=dropped,
            baseline_snippets_kept=base_kept,
            baseline_snippets_dropped=base_dropped,
        )
    print("", file=sys.stderr)
    for name, value in result.items():
        print(f"  {name:26s} {value:.4f}", file=sys.stderr)
    if overrides:
        print(f"  settings overridden: {args.set}", file=sys.stderr)
    named = {
        "baseline": "trafilatura.extract defaults, same decoded HTML",
        "heldout_baseline": "the better of trafilatura defaults and include_comments=False",
        "folds": k,
        "heldout_fold_f1": [round(v, 4) if v == v else None for v in held_folds],  # None: empty
        "chosen": chosen,
        "quick": args.quick,
    }
    print(json.dumps({**{key: round(v, 4) for key, v in result.items()}, **named}))
    return {**result, **named}


if __name__ == "__main__":
    main()
