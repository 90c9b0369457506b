"""BPE encoding: our GPT-2 encoder against tiktoken's own batch call, same files, same cores.

    python benchmarks/bpe_encode.py [--mb 50] [--reps 3] [--train-mb 10] [--strategies] [--quick]

Text: real English from `../shared/data/eval/` (WEBTEXT_TEST_DATA): the LAMBADA passages, the
WikiText-2 (raw and tokenised) and WikiText-103 test articles (split at their top-level
` = Title = ` headings), PTB in 40-line documents, plus CPython's `pydoc_data` topics;
the documents are repeated, in order, up to `--mb` MB of UTF-8.

Ours: `training.bpe.gpt2_encoder(...).encode_batch`. Baseline: a `tiktoken.Encoding` built
from the same local `encoder.json`/`vocab.bpe` (`data_gym_to_mergeable_bpe_ranks`, GPT-2's
pattern), `encode_ordinary_batch(num_threads=cores)`. Both run `--reps` times, interleaved,
after a warm-up; speeds are medians; every document's ids are compared.

`stage_mb_per_s`: the tokens stage from Parquet shards to token shards on disk
(`training.token_shards.encode_version` on a local store holding a `webtext` version of the
same text). `train_seconds_per_100mb`: `train_tokenizer` (vocabulary 50,257) on the first
`--train-mb` MB, scaled linearly. `--strategies` also times the alternatives behind
`encode_batch`'s design. Human lines go to stderr; the last stdout line is one JSON object.
`--quick`: 0.5 MB, one rep, 0.2 MB for training, the same code path, a few seconds (CI runs
it so that the script cannot rot; its figures are not measurements).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import parse, test_data_root  # noqa: E402
from training.bpe import EOT, GPT2_PATTERN, Encoder, gpt2_encoder, train_tokenizer  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def real_documents(eval_dir: Path) -> list[str]:
    lambada = eval_dir / "lambada" / "lambada_test.jsonl"
    docs = [json.loads(line)["text"] for line in lambada.read_text(encoding="utf-8").splitlines()]
    for name in ("wikitext2/wiki.test.raw", "wikitext2/wiki.test.tokens"):
        docs += articles((eval_dir / name).read_text(encoding="utf-8"))
    docs += articles((eval_dir / "wikitext103/wiki.test.tokens").read_text(encoding="utf-8"))
    lines = (eval_dir / "ptb" / "ptb.test.txt").read_text(encoding="utf-8").splitlines(True)
    docs += ["".join(lines[i : i + 40]) for i in range(0, len(lines), 40)]
    from pydoc_data.topics import topics  # CPython's language reference, as text

    return docs + list(topics.values())


def articles(text: str) -> list[str]:
    return [a for a in re.split(r"\n(?= = [^=])", text) if a.strip()]


def repeat_to(docs: list[str], megabytes: float) -> list[str]:
    out, size, target = [], 0, megabytes * 1e6
    while size < target:
        for doc in docs:
            out.append(doc)
            size += len(doc.encode())
            if size >= target:
                break
    return out


def reference_encoding(bpe_dir: Path) -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding, built offline from the same files (its file cache off)."""
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(bpe_dir / "vocab.bpe"),
        encoder_json_file=str(bpe_dir / "encoder.json"),
    )
    return tiktoken.Encoding(
        "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256}
    )


