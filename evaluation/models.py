"""The models the evaluations score: our training checkpoints, or a GPT-2 in Hugging Face
format (OpenAI's released weights, converted locally), each with its own tokenizer.

A model's tokenizer comes along with it because metrics are normalised by the original
text's units (words, bytes, characters), not by tokens: a model with our BPE and one with
GPT-2's vocabulary are then comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from training.bpe import Encoder, encoder_from_tokenizer, gpt2_encoder
from training.model import GPT, GPTConfig
from training.tokenizer_stage import load_encoder
from webtext.store import MANIFEST, Manifest, Store

HEAD_SLICE = 4096  # positions whose logits exist at once: 823 MB at a 50,257 vocabulary


class LanguageModel:
    """A causal language model as the scorers see it: token ids in, logits out.

    `trunk` maps ids (B, T) to final hidden states and `head` those to logits; scoring asks
    for the logits of a few positions only, and the head over a 50k vocabulary is most of
    the work (and memory) of a small model. A model given as one ids-to-logits function
    (`head=None`) works too, computing every position.
    """

    def __init__(
        self,
        name: str,
        trunk: Callable[[torch.Tensor], torch.Tensor],
        encoder: Encoder,
        max_length: int,
        device: torch.device,
        head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.max_length = max_length
        self.device = device
        self._trunk = trunk
        self._head = head

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


def pick_device(device: str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, a `model` version's `checkpoint.pt`, or the newest `ckpt-*.pt` of a
    training run's folder."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("ckpt-*.pt")) or sorted(path.glob("checkpoint.pt"))
        if not found:
            raise FileNotFoundError(f"no checkpoint (checkpoint.pt, ckpt-*.pt) in {path}")
        return found[-1]
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


def load_tokenizer(path: str | Path) -> Encoder:
    """A `tokenizer.json` (trained BPE), or a folder with one, or with GPT-2's
    `encoder.json` + `vocab.bpe`."""
    path = Path(path)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if path.is_file():
        return encoder_from_tokenizer(path.read_text(encoding="utf-8"))
    if (path / "encoder.json").is_file():
        return gpt2_encoder(path)
    raise FileNotFoundError(f"no tokenizer.json, or encoder.json and vocab.bpe, at {path}")


def checkpoint_tokenizer(tokens_dir: str | Path) -> Encoder:
    """The tokenizer a run was trained with, found through its tokens version's manifest.

    Training reads a local `tokens` version folder, `<store>/tokens/<id>`; its manifest names
    the `tokenizer` version it was encoded with, in the same store.
    """
    tokens_dir = Path(tokens_dir)
    manifest_path = tokens_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"the checkpoint's tokens folder {tokens_dir} has no {MANIFEST}: pass the tokenizer"
        )
    manifest = Manifest.from_json(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
    tokenizers = [parent for parent in manifest.parents if parent.stage == "tokenizer"]
    if not tokenizers:
        raise ValueError(f"{manifest_path} names no tokenizer version: pass the tokenizer")
    return load_encoder(Store(str(tokens_dir.parent.parent)), tokenizers[0])


def load_checkpoint_model(
    path: str | Path, tokenizer: str | Path | None = None, device: str | None = None
) -> LanguageModel:
    """Our GPT from a checkpoint written by `training.train` (a file or a run's folder)."""
    checkpoint = find_checkpoint(path)
    # Our own files; they hold numpy and Python RNG states besides tensors.
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = GPTConfig(**state["config"])
    model = GPT(config)
    model.load_state_dict(state["model"])
    target = pick_device(device)
    model.to(target).eval()
    if tokenizer is not None:
        encoder = load_tokenizer(tokenizer)
    else:
        encoder = checkpoint_tokenizer(state["args"]["tokens"])
    if encoder.vocab_size > config.vocab_size:
        raise ValueError(
            f"tokenizer has {encoder.vocab_size} ids, the model at {checkpoint} only "
            f"{config.vocab_size}: not the tokenizer it was trained with"
        )
    return LanguageModel(
        f"{checkpoint.parent.name}/{checkpoint.name}",
        model.hidden_states,
        encoder,
        config.block_size,
        target,
        head=model.lm_head,
    )


def load_hf_model(
    folder: str | Path, tokenizer: str | Path | None = None, device: str | None = None
) -> LanguageModel:
    """A GPT-2 in Hugging Face format (needs `transformers`); its tokenizer from `tokenizer`
    or from the folder's own files."""
    from transformers import GPT2LMHeadModel  # optional: only this loader needs it

    folder = Path(folder)
    target = pick_device(device)
    model = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).to(target).eval()
    encoder = load_tokenizer(tokenizer or folder)
    return LanguageModel(
        folder.name,
        lambda ids: model.transformer(ids).last_hidden_state,
        encoder,
        model.config.n_positions,
        target,
        head=model.lm_head,
    )
