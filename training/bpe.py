"""Byte-level BPE: train with Hugging Face `tokenizers`, encode with tiktoken.

Training uses `tokenizers` (GPT-2's pre-tokenisation, byte-level alphabet, `<|endoftext|>`
special). Encoding uses tiktoken's Rust core, about 2.5x faster than `tokenizers` here, built
either from OpenAI's GPT-2 files or from a trained `tokenizer.json`; both give the same ids
as the reference encoder for that vocabulary (tests/test_bpe.py, benchmarks/bpe_encode.py).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import tiktoken
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"

# tiktoken's form of GPT-2's split pattern (possessive quantifiers, same pieces as the original
# `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, which is
# what `tokenizers`' ByteLevel pre-tokenizer uses).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# A batch of fewer characters is encoded on the calling thread: sending it to the worker
# processes costs more than it saves.
_MIN_PARALLEL_CHARS = 1 << 20


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet of encoder.json/vocab.bpe)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def _symbol_bytes(symbol: str) -> bytes:
    return bytes(_UNICODE_TO_BYTE[c] for c in symbol)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Encoder:
    """A byte-level BPE encoder on tiktoken's core; ids follow the vocabulary it was built from.

    `encode` and `encode_batch` treat `<|endoftext|>` inside text as plain text; documents are
    separated by appending `eot_id` yourself.
    """

    def __init__(self, name: str, mergeable_ranks: dict[bytes, int], eot_id: int) -> None:
        self.name = name
        self.eot_id = eot_id
        self.vocab_size = len(mergeable_ranks) + 1
        self._encoding = tiktoken.Encoding(
            name,
            pat_str=GPT2_PATTERN,
            mergeable_ranks=mergeable_ranks,
            special_tokens={EOT: eot_id},
            explicit_n_vocab=self.vocab_size,
        )
        self._core = self._encoding._core_bpe
        self._eot_set = {EOT}
        self._pool: ProcessPoolExecutor | None = None
        self._pool_workers = 0
        self._pool_lock = threading.Lock()  # parts encoded in threads share the pool

    def __getstate__(self) -> tuple[str, dict[bytes, int], int]:
        return self.name, self._encoding._mergeable_ranks, self.eot_id

    def __setstate__(self, state: tuple[str, dict[bytes, int], int]) -> None:
        self.__init__(*state)

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id})"

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the worker processes `encode_batch_arrays` started, if any: idle, they would
        keep a process that is done from exiting. The encoder can still be used (a later
        batch starts them again)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` as a uint32 array, without building a Python list (the fastest form)."""
        try:
            # With no special token allowed, the whole text is one ordinary segment: the same
            # ids as encode_ordinary.
            buffer = self._core.encode_to_tiktoken_buffer(text, set())
        except UnicodeEncodeError:  # lone surrogates: tiktoken's own repair
            return np.asarray(self.encode(text), dtype=np.uint32)
        return np.frombuffer(buffer, dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str], workers: int | None = None) -> list[list[int]]:
        """Encode many texts on all cores; same ids as `encode` on each."""
        return [a.tolist() for a in self.encode_batch_arrays(texts, workers)]

    def encode_batch_arrays(
        self, texts: Sequence[str], workers: int | None = None
    ) -> list[np.ndarray]:
        """`encode_batch` as uint32 arrays: what writers of token shards want."""
        workers = workers or _available_cores()
        if workers == 1 or sum(map(len, texts)) < _MIN_PARALLEL_CHARS:
            return self._encode_joined(texts)
        # Processes, a few contiguous slices each for balance. Threads scale worse although
        # tiktoken releases the GIL while it encodes: on 2 cores, 2 threads gave 1.2-1.5x one
        # thread, 2 processes 1.6-1.8x (benchmarks/bpe_encode.py --strategies).
        step = -(-len(texts) // (workers * 4))
        slices = [texts[i : i + step] for i in range(0, len(texts), step)]
        out: list[np.ndarray] = []
        for ids, lengths in self._processes(workers).map(_encode_in_worker, slices):
            flat = np.frombuffer(ids, dtype=np.uint32)
            out.extend(np.split(flat, np.cumsum(np.frombuffer(lengths, dtype=np.int64))[:-1]))
        return out

    def _processes(self, workers: int) -> ProcessPoolExecutor:
        """This encoder's worker processes, started once (spawned: safe with threads about)."""
        with self._pool_lock:
            return self._started_pool(workers)

    def _started_pool(self, workers: int) -> ProcessPoolExecutor:
        if self._pool is None or self._pool_workers != workers:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self,),
            )
            self._pool_workers = workers
        return self._pool

    def _encode_joined(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode texts in one call: joined by <|endoftext|> and encoded with it allowed.

        tiktoken encodes each stretch between special tokens on its own, exactly as if it were
        the whole text, so cutting the ids at the special id gives each text's ordinary ids.
        A text that holds <|endoftext|> itself would be cut wrongly: such slices go one by one.
        """
        if not texts or any(EOT in t for t in texts):
            return [self.encode_array(t) for t in texts]
        try:
            buffer = self._core.encode_to_tiktoken_buffer(EOT.join(texts), self._eot_set)
        except UnicodeEncodeError:  # a lone surrogate somewhere: repaired text by text
            return [self.encode_array(t) for t in texts]
        ids = np.frombuffer(buffer, dtype=np.uint32)
        parts = np.split(ids, np.flatnonzero(ids == self.eot_id))
        return [parts[0], *(p[1:] for p in parts[1:])]

    def decode(self, ids: Iterable[int]) -> str:
        return self._encoding.decode(list(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._encoding.decode_bytes(list(ids))


_worker_encoder: Encoder | None = None


def _start_worker(encoder: Encoder) -> None:
    global _worker_encoder
    _worker_encoder = encoder


def _encode_in_worker(texts: Sequence[str]) -> tuple[bytes, bytes]:
    """One slice in a worker process: all ids, then each text's count (cheap to send back)."""
    assert _worker_encoder is not None
    arrays = _worker_encoder._encode_joined(texts)
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    return np.concatenate(arrays).tobytes(), lengths.tobytes()


def gpt2_encoder(bpe_dir: Path) -> Encoder:
    """OpenAI's GPT-2 encoder from the local `encoder.json` and `vocab.bpe` (no download)."""
    bpe_dir = Path(bpe_dir)
    vocab = json.loads((bpe_dir / "encoder.json").read_text(encoding="utf-8"))
    merges = (bpe_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = [m for m in merges if m]
    eot_id = vocab.pop(EOT)
    ranks = {_symbol_bytes(symbol): i for symbol, i in vocab.items()}
    # tiktoken merges by the rank of the merged token, GPT-2 by the merge's line in vocab.bpe:
    # the same order only if merge i creates token 256 + i, so check it.
    for i, merge in enumerate(merges):
        first, second = merge.split(" ")
        if ranks.get(_symbol_bytes(first + second)) != 256 + i:
            raise ValueError(f"{bpe_dir}: merge {i} ({merge!r}) does not create token {256 + i}")
    if len(ranks) != 256 + len(merges) or sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{bpe_dir}: encoder.json is not 256 bytes + one token per merge")
    return Encoder("gpt2", ranks, eot_id)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 50_257) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE; the same texts give a byte-identical tokenizer.json.

    Ids: `<|endoftext|>` = 0, then the 256 byte symbols, then one token per merge in merge
    order (which is what lets `encoder_from_tokenizer` use ids as tiktoken ranks).
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        # Every byte in the vocabulary, seen in training or not: any text can be encoded.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def encoder_from_tokenizer(tokenizer_json: str) -> Encoder:
    """The fast encoder for a `tokenizer.json` made by `train_tokenizer`; same ids as HF's."""
    spec = json.loads(tokenizer_json)
    model, pre = spec["model"], spec["pre_tokenizer"] or {}
    if model["type"] != "BPE" or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space"):
        raise ValueError("expected a byte-level BPE with ByteLevel(add_prefix_space=False)")
    if not pre.get("use_regex", True) or spec.get("normalizer"):
        raise ValueError("expected GPT-2's split pattern and no normalizer")
    specials = {t["content"]: t["id"] for t in spec["added_tokens"]}
    if set(specials) != {EOT}:
        raise ValueError(f"expected {EOT} as the only added token, got {sorted(specials)}")
    vocab: dict[str, int] = dict(model["vocab"])
    eot_id = vocab.pop(EOT, specials[EOT])
    ranks = {_symbol_bytes(symbol): i for symbol, i in vocab.items()}
    if len(ranks) != len(vocab) or not all(bytes([b]) in ranks for b in range(256)):
        raise ValueError("expected 256 single bytes and distinct tokens")
    # tiktoken merges the pair whose concatenation has the lowest id; HF the pair with the
    # lowest merge index. They agree when merge i creates the i-th non-byte token.
    merged = sorted(i for symbol, i in vocab.items() if len(_symbol_bytes(symbol)) > 1)
    for i, merge in enumerate(model["merges"]):
        first, second = merge.split(" ") if isinstance(merge, str) else merge
        if i >= len(merged) or vocab.get(first + second) != merged[i]:
            raise ValueError(f"merge {i} ({first!r}, {second!r}) is out of id order")
    if len(merged) != len(model["merges"]):
        raise ValueError("vocabulary and merges disagree")
    name = "bpe-" + hashlib.sha256(tokenizer_json.encode()).hexdigest()[:12]
    return Encoder(name, ranks, eot_id)