def median_speed(fn: Callable[[], object], megabytes: float, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return megabytes / statistics.median(times)


def strategies(docs: list[str], ours: Encoder, megabytes: float, reps: int) -> None:
    """The designs considered for encode_batch, each checked against `encode` text by text."""
    cores = len(os.sched_getaffinity(0))
    expected = [ours.encode(t) for t in docs]
    step = -(-len(docs) // (cores * 4))
    slices = [docs[i : i + step] for i in range(0, len(docs), step)]
    with ThreadPoolExecutor(cores) as threads:

        def joined_in_threads() -> list[np.ndarray]:
            return [a for part in threads.map(ours._encode_joined, slices) for a in part]

        def text_by_text_in_threads() -> list[np.ndarray]:
            encode = lambda part: [ours.encode_array(t) for t in part]  # noqa: E731
            return [a for part in threads.map(encode, slices) for a in part]

        candidates = {
            "1 thread, a call per text, lists": lambda: [ours.encode(t) for t in docs],
            "1 thread, a call per text, arrays": lambda: [ours.encode_array(t) for t in docs],
            "1 thread, a call per slice, arrays": lambda: ours.encode_batch_arrays(docs, 1),
            f"{cores} threads, a call per text, arrays": text_by_text_in_threads,
            f"{cores} threads, a call per slice, arrays": joined_in_threads,
            f"{cores} processes, a call per slice, arrays": lambda: ours.encode_batch_arrays(docs),
            f"{cores} processes, a call per slice, lists (encode_batch)": lambda: ours.encode_batch(
                docs
            ),
        }
        for name, fn in candidates.items():
            same = [list(map(int, r)) for r in fn()] == expected
            log(f"  {name}: {median_speed(fn, megabytes, reps):.1f} MB/s, ids same: {same}")


def stage_speed(docs: list[str], encoder: Encoder) -> tuple[float, str]:
    """Parquet shards in, token shards on disk out, through the real stage."""
    from dedup.stage import STAGE as WEBTEXT_STAGE
    from training.token_shards import encode_version
    from webtext.parquet import put_table
    from webtext.store import Store

    megabytes = sum(len(d.encode()) for d in docs) / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as root:
        store = Store(root)
        per_part = 20_000
        with store.write(WEBTEXT_STAGE.name, {"benchmark": "bpe_encode"}, "bench") as out:
            for n, start in enumerate(range(0, len(docs), per_part)):
                part = docs[start : start + per_part]
                ids = [f"doc-{start + i}" for i in range(len(part))]
                table = pa.table({"doc_id": ids, "text": part})
                put_table(out, f"data/part-{n:05d}.parquet", table)
            webtext = out.ref
        begin = time.perf_counter()
        result = encode_version(store, webtext, encoder)
        seconds = time.perf_counter() - begin
        log(f"  stage stats: {result.stats.get('counts')}")
    return megabytes / seconds, "training.token_shards.encode_version"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=50.0, help="MB of text to encode")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--train-mb", type=float, default=10.0)
    parser.add_argument("--strategies", action="store_true", help="time encode_batch designs")
    parser.add_argument("--quick", action="store_true", help="tiny input, seconds (CI)")
    # --quick: smaller defaults; options given explicitly still win
    args = parse(parser, argv, quick=dict(mb=0.5, reps=1, train_mb=0.2))

    root = test_data_root()
    if not (root / "gpt2-bpe" / "encoder.json").exists():
        raise SystemExit(f"no GPT-2 BPE files under {root}; set WEBTEXT_TEST_DATA")
    bpe_dir = root / "gpt2-bpe"
    unique = real_documents(root / "eval")
    docs = repeat_to(unique, args.mb)
    megabytes = sum(len(d.encode()) for d in docs) / 1e6
    cores = len(os.sched_getaffinity(0))
    log(f"{len(docs)} documents ({len(unique)} distinct), {megabytes:.1f} MB, {cores} cores")

    ours = gpt2_encoder(bpe_dir)
    baseline = reference_encoding(bpe_dir)
    ours_ids = ours.encode_batch(docs)  # warm-up, and the ids compared
    base_ids = baseline.encode_ordinary_batch(docs, num_threads=cores)
    identical = ours_ids == base_ids
    del ours_ids, base_ids
    log(f"ids identical on all {len(docs)} documents: {identical}")

    ours_times, base_times = [], []
    for _ in range(args.reps):  # interleaved, so both see the same machine load
        start = time.perf_counter()
        ours.encode_batch(docs)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        baseline.encode_ordinary_batch(docs, num_threads=cores)
        base_times.append(time.perf_counter() - start)
    ours_speed = megabytes / statistics.median(ours_times)
    base_speed = megabytes / statistics.median(base_times)
    log(
        f"ours encode_batch: {ours_speed:.1f} MB/s; tiktoken encode_ordinary_batch: "
        f"{base_speed:.1f} MB/s (medians of {args.reps})"
    )

    if args.strategies:
        strategies(docs, ours, megabytes, args.reps)

    stage, measured_by = stage_speed(docs, ours)
    log(f"whole stage: {stage:.1f} MB/s ({stage / base_speed:.2f} x baseline encoding)")

    train_docs = repeat_to(unique, args.train_mb)
    train_mb = sum(len(d.encode()) for d in train_docs) / 1e6
    start = time.perf_counter()
    tokenizer = train_tokenizer(train_docs, vocab_size=50_257)
    train_seconds = time.perf_counter() - start
    log(
        f"train_tokenizer: {train_mb:.1f} MB in {train_seconds:.1f} s, "
        f"vocabulary {tokenizer.get_vocab_size()}"
    )

    print(
        json.dumps(
            {
                "mb_per_s": round(ours_speed, 2),
                "baseline_mb_per_s": round(base_speed, 2),
                "ratio": round(ours_speed / base_speed, 3),
                "identical_ids": identical,
                "stage_mb_per_s": round(stage, 2),
                "stage_vs_baseline_encoding": round(stage / base_speed, 3),
                "stage_measured_by": measured_by,
                "train_seconds_per_100mb": round(train_seconds * 100 / train_mb, 1),
                "train_vocab_size": tokenizer.get_vocab_size(),
                "train_mb": round(train_mb, 1),
                "mb": round(megabytes, 1),
                "cores": cores,
                "reps": args.reps,
                "baseline": "tiktoken encode_ordinary_batch, same BPE files, same cores",
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
