"""The `tokenizer` stage: a vocabulary as a versioned artifact.

Either trained on a `webtext` version (`tokenizer.json`, Hugging Face format) or
OpenAI's GPT-2 vocabulary copied in from its two files (`encoder.json`, `vocab.bpe`).
`load_encoder` turns either back into the fast `Encoder` every later stage uses, and
`tokenizer_version` finds the one a `tokens` or `model` version was made with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from training.bpe import Encoder, encoder_from_tokenizer, gpt2_encoder, train_tokenizer
from webtext.dataset import dataset_parts, iter_texts
from webtext.stage import Stage, StageWrite, run_stage
from webtext.store import StageResult, Store, VersionRef

STAGE = Stage("tokenizer", __name__)
GPT2_FILES = ("encoder.json", "vocab.bpe")
# A version's parents, up to the tokenizer: a model was trained on tokens, encoded with one.
UPSTREAM = {"model": "tokens", "tokens": "tokenizer"}


def train_tokenizer_version(
    store: Store, webtext: VersionRef, vocab_size: int = 50_257, max_documents: int | None = None
) -> StageResult:
    """Train a byte-level BPE on the documents of `webtext` (the first `max_documents`)."""

    def build(work: StageWrite) -> None:
        texts = iter_texts(store, dataset_parts(store, webtext), max_documents)
        tokenizer = train_tokenizer(texts, vocab_size)
        work.out.put("tokenizer.json", tokenizer.to_str().encode())
        work.counts.add("vocab_size", tokenizer.get_vocab_size())

    parameters = {"kind": "trained", "vocab_size": vocab_size, "max_documents": max_documents}
    return run_stage(store, STAGE, (webtext,), parameters, build)


def gpt2_tokenizer_version(store: Store, bpe_dir: Path) -> StageResult:
    """OpenAI's GPT-2 vocabulary, checked to load, as a version of its own."""
    files = {name: (bpe_dir / name).read_bytes() for name in GPT2_FILES}

    def build(work: StageWrite) -> None:
        encoder = gpt2_encoder(bpe_dir)
        for name, data in files.items():
            work.out.put(name, data)
        work.counts.add("vocab_size", encoder.vocab_size)

    parameters = {
        "kind": "gpt2",
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    return run_stage(store, STAGE, (), parameters, build)


def load_encoder(store: Store, tokenizer: VersionRef) -> Encoder:
    names = {entry.path for entry in store.manifest(tokenizer).files}
    if "tokenizer.json" in names:
        return encoder_from_tokenizer(store.read_verified(tokenizer, "tokenizer.json").decode())
    local = Path(store.version_dir(tokenizer))
    if not local.is_dir():  # gpt2_encoder reads files: bring them to a local folder
        raise ValueError(f"{tokenizer}: GPT-2 vocabularies load from a local store only")
    store.verify(tokenizer)  # gpt2_encoder reads the folder: check its two small files first
    return gpt2_encoder(local)


def tokenizer_version(store: Store, ref: VersionRef) -> VersionRef | None:
    """The `tokenizer` version a `model` or `tokens` version descends from, found through
    the manifests' parents (model -> tokens -> tokenizer); None when the lineage names none.
    Only manifests are read, so a store holding copies of the versions serves as well."""
    while ref.stage != "tokenizer":
        upstream = [p for p in store.manifest(ref).parents if p.stage == UPSTREAM[ref.stage]]
        if not upstream:
            return None
        ref = upstream[0]
    return ref
