"""Token shards: a `webtext` version encoded into uint16 files that training memory-maps.

File format (little-endian), one file per published data part and split (the parts of the
webtext version and of every earlier version it names: the whole dataset as of it):

    offset 0   8 bytes  magic b"WTTOKENS"
    offset 8   uint32   format version (1)
    offset 12  uint32   vocabulary size (ids must fit in uint16: at most 65,536)
    offset 16  uint64   token count
    offset 24  8 bytes  reserved (zero)
    offset 32  token count x uint16 ids; every document ends with <|endoftext|>

Documents go to `train` or `val` by a hash of their doc id, so the split is the same on
every run and for every tokenizer. Parts are encoded one after another, each in batches
of documents with the encoder's all-cores batch call, through a local temporary file, so
memory stays at one batch; each part is committed through the stage runtime
(`webtext.stage`), so a killed run resumes at the first unfinished part.
"""

from __future__ import annotations

import hashlib
import shutil
import string
import struct
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from training.bpe import Encoder
from training.tokenizer_stage import STAGE as TOKENIZER_STAGE
from training.tokenizer_stage import gpt2_tokenizer_version, load_encoder, train_tokenizer_version
from webtext.dataset import DatasetPart, dataset_parts
from webtext.stage import Map, PartResult, Progress, Stage, StageWrite, run_stage
from webtext.store import StageResult, Store, VersionRef, VersionWriter

STAGE = Stage("tokens", __name__)
MAGIC = b"WTTOKENS"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQ8x")
SPLITS = ("train", "val")
_COPY_CHUNK = 1 << 22


class ShardError(ValueError):
    """A file that is not a token shard this code can read."""


def split_of(doc_id: str, val_fraction: float) -> str:
    """`val` for a stable `val_fraction` of documents, by a hash of the id."""
    bucket = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big")
    return "val" if bucket < val_fraction * 2**64 else "train"


class TokenShard:
    """A shard memory-mapped read-only: `tokens` is a numpy uint16 view of the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self.path.open("rb") as handle:
            head = handle.read(HEADER.size)
        if len(head) < HEADER.size:
            raise ShardError(f"{path}: too short for a token shard header")
        magic, version, vocab_size, count = HEADER.unpack(head)
        if magic != MAGIC:
            raise ShardError(f"{path}: not a token shard (magic {magic!r})")
        if version != FORMAT_VERSION:
            raise ShardError(f"{path}: format version {version}, this code reads {FORMAT_VERSION}")
        expected = HEADER.size + 2 * count
        if self.path.stat().st_size != expected:
            raise ShardError(f"{path}: {self.path.stat().st_size} bytes, header says {expected}")
        self.vocab_size = vocab_size
        self.tokens = np.memmap(self.path, np.uint16, "r", offset=HEADER.size, shape=(count,))

    def __len__(self) -> int:
        return len(self.tokens)


class TokenDataset:
    """Every shard of one split in a local folder: random training windows, nanoGPT-style."""

    def __init__(self, folder: str | Path, split: str = "train") -> None:
        paths = sorted(Path(folder).glob(f"tokens/{split}/*.bin"))
        self.shards = [shard for shard in map(TokenShard, paths) if len(shard)]
        if not self.shards:
            raise ShardError(f"no {split} tokens under {folder}")
        self.sizes = np.array([len(shard) for shard in self.shards], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def batch(
        self, batch_size: int, block_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of shape (batch_size, block_size), targets shifted by one."""
        # A window takes block_size + 1 tokens: starts 0 .. size - block_size - 1.
        usable = np.maximum(self.sizes - block_size, 0)
        if not usable.any():
            raise ShardError(f"every shard is shorter than block_size + 1 = {block_size + 1}")
        shards = rng.choice(len(self.shards), size=batch_size, p=usable / usable.sum())
        rows = []
        for index in shards:
            start = int(rng.integers(0, usable[index]))
            rows.append(np.asarray(self.shards[index].tokens[start : start + block_size + 1]))
        window = np.stack(rows).astype(np.int64)
        return window[:, :-1], window[:, 1:]


