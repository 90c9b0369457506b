"""Main-text extraction: `extract_page` against trafilatura's defaults, same pages, same run.

    python benchmarks/extraction.py [--data DIR] [--snippets DIR] [--limit N]
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

Speed: pages per second, one process, the same pages, after a warm-up pass; each page is
timed for both extractors back to back, `--repeat` times, and its fastest run counts (a
load spike from other work on the machine then does not). Both extractors start from the
same bytes and the same `decode_html`, so the comparison is of the extraction.

Human lines go to stderr; the last line on stdout is one JSON object. `--set` overrides an
`ExtractSettings` field, which is how the settings were measured (docs/extraction.md).
`--quick`: the first 5 pages of each set, one timed pass, the same code path, a few seconds
(CI runs it so that the script cannot rot; its figures are not measurements).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trafilatura  # noqa: E402

from benchmarks._common import parse, test_data_root  # noqa: E402
from scraping.charset import decode_html  # noqa: E402
from scraping.extract import ExtractSettings, extract_page  # noqa: E402

_TOKEN = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")


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
# Extractors


def ours_factory(settings: ExtractSettings) -> Callable[[bytes, str], str]:
    def ours(html: bytes, url: str) -> str:
        page = extract_page(html, url, None, settings)
        return page.text if page is not None else ""

    return ours


def baseline(html: bytes, url: str) -> str:
    """trafilatura's defaults, on the same decoded text that ours starts from."""
    return trafilatura.extract(decode_html(html, None), url=url) or ""


def run(extractor: Callable[[bytes, str], str], pages: list[tuple[str, bytes]]) -> list[str]:
    return [extractor(html, url) for url, html in pages]


def pages_per_second(
    extractors: list[Callable[[bytes, str], str]], pages: list[tuple[str, bytes]], repeat: int
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


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--snippets", type=Path, default=default_snippets())
    parser.add_argument("--limit", type=int, default=None, help="first N pages of each set")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes, best kept")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override an ExtractSettings field (measurement sweeps)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny input, seconds (CI)")
    # --quick: smaller defaults; options given explicitly still win
    args = parse(parser, argv, quick=dict(limit=5, repeat=1))
    if not (args.data / "ground-truth.json").exists():
        raise SystemExit(f"no ground-truth.json in {args.data}; set WEBTEXT_TEST_DATA or --data")
    logging.disable(logging.CRITICAL)  # trafilatura logs every discarded page

    settings = ExtractSettings(**parse_overrides(args.set))
    ours = ours_factory(settings)
    articles = load_articles(args.data, args.limit)
    pages = [(url, html) for url, html, _ in articles]
    print(f"{len(pages)} article pages from {args.data}", file=sys.stderr)

    ours_texts = run(ours, pages)  # also the warm-up pass
    base_texts = run(baseline, pages)
    ours_q = macro_scores(zip(ours_texts, (gold for *_, gold in articles), strict=True))
    base_q = macro_scores(zip(base_texts, (gold for *_, gold in articles), strict=True))
    ours_speed, base_speed = pages_per_second([ours, baseline], pages, args.repeat)

    result = {
        "f1": ours_q["f1"],
        "precision": ours_q["precision"],
        "recall": ours_q["recall"],
        "baseline_f1": base_q["f1"],
        "baseline_precision": base_q["precision"],
        "baseline_recall": base_q["recall"],
        "pages_per_s": ours_speed,
        "baseline_pages_per_s": base_speed,
        "speed_ratio": ours_speed / base_speed,
    }
    if args.snippets and (args.snippets / "evaldata.json").exists():
        items = load_snippets(args.snippets, args.limit)
        snippet_pages = [(url, html) for url, html, _, _ in items]
        gold = [(w, wo) for _, _, w, wo in items]
        kept, dropped = snippet_rates(run(ours, snippet_pages), gold)
        base_kept, base_dropped = snippet_rates(run(baseline, snippet_pages), gold)
        result.update(
            snippets_kept=kept,
            snippets_dropped=dropped,
            baseline_snippets_kept=base_kept,
            baseline_snippets_dropped=base_dropped,
        )
        print(f"{len(items)} snippet pages from {args.snippets}", file=sys.stderr)
    for name, value in result.items():
        print(f"  {name:26s} {value:.4f}", file=sys.stderr)
    if settings != ExtractSettings():
        print(f"  settings overridden: {args.set}", file=sys.stderr)
    named = {"baseline": "trafilatura.extract defaults, same decoded HTML", "quick": args.quick}
    print(json.dumps({**{k: round(v, 4) for k, v in result.items()}, **named}))
    return result


if __name__ == "__main__":
    main()
