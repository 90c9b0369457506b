"""Near-duplicate detection: our vectorised MinHash and band keys against datasketch as is.

    python benchmarks/dedup.py [--docs 20000] [--pairs 2000] [--processes 2]
                               [--baseline-docs N] [--sweep-docs 4000] [--seed 0] [--quick]

Corpus: real English text that ships with CPython, the paragraphs of `pydoc_data.topics`
(the language reference) and of the standard library's docstrings (read with `ast`, never
imported). A document joins random paragraphs up to a random length of 300-1000 words.

Labelled pairs: for `--pairs` documents, an edited copy. A target similarity t is drawn
uniformly from [0.5, 1]; m = n (1 - t) / (k (1 + t)) random word edits (substitution by a
corpus word, deletion or insertion, equally likely) would bring the k-word-shingle Jaccard
of an n-shingle text to about t. The label is the exact Jaccard of the two shingle sets
(`dedup.minhash.shingles`), computed after editing. All other documents are distractors;
the whole set is shuffled.

Ours (timed): `signatures_parallel` over `--processes` workers, `band_keys`, candidate pairs
from equal keys (a sort per band), and verification of each candidate by its signature
estimate >= threshold. Baseline (timed the same way, same documents, same shingles):
`MinHash(num_perm, seed)`, `update(shingle.encode())` per shingle, then `MinHashLSH(threshold,
num_perm)` `query` then `insert`; a pair is merged when the later document's query returns
the earlier. Both are timed from text to merged pairs, after one warm-up call.

Metrics: `recall_at_0.85` = share of labelled pairs with Jaccard >= 0.85 that are merged;
`precision_below_0.7` = share of labelled pairs with Jaccard < 0.7 that are not merged;
`index_bytes_per_doc` = the stored signature (num_perm x uint32) plus the band keys (bands x
uint64); `peak_rss_mb` = this process's VmHWM after our run (corpus included, baseline not
yet run), `worker_peak_rss_mb` the largest worker's.

The sweep (`--sweep-docs`, 0 to skip) repeats ours, one process, on a smaller labelled set
for shingle sizes 3/5/7 x num_perm 64/128/256, then for the chosen shingle size and
num_perm, over thresholds and banding rules: the measurement behind `MinHashSettings`.
Human lines go to stderr; the last line on stdout is one JSON object. `--quick`: 400
documents, 100 pairs, a 200-document sweep, the same code path, a few seconds (CI runs it so
that the script cannot rot; its figures are not measurements).
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import resource
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import parse  # noqa: E402
from dedup.minhash import (  # noqa: E402
    MinHashSettings,
    band_keys,
    shingles,
    signatures,
    signatures_parallel,
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# ---------------------------------------------------------------------------------------
# Corpus and labelled pairs


def paragraphs() -> list[str]:
    """Distinct paragraphs of >= 8 words from CPython's reference topics and docstrings."""
    import pydoc_data.topics

    texts = list(pydoc_data.topics.topics.values())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages"}
    for path in sorted(stdlib.rglob("*.py")):
        if skip & set(path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        texts.extend(
            doc
            for node in ast.walk(tree)
            if isinstance(node, kinds) and (doc := ast.get_docstring(node))
        )
    found = (p.strip() for text in texts for p in text.split("\n\n"))
    return list(dict.fromkeys(p for p in found if len(p.split()) >= 8))


def make_document(pool: list[str], rng: random.Random) -> str:
    target, words, parts = rng.randint(300, 1000), 0, []
    while words < target:
        part = rng.choice(pool)
        parts.append(part)
        words += len(part.split())
    return "\n\n".join(parts)


def jaccard(a: str, b: str, shingle_words: int) -> float:
    x, y = set(shingles(a, shingle_words)), set(shingles(b, shingle_words))
    return len(x & y) / len(x | y) if x | y else 1.0


def edited_copy(
    text: str, shingle_words: int, vocabulary: list[str], rng: random.Random
) -> tuple[str, float]:
    """A copy with random word edits aimed at a Jaccard drawn from [0.5, 1]; its edit rate."""
    tokens = text.split()
    target = rng.uniform(0.5, 1.0)
    n = max(len(tokens) - shingle_words + 1, 1)
    edits = round(n * (1 - target) / (shingle_words * (1 + target)))
    for _ in range(edits):
        op = rng.randrange(3)
        if op == 0:
            tokens[rng.randrange(len(tokens))] = rng.choice(vocabulary)
        elif op == 1 and len(tokens) > 1:
            del tokens[rng.randrange(len(tokens))]
        else:
            tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(vocabulary))
    return " ".join(tokens), edits / max(len(text.split()), 1)