@dataclass(frozen=True)
class ShardSettings:
    val_fraction: float = 0.005
    docs_per_batch: int = 1_024
    # Conditioning text put before each document, a str.format template over the data's
    # Parquet columns (the paper's reviews conditioned on rating and category):
    # "Rating: {rating}. Category: {category}.\n". None: documents as they are.
    prefix_template: str | None = None

    def __post_init__(self) -> None:
        prefix_columns(self.prefix_template)  # a bad template fails here, not mid-run

    def parameters(self) -> dict[str, float | int | str | None]:
        return {
            "val_fraction": self.val_fraction,
            "docs_per_batch": self.docs_per_batch,
            "prefix_template": self.prefix_template,
        }


def prefix_columns(template: str | None) -> list[str]:
    """The Parquet columns a prefix template names, in order, each once."""
    if template is None:
        return []
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"prefix template {template!r}: {exc}") from None
    if any(not name.isidentifier() for name in fields):
        raise ValueError(f"prefix template {template!r}: fields are column names: {{rating}}")
    return list(dict.fromkeys(fields))


def encode_version(
    store: Store,
    webtext: VersionRef,
    encoder: Encoder,
    tokenizer: VersionRef | None = None,
    settings: ShardSettings | None = None,
    *,
    map: Map = map,
    progress: Progress | None = None,
) -> StageResult:
    """Encode every published document of `webtext` into train/val token shards, one
    task per dataset part on `map` (the builtin, or a Prefect task runner in the flow).

    `progress` counts documents, as parts finish.
    """
    settings = settings or ShardSettings()
    if encoder.vocab_size > 2**16:
        raise ValueError(f"vocabulary of {encoder.vocab_size} ids does not fit in uint16")
    parameters = {
        "encoder": encoder.name,
        "vocab_size": encoder.vocab_size,
        **settings.parameters(),
    }

    def build(work: StageWrite) -> None:
        parts = {_part_key(part): part for part in dataset_parts(store, webtext)}
        task = partial(_encode_part, store.root_url, work.out.tmp_dir, encoder, settings)
        rows = {key: part.rows or 0 for key, part in parts.items()}
        work.run_parts(list(parts), task, map, progress, inputs=parts, weights=rows)
        work.counts.add("parts", len(parts))

    inputs = (webtext, tokenizer) if tokenizer else (webtext,)
    return run_stage(
        store,
        STAGE,
        inputs,
        parameters,
        build,
        count_names=[f"{split}_tokens" for split in SPLITS],
        resumable=True,
    )


def _part_key(part: DatasetPart) -> str:
    return f"{part.version.version}/{part.path}"


def _shard_name(part: DatasetPart, split: str) -> str:
    stem = part.path.rsplit("/", 1)[-1].removesuffix(".parquet")
    return f"tokens/{split}/{part.version.version}-{stem}.bin"


def _encode_part(
    store_url: str,
    staging_dir: str,
    encoder: Encoder,
    settings: ShardSettings,
    item: tuple[str, DatasetPart],
) -> PartResult:
    """Encode one dataset part into the staging folder: plain arguments, so any executor
    runs it on any worker that sees the store."""
    _, part = item
    store = Store(store_url)
    out = VersionWriter(store.fs, staging_dir, VersionRef(STAGE.name, "staging"))
    eot = np.array([encoder.eot_id], dtype=np.uint16)
    counts = dict.fromkeys(SPLITS, 0)
    names = {split: _shard_name(part, split) for split in SPLITS}
    conditioning = prefix_columns(settings.prefix_template)
    unconditioned = 0  # documents with a null in a prefix column: encoded without a prefix
    with tempfile.TemporaryDirectory(prefix="webtext-tokens-") as scratch:
        spool = {split: open(Path(scratch) / split, "wb") for split in SPLITS}  # noqa: SIM115
        with store.open_verified(part.version, part.path) as handle:
            source = pq.ParquetFile(handle)
            missing = [c for c in conditioning if c not in source.schema_arrow.names]
            if missing:
                raise ValueError(
                    f"{part.version}/{part.path} has no column {', '.join(missing)} for the "
                    f"prefix template {settings.prefix_template!r}"
                )
            columns = list(dict.fromkeys(["doc_id", "text", *conditioning]))
            for batch in source.iter_batches(settings.docs_per_batch, columns=columns):
                texts = batch.column("text").to_pylist()
                ids = batch.column("doc_id").to_pylist()
                if settings.prefix_template is not None:
                    rows = batch.select(conditioning).to_pylist()
                    texts, nulls = _prefixed(settings.prefix_template, rows, texts)
                    unconditioned += nulls
                for doc_id, tokens in zip(ids, encoder.encode_batch_arrays(texts), strict=True):
                    split = split_of(doc_id, settings.val_fraction)
                    array = tokens.astype(np.uint16)
                    spool[split].write(array.tobytes())
                    spool[split].write(eot.tobytes())
                    counts[split] += len(array) + 1
        for split in SPLITS:
            spool[split].close()
            _publish_shard(out, names[split], Path(scratch) / split, encoder, counts[split])
    part_counts = {f"{split}_tokens": counts[split] for split in SPLITS}
    if settings.prefix_template is not None:
        part_counts["documents_without_prefix"] = unconditioned
    return PartResult({names[split]: counts[split] for split in SPLITS}, part_counts)


