"""Exact-duplicate keys and MinHash signatures with LSH band keys.

Exact duplicates: `text_hash` = BLAKE2b-128 of `normalize_text` (NFKC, casefold, punctuation
and symbols dropped, whitespace collapsed), so copies that differ only in case, spacing or
punctuation share a key.

Near duplicates: MinHash over the set of word shingles (`shingle_words` consecutive words of
the normalised text; a text with fewer words is one shingle of all of them, a text with no
words has no shingle and gets datasketch's empty signature, all 2^32 - 1, so that empty
texts match each other, as their equal `text_hash` already says). `signatures` computes, per
text, exactly what datasketch's `MinHash` (scheme "affine32", its default since 2.0) holds
after `update_batch(shingle_hashes(text))` with `hashfunc=int`: the same permutations
(taken from datasketch for `seed`), the same fmix32 pre-mix, a*h+b mod 2^32, min. Only the
shingle hash differs from datasketch's default SHA-1: each word's code points are hashed
once with a polynomial over prefix sums, a shingle combines its word hashes, all in numpy
over a whole batch of texts. Values are stable across processes, runs and machines.

`band_keys` turns `bands` x `rows` signature entries into one 64-bit key per band. Pairs
sharing a key in any band are candidates; a candidate is a duplicate when
`jaccard_estimate` (share of equal entries over all `num_perm`) reaches `threshold`.

Choice of parameters, measured with `python benchmarks/dedup.py` (2 cores, Python 3.11):
real text (CPython's reference topics and docstrings, 300-1000-word documents) and edited
copies whose exact shingle Jaccard spans 0.5-1; 4,000 documents, 1,000 pairs, labels exact
for each shingle size; bands x rows from `_optimal_param(0.78, num_perm, 0.1, 0.9)`; docs/s
is `signatures` on one process; "edits@.85" is the median share of words edited in copies
at Jaccard 0.85 +- 0.02; "unrelated J" the mean exact Jaccard of 300 random document pairs.

    shingle  perm   b x r recall>=.85  prec<.7 cand/doc  docs/s edits@.85 unrelated J
          3    64   9 x 7        0.994    0.989    0.191   10840     0.033      0.0033
          3   128  16 x 8        1.000    1.000    0.198    9011     0.033      0.0033
          3   256  25 x 10       1.000    1.000    0.189    6712     0.033      0.0033
          5    64   9 x 7        0.984    0.981    0.174   10308     0.018      0.0029
          5   128  16 x 8        0.990    1.000    0.185    7892     0.018      0.0029
          5   256  25 x 10       1.000    1.000    0.170    6318     0.018      0.0029
          7    64   9 x 7        1.000    0.981    0.185   10224     0.012      0.0010
          7   128  16 x 8        0.997    0.994    0.192    7820     0.012      0.0010
          7   256  25 x 10       0.997    1.000    0.177    6102     0.012      0.0010

- shingle_words = 5: accuracy and speed hardly depend on it; it sets what "Jaccard 0.85"
  means. With 5 a copy stays above 0.85 with about 1 word in 55 edited (3: 1 in 30, and
  unrelated texts share more short phrases; 7: 1 in 80). 5-word shingles are also the usual
  choice for web-scale MinHash dedup (Lee et al. 2022, RefinedWeb).
- num_perm = 128: 64 loses precision and recall at the edges (standard error 0.057 at
  J = 0.7 against 0.040); 256 adds nothing measurable but costs ~20% speed and twice the
  signature bytes. Signatures are uint32: 512 bytes per document.
- threshold = 0.78: the estimate's standard error is sqrt(J(1-J)/num_perm), 0.032 at 0.85
  and 0.041 at 0.7; 0.78 puts both boundaries about 2.1 standard errors away.
- bands x rows = 16 x 8 = `_optimal_param(0.78, 128, 0.1, 0.9)`: weighting missed pairs 9:1
  moves the S-curve, 1 - (1 - J^8)^16, left of the threshold (P(candidate) 0.994 at J =
  0.85, 0.06 at 0.5, 0.001 at 0.3): a missed candidate is lost for good, an extra one costs
  one signature comparison. From the same sweep, at shingle 5 and num_perm 128:

    threshold   weights   b x r P(cand|.85) recall>=.85  prec<.7 cand/doc
         0.75  0.5/0.5   11 x 11      0.8666       0.981    0.994    0.134
         0.75  0.1/0.9   16 x 8       0.9938       0.994    0.997    0.185
         0.78  0.5/0.5   10 x 12      0.7844       0.951    1.000    0.116
         0.78  0.3/0.7   12 x 10      0.9280       0.987    1.000    0.148
         0.78  0.1/0.9   16 x 8       0.9938       0.990    1.000    0.185
         0.80  0.1/0.9   14 x 9       0.9750       0.987    1.000    0.163

The docs/s column comes from a shared machine and moves by up to ~40% between runs; the
accuracy columns are deterministic. On 20,000 documents (672 words on average) the whole
path (signatures, band keys, candidates, verification) ran at 8,400 documents/s in one
process and 6,300-6,900/s over two (another job held one of the two cores; on idle cores
two processes gave ~1.6x one), 28-36 times datasketch used straightforwardly (191-226/s).
Storage: 512 bytes of signature and 128 of band keys per document, 4.8 GiB for 8M documents.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import multiprocessing
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from datasketch import LeanMinHash, MinHash
from datasketch.lsh import _optimal_param

_U32 = np.uint32
_U64 = np.uint64
_SCHEME = "affine32"  # datasketch 2's default: 32-bit values, a*h+b mod 2^32 with a odd

# Character classes: word characters are kept, whitespace separates words, the rest is dropped.
_WORD, _SPACE, _DROP = 0, 1, 2

# Polynomial base for word hashes over code points (odd, so invertible mod 2^64).
_BASE = 0x100000001B3
_BASE_INV = pow(_BASE, -1, 1 << 64)

# Characters per batch of texts and cells (shingles x num_perm, uint32) per permutation block:
# large enough that numpy's per-call overhead vanishes, small enough (8 MiB) to bound memory.
_BATCH_CHARS = 1 << 18
_BLOCK_CELLS = 1 << 21


@dataclass(frozen=True)
class MinHashSettings:
    """Shingling, signature and banding parameters (see the module docstring for why)."""

    shingle_words: int = 5
    num_perm: int = 128
    threshold: float = 0.78
    bands: int = 16
    rows: int = 8
    seed: int = 1

    def __post_init__(self) -> None:
        if self.shingle_words < 1 or self.num_perm < 2:
            raise ValueError("shingle_words must be >= 1 and num_perm >= 2")
        if self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows ({self.bands} x {self.rows}) exceeds num_perm")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")

    @classmethod
    def tuned(
        cls,
        shingle_words: int,
        num_perm: int,
        threshold: float,
        seed: int = 1,
        false_negative_weight: float = 0.9,
    ) -> MinHashSettings:
        """Settings whose bands x rows come from datasketch's own optimiser.

        `false_negative_weight` > 0.5 moves the S-curve left of the threshold: a missed
        pair is lost, an extra candidate only costs one signature comparison.
        """
        bands, rows = _optimal_param(
            threshold, num_perm, round(1 - false_negative_weight, 6), false_negative_weight
        )
        return cls(shingle_words, num_perm, threshold, bands, rows, seed)

    def parameters(self) -> dict:
        return asdict(self)

    def candidate_probability(self, jaccard: float) -> float:
        """Probability that two documents of this Jaccard similarity share a band key."""
        return 1.0 - (1.0 - jaccard**self.rows) ** self.bands


# ---------------------------------------------------------------------------------------
# Hash mixing (vectorised, wrapping unsigned arithmetic)


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a bijection that spreads every input bit."""
    h = h ^ (h >> _U64(33))
    h *= _U64(0xFF51AFD7ED558CCD)
    h ^= h >> _U64(33)
    h *= _U64(0xC4CEB9FE1A85EC53)
    h ^= h >> _U64(33)
    return h


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, which datasketch applies before its permutations."""
    h = h ^ (h >> _U32(16))
    h *= _U32(0x85EBCA6B)
    h ^= h >> _U32(13)
    h *= _U32(0xC2B2AE35)
    h ^= h >> _U32(16)
    return h


@functools.cache
def _char_classes() -> np.ndarray:
    """Class of every code point: letters, digits and marks are word characters."""
    chars = "".join(map(chr, range(sys.maxunicode + 1)))
    size = len(chars)
    word = np.fromiter(map(str.isalnum, chars), bool, size)
    # Marks (accents, Indic vowel signs) belong to the word they modify.
    word |= np.fromiter((unicodedata.category(c)[0] == "M" for c in chars), bool, size)
    space = np.fromiter(map(str.isspace, chars), bool, size)
    return np.where(word, _WORD, np.where(space, _SPACE, _DROP)).astype(np.uint8)


@functools.lru_cache(maxsize=1)  # the largest table serves every smaller batch
def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE**i and BASE**-i mod 2^64 for i < size."""
    powers = np.empty(size, _U64)
    inverse = np.empty(size, _U64)
    powers[0] = inverse[0] = 1
    np.cumprod(np.full(size - 1, _BASE, _U64), out=powers[1:])
    np.cumprod(np.full(size - 1, _BASE_INV, _U64), out=inverse[1:])
    return powers, inverse