class LabelledSet:
    """Shuffled texts; labelled pairs (i, j) with i < j, their exact Jaccard and edit rate."""

    def __init__(
        self, pool: list[str], docs: int, pairs: int, shingle_words: int, seed: int
    ) -> None:
        rng = random.Random(seed)
        vocabulary = [w for p in rng.sample(pool, min(len(pool), 2000)) for w in p.split()]
        texts, labels = [], []
        for _ in range(pairs):
            original = make_document(pool, rng)
            copy, rate = edited_copy(original, shingle_words, vocabulary, rng)
            labels.append(
                (len(texts), len(texts) + 1, jaccard(original, copy, shingle_words), rate)
            )
            texts += [original, copy]
        texts += [make_document(pool, rng) for _ in range(docs - len(texts))]
        order = list(range(len(texts)))
        rng.shuffle(order)
        position = np.empty(len(texts), np.int64)
        position[order] = np.arange(len(texts))
        self.texts = [texts[i] for i in order]
        ends = np.array([(position[i], position[j]) for i, j, _, _ in labels], np.int64)
        self.pairs = np.sort(ends, axis=1)
        self.similarity = np.array([s for _, _, s, _ in labels])
        self.edit_rate = np.array([r for _, _, _, r in labels])

    def scores(self, merged: np.ndarray, limit: int | None = None) -> tuple[float, float, int, int]:
        """Recall at >= 0.85 and precision below 0.7 over the pairs inside the first `limit`."""
        n = len(self.texts)
        inside = self.pairs[:, 1] < (limit or n)
        merged_codes = merged[:, 0] * n + merged[:, 1]
        hit = np.isin(self.pairs[:, 0] * n + self.pairs[:, 1], merged_codes)
        high = inside & (self.similarity >= 0.85)
        low = inside & (self.similarity < 0.7)
        return float(hit[high].mean()), float(1 - hit[low].mean()), int(high.sum()), int(low.sum())


# ---------------------------------------------------------------------------------------
# Ours: band keys -> candidate pairs -> verified pairs


def candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """Distinct (i, j), i < j, of documents sharing a key in any band."""
    n = len(keys)
    found = []
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        ranked = keys[order, band]
        # Equal keys are adjacent once sorted: pair every member of a run with those
        # d places after it, for growing d, until no run is that long.
        gap = 1
        while gap < n and (same := np.flatnonzero(ranked[gap:] == ranked[:-gap])).size:
            found.append(np.stack((order[same], order[same + gap]), axis=1))
            gap += 1
    if not found:
        return np.empty((0, 2), np.int64)
    pairs = np.sort(np.concatenate(found), axis=1).astype(np.int64)
    codes = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack((codes // n, codes % n), axis=1)


def verified(sigs: np.ndarray, pairs: np.ndarray, threshold: float) -> np.ndarray:
    """The candidate pairs whose signature estimate reaches the threshold."""
    estimates = np.empty(len(pairs))
    for lo in range(0, len(pairs), 8192):
        a, b = sigs[pairs[lo : lo + 8192, 0]], sigs[pairs[lo : lo + 8192, 1]]
        estimates[lo : lo + 8192] = (a == b).mean(axis=1)
    return pairs[estimates >= threshold]


def ours(
    texts: list[str], settings: MinHashSettings, processes: int
) -> tuple[np.ndarray, int, float]:
    """Merged pairs, the number of candidates, seconds."""
    started = time.perf_counter()
    sigs = signatures_parallel(texts, settings, processes=processes)
    candidates = candidate_pairs(band_keys(sigs, settings))
    merged = verified(sigs, candidates, settings.threshold)
    return merged, len(candidates), time.perf_counter() - started


def baseline(texts: list[str], settings: MinHashSettings) -> tuple[np.ndarray, float]:
    """datasketch as its documentation shows it: merged pairs and seconds."""
    started = time.perf_counter()
    lsh = MinHashLSH(threshold=settings.threshold, num_perm=settings.num_perm)
    merged = []
    for key, text in enumerate(texts):
        minhash = MinHash(num_perm=settings.num_perm, seed=settings.seed)
        for shingle in shingles(text, settings.shingle_words):
            minhash.update(shingle.encode("utf-8"))
        merged.extend((other, key) for other in lsh.query(minhash))
        lsh.insert(key, minhash)
    seconds = time.perf_counter() - started
    return np.array(merged, np.int64).reshape(-1, 2), seconds


# ---------------------------------------------------------------------------------------
# The sweep behind the default settings


def sweep(pool: list[str], docs: int, pairs: int, seed: int) -> None:
    _log(
        "\nsweep: one process, labels exact for each shingle size; bands x rows from "
        "datasketch's _optimal_param(threshold, num_perm, 0.1, 0.9)"
    )
    _log(
        f"{'shingle':>7} {'perm':>5} {'b x r':>7} {'recall>=.85':>11} {'prec<.7':>8} "
        f"{'cand/doc':>8} {'docs/s':>7} {'edits@.85':>9} {'unrelated J':>11}"
    )
    chosen = MinHashSettings()
    kept: dict[int, tuple[LabelledSet, np.ndarray]] = {}
    for shingle_words in (3, 5, 7):
        data = LabelledSet(pool, docs, pairs, shingle_words, seed)
        near = np.abs(data.similarity - 0.85) < 0.02
        rng = np.random.default_rng(seed)
        unrelated = rng.integers(0, len(data.texts), (300, 2))
        background = np.mean(
            [jaccard(data.texts[i], data.texts[j], shingle_words) for i, j in unrelated if i != j]
        )
        for num_perm in (64, 128, 256):
            settings = MinHashSettings.tuned(shingle_words, num_perm, chosen.threshold)
            started = time.perf_counter()
            sigs = signatures(data.texts, settings)
            speed = len(data.texts) / (time.perf_counter() - started)
            candidates = candidate_pairs(band_keys(sigs, settings))
            recall, precision, _, _ = data.scores(verified(sigs, candidates, settings.threshold))
            _log(
                f"{shingle_words:>7} {num_perm:>5} {settings.bands:>3} x {settings.rows:<3}"
                f"{recall:>11.3f} {precision:>8.3f} {len(candidates) / len(data.texts):>8.3f} "
                f"{speed:>7.0f} {np.median(data.edit_rate[near]):>9.3f} {background:>11.4f}"
            )
            if (shingle_words, num_perm) == (chosen.shingle_words, chosen.num_perm):
                kept[shingle_words] = (data, sigs)
    data, sigs = kept[chosen.shingle_words]
    _log(
        f"\nshingle {chosen.shingle_words}, num_perm {chosen.num_perm}: threshold and banding "
        "(weights = datasketch's false positive, false negative weights)"
    )
    _log(
        f"{'threshold':>9} {'weights':>9} {'b x r':>7} {'P(cand|.85)':>11} {'recall>=.85':>11} "
        f"{'prec<.7':>8} {'cand/doc':>8}"
    )
    for threshold in (0.75, 0.78, 0.8):
        for weights in ((0.5, 0.5), (0.3, 0.7), (0.1, 0.9)):
            settings = MinHashSettings.tuned(
                chosen.shingle_words, chosen.num_perm, threshold, false_negative_weight=weights[1]
            )
            candidates = candidate_pairs(band_keys(sigs, settings))
            recall, precision, _, _ = data.scores(verified(sigs, candidates, threshold))
            _log(
                f"{threshold:>9.2f} {weights[0]:>4}/{weights[1]:<4} {settings.bands:>3} x "
                f"{settings.rows:<3}{settings.candidate_probability(0.85):>11.4f} {recall:>11.3f} "
                f"{precision:>8.3f} {len(candidates) / len(data.texts):>8.3f}"
            )


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=2_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--baseline-docs", type=int, default=None, help="time the baseline on the first N only"
    )
    parser.add_argument("--sweep-docs", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny input, seconds (CI)")
    # --quick: smaller defaults; options given explicitly still win
    args = parse(parser, argv, quick=dict(docs=400, pairs=100, sweep_docs=200))
    settings = MinHashSettings()

    started = time.perf_counter()
    pool = paragraphs()
    data = LabelledSet(pool, args.docs, args.pairs, settings.shingle_words, args.seed)
    texts = data.texts
    words = sum(len(t.split()) for t in texts) / len(texts)
    chars = sum(map(len, texts)) / len(texts)
    _log(
        f"corpus: {len(pool):,} paragraphs; {len(texts):,} documents, {words:.0f} words and "
        f"{chars:,.0f} characters on average; {len(data.pairs):,} labelled pairs "
        f"({time.perf_counter() - started:.1f} s to build)"
    )
    bins = np.histogram(data.similarity, bins=[0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.01])[0]
    _log(f"labelled Jaccard histogram <.5/.5/.6/.7/.8/.85/.9/.95-1: {bins.tolist()}")

    signatures(texts[:20], settings)  # warm-up: character table, permutations
    merged, candidates, our_s = ours(texts, settings, args.processes)
    peak_mb = _peak_rss_mb()
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    recall, precision, high, low = data.scores(merged)
    _log(
        f"ours ({args.processes} processes): {our_s:.2f} s, {len(texts) / our_s:,.0f} docs/s; "
        f"{candidates:,} candidates, {len(merged):,} merged; recall@0.85 {recall:.4f} "
        f"({high} pairs), precision<0.7 {precision:.4f} ({low} pairs)"
    )
    _, _, one_s = ours(texts, settings, 1)
    _log(f"ours (1 process): {one_s:.2f} s, {len(texts) / one_s:,.0f} docs/s")

    limit = min(args.baseline_docs or len(texts), len(texts))
    base_texts = texts[:limit]
    baseline(base_texts[:20], settings)  # warm-up
    base_merged, base_s = baseline(base_texts, settings)
    base_recall, base_precision, base_high, base_low = data.scores(base_merged, limit)
    _log(
        f"baseline ({limit:,} docs): {base_s:.1f} s, {limit / base_s:,.0f} docs/s; "
        f"{len(base_merged):,} merged; recall@0.85 {base_recall:.4f} ({base_high} pairs), "
        f"precision<0.7 {base_precision:.4f} ({base_low} pairs)"
    )

    if args.sweep_docs:
        sweep(pool, args.sweep_docs, args.sweep_docs // 4, args.seed + 1)

    index_bytes = settings.num_perm * 4 + settings.bands * 8
    docs_per_s = len(texts) / our_s
    base_docs_per_s = limit / base_s
    result = {
        "recall_at_0.85": round(recall, 4),
        "precision_below_0.7": round(precision, 4),
        "docs_per_s": round(docs_per_s),
        "baseline_docs_per_s": round(base_docs_per_s, 1),
        "ratio": round(docs_per_s / base_docs_per_s, 1),
        "index_bytes_per_doc": index_bytes,
        "peak_rss_mb": round(peak_mb, 1),
        "worker_peak_rss_mb": round(worker_mb, 1),
        "baseline_recall_at_0.85": round(base_recall, 4),
        "baseline_precision_below_0.7": round(base_precision, 4),
        "one_process_docs_per_s": round(len(texts) / one_s),
        "processes": args.processes,
        "docs": len(texts),
        "baseline_docs": limit,
        "words_per_doc": round(words),
        "labelled_pairs": len(data.pairs),
        "pairs_at_or_above_0.85": high,
        "pairs_below_0.7": low,
        "candidates_per_doc": round(candidates / len(texts), 4),
        "index_gib_for_8m_docs": round(index_bytes * 8e6 / 2**30, 2),
        "settings": settings.parameters(),
        "baseline": "datasketch MinHash + MinHashLSH query/insert, as documented",
        "quick": args.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