def _prefixed(template: str, rows: list[dict], texts: list[str]) -> tuple[list[str], int]:
    """Each text after its rendered prefix; a row with a null in a named column keeps its
    text unprefixed (a "None" would teach the model a false condition), and is counted."""
    out, nulls = [], 0
    for row, text in zip(rows, texts, strict=True):
        if any(value is None for value in row.values()):
            nulls += 1
            out.append(text)
        else:
            out.append(template.format(**row) + text)
    return out, nulls


def _publish_shard(out: VersionWriter, name: str, body: Path, encoder: Encoder, count: int) -> None:
    """Header, then the spooled ids, under a temporary name renamed when complete."""
    target = out.path(name, rows=count)
    partial = f"{target}.partial"
    with out.fs.open(partial, "wb") as handle, body.open("rb") as tokens:
        handle.write(HEADER.pack(MAGIC, FORMAT_VERSION, encoder.vocab_size, count))
        shutil.copyfileobj(tokens, handle, _COPY_CHUNK)
    out.fs.mv(partial, target)


@dataclass(frozen=True)
class TokenizeOptions:
    """Every setting of the tokenizer and tokens stages: the only place their defaults
    live. With `gpt2_bpe_dir` (a folder holding encoder.json and vocab.bpe) the vocabulary
    is OpenAI's; otherwise a BPE of `vocab_size` is trained on the dataset."""

    gpt2_bpe_dir: str | None = None
    # An existing tokenizer version to encode with (e.g. the vocabulary of a model to
    # fine-tune on this data); then nothing is trained and gpt2_bpe_dir must be None.
    tokenizer: str | None = None
    vocab_size: int = 50_257
    max_documents: int | None = None  # train the BPE on the first N documents only
    shards: ShardSettings = field(default_factory=ShardSettings)


def tokenize_dataset(
    store: Store,
    webtext: VersionRef,
    options: TokenizeOptions | None = None,
    *,
    map: Map = map,
    progress: Progress | None = None,
) -> tuple[StageResult, StageResult]:
    """The stage package's entry: the vocabulary (trained on `webtext`, GPT-2's, or the
    existing `options.tokenizer` version), then `webtext` encoded with it. Returns both
    results: (tokenizer, tokens)."""
    options = options or TokenizeOptions()
    if options.tokenizer and options.gpt2_bpe_dir:
        raise ValueError("pass a tokenizer version or gpt2_bpe_dir, not both")
    if options.tokenizer:
        existing = store.resolve(TOKENIZER_STAGE.name, options.tokenizer)
        vocabulary = StageResult(existing, True, store.manifest(existing).stats)
    elif options.gpt2_bpe_dir:
        vocabulary = gpt2_tokenizer_version(store, Path(options.gpt2_bpe_dir))
    else:
        vocabulary = train_tokenizer_version(
            store, webtext, options.vocab_size, options.max_documents
        )
    with load_encoder(store, vocabulary.ref) as encoder:  # its worker processes end here
        tokens = encode_version(
            store, webtext, encoder, vocabulary.ref, options.shards, map=map, progress=progress
        )
    return vocabulary, tokens
