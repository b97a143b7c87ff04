"""Llama-3-style byte-level decoder with a per-layer choice of dense or Lighthouse attention.

Module and parameter names follow Hugging Face's ``LlamaForCausalLM`` exactly (``model.layers.3.
self_attn.q_proj.weight`` ...), and RoPE uses the same half-split rotation, so exporting the dense
model is a copy of the state dict (see export.py).
"""

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..rope import rotary_tables
from .loss import chunked_cross_entropy
from .vocab import PAD, VOCAB_SIZE

DENSE = "dense"
LIGHTHOUSE = "lighthouse"
SELECTIONS = ("paper", "lagged", "causal")
ROPE_MODES = ("pooled", "before")
SCORERS = ("norm", "dilated")
# RMSNorm arithmetic: "composite" squares, averages, scales and multiplies in separate fp32 operations (every run
# before this option); "fused" is F.rms_norm, for which PyTorch has a fused CUDA kernel. On the model's fp32
# residual stream (fp32 also under bf16 autocast) both compute the same function, rounded differently.
NORMS = ("composite", "fused")


@dataclasses.dataclass
class LighthouseSettings:
    """Arguments of ``lighthouse.lighthouse_attention`` used by the Lighthouse layers.

    ``selection`` is the layer's selection rule ("paper", "lagged" or "causal"). ``rope`` says where
    the rotary positions go: "pooled" hands the layer raw q/k and the model's cos/sin tables, so
    every kept pooled entry is rotated at its own position; "before" rotates q/k over the whole
    sequence and then pools (the paper's released model code: pooled entries carry a smeared phase).
    """

    levels: int = 3
    pooling: int = 4
    topk: int = 2048
    tile_budget: int = 128
    scorer: str = "norm"
    dilation: int = 4
    selection: str = "paper"
    rope: str = "pooled"