@functools.cache
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's own permutation parameters, so signatures are interchangeable."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME).permutations
    return a.astype(_U32), b.astype(_U32)


@functools.cache
def _shingle_multipliers(shingle_words: int) -> np.ndarray:
    """One odd 64-bit multiplier per position in a shingle, so word order matters.

    Derived by our own mixer rather than a numpy Generator, whose streams may change
    between numpy versions: stored signatures must stay comparable.
    """
    positions = np.arange(1, shingle_words + 1, dtype=_U64) * _U64(0x9E3779B97F4A7C15)
    return _fmix64(positions) | _U64(1)


# ---------------------------------------------------------------------------------------
# Normalisation and exact duplicates


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    # For ASCII, lower() is casefold() and several times faster.
    return text.lower() if text.isascii() else text.casefold()


def _codepoints(text: str) -> np.ndarray:
    # surrogatepass: a lone surrogate (from bad decoding) is dropped as a non-word character
    # instead of failing the document.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), _U32)


def _words(folded: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kept code points, their positions in `folded`, and the [start, end) of each word."""
    cp = _codepoints(folded)
    classes = _char_classes()[cp]
    kept = np.flatnonzero(classes != _DROP)
    is_word = np.zeros(len(kept) + 2, np.int8)
    np.equal(classes[kept], _WORD, out=is_word[1:-1], casting="unsafe")
    edges = np.diff(is_word)
    return cp[kept], kept, np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def normalize_text(text: str) -> str:
    """NFKC, casefold, drop punctuation and symbols, collapse whitespace to single spaces.

    Word characters are letters, digits and combining marks; whitespace separates words;
    every other character (punctuation, symbols, controls) is removed without a space, so
    "e-mail" and "email" are the same word.
    """
    cp, _, starts, ends = _words(_fold(text))
    chars = cp.tobytes().decode("utf-32-le", "surrogatepass")
    return " ".join(chars[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True))


def text_hash(text: str) -> str:
    """Exact-duplicate key: 16-byte BLAKE2b of the normalised text, as 32 hex digits."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).hexdigest()


def shingles(text: str, shingle_words: int) -> list[str]:
    """Word shingles of the normalised text, words joined by a space (a reference, slow).

    A text with fewer words than `shingle_words` is one shingle of all its words; a text
    without words has none.
    """
    words = normalize_text(text).split()
    if len(words) <= shingle_words:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + shingle_words]) for i in range(len(words) - shingle_words + 1)]


