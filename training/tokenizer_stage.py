"""The `tokenizer` stage: a vocabulary as a versioned artifact.

Either trained on a `webtext` version (`tokenizer.json`, Hugging Face format) or
OpenAI's GPT-2 vocabulary copied in from its two files (`encoder.json`, `vocab.bpe`).
`load_encoder` turns either back into the fast `Encoder` every later stage uses.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from training.bpe import Encoder, encoder_from_tokenizer, gpt2_encoder, train_tokenizer
from webtext.config import code_version
from webtext.dataset import dataset_parts, iter_texts
from webtext.store import StageResult, Store, VersionRef

STAGE = "tokenizer"
GPT2_FILES = ("encoder.json", "vocab.bpe")


def train_tokenizer_version(
    store: Store, webtext: VersionRef, vocab_size: int = 50_257, max_documents: int | None = None
) -> StageResult:
    """Train a byte-level BPE on the documents of `webtext` (the first `max_documents`)."""
    parameters = {"kind": "trained", "vocab_size": vocab_size, "max_documents": max_documents}
    version = code_version("training")
    ref = store.ref_for(STAGE, parameters, version, (webtext,))
    if store.exists(ref):
        return StageResult(ref, True, store.manifest(ref).stats)
    texts = iter_texts(store, dataset_parts(store, webtext), max_documents)
    tokenizer = train_tokenizer(texts, vocab_size)
    with store.write(STAGE, parameters, version, (webtext,)) as out:
        out.put("tokenizer.json", tokenizer.to_str().encode())
        out.stats["counts"] = {"vocab_size": tokenizer.get_vocab_size()}
        ref = out.ref
    return StageResult(ref, False, store.manifest(ref).stats)


def gpt2_tokenizer_version(store: Store, bpe_dir: Path) -> StageResult:
    """OpenAI's GPT-2 vocabulary, checked to load, as a version of its own."""
    files = {name: (bpe_dir / name).read_bytes() for name in GPT2_FILES}
    parameters = {
        "kind": "gpt2",
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    version = code_version("training")
    ref = store.ref_for(STAGE, parameters, version)
    if store.exists(ref):
        return StageResult(ref, True, store.manifest(ref).stats)
    encoder = gpt2_encoder(bpe_dir)
    with store.write(STAGE, parameters, version) as out:
        for name, data in files.items():
            out.put(name, data)
        out.stats["counts"] = {"vocab_size": encoder.vocab_size}
        ref = out.ref
    return StageResult(ref, False, store.manifest(ref).stats)


def load_encoder(store: Store, tokenizer: VersionRef) -> Encoder:
    names = {entry.path for entry in store.manifest(tokenizer).files}
    folder = store.version_dir(tokenizer)
    if "tokenizer.json" in names:
        return encoder_from_tokenizer(store.fs.cat_file(f"{folder}/tokenizer.json").decode())
    local = Path(folder)
    if not local.is_dir():  # gpt2_encoder reads files: bring them to a local folder
        raise ValueError(f"{tokenizer}: GPT-2 vocabularies load from a local store only")
    return gpt2_encoder(local)