@dataclasses.dataclass
class ModelConfig:
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_hidden: int = 384
    max_seq_len: int = 1024
    vocab_size: int = VOCAB_SIZE
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5
    norm: str = "composite"
    # Layers at each end that stay dense in every stage (the paper keeps the first two and last two).
    dense_boundary: int = 2
    lighthouse: LighthouseSettings = dataclasses.field(default_factory=LighthouseSettings)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.lighthouse.selection not in SELECTIONS:
            raise ValueError(f"lighthouse.selection: expected one of {SELECTIONS}, got {self.lighthouse.selection!r}")
        if self.lighthouse.rope not in ROPE_MODES:
            raise ValueError(f"lighthouse.rope: expected one of {ROPE_MODES}, got {self.lighthouse.rope!r}")
        if self.lighthouse.scorer not in SCORERS:
            raise ValueError(f"lighthouse.scorer: expected one of {SCORERS}, got {self.lighthouse.scorer!r}")
        if self.lighthouse.topk < 1:
            raise ValueError(f"lighthouse.topk: expected at least 1, got {self.lighthouse.topk}")
        if self.norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {self.norm!r}")
        if self.dense_boundary < 0:
            raise ValueError(f"dense_boundary: expected 0 or more, got {self.dense_boundary}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        fields = dict(data)
        lighthouse = dict(fields.get("lighthouse", {}))
        # Configs written before the rope option rotated q and k before pooling; they keep meaning that.
        lighthouse.setdefault("rope", "before")
        fields["lighthouse"] = LighthouseSettings(**lighthouse)
        return cls(**fields)


def layer_modes(config: ModelConfig, stage: str) -> list:
    """Attention mode of every layer in a training stage ("lighthouse" or "dense")."""
    if stage == DENSE:
        return [DENSE] * config.n_layers
    if stage != LIGHTHOUSE:
        raise ValueError(f"unknown stage {stage!r}")
    edge = config.dense_boundary
    return [DENSE if i < edge or i >= config.n_layers - edge else LIGHTHOUSE for i in range(config.n_layers)]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, fused: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(config: ModelConfig, length: int, device: torch.device):
    """cos/sin tables [length, head_dim] in fp32 for the half-split rotation."""
    return rotary_tables(length, config.head_dim, config.rope_theta, device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, N, heads, D]; the tables are cast to x's dtype so bf16 stays bf16."""
    cos = cos[None, :, None, :].to(x.dtype)
    sin = sin[None, :, None, :].to(x.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal SDPA on [B, N, heads, D] tensors. With GQA the kernel reads each KV head for its group of query
    heads (enable_gqa) instead of k and v being copied per query head first and their gradients summed."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])
    return out.transpose(1, 2)


def fused_linear(x: torch.Tensor, layers) -> tuple:
    """The outputs of bias-free Linear layers that read the same input, computed as one matrix multiply.

    One GEMM over the concatenated weights runs nearer the GPU's peak than several narrow ones (q/k/v: 512, 256
    and 256 wide in the 64K model), and in the backward x's gradient is one GEMM over the concatenated output
    gradients instead of one per layer and a sum. The parameters stay separate: their names are Hugging Face's,
    which export.py copies.
    """
    weight = torch.cat([layer.weight for layer in layers])
    return F.linear(x, weight).split([layer.out_features for layer in layers], dim=-1)


def project_qkv(x: torch.Tensor, attention: "Attention") -> tuple:
    """q [B, N, heads, D], k and v [B, N, kv_heads, D] of x [B, N, d_model]: views of one GEMM's output."""
    b, n, _ = x.shape
    c = attention.config
    q, k, v = fused_linear(x, (attention.q_proj, attention.k_proj, attention.v_proj))
    return (q.view(b, n, c.n_heads, c.head_dim), k.view(b, n, c.n_kv_heads, c.head_dim),
            v.view(b, n, c.n_kv_heads, c.head_dim))


def layer_options(settings: LighthouseSettings, cos: torch.Tensor, sin: torch.Tensor) -> dict:
    """Keyword arguments of ``lighthouse_attention`` for these settings and RoPE tables.

    In "pooled" mode the layer gets the tables and rotates each kept entry at its own position; in
    "before" mode ``rope`` is None: q and k arrive rotated.
    """
    return {
        "levels": settings.levels,
        "pooling": settings.pooling,
        "topk": settings.topk,
        "tile_budget": settings.tile_budget,
        "scorer": settings.scorer,
        "dilation": settings.dilation,
        "fallback": "dense",
        "selection": settings.selection,
        "rope": (cos, sin) if settings.rope == "pooled" else None,
    }


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, settings: LighthouseSettings,
                     cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Lighthouse attention on raw (un-rotated) q, k [B, N, heads, D]; RoPE is applied as settings.rope says."""
    # Imported here so that dense-only use never loads the compiled extension.
    from lighthouse import lighthouse_attention

    if settings.rope == "before":
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    return lighthouse_attention(q, k, v, **layer_options(settings, cos, sin))


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d, hd = config.d_model, config.head_dim
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(config.n_heads * hd, d, bias=False)
        self.mode = DENSE
        # Set by ByteLlama.shard_sequence: this rank's share of sequences split over a context-parallel group.
        self.sequence_shard = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        c = self.config
        q, k, v = project_qkv(x, self)
        if self.sequence_shard is not None:
            out = self.sequence_shard.attention(q, k, v, self.mode, c.lighthouse, cos, sin)
        elif self.mode == LIGHTHOUSE:
            out = sparse_attention(q, k, v, c.lighthouse, cos, sin)
        else:
            out = dense_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)
        return self.o_proj(out.reshape(b, n, c.n_heads * c.head_dim))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(config.ffn_hidden, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # gate and up stay two GEMMs: as one, the backward's SiLU kernel writes their gradients into one buffer
        # and took almost twice as long, more than the GEMM saved (bench/NOTES.md).
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, config.norm_eps, config.norm == "fused")
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.d_model, config.norm_eps, config.norm == "fused")
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps, config.norm == "fused")


class ByteLlama(nn.Module):
    """Decoder-only LM over bytes; ``forward(tokens [B, N]) -> logits [B, N, vocab]``, or with targets the
    summed loss."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.activation_checkpointing = False
        self.stage = DENSE
        self.sequence_shard = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Residual-branch outputs are scaled down with depth so the stream's variance stays bounded.
        out_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                nn.init.normal_(p, std=out_std)
            else:
                nn.init.normal_(p, std=0.02)

    def set_stage(self, stage: str) -> None:
        """Switch every layer to its attention mode for the stage; parameters are untouched."""
        for layer, mode in zip(self.model.layers, layer_modes(self.config, stage)):
            layer.self_attn.mode = mode
        self.stage = stage

    def shard_sequence(self, shard) -> None:
        """Run on this rank's shard of every sequence (a context.SequenceShard): forward then takes its N/C
        positions and attention exchanges them over the shard's group."""
        self.sequence_shard = shard
        for layer in self.model.layers:
            layer.self_attn.sequence_shard = shard

    def attention_modes(self) -> list:
        return [layer.self_attn.mode for layer in self.model.layers]

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor = None, rope: tuple = None) -> torch.Tensor:
        """tokens [B, N] (with a sequence shard: this rank's [B, N/C] positions) -> logits of the same positions.

        Given targets [B, N] (PAD where nothing is scored), the summed cross-entropy of the scored targets
        instead: the head and the loss run a chunk of positions at a time (loss.py), so the logits of the
        whole batch never exist. The rotary tables always cover the whole sequence; a sharded attention
        takes its rows of them. ``rope`` is (cos, sin) as rope_tables makes them for that length, made once
        by a caller that runs many steps; without it they are computed here, and a compiled step then
        recomputes the sines and cosines inside every layer's rotation kernel (the compiler fuses the
        table's arithmetic into each consumer rather than storing it).
        """
        shard = self.sequence_shard
        length = tokens.shape[1] if shard is None else tokens.shape[1] * shard.size
        if rope is None:
            cos, sin = rope_tables(self.config, length, tokens.device)
        else:
            cos, sin = rope
            expected = (length, self.config.head_dim)
            if tuple(cos.shape) != expected or tuple(sin.shape) != expected:
                raise ValueError(f"rope: expected cos and sin tables of shape {expected}, got "
                                 f"{tuple(cos.shape)} and {tuple(sin.shape)}")
        x = self.model.embed_tokens(tokens)
        for layer in self.model.layers:
            if self.activation_checkpointing and self.training:
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        x = self.model.norm(x)
        if targets is None:
            return self.lm_head(x)
        return chunked_cross_entropy(x.flatten(0, 1), self.lm_head.weight, targets.flatten(), PAD)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