# ---------------------------------------------------------------------------------------
# Signatures


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every word of every text, in order, and the word count of each text."""
    folded = [_fold(t) for t in texts]
    # One space between texts keeps words from running across them.
    cp, kept, starts, ends = _words(" ".join(folded))
    text_starts = np.zeros(len(folded), np.int64)
    np.cumsum([len(f) + 1 for f in folded[:-1]], out=text_starts[1:])
    bounds = np.append(np.searchsorted(kept, text_starts), len(cp))
    counts = np.diff(np.searchsorted(starts, bounds))
    # Polynomial hash of each word's code points via prefix sums: sum c_j B^j over the word,
    # shifted to start at B^0 by multiplying with B^-start. Not built to resist crafted
    # collisions, which could only make two different words count as one.
    powers, inverse = _powers(1 << max(20, len(cp).bit_length()))
    prefix = np.zeros(len(cp) + 1, _U64)
    np.cumsum(cp.astype(_U64) * powers[: len(cp)], out=prefix[1:])
    return _fmix64((prefix[ends] - prefix[starts]) * inverse[starts]), counts


def _shingle_hashes(texts: Sequence[str], shingle_words: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hash of every shingle of every text, and the shingle count of each text."""
    words, counts = _word_hashes(texts)
    ends = np.cumsum(counts)
    end_of = np.repeat(ends, counts)  # one past the last word of each word's text
    position = np.arange(len(words))
    multipliers = _shingle_multipliers(shingle_words)
    padded = np.append(words, np.zeros(shingle_words, _U64))
    acc = words * multipliers[0]
    for i in range(1, shingle_words):
        # Past its text's end a shingle takes zeros: only kept for texts shorter than a shingle.
        acc += np.where(position + i < end_of, padded[i : i + len(words)], 0) * multipliers[i]
    first = position == np.repeat(ends - counts, counts)
    keep = (position + shingle_words <= end_of) | first
    per_text = np.where(counts >= shingle_words, counts - shingle_words + 1, np.minimum(counts, 1))
    return (_fmix64(acc[keep]) >> _U64(32)).astype(_U32), per_text


def shingle_hashes(text: str, settings: MinHashSettings) -> np.ndarray:
    """The 32-bit hash of each of a text's shingles (as `shingles` lists them), uint32.

    These are the values a datasketch hash function would return: `MinHash(num_perm,
    seed, hashfunc=int)` updated with them holds exactly `signatures([text])[0]`.
    """
    return _shingle_hashes([text], settings.shingle_words)[0]


