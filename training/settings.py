"""Training settings: everything `training.train` takes besides its paths, with defaults.

`TrainSettings` is the one place the defaults live. The trainer's flags are made from its
fields (`add_arguments`), the torchrun command passes them back (`trainer_args`), a `model`
version's parameters are its fields, and the `train-gpt2` flow and `webtext train` take
the same names with the same defaults.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from training.model import CONFIGS
from webtext.stage import options_from


def setting(default: Any, help: str, choices: Sequence[str] | None = None) -> Any:
    """A field of TrainSettings: its default, and its flag's help and choices."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class TrainSettings:
    model: str = setting("124M", "GPT-2 size", choices=tuple(CONFIGS))
    vocab_size: int | None = setting(
        None,
        "default: the shards' header rounded up to a multiple of 64 (GPU tiles; the extra "
        "ids are never in the data, and 50,304 ran 7 percent faster than 50,257 on an H200)",
    )
    block_size: int | None = setting(None, "default: the model's")
    dropout: float = setting(0.0, "dropout probability")
    batch_size: int = setting(16, "micro-batch per rank")
    grad_accum: int = setting(1, "micro-batches per optimizer step")
    # nanoGPT's step count for GPT-2 (124M); set it for anything smaller.
    max_steps: int = setting(600_000, "optimizer steps")
    decay_steps: int | None = setting(None, "end of the cosine; default --max-steps")
    lr: float = setting(6e-4, "peak learning rate")
    min_lr: float = setting(6e-5, "learning rate at the end of the cosine")
    warmup_steps: int = setting(100, "linear warmup steps")
    weight_decay: float = setting(0.1, "AdamW weight decay (matrices only)")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.95, "AdamW beta2")
    grad_clip: float = setting(1.0, "gradient norm clip; 0 disables")
    eval_interval: int = setting(250, "steps between validation losses")
    eval_steps: int = setting(20, "batches per validation loss")
    checkpoint_interval: int = setting(1000, "steps between checkpoints")
    keep_checkpoints: int = setting(3, "checkpoints kept in --out")
    compile: bool = setting(False, "torch.compile the model")
    dtype: str | None = setting(None, "default: bf16 on CUDA, else fp32", choices=("bf16", "fp32"))
    seed: int = setting(1337, "seed of the weights, batches and dropout")
    init_from: str | None = setting(
        None,
        "model version to fine-tune: its weights, size and tokenizer (the tokens must use "
        "the same vocabulary); the optimizer and schedule start afresh",
    )

    def __post_init__(self) -> None:
        if self.model not in CONFIGS:
            raise ValueError(f"model {self.model!r}: not one of {', '.join(CONFIGS)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainSettings:
        """The settings named in `values` (other keys ignored), defaults for the rest."""
        return cls(**options_from(cls, values))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(annotation: Any) -> type:
    """`int` for `int` and `int | None`."""
    if isinstance(annotation, types.UnionType):
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag per setting (`max_steps`: `--max-steps`), with its default, type and help."""
    annotations = typing.get_type_hints(TrainSettings)
    for f in fields(TrainSettings):
        kind = _value_type(annotations[f.name])
        if kind is bool:
            parser.add_argument(
                _flag(f.name),
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=f.metadata["help"],
            )
        else:
            parser.add_argument(
                _flag(f.name),
                type=kind,
                default=f.default,
                choices=f.metadata["choices"],
                help=f.metadata["help"],
            )


def parse_settings(argv: Sequence[str]) -> TrainSettings:
    """Settings from trainer flags (`--model tiny --max-steps 300`); an unknown flag exits."""
    parser = argparse.ArgumentParser(prog="training settings", add_help=False)
    add_arguments(parser)
    return TrainSettings.from_mapping(vars(parser.parse_args(list(argv))))


def trainer_args(settings: TrainSettings) -> list[str]:
    """The trainer's flags for the settings that differ from the defaults."""
    args: list[str] = []
    for f in fields(TrainSettings):
        value = getattr(settings, f.name)
        if value == f.default:
            continue
        if isinstance(value, bool):
            args.append(_flag(f.name) if value else "--no-" + _flag(f.name)[2:])
        else:
            args += [_flag(f.name), str(value)]
    return args
