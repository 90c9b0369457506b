"""MinHash signatures, band keys and exact-duplicate keys (dedup/minhash.py)."""

from __future__ import annotations

import pydoc_data.topics
import random

import numpy as np
import pytest
from datasketch import MinHash

from dedup import minhash
from dedup.minhash import (
    MinHashSettings,
    band_keys,
    jaccard_estimate,
    normalize_text,
    shingle_hashes,
    shingles,
    signatures,
    signatures_parallel,
    text_hash,
    to_datasketch,
)

SETTINGS = MinHashSettings()
EMPTY = np.iinfo(np.uint32).max


@pytest.fixture(scope="module")
def documents() -> list[str]:
    """~60 real documents of 300-600 words: CPython's language-reference topics."""
    rng = random.Random(7)
    paragraphs = [
        p
        for text in pydoc_data.topics.topics.values()
        for p in text.split("\n\n")
        if len(p.split()) >= 8
    ]
    docs = []
    for _ in range(60):
        target, parts = rng.randint(300, 600), []
        while sum(len(p.split()) for p in parts) < target:
            parts.append(rng.choice(paragraphs))
        docs.append("\n\n".join(parts))
    return docs


def exact_jaccard(a: str, b: str, shingle_words: int = SETTINGS.shingle_words) -> float:
    x, y = set(shingles(a, shingle_words)), set(shingles(b, shingle_words))
    return len(x & y) / len(x | y)


def edit(text: str, rate: float, rng: random.Random) -> str:
    """Substitute, delete or insert words at random, `rate` edits per word."""
    words = text.split()
    for _ in range(round(rate * len(words))):
        position = rng.randrange(len(words))
        op = rng.randrange(3)
        if op == 0:
            words[position] = f"edit{rng.randrange(10**6)}"
        elif op == 1 and len(words) > 1:
            del words[position]
        else:
            words.insert(position, f"edit{rng.randrange(10**6)}")
    return " ".join(words)


# ---------------------------------------------------------------------------------------
# Normalisation and exact duplicates


def test_normalize_case_whitespace_punctuation_and_compatibility_forms() -> None:
    assert normalize_text("  Hello,\tWORLD!\n\n  It's an e-mail.  ") == "hello world its an email"
    assert normalize_text("Straße ﬁne ＡＢＣ\u00a0x") == "strasse fine abc x"  # casefold, NFKC
    assert normalize_text("naïve café") == normalize_text("nai\u0308ve cafe\u0301")
    assert normalize_text("«Ça» — 100 € 🙂") == "ça 100"


def test_text_hash_ignores_case_whitespace_and_punctuation() -> None:
    key = text_hash("The quick brown fox jumps over the lazy dog.")
    assert key == text_hash("the QUICK brown fox -- jumps over\n\nthe lazy dog!")
    assert key == text_hash("  The quick, brown fox jumps over the lazy dog  ")
    assert key != text_hash("The quick brown fox jumps over the lazy cat.")
    assert len(key) == 32 and int(key, 16) >= 0


def test_empty_and_short_texts() -> None:
    assert shingles("", 5) == [] and shingles(" ... !!", 5) == []
    assert shingles("one Two", 5) == ["one two"]
    assert shingles("a b c d e f", 5) == ["a b c d e", "b c d e f"]
    assert text_hash("") == text_hash(" ?! ")
    sigs = signatures(["", "!!!", "   ", "one two", "one two three", "a\ud800b"], SETTINGS)
    assert (sigs[:3] == EMPTY).all()  # datasketch's empty MinHash
    assert jaccard_estimate(sigs[0], sigs[1]) == 1.0  # like datasketch: empty equals empty
    assert (sigs[3] != EMPTY).all() and jaccard_estimate(sigs[3], sigs[4]) < 0.1
    # A lone surrogate (bad decoding upstream) is dropped like punctuation.
    assert (sigs[5] == signatures(["ab"], SETTINGS)[0]).all()


# ---------------------------------------------------------------------------------------
# Signatures


def test_signature_is_datasketch_minhash_of_the_shingle_hashes(documents: list[str]) -> None:
    texts = [documents[0], "one two", "a b c d e f g", "Ünïcode wörds, ending."]
    sigs = signatures(texts, SETTINGS)
    for text, sig in zip(texts, sigs, strict=True):
        reference = MinHash(num_perm=SETTINGS.num_perm, seed=SETTINGS.seed, hashfunc=int)
        reference.update_batch(shingle_hashes(text, SETTINGS).tolist())
        assert reference.scheme == "affine32"
        assert np.array_equal(reference.hashvalues, sig)
        assert np.array_equal(to_datasketch(sig, SETTINGS).hashvalues, sig)


def test_shingle_hashes_follow_the_reference_shingles() -> None:
    text = "the cat sat on the mat and the cat sat on the mat again, the end"
    reference = shingles(text, 5)
    hashes = shingle_hashes(text, SETTINGS)
    assert len(hashes) == len(reference)
    for i in range(len(reference)):
        for j in range(len(reference)):
            assert (hashes[i] == hashes[j]) == (reference[i] == reference[j])


