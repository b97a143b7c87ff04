"""Hugging Face transformers integration: an attention function registered as attn_implementation="lighthouse".

Options come from the model config's `lighthouse` attribute, a dict with any of the keys of OPTION_DEFAULTS,
e.g. `config.lighthouse = {"levels": 3, "pooling": 4, "topk": 2048, "dense_layers": [0, 1, -2, -1]}`.
A layer is dense when set_attention_mode made it so, else when its layer_idx is in dense_layers.
Lighthouse handles full causal self-attention without a padding mask; decoding steps (fewer queries than
keys) and dense layers run transformers' own SDPA attention.
"""

from .attention import check_options, lighthouse_attention
from .module import MODE_ATTRIBUTE

NAME = "lighthouse"
OPTION_DEFAULTS = {
    "levels": 3,
    "pooling": 4,
    "topk": 2048,
    "tile_budget": 128,
    "scorer": "norm",
    "dilation": 4,
    "fallback": "dense",
    "dense_layers": (),
}


def lighthouse_options(config):
    """The Lighthouse options of a transformers config (defaults for missing keys); raises ValueError for
    unknown keys or invalid values."""
    given = dict(getattr(config, "lighthouse", None) or {})
    unknown = sorted(set(given) - set(OPTION_DEFAULTS))
    if unknown:
        raise ValueError(f"lighthouse: config.lighthouse: expected keys among {sorted(OPTION_DEFAULTS)}, got {unknown}")
    options = {**OPTION_DEFAULTS, **given}
    check_options(**{key: value for key, value in options.items() if key != "dense_layers"})
    return options


def _layer_mode(module, options):
    mode = getattr(module, MODE_ATTRIBUTE, None)
    if mode is not None:
        return mode
    layer_idx = getattr(module, "layer_idx", None)
    layers = getattr(getattr(module, "config", None), "num_hidden_layers", None)
    dense = {index % layers if layers else index for index in options["dense_layers"]}
    return "dense" if layer_idx in dense else "lighthouse"


def hf_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: query [B, H, N, D], key and value [B, Hkv, N, D] ->
    (output [B, N, H, D], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    options = lighthouse_options(getattr(module, "config", None))
    decoding = query.shape[2] != key.shape[2]
    if decoding or _layer_mode(module, options) == "dense":
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if attention_mask is not None:
        raise ValueError(
            "lighthouse: attention_mask: expected None (causal self-attention without padding), got a mask of "
            f"shape {list(attention_mask.shape)}"
        )
    if dropout:
        raise ValueError(f"lighthouse: dropout: expected 0.0 (attention dropout is not supported), got {dropout}")
    options.pop("dense_layers")
    out = lighthouse_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=scaling, **options
    )
    return out, None


def register_hf(name=NAME):
    """Registers the Lighthouse attention function (and transformers' SDPA mask builder, which yields no mask
    for unpadded causal batches) under `name`, so models load with attn_implementation=name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, hf_attention)
    AttentionMaskInterface.register(name, sdpa_mask)
