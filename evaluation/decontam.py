"""Train/eval overlap as in the GPT-2 paper: a Bloom filter of the training set's 8-grams.

The paper normalised text to lower-cased alphanumeric words separated by single spaces,
put every 8-gram of WebText into Bloom filters, and reported per evaluation set the share
of its 8-grams found there. `build_ngram_filter` makes that filter a store version of
stage `ngram-filter` (parent: a `webtext` version); `overlap` measures an evaluation set.

Memory: a filter sized for `capacity` n-grams at false-positive rate p holds
-capacity * ln(p) / ln(2)^2 bits: 19.2 bits (2.4 bytes) per n-gram at p = 1e-4.
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from rbloom import Bloom

from webtext.dataset import dataset_parts, iter_texts
from webtext.stage import NoProgress, Progress, Stage, StageWrite, run_stage
from webtext.store import StageResult, Store, VersionRef

STAGE = Stage("ngram-filter", __name__)
FILTER_FILE = "ngrams.bloom"
HASH = "blake2b-128"
# magic (it names the hash: filters made with another one must not load), n, capacity,
# false-positive rate; rbloom's own bytes follow
HEADER = struct.Struct("<16sIQd")
MAGIC = b"ngram-blake2b128"

# Unicode letters and digits, not just [a-z0-9]: an ASCII-only rule would give non-Latin
# text no words at all, so its overlap would read as zero instead of being measured.
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words, punctuation and whitespace dropped.

    NFKC first, so compatibility forms ("ﬁ", full-width digits) and decomposed accents
    match their plain forms: a scraped page and a dataset's copy of the same text often
    differ only there. casefold() is lower() that also folds e.g. "ß" to "ss".
    """
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def ngrams(words: list[str], n: int = 8) -> Iterator[str]:
    """Every run of `n` consecutive words, joined by single spaces; none if fewer words."""
    for start in range(len(words) - n + 1):
        yield " ".join(words[start : start + n])


def stable_hash(ngram: str) -> int:
    """A signed 128-bit hash of the UTF-8 bytes, the same in every process.

    rbloom's default is hash(), which Python salts per process for str: a saved filter
    would answer nonsense when loaded anywhere else.
    """
    digest = hashlib.blake2b(ngram.encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big", signed=True)


class NgramFilter:
    """A Bloom filter of normalised n-grams: no false negatives, `fp_rate` false positives
    as long as at most `capacity` distinct n-grams are added.
    """

    def __init__(self, capacity: int, fp_rate: float = 1e-4, n: int = 8) -> None:
        self.n = n
        self.capacity = max(capacity, 1)  # rbloom refuses 0; an empty set is a valid filter
        self.fp_rate = fp_rate
        self._bloom = Bloom(self.capacity, fp_rate, stable_hash)

    def add_text(self, text: str) -> int:
        """Add every n-gram of `text`; returns how many there were (repeats included)."""
        grams = list(ngrams(words(text), self.n))
        self._bloom.update(grams)
        return len(grams)

    def __contains__(self, ngram: str) -> bool:
        return ngram in self._bloom

    @property
    def size_bytes(self) -> int:
        return self._bloom.size_in_bits // 8

    def save(self, handle: BinaryIO) -> None:
        """Write header and bits to a binary file object (local or fsspec)."""
        handle.write(HEADER.pack(MAGIC, self.n, self.capacity, self.fp_rate))
        handle.write(self._bloom.save_bytes())

    @classmethod
    def load(cls, handle: BinaryIO) -> NgramFilter:
        magic, n, capacity, fp_rate = HEADER.unpack(handle.read(HEADER.size))
        if magic != MAGIC:
            raise ValueError(f"not an n-gram filter of hash {HASH}: header {magic!r}")
        loaded = cls.__new__(cls)
        loaded.n, loaded.capacity, loaded.fp_rate = n, capacity, fp_rate
        loaded._bloom = Bloom.load_bytes(handle.read(), stable_hash)
        return loaded


def build_ngram_filter(
    store: Store,
    webtext: VersionRef,
    n: int = 8,
    fp_rate: float = 1e-4,
    *,
    progress: Progress | None = None,
) -> StageResult:
    """A filter of every n-gram of the dataset as of `webtext` (with the earlier versions it
    names).

    Two passes: the first counts n-grams, so the filter is sized for the data (one over
    capacity silently has a worse false-positive rate than recorded); the second adds them.
    Repeats are counted too, so capacity is an upper bound on distinct n-grams.
    `progress` counts documents read, in both passes: 2 x documents in all.
    """
    progress = progress or NoProgress()

    def build(work: StageWrite) -> None:
        parts = dataset_parts(store, webtext)
        progress.start(2 * sum(part.rows or 0 for part in parts))
        texts = iter_texts(store, parts, on_progress=progress.advance)
        capacity = sum(max(len(words(text)) - n + 1, 0) for text in texts)
        ngram_filter = NgramFilter(capacity, fp_rate, n)
        counts = work.counts
        for text in iter_texts(store, parts, on_progress=progress.advance):
            counts.add("ngrams", ngram_filter.add_text(text))
            counts.add("documents")
            counts.add("bytes", len(text.encode()))
        with work.out.open(FILTER_FILE, rows=counts["ngrams"]) as handle:
            ngram_filter.save(handle)
        counts.add("capacity", ngram_filter.capacity)
        counts.add("filter_bytes", ngram_filter.size_bytes)

    parameters = {"n": n, "fp_rate": fp_rate, "hash": HASH}
    count_names = ("ngrams", "documents", "bytes")
    return run_stage(store, STAGE, (webtext,), parameters, build, count_names=count_names)


def load_ngram_filter(store: Store, ref: VersionRef) -> NgramFilter:
    with store.open_verified(ref, FILTER_FILE) as handle:
        return NgramFilter.load(handle)


def overlap(ngram_filter: NgramFilter, texts: Iterable[str]) -> dict[str, Any]:
    """How much of an evaluation set's n-grams the training filter holds, as in the paper.

    `expected_false_positives` is what chance alone would put in `in_train`: an overlap
    near it means no measurable contamination.
    """
    total = in_train = documents = with_overlap = 0
    for text in texts:
        grams = list(ngrams(words(text), ngram_filter.n))
        hits = sum(gram in ngram_filter for gram in grams)
        total += len(grams)
        in_train += hits
        documents += 1
        with_overlap += hits > 0
    return {
        "ngrams": total,
        "in_train": in_train,
        "fraction": in_train / total if total else 0.0,
        "documents": documents,
        "documents_with_overlap": with_overlap,
        "expected_false_positives": total * ngram_filter.fp_rate,
    }
