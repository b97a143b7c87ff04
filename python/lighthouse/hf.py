"""Hugging Face transformers integration: an attention function registered as attn_implementation="lighthouse".

Options come from the model config's `lighthouse` attribute, a dict with any of the keys of OPTION_DEFAULTS,
e.g. `config.lighthouse = {"levels": 3, "pooling": 4, "topk": 2048, "dense_layers": [0, 1, -2, -1]}`.
A layer is dense when set_attention_mode made it so, else when its layer_idx is in dense_layers.
Lighthouse handles full causal self-attention without a padding mask; decoding steps (fewer queries than
keys) and dense layers run transformers' own SDPA attention.

Rotary positions (option "rope"): transformers rotates q and k inside the attention module, before the
attention function sees them. With "pooled" (the default) Lighthouse gets them un-rotated and rotates each
kept entry at the last position it covers (docs/semantics.md, "Rotary positions"); "before" keeps the
rotation of every token before pooling (pooled entries then carry the mean of their tokens' rotations).
"pooled" needs prepare_model(model), which puts a forward pre-hook on every attention module: on a call that
will run Lighthouse (a Lighthouse layer, no cached keys yet), it keeps the real `position_embeddings`
(cos, sin) on the module and hands the module identity tables (cos = 1, sin = 0) instead, so transformers'
own rotation leaves q and k as they are; the attention function then passes the real tables to
lighthouse_attention. The module's key cache is taken out of that call too, and the attention function
stores in it the keys rotated by the model's own apply_rotary_pos_emb, exactly what transformers would have
stored, so decoding steps that follow use it unchanged. Dense layers and decoding steps are not touched.
"""

import sys

import torch

from .attention import check_options, lighthouse_attention
from .module import MODE_ATTRIBUTE, _is_hf_attention

NAME = "lighthouse"
OPTION_DEFAULTS = {
    "levels": 3,
    "pooling": 4,
    "topk": 2048,
    "tile_budget": 128,
    "scorer": "norm",
    "dilation": 4,
    "fallback": "dense",
    "selection": "paper",
    "rope": "pooled",
    "dense_layers": (),
}
ROPE_MODES = ("pooled", "before")
# Attributes prepare_model sets on each attention module: its hook handles and its model's rotation function,
# and, during one forward call, the real (cos, sin, key cache) the pre-hook took out of the call.
_HOOKS_ATTRIBUTE = "_lighthouse_rope_hooks"
_CALL_ATTRIBUTE = "_lighthouse_rope_call"
# Names transformers versions give the key cache argument of an attention module.
_CACHE_ARGUMENTS = ("cache", "past_key_values")


def lighthouse_options(config):
    """The Lighthouse options of a transformers config (defaults for missing keys); raises ValueError for
    unknown keys or invalid values."""
    given = dict(getattr(config, "lighthouse", None) or {})
    unknown = sorted(set(given) - set(OPTION_DEFAULTS))
    if unknown:
        raise ValueError(f"lighthouse: config.lighthouse: expected keys among {sorted(OPTION_DEFAULTS)}, got {unknown}")
    options = {**OPTION_DEFAULTS, **given}
    if options["rope"] not in ROPE_MODES:
        raise ValueError(
            f"lighthouse: config.lighthouse['rope']: expected one of {ROPE_MODES}, got {options['rope']!r}"
        )
    check_options(**{key: value for key, value in options.items() if key not in ("dense_layers", "rope")})
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
    call = getattr(module, _CALL_ATTRIBUTE, None)
    if options["rope"] == "pooled" and call is None:
        raise ValueError(
            "lighthouse: config.lighthouse['rope']: expected a model prepared with lighthouse.hf.prepare_model("
            "model) for 'pooled' (Lighthouse needs un-rotated q and k), or 'before', got an attention module "
            f"without its hooks ({type(module).__name__} layer {getattr(module, 'layer_idx', '?')})"
        )
    if attention_mask is not None:
        raise ValueError(
            "lighthouse: attention_mask: expected None (causal self-attention without padding), got a mask of "
            f"shape {list(attention_mask.shape)}"
        )
    if dropout:
        raise ValueError(f"lighthouse: dropout: expected 0.0 (attention dropout is not supported), got {dropout}")
    options.pop("dense_layers")
    rope = None
    if options.pop("rope") == "pooled":
        cos, sin, cache = call
        rope = (cos, sin)
        if cache is not None:
            _cache_rotated_keys(module, query, key, value, cos, sin, cache, kwargs)
    out = lighthouse_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=scaling, rope=rope, **options
    )
    return out, None


