"""The models the evaluations score: a `model` version, a training checkpoint, or a GPT-2 in
Hugging Face format (OpenAI's released weights, converted locally), each with its tokenizer.

A model's tokenizer comes along with it because metrics are normalised by the original
text's units (words, bytes, characters), not by tokens: a model with our BPE and one with
GPT-2's vocabulary are then comparable. A `model` version names its tokenizer through its
lineage (model -> tokens -> tokenizer), in whichever store holds the versions; a checkpoint
outside the store needs its tokenizer given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from training.bpe import EOT, Encoder, encoder_from_tokenizer, gpt2_encoder
from training.model import CHECKPOINT, GPT, GPTConfig, gpt_from_hf
from training.tokenizer_stage import load_encoder, tokenizer_version
from webtext.store import Store, VersionRef

HEAD_SLICE = 4096  # positions whose logits exist at once: 823 MB at a 50,257 vocabulary


class LanguageModel:
    """A causal language model as the scorers see it: token ids in, logits out.

    `trunk` maps ids (B, T) to final hidden states and `head` those to logits; scoring asks
    for the logits of a few positions only, and the head over a 50k vocabulary is most of
    the work (and memory) of a small model. A model given as one ids-to-logits function
    (`head=None`) works too, computing every position. `gpt`, our GPT when the model is one
    (`of_gpt`), is what generation needs: its key/value cache (`evaluation.generation`).
    """

    def __init__(
        self,
        name: str,
        trunk: Callable[[torch.Tensor], torch.Tensor],
        encoder: Encoder,
        max_length: int,
        device: torch.device,
        head: Callable[[torch.Tensor], torch.Tensor] | None = None,
        gpt: GPT | None = None,
    ) -> None:
        self.name = name
        self.gpt = gpt
        self.encoder = encoder
        self.max_length = max_length
        self.device = device
        self._trunk = trunk
        self._head = head

    @classmethod
    def of_gpt(cls, name: str, gpt: GPT, encoder: Encoder, device: torch.device) -> LanguageModel:
        """Our GPT (already on `device`, in eval mode) with its tokenizer."""
        return cls(
            name, gpt.hidden_states, encoder, gpt.config.block_size, device, gpt.lm_head, gpt
        )

    def __repr__(self) -> str:
        return f"LanguageModel({self.name!r}, {self.encoder!r}, max_length={self.max_length})"

    @torch.inference_mode()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, T, vocab) over the tokenizer's ids only: a trained vocabulary
        padded for speed has rows no text maps to, and they must hold no probability."""
        out = self._trunk(ids.to(self.device))
        if self._head is not None:
            out = self._head(out)
        return out[..., : self.encoder.vocab_size].float().contiguous()

    @torch.inference_mode()
    def target_logprobs(
        self, ids: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor, greedy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log p(target) at each position of the mask `positions` (B, T), row-major, and, if
        `greedy`, whether the target was the argmax there. The head runs a slice of positions
        at a time, so no (positions, vocab) tensor of the whole batch is ever made."""
        hidden = self._trunk(ids.to(self.device))[positions.to(self.device)]
        targets = targets.to(self.device)
        logprobs, hits = [], []
        for start in range(0, len(hidden), HEAD_SLICE):
            chunk = hidden[start : start + HEAD_SLICE]
            logits = self._head(chunk) if self._head is not None else chunk
            logits = logits[..., : self.encoder.vocab_size].float()
            wanted = targets[start : start + HEAD_SLICE]
            logprobs.append(-torch.nn.functional.cross_entropy(logits, wanted, reduction="none"))
            if greedy:
                hits.append(logits.argmax(dim=-1) == wanted)
        return torch.cat(logprobs).double().cpu(), torch.cat(hits).cpu() if greedy else None


@dataclass(frozen=True)
class HFModelFolder:
    """A local Hugging Face GPT-2 folder as the model to evaluate (`--hf-model DIR`):
    OpenAI's converted weights, any `GPT2LMHeadModel`, our own `export_hf`."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


ModelSource = VersionRef | HFModelFolder | str | Path


def pick_device(device: str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, a `model` version's `checkpoint.pt`, or the newest `ckpt-*.pt` of a
    training run's folder."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("ckpt-*.pt")) or sorted(path.glob(CHECKPOINT))
        if not found:
            raise FileNotFoundError(f"no checkpoint (checkpoint.pt, ckpt-*.pt) in {path}")
        return found[-1]
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


def tokenizer_files(path: str | Path) -> list[Path]:
    """The files of a tokenizer: a `tokenizer.json` (trained BPE), or a folder with one, or
    with GPT-2's `encoder.json` + `vocab.bpe`, or with the same two files under Hugging
    Face's names, `vocab.json` + `merges.txt`."""
    path = Path(path)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return [path / "tokenizer.json"]
    if path.is_file():
        return [path]
    for vocab, merges in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        if (path / vocab).is_file() and (path / merges).is_file():
            return [path / vocab, path / merges]
    raise FileNotFoundError(
        f"no tokenizer.json, encoder.json + vocab.bpe, or vocab.json + merges.txt at {path}"
    )


def load_tokenizer(path: str | Path) -> Encoder:
    """The tokenizer of `tokenizer_files(path)`."""
    return tokenizer_from_files(tokenizer_files(path))


def tokenizer_from_files(files: Sequence[Path]) -> Encoder:
    """The tokenizer of the files `tokenizer_files` found."""
    if files[0].name == "encoder.json":
        return gpt2_encoder(files[0].parent)
    if files[0].name == "vocab.json":  # GPT-2's two files as a Hugging Face folder has them
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tokenizer = Tokenizer(models.BPE.from_file(str(files[0]), str(files[1])))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens([EOT])
        return encoder_from_tokenizer(tokenizer.to_str())
    return encoder_from_tokenizer(files[0].read_text(encoding="utf-8"))


def load_model(
    store: Store,
    model: ModelSource,
    tokenizer: str | Path | None = None,
    device: str | None = None,
) -> LanguageModel:
    """A `model` version of `store`, with its lineage's tokenizer; a Hugging Face folder,
    with its own tokenizer or `tokenizer`; or a checkpoint outside the store (a file or a
    run's folder), with `tokenizer`, which it then needs."""
    check_model_source(model, tokenizer)
    if isinstance(model, VersionRef):
        return load_model_version(store, model, device)
    if isinstance(model, HFModelFolder):
        return load_hf_model(model.path, tokenizer, device)
    return load_checkpoint_model(model, tokenizer, device)


def check_model_source(model: ModelSource, tokenizer: str | Path | None) -> None:
    """A `model` version comes with its lineage's tokenizer, a checkpoint with a given one;
    a Hugging Face folder with its own, unless one is given."""
    if isinstance(model, HFModelFolder):
        return
    if isinstance(model, VersionRef) and tokenizer is not None:
        raise ValueError(f"{model} brings its tokenizer (its lineage's): pass none")
    if not isinstance(model, VersionRef) and tokenizer is None:
        raise ValueError(
            f"a checkpoint outside the store ({model}) needs its tokenizer; or pass a model version"
        )


def load_model_version(store: Store, ref: VersionRef, device: str | None = None) -> LanguageModel:
    """Our GPT from a `model` version, with the tokenizer version its lineage names."""
    tokenizer = tokenizer_version(store, ref)
    if tokenizer is None:
        raise ValueError(f"{ref} descends from no tokenizer version: pass its checkpoint and one")
    # A version's checkpoint holds tensors and plain values only (training.launch.publish_model).
    with store.open_verified(ref, CHECKPOINT) as handle:
        state = torch.load(handle, map_location="cpu", weights_only=True)
    return _gpt_model(str(ref), state, load_encoder(store, tokenizer), device)


def load_checkpoint_model(
    path: str | Path, tokenizer: str | Path, device: str | None = None
) -> LanguageModel:
    """Our GPT from a checkpoint written by `training.train` (a file or a run's folder),
    with the tokenizer it was trained with."""
    return checkpoint_model(find_checkpoint(path), load_tokenizer(tokenizer), device)


def checkpoint_model(
    checkpoint: Path, encoder: Encoder, device: str | None = None
) -> LanguageModel:
    """Our GPT from the checkpoint file `find_checkpoint` found, with its tokenizer."""
    # Our own files; they hold numpy and Python RNG states besides tensors.
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    name = f"{checkpoint.parent.name}/{checkpoint.name}"
    return _gpt_model(name, state, encoder, device)


def check_vocabulary(name: str, config: GPTConfig, encoder: Encoder) -> None:
    """A tokenizer with more ids than the model's vocabulary is not the model's."""
    if encoder.vocab_size > config.vocab_size:
        raise ValueError(
            f"tokenizer has {encoder.vocab_size} ids, the model {name} only "
            f"{config.vocab_size}: not the tokenizer it was trained with"
        )


def _gpt_model(name: str, state: dict, encoder: Encoder, device: str | None) -> LanguageModel:
    config = GPTConfig(**state["config"])
    check_vocabulary(name, config, encoder)
    model = GPT(config)
    model.load_state_dict(state["model"])
    target = pick_device(device)
    return LanguageModel.of_gpt(name, model.to(target).eval(), encoder, target)


def load_hf_model(
    folder: str | Path, tokenizer: str | Path | None = None, device: str | None = None
) -> LanguageModel:
    """A GPT-2 in Hugging Face format (OpenAI's converted weights, our export, any
    `GPT2LMHeadModel`) as our GPT (`training.model.gpt_from_hf`), so that scoring and the
    cached generation are the same code for every model; its tokenizer from `tokenizer` or
    from the folder's own files."""
    return hf_folder_model(Path(folder), load_tokenizer(tokenizer or folder), device)


def hf_folder_model(folder: Path, encoder: Encoder, device: str | None = None) -> LanguageModel:
    """The GPT of a Hugging Face folder, with its tokenizer."""
    gpt = gpt_from_hf(folder)
    check_vocabulary(str(folder), gpt.config, encoder)
    target = pick_device(device)
    name = f"{folder.parent.name}/{folder.name}"  # e.g. models/gpt2, <version>/hf
    return LanguageModel.of_gpt(name, gpt.to(target).eval(), encoder, target)
