"""LighthouseAttention (an nn.Module around lighthouse_attention) and set_attention_mode, which switches the
attention layers of a model between Lighthouse and dense SDPA (e.g. for the final dense-resumption stage)."""

from torch import nn

from . import ops
from .attention import check_options, dense_causal_attention, lighthouse_attention
from .rope import apply_rope

MODES = ("lighthouse", "dense")
# Attribute holding a layer's mode, on LighthouseAttention modules and on Hugging Face attention modules.
MODE_ATTRIBUTE = "lighthouse_mode"


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"lighthouse: mode: expected one of {MODES}, got {mode!r}")


class LighthouseAttention(nn.Module):
    """Causal attention of q [B, N, H, D], k and v [B, N, Hkv, D] -> [B, N, H, D].

    mode "lighthouse" runs lighthouse_attention with the given options; mode "dense" runs plain causal SDPA.
    forward(q, k, v, rope=(cos, sin)) takes un-rotated q and k and the model's rotary tables (see
    lighthouse_attention; rope_interleaved picks the pair convention); mode "dense" then rotates q and k at
    every position before SDPA.
    """

    def __init__(
        self, *, levels=3, pooling=4, topk=2048, tile_budget=128, scorer="norm", dilation=4, scale=None,
        fallback="dense", mode="lighthouse", rope_interleaved=False,
    ):
        super().__init__()
        check_options(
            levels=levels, pooling=pooling, topk=topk, tile_budget=tile_budget, scorer=scorer, dilation=dilation,
            fallback=fallback,
        )
        _check_mode(mode)
        self.options = {
            "levels": levels, "pooling": pooling, "topk": topk, "tile_budget": tile_budget, "scorer": scorer,
            "dilation": dilation, "fallback": fallback, "rope_interleaved": rope_interleaved,
        }
        self.scale = scale
        self.lighthouse_mode = mode

    def forward(self, q, k, v, rope=None):
        if self.lighthouse_mode == "dense":
            if rope is not None:
                tables = ops.rope_tables(rope, q.shape[0], q.shape[1], q.shape[3])
                q, k = (apply_rope(x, *tables, interleaved=self.options["rope_interleaved"]) for x in (q, k))
            return dense_causal_attention(q, k, v, scale=self.scale)
        return lighthouse_attention(q, k, v, scale=self.scale, rope=rope, **self.options)

    def extra_repr(self):
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        return f"mode={self.lighthouse_mode!r}, {options}, scale={self.scale!r}"


def _is_hf_attention(module):
    return type(module).__name__.endswith("Attention") and isinstance(getattr(module, "layer_idx", None), int)


def attention_layers(model):
    """The model's attention layers in module order: LighthouseAttention modules and Hugging Face attention
    modules (classes named *Attention with an integer layer_idx)."""
    return [m for m in model.modules() if isinstance(m, LighthouseAttention) or _is_hf_attention(m)]


def set_attention_mode(model, mode, *, dense_layers=()):
    """Sets every attention layer of model to mode ("lighthouse" or "dense"); with mode "lighthouse", the
    layers listed in dense_layers (indices in module order, negative from the end, e.g. (0, 1, -2, -1))
    stay dense. Returns the list of modes now set, one per layer."""
    _check_mode(mode)
    layers = attention_layers(model)
    if not layers:
        raise ValueError("lighthouse: model: expected LighthouseAttention or Hugging Face attention layers, got none")
    dense = set()
    for index in dense_layers:
        if not -len(layers) <= index < len(layers):
            raise ValueError(f"lighthouse: dense_layers: expected indices in [{-len(layers)}, {len(layers)}), got {index}")
        dense.add(index % len(layers))
    modes = ["dense" if mode == "dense" or i in dense else "lighthouse" for i in range(len(layers))]
    for layer, layer_mode in zip(layers, modes):
        setattr(layer, MODE_ATTRIBUTE, layer_mode)
    return modes