def _cache_rotated_keys(module, query, key, value, cos, sin, cache, kwargs):
    """Stores in cache what the module would have stored: the keys rotated by the model's own function."""
    rotate = getattr(module, _HOOKS_ATTRIBUTE)[0]
    _, rotated_key = rotate(query, key, cos, sin)
    cache.update(rotated_key, value, module.layer_idx, kwargs=kwargs)


def _take_rotation(module, args, kwargs):
    """Forward pre-hook of prepare_model: on a call that will run Lighthouse with rope "pooled", keeps the real
    (cos, sin) and key cache on the module and gives the call identity tables and no cache."""
    setattr(module, _CALL_ATTRIBUTE, None)
    options = lighthouse_options(getattr(module, "config", None))
    if options["rope"] != "pooled" or _layer_mode(module, options) != "lighthouse":
        return None
    cache_argument = next((name for name in _CACHE_ARGUMENTS if kwargs.get(name) is not None), None)
    cache = kwargs[cache_argument] if cache_argument else None
    if cache is not None and cache.get_seq_length(module.layer_idx) > 0:
        return None  # a decoding step: transformers' own path, on the rotated keys its cache holds
    embeddings = kwargs.get("position_embeddings")
    if embeddings is None:
        raise ValueError(
            "lighthouse: position_embeddings: expected the (cos, sin) tables passed to the attention module by "
            "keyword (config.lighthouse['rope'] = 'pooled'), got none"
        )
    cos, sin = embeddings
    setattr(module, _CALL_ATTRIBUTE, (cos, sin, cache))
    kwargs = {**kwargs, "position_embeddings": (torch.ones_like(cos), torch.zeros_like(sin))}
    if cache_argument:
        kwargs[cache_argument] = None
    return args, kwargs


def _forget_rotation(module, args, output):
    setattr(module, _CALL_ATTRIBUTE, None)


def prepare_model(model):
    """Installs the hooks that give Lighthouse layers un-rotated q and k (config.lighthouse rope "pooled", see
    the module docstring) on every Hugging Face attention module of model; a second call changes nothing.
    Returns model. The model's modeling module must define apply_rotary_pos_emb(q, k, cos, sin) (Llama and
    the models built like it) with transformers' rotate-half pairs."""
    layers = [m for m in model.modules() if _is_hf_attention(m)]
    if not layers:
        raise ValueError("lighthouse: model: expected Hugging Face attention layers, got none")
    for layer in layers:
        if hasattr(layer, _HOOKS_ATTRIBUTE):
            continue
        rotate = getattr(sys.modules[type(layer).__module__], "apply_rotary_pos_emb", None)
        if rotate is None:
            raise ValueError(
                f"lighthouse: model: expected attention modules whose modeling module defines apply_rotary_pos_emb, "
                f"got {type(layer).__name__} from {type(layer).__module__}"
            )
        hooks = (
            layer.register_forward_pre_hook(_take_rotation, with_kwargs=True),
            layer.register_forward_hook(_forget_rotation, always_call=True),
        )
        setattr(layer, _HOOKS_ATTRIBUTE, (rotate, *hooks))
        setattr(layer, _CALL_ATTRIBUTE, None)
    return model


def register_hf(name=NAME):
    """Registers the Lighthouse attention function (and transformers' SDPA mask builder, which yields no mask
    for unpadded causal batches) under `name`, so models load with attn_implementation=name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, hf_attention)
    AttentionMaskInterface.register(name, sdpa_mask)