def _minhash(hashes: np.ndarray, counts: np.ndarray, settings: MinHashSettings) -> np.ndarray:
    """Per text, the minimum over its shingles of each permutation (datasketch's affine32)."""
    a, b = _permutations(settings.num_perm, settings.seed)
    a, b = a[:, None], b[:, None]
    out = np.full((len(counts), settings.num_perm), np.iinfo(_U32).max, _U32)
    mixed = _fmix32(hashes)
    texts = np.flatnonzero(counts)  # texts without shingles keep the empty signature
    starts = np.cumsum(counts)[texts] - counts[texts]
    step = max(1, _BLOCK_CELLS // settings.num_perm)
    for lo in range(0, len(mixed), step):
        # A block of shingles, (num_perm, shingles) so that each text's minimum runs over
        # contiguous memory; a text cut by the block edge is finished by the next block.
        hi = min(lo + step, len(mixed))
        first = np.searchsorted(starts, lo, side="right") - 1
        last = np.searchsorted(starts, hi, side="left")
        cells = a * mixed[lo:hi]
        cells += b
        seg = np.maximum(starts[first:last], lo) - lo
        rows = texts[first:last]
        out[rows] = np.minimum(out[rows], np.minimum.reduceat(cells, seg, axis=1).T)
    return out


def signatures(texts: Sequence[str], settings: MinHashSettings) -> np.ndarray:
    """MinHash signatures, shape (len(texts), num_perm), uint32 (datasketch's affine32).

    Entry k of a signature is min over the text's shingles of a_k * fmix32(h) + b_k mod
    2^32 with datasketch's own (a_k, b_k) for `settings.seed`, so the share of equal
    entries between two signatures estimates the Jaccard similarity of the shingle sets. A
    text without words gets datasketch's empty signature (all 2^32 - 1).
    """
    out = np.empty((len(texts), settings.num_perm), _U32)
    start = 0
    while start < len(texts):
        end, chars = start, 0
        while end < len(texts) and (end == start or chars < _BATCH_CHARS):
            chars += len(texts[end])
            end += 1
        hashes, counts = _shingle_hashes(texts[start:end], settings.shingle_words)
        out[start:end] = _minhash(hashes, counts, settings)
        start = end
    return out


def _signatures_job(job: tuple[Sequence[str], MinHashSettings]) -> np.ndarray:
    return signatures(*job)


def signatures_parallel(
    texts: Sequence[str], settings: MinHashSettings, processes: int = 2
) -> np.ndarray:
    """`signatures` split over `processes` worker processes (same result).

    Workers are forked where the platform can (they inherit the character table instead of
    rebuilding it); the texts travel to them pickled, the signatures back.
    """
    # Several pieces per worker, so that one slow piece does not idle the others.
    pieces = processes * 4
    if processes <= 1 or len(texts) < pieces:
        return signatures(texts, settings)
    _char_classes()  # built once here; forked workers inherit it
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    bounds = np.linspace(0, len(texts), pieces + 1).astype(int)
    jobs = [(texts[lo:hi], settings) for lo, hi in itertools.pairwise(bounds)]
    with context.Pool(processes) as pool:
        return np.concatenate(pool.map(_signatures_job, jobs, chunksize=1))


def band_keys(signatures: np.ndarray, settings: MinHashSettings) -> np.ndarray:
    """One 64-bit key per band of `rows` consecutive signature entries, shape (n, bands).

    Two documents share a key in band i iff (but for a 2^-64 chance) their signatures agree
    on all of band i's entries. The band number is mixed in, so keys of different bands
    differ too.
    """
    n, rows, bands = len(signatures), settings.rows, settings.bands
    values = signatures[:, : bands * rows].reshape(n, bands, rows).astype(_U64)
    if rows % 2:
        values = np.concatenate((values, np.zeros((n, bands, 1), _U64)), axis=2)
    # Two 32-bit entries per 64-bit word, chained through a bijective mixer.
    words = (values[:, :, 0::2] << _U64(32)) | values[:, :, 1::2]
    keys = np.broadcast_to(_fmix64(np.arange(1, bands + 1, dtype=_U64)), (n, bands))
    for j in range(words.shape[2]):
        keys = _fmix64(keys ^ words[:, :, j])
    return np.ascontiguousarray(keys)


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    """Share of equal entries of two signatures: the MinHash estimate of their Jaccard."""
    if a.shape != b.shape:
        raise ValueError(f"signatures of different shapes: {a.shape} and {b.shape}")
    return float(np.count_nonzero(a == b)) / a.size


def to_datasketch(signature: np.ndarray, settings: MinHashSettings) -> LeanMinHash:
    """The signature as a datasketch LeanMinHash (usable with MinHashLSH and jaccard)."""
    return LeanMinHash(seed=settings.seed, hashvalues=signature, scheme=_SCHEME)
