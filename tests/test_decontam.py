"""The GPT-2 paper's 8-gram overlap: normalisation, the Bloom filter, its stage, overlap()."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from versions import webtext_version

from evaluation.decontam import (
    NgramFilter,
    build_ngram_filter,
    load_ngram_filter,
    ngrams,
    overlap,
    words,
)
from webtext.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """A stage's progress (webtext.stage.Progress), recorded."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0

    def start(self, total: int) -> None:
        self.total = total

    def advance(self, n: int = 1) -> None:
        self.done += n


def random_text(rng: random.Random, letters: str, length: int) -> str:
    """Words over `letters` with case and punctuation that normalisation must remove."""
    parts = []
    for _ in range(length):
        word = "".join(rng.choice(letters) for _ in range(rng.randint(3, 8)))
        parts.append(word.capitalize() if rng.random() < 0.2 else word)
        parts.append(rng.choice([" ", " ", ", ", ". ", " -- ", "\n"]))
    return "".join(parts)


# Training and novel texts use disjoint letters, so no novel n-gram is in the training set.
TRAIN_LETTERS, NOVEL_LETTERS = "abcdefghijklm", "nopqrstuvwxyz"


def test_words_are_lower_cased_alphanumeric_runs() -> None:
    assert words("Hello, World!") == ["hello", "world"]
    assert words("  GPT-2's  WebText\n(2019)...") == ["gpt", "2", "s", "webtext", "2019"]
    assert words("") == []
    assert words("--- !!") == []


def test_words_fold_unicode_forms() -> None:
    decomposed = "Cafe\u0301"  # e + combining acute: the same text as "Café" after NFKC
    assert words(f"{decomposed} ﬁne ＡＢＣ１２ Straße") == ["café", "fine", "abc12", "strasse"]
    assert words("Москва, 東京") == ["москва", "東京"]


def test_ngrams_join_consecutive_words_by_single_spaces() -> None:
    tokens = words("One, two;  THREE four")
    assert list(ngrams(tokens, n=2)) == ["one two", "two three", "three four"]
    assert list(ngrams(tokens, n=4)) == ["one two three four"]
    assert list(ngrams(tokens, n=5)) == []
    assert len(list(ngrams([str(i) for i in range(10)]))) == 3  # n=8 by default


def test_filter_has_no_false_negatives_and_its_promised_false_positive_rate() -> None:
    rng = random.Random(0)
    texts = [random_text(rng, TRAIN_LETTERS, 200) for _ in range(50)]
    added = {gram for text in texts for gram in ngrams(words(text))}
    fp_rate = 1e-2  # high enough that 20k probes measure it: ~200 expected
    ngram_filter = NgramFilter(len(added), fp_rate)  # filled exactly to capacity
    assert sum(ngram_filter.add_text(text) for text in texts) == len(added)
    assert all(gram in ngram_filter for gram in added)
    absent = [" ".join(words(random_text(rng, NOVEL_LETTERS, 8))) for _ in range(20_000)]
    share = sum(gram in ngram_filter for gram in absent) / len(absent)
    assert fp_rate / 3 < share < fp_rate * 3


def test_a_saved_filter_answers_the_same_in_a_fresh_process(tmp_path: Path) -> None:
    rng = random.Random(1)
    texts = [random_text(rng, TRAIN_LETTERS, 200) for _ in range(20)]
    ngram_filter = NgramFilter(5_000, 1e-2)
    for text in texts:
        ngram_filter.add_text(text)
    present = list(ngrams(words(texts[0])))
    absent = [" ".join(words(random_text(rng, NOVEL_LETTERS, 8))) for _ in range(2_000)]
    probes = present + absent
    path = tmp_path / "filter.bloom"
    with path.open("wb") as handle:
        ngram_filter.save(handle)
    (tmp_path / "probes.json").write_text(json.dumps(probes))
    script = (
        "import json, sys\n"
        "from evaluation.decontam import NgramFilter\n"
        "with open(sys.argv[1], 'rb') as handle:\n"
        "    loaded = NgramFilter.load(handle)\n"
        "probes = json.load(open(sys.argv[2]))\n"
        "answers = [probe in loaded for probe in probes]\n"
        "print(json.dumps([loaded.n, loaded.capacity, loaded.fp_rate, answers]))\n"
    )
    # str hashes are salted per process: another seed than ours proves the hash is stable
    seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "probes.json")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    n, capacity, fp_rate, answers = json.loads(done.stdout)
    assert (n, capacity, fp_rate) == (8, 5_000, 1e-2)
    assert answers == [gram in ngram_filter for gram in probes]
    assert any(answers) and not all(answers)


def test_a_file_that_is_not_a_filter_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.bin"
    path.write_bytes(b"\0" * 64)
    with path.open("rb") as handle, pytest.raises(ValueError, match="not an n-gram filter"):
        NgramFilter.load(handle)


def test_stage_builds_a_filter_whose_overlap_is_exact(tmp_path: Path) -> None:
    rng = random.Random(2)
    train = [random_text(rng, TRAIN_LETTERS, rng.randint(20, 300)) for _ in range(40)]
    store = Store(str(tmp_path / "store"))
    webtext = webtext_version(store, train, parts=2)
    progress = Recorder()
    result = build_ngram_filter(store, webtext, progress=progress)

    counts = result.stats["counts"]
    train_ngrams = sum(len(words(text)) - 7 for text in train)
    assert counts["ngrams"] == counts["capacity"] == train_ngrams
    assert counts["documents"] == len(train) and progress.done == progress.total == 2 * len(train)
    assert counts["bytes"] == sum(len(text.encode()) for text in train)
    assert store.manifest(result.ref).parents == (webtext,)
    assert not result.reused

    copied = [text.upper().replace(" ", "  ") for text in train[:10]]  # normalised away
    novel = [random_text(rng, NOVEL_LETTERS, rng.randint(20, 300)) for _ in range(10)]
    evaluation = [*copied, *novel, "too short to count"]
    ngram_filter = load_ngram_filter(store, result.ref)
    report = overlap(ngram_filter, evaluation)
    copied_ngrams = sum(len(words(text)) - 7 for text in copied)
    total = copied_ngrams + sum(len(words(text)) - 7 for text in novel)
    assert report == {
        "ngrams": total,
        "in_train": copied_ngrams,
        "fraction": copied_ngrams / total,
        "documents": 21,
        "documents_with_overlap": 10,
        "expected_false_positives": total * 1e-4,
    }

    again = build_ngram_filter(store, webtext)
    assert again.reused and again.ref == result.ref and again.stats == result.stats


def test_overlap_of_nothing_is_zero() -> None:
    report = overlap(NgramFilter(0), [])
    assert report["ngrams"] == 0 and report["fraction"] == 0.0
