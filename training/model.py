"""GPT-2 in one file, nanoGPT-style: the model, its sizes, its FLOPs, a key/value cache for
generation, and conversion to and from Hugging Face's GPT-2.

Pre-LayerNorm transformer blocks, learned position embeddings, GELU with GPT-2's tanh
approximation, token embeddings tied to the output head, and residual projections
initialised with std 0.02 / sqrt(2 * n_layer) (GPT-2 paper, section 2.3).
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# A `model` version's weights (and config, step, arguments): training.launch writes it,
# evaluation reads it.
CHECKPOINT = "checkpoint.pt"
# What `flops_per_token` counts, for logs and benchmark output.
FLOPS_FORMULA = (
    "6*N + 12*L*H*Q*T per token (PaLM appendix B, nanoGPT estimate_mfu; "
    "N = parameters without position embeddings, Q = head size, T = sequence length)"
)


@dataclass
class GPTConfig:
    block_size: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True


CONFIGS = {
    "tiny": GPTConfig(block_size=64, vocab_size=50257, n_layer=2, n_head=2, n_embd=64),
    "124M": GPTConfig(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768),
    "355M": GPTConfig(block_size=1024, vocab_size=50257, n_layer=24, n_head=16, n_embd=1024),
    "774M": GPTConfig(block_size=1024, vocab_size=50257, n_layer=36, n_head=20, n_embd=1280),
    "1558M": GPTConfig(block_size=1024, vocab_size=50257, n_layer=48, n_head=25, n_embd=1600),
}


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(
        self,
        x: torch.Tensor,
        cache: LayerCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )
        else:  # generation: the new positions attend to every cached one the mask allows
            k, v = cache.append(k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: LayerCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),
                "wpe": nn.Embedding(config.block_size, config.n_embd),
                "drop": nn.Dropout(config.dropout),
                "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                "ln_f": nn.LayerNorm(config.n_embd, bias=config.bias),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as in GPT-2
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_projection", False):
                # Residual stream variance grows with depth: two additions per block.
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) and, given targets, the mean cross-entropy loss."""
        logits = self.lm_head(self.hidden_states(idx))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """The final layer-normed states (B, T, n_embd): `lm_head` of them are the logits.
        Scoring a few positions of a window applies the head to those alone."""
        _, t = idx.size()
        assert t <= self.config.block_size, f"sequence {t} > block size {self.config.block_size}"
        pos = torch.arange(t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def decode(
        self, idx: torch.Tensor, cache: KVCache, real: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Final hidden states (B, T, n_embd) of `idx` appended to the sequences in `cache`:
        a whole (left-padded) prompt once, then one token per step.

        `real` (B, T, bool) marks the tokens that are not padding (default: all). Padding
        takes no position and no token attends to it, so a row's states are those of its
        tokens alone; `forward` on the unpadded rows computes the same (tested to 1e-4).
        """
        start, end = cache.length, cache.length + idx.size(1)
        assert end <= cache.capacity, f"sequence {end} > cache capacity {cache.capacity}"
        if real is None and idx.size(1) == 1:
            # A decoding step: the new token is real and sees every real position so far,
            # itself included; the mask is a view of the cache's, and nothing is built.
            pos = cache.next_position[:, None]
            cache.next_position = cache.next_position + 1  # a new tensor: `pos` stays
            cache.real[:, start] = True
            mask = cache.real[:, None, None, :end]
        else:
            pos, mask = self._prompt_positions_and_mask(cache, start, end, real, idx)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block, layer in zip(self.transformer.h, cache.layers, strict=True):
            x = block(x, layer, mask)
        return self.transformer.ln_f(x)

    @staticmethod
    def _prompt_positions_and_mask(
        cache: KVCache, start: int, end: int, real: torch.Tensor | None, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Position ids (B, T) and attention mask (B, 1, T, end) of tokens `start:end`, of
        which `real` are not padding (default: all), recorded in `cache`."""
        if real is None:
            real = torch.ones_like(idx, dtype=torch.bool)
        # Position ids count a row's real tokens only (padding gets 0; nothing sees it).
        pos = (cache.next_position[:, None] + real.long().cumsum(1) - 1).clamp(min=0)
        cache.next_position += real.sum(1)
        cache.real[:, start:end] = real
        keys = torch.arange(end, device=idx.device)[None, :]
        queries = torch.arange(start, end, device=idx.device)[:, None]
        # Causal and real keys; each position also sees itself, so a padding row has one key
        # (softmax over none would be NaN, and NaN values poison the rows that skip them).
        allowed = ((keys <= queries) & cache.real[:, None, :end]) | (keys == queries)
        return pos, allowed[:, None]  # the mask is the same for every head

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, counting the tied embedding once; `non_embedding` drops positions."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token: 6*N + 12*L*H*Q*T (`FLOPS_FORMULA`).

        6*N: a multiply-add per weight, forward once and backward twice; the token
        embedding counts because it is also the output head. 12*L*H*Q*T: attention scores
        and their weighted sum, which depend on the sequence length T rather than weights.
        """
        c = self.config
        T = seq_len or c.block_size
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.n_embd * T

    def configure_optimizer(
        self,
        weight_decay: float,
        lr: float,
        betas: tuple[float, float],
        device_type: str,
    ) -> torch.optim.AdamW:
        """AdamW decaying only 2-D tensors (matmuls, embeddings), not biases or LayerNorms."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))


class LayerCache:
    """One layer's keys and values (B, n_head, capacity, head_size), filled up to `length`."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> None:
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys and values; return all of them so far."""
        end = self.length + k.size(2)
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Every layer's keys and values for a batch of sequences being generated, preallocated
    for `capacity` positions, with which positions hold real tokens and each row's next
    position id. `GPT.decode` fills it; `keep` drops finished rows."""

    def __init__(
        self,
        config: GPTConfig,
        batch: int,
        capacity: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity > config.block_size:
            raise ValueError(f"cache of {capacity} positions > block size {config.block_size}")
        shape = (batch, config.n_head, capacity, config.n_embd // config.n_head)
        self.capacity = capacity
        self.layers = [LayerCache(shape, device, dtype) for _ in range(config.n_layer)]
        self.real = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.next_position = torch.zeros(batch, dtype=torch.long, device=device)

    @property
    def length(self) -> int:
        return self.layers[0].length

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (indices) of the batch, in that order."""
        for layer in self.layers:
            layer.keys, layer.values = layer.keys[rows], layer.values[rows]
        self.real = self.real[rows]
        self.next_position = self.next_position[rows]


# Our parameter names whose nn.Linear weight is the transpose of HF's Conv1D weight.
_TRANSPOSED = ("c_attn.weight", "c_proj.weight", "c_fc.weight")


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under `GPT2LMHeadModel`'s names and layouts (lm_head left to tying).

    HF's GPT-2 uses Conv1D, whose weight is (in, out): the transpose of nn.Linear's. With
    `bias=False` the biases HF always has are written as zeros, which computes the same.
    """
    c = model.config
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        if name.endswith(_TRANSPOSED):
            tensor = tensor.t()
        out[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    if not c.bias:
        for i in range(c.n_layer):
            p = f"transformer.h.{i}"
            zeros = {
                f"{p}.ln_1.bias": c.n_embd,
                f"{p}.ln_2.bias": c.n_embd,
                f"{p}.attn.c_attn.bias": 3 * c.n_embd,
                f"{p}.attn.c_proj.bias": c.n_embd,
                f"{p}.mlp.c_fc.bias": 4 * c.n_embd,
                f"{p}.mlp.c_proj.bias": c.n_embd,
            }
            out.update({k: torch.zeros(n) for k, n in zeros.items()})
        out["transformer.ln_f.bias"] = torch.zeros(c.n_embd)
    return out


def export_hf(
    model: GPT,
    config: GPTConfig,
    folder: str | Path,
    tokenizer_files: dict[str, bytes] | None = None,
    eot_id: int | None = None,
    vocab_size: int | None = None,
) -> Path:
    """Write `folder` as a Hugging Face `GPT2LMHeadModel`: config.json, model.safetensors,
    and the given tokenizer files (e.g. tokenizer.json) byte for byte.

    `vocab_size` keeps only the tokenizer's ids: the rows a padded vocabulary added would
    otherwise take probability mass in any tool that normalises over all logits.
    """
    from safetensors.torch import save_file  # only exporting needs safetensors

    state = hf_state_dict(model)
    vocab_size = vocab_size or config.vocab_size
    if not 0 < vocab_size <= config.vocab_size:
        raise ValueError(f"vocab_size {vocab_size} must be 1..{config.vocab_size}")
    state["transformer.wte.weight"] = state["transformer.wte.weight"][:vocab_size].contiguous()

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",  # GPT-2's tanh approximation
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for name, data in (tokenizer_files or {}).items():
        (folder / name).write_bytes(data)
    return folder


def gpt_from_hf(folder: str | Path) -> GPT:
    """Our GPT with the weights of a Hugging Face GPT-2 folder (config.json and
    model.safetensors, a sharded model.safetensors.index.json, or pytorch_model.bin): OpenAI's
    converted releases, our `export_hf`, any `GPT2LMHeadModel` of the same architecture.

    The inverse of `hf_state_dict`. Variants our model does not compute (another activation,
    MLP width, attention scaling or untied head) are refused, naming the file and the field.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {folder}: not a Hugging Face model folder")
    hf = json.loads(config_file.read_text(encoding="utf-8"))
    supported = {
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_inner": None,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "tie_word_embeddings": True,
    }
    for key, value in supported.items():
        if hf.get(key, value) != value:
            raise ValueError(f"{config_file}: {key} = {hf[key]!r}; only {value!r} is supported")
    if not math.isclose(hf.get("layer_norm_epsilon", 1e-5), 1e-5):
        raise ValueError(f"{config_file}: layer_norm_epsilon {hf['layer_norm_epsilon']} != 1e-5")
    sizes = {
        "block_size": "n_positions",
        "vocab_size": "vocab_size",
        "n_layer": "n_layer",
        "n_head": "n_head",
        "n_embd": "n_embd",
    }
    missing = [key for key in sizes.values() if not isinstance(hf.get(key), int)]
    if missing:
        raise ValueError(f"{config_file}: no integer {', '.join(missing)}")
    config = GPTConfig(**{ours: hf[theirs] for ours, theirs in sizes.items()})
    model = GPT(config)
    state = {}
    for name, tensor in _hf_weights(folder).items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # causal-mask buffers of old exports; the head is tied to wte
        state[f"transformer.{name}"] = tensor.t() if name.endswith(_TRANSPOSED) else tensor
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)  # strict: a missing or unexpected tensor is an error
    return model


def hf_weight_files(folder: str | Path) -> list[Path]:
    """The weight files of a Hugging Face model folder: model.safetensors, the shards a
    model.safetensors.index.json names, or pytorch_model.bin."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        return [folder / name for name in sorted(set(shards))]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise FileNotFoundError(
        f"no model.safetensors, model.safetensors.index.json or pytorch_model.bin in {folder}"
    )


def _hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face model folder, by its name there."""
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for path in hf_weight_files(folder):
        if path.suffix == ".bin":  # tensors only: no code runs while loading
            weights.update(torch.load(path, map_location="cpu", weights_only=True))
        else:
            weights.update(load_file(path))
    return weights