def test_signatures_do_not_depend_on_batching(
    documents: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = ["", documents[1], "!!", "short one", documents[2][:700], "x", documents[3]]
    whole = signatures(texts, SETTINGS)
    alone = np.concatenate([signatures([t], SETTINGS) for t in texts])
    # Tiny batches and blocks: every text is cut by a block edge somewhere.
    monkeypatch.setattr(minhash, "_BATCH_CHARS", 50)
    monkeypatch.setattr(minhash, "_BLOCK_CELLS", 7 * SETTINGS.num_perm)
    assert np.array_equal(whole, alone)
    assert np.array_equal(whole, signatures(texts, SETTINGS))


def test_parallel_signatures_equal_serial(documents: list[str]) -> None:
    assert np.array_equal(
        signatures_parallel(documents, SETTINGS, processes=2), signatures(documents, SETTINGS)
    )


def test_estimates_track_exact_and_datasketch_jaccard(documents: list[str]) -> None:
    rng = random.Random(3)
    exact, ours, theirs = [], [], []
    for i in range(50):
        original = documents[i]
        copy = edit(original, rng.uniform(0.0, 0.08), rng)
        a, b = signatures([original, copy], SETTINGS)
        exact.append(exact_jaccard(original, copy))
        ours.append(jaccard_estimate(a, b))
        assert to_datasketch(a, SETTINGS).jaccard(to_datasketch(b, SETTINGS)) == ours[-1]
        # datasketch's own MinHash (SHA-1 of each shingle) on the same shingles.
        m1, m2 = (MinHash(num_perm=SETTINGS.num_perm) for _ in range(2))
        m1.update_batch([s.encode() for s in shingles(original, 5)])
        m2.update_batch([s.encode() for s in shingles(copy, 5)])
        theirs.append(m1.jaccard(m2))
    exact, ours, theirs = map(np.array, (exact, ours, theirs))
    assert exact.min() < 0.6 and exact.max() > 0.95  # the pairs span the range that matters
    # The standard error at num_perm 128 is at most 0.044 (at J = 0.5).
    assert np.abs(ours - exact).mean() < 0.035 and np.abs(ours - exact).max() < 0.15
    assert np.abs(theirs - exact).mean() < 0.035
    assert abs((ours - exact).mean()) < 0.015  # unbiased
    assert np.abs(ours - theirs).mean() < 0.05


# ---------------------------------------------------------------------------------------
# Band keys


def test_band_keys_equal_for_identical_and_different_for_unrelated(documents: list[str]) -> None:
    texts = [*documents, documents[0].upper() + " !!", documents[5]]
    keys = band_keys(signatures(texts, SETTINGS), SETTINGS)
    assert keys.shape == (len(texts), SETTINGS.bands) and keys.dtype == np.uint64
    assert np.array_equal(keys[0], keys[-2]) and np.array_equal(keys[5], keys[-1])
    unrelated = keys[: len(documents)]
    shared = (unrelated[:, None, :] == unrelated[None, :, :]).any(axis=2)
    np.fill_diagonal(shared, False)
    assert shared.sum() <= 2  # documents may share a paragraph, hardly a whole band
    assert len(np.unique(keys)) > 0.99 * unrelated.size  # bands do not share keys either


def synthetic_pair(jaccard: float, size: int, rng: np.random.Generator) -> tuple[str, str]:
    """Two texts of `size` distinct words each whose word sets have the given Jaccard."""
    common = round(2 * size * jaccard / (1 + jaccard))
    words = [f"w{v}" for v in rng.choice(10**9, 2 * size - common, replace=False)]
    return " ".join(words[:size]), " ".join(words[:common] + words[size:])


@pytest.mark.parametrize(("jaccard", "low", "high"), [(0.9, 0.97, 1.0), (0.3, 0.0, 0.03)])
def test_s_curve(jaccard: float, low: float, high: float) -> None:
    settings = MinHashSettings(shingle_words=1)  # words are the shingles: exact Jaccard known
    rng = np.random.default_rng(11)
    texts = [t for _ in range(300) for t in synthetic_pair(jaccard, 400, rng)]
    assert exact_jaccard(texts[0], texts[1], 1) == pytest.approx(jaccard, abs=0.002)
    keys = band_keys(signatures(texts, settings), settings)
    collide = (keys[0::2] == keys[1::2]).any(axis=1).mean()
    assert low <= collide <= high
    assert collide == pytest.approx(settings.candidate_probability(jaccard), abs=0.03)


def test_default_settings_are_the_tuned_ones() -> None:
    assert MinHashSettings.tuned(5, 128, 0.78) == SETTINGS
    assert SETTINGS.parameters() == {
        "shingle_words": 5,
        "num_perm": 128,
        "threshold": 0.78,
        "bands": 16,
        "rows": 8,
        "seed": 1,
    }
    assert SETTINGS.candidate_probability(0.85) > 0.99
    with pytest.raises(ValueError):
        MinHashSettings(bands=20, rows=8)
    with pytest.raises(ValueError):
        jaccard_estimate(np.zeros(4), np.zeros(5))
