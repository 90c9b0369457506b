"""Store versions the tests build by hand: a published dataset, and its tokens."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from training.bpe import Encoder
from training.token_shards import ShardSettings, encode_version
from training.tokenizer_stage import load_encoder, train_tokenizer_version
from webtext.parquet import put_table
from webtext.store import Store, VersionRef

FIRST_SEEN = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)


def webtext_version(
    store: Store,
    texts: list[str],
    parts: int = 1,
    parents: tuple[VersionRef, ...] = (),
    columns: dict[str, list] | None = None,
) -> VersionRef:
    """A `webtext` version of `texts` (doc ids d0000...) in `parts` data files, with more
    `columns` (name -> a value per text) when given."""
    extra = columns or {}
    rows = [
        {
            "doc_id": f"d{i:04d}",
            "text": text,
            "first_seen": FIRST_SEEN,
            **{name: values[i] for name, values in extra.items()},
        }
        for i, text in enumerate(texts)
    ]
    parameters = {"texts": texts[:1], "count": len(texts), "parts": parts}
    if extra:
        parameters["columns"] = extra
    with store.write("webtext", parameters, "test", parents) as out:
        for part in range(parts):
            put_table(out, f"data/part-{part:05d}.parquet", pa.Table.from_pylist(rows[part::parts]))
        return out.ref


def tokens_version(
    store: Store, texts: list[str], vocab_size: int
) -> tuple[VersionRef, VersionRef, Encoder, VersionRef]:
    """(webtext, tokenizer, encoder, tokens): `texts` published, a BPE trained on them, and
    every document in the train split."""
    webtext = webtext_version(store, texts)
    tokenizer = train_tokenizer_version(store, webtext, vocab_size=vocab_size).ref
    encoder = load_encoder(store, tokenizer)
    tokens = encode_version(store, webtext, encoder, tokenizer, ShardSettings(0.0)).ref
    return webtext, tokenizer, encoder, tokens
