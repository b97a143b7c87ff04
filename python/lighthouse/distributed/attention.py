"""context_parallel_attention and context_parallel_dense_attention: the layer on a sequence split over ranks.

Shapes (per rank of a group of W ranks): q [B, N/W, H, D], k and v [B, N/W, Hkv, D], rank r holding positions
[r * N/W, (r + 1) * N/W) of the full sequence of N tokens; the output is [B, N/W, H, D], the same positions.
What must divide what:
* N by W: every rank holds the same number N/W of positions (checked across ranks);
* H by W: rank r runs query heads [r * H/W, (r + 1) * H/W) over all N positions;
* Hkv by W (each rank gets Hkv/W KV heads, whole query groups), or W by Hkv (each KV head is copied to the
  W/Hkv ranks that run its query heads; their selection scores are combined with a max all-reduce, so every
  copy selects exactly as the whole group does); plus H by Hkv, as for the layer itself.

Results: the output and the q gradient equal the single-process layer's bit for bit (the exchanges only move
data, and a head's results do not depend on the other heads). So do the k and v gradients when Hkv % W == 0.
When Hkv < W a KV head's gradient is the sum over its W/Hkv copies of what each copy's query heads give,
added in rank order after the layer's own per-copy backward: deterministic, but rounded differently from
the single-process layer, which sums the whole group inside one attention backward (typically 1e-7 to
3e-7 relative in float32, up to ~1e-6 where the copies' partial gradients cancel). docs/context-parallel.md gives the costs.
"""

import functools

import torch

from ..attention import _check_inputs, dense_causal_attention, lighthouse_attention
from ..rope import apply_rope
from . import _agreement, _group, _layout, _rope
from ._exchange import copy_heads, heads_to_sequence, sequence_to_heads
from ._scores import max_over_copies


def _prepare(q, k, v, group, rope, options, check):
    """Group, agreement across ranks and local checks; returns (group, layout). Raises on every rank alike."""
    group, rank, world = _group.resolve(group)
    tables = rope if isinstance(rope, (tuple, list)) and len(rope) == 2 else (None, None)
    if check and not torch.compiler.is_compiling():
        tensors = {"q": q, "k": k, "v": v, "rope_cos": tables[0], "rope_sin": tables[1]}
        if rope is not None and tables[0] is None:
            options = {**options, "rope": type(rope).__name__}  # not a pair: rejected by _rope.check
        _agreement.agree(group, world, tensors, options, q.device if isinstance(q, torch.Tensor) else "cpu")
    _check_inputs(q, k, v)
    _rope.check(rope, q.shape[1], world)
    return group, _layout.head_layout(q.shape[2], k.shape[2], world, rank)


def _exchange_inputs(q, k, v, layout, group):
    """Sequence shards -> this rank's heads over all N positions: q [B, N, H/W, D], k and v [B, N, Hkv', D]."""
    return sequence_to_heads(
        [q, copy_heads(k, layout.kv_copies), copy_heads(v, layout.kv_copies)], group, layout.world
    )


def context_parallel_attention(q, k, v, *, group=None, check=True, **layer_options):
    """Lighthouse attention of a sequence split over the ranks of group (None: the default group).

    q [B, N/W, H, D], k and v [B, N/W, Hkv, D] are this rank's shards (module docstring: shapes and what must
    divide what); returns this rank's [B, N/W, H, D] output. Differentiable (the backward runs the reverse
    exchanges) and traceable by torch.compile. Every rank must call it with the same shapes and options.

    layer_options are lighthouse_attention's (levels, pooling, topk, tile_budget, scorer, dilation, scale,
    fallback, selection, rope, rope_interleaved, ...), passed on to the layer each rank runs on its heads.
    rope = (cos, sin): the full tables (all N positions, the same on every rank) or this rank's shard of them
    (its N/W positions); shards are all-gathered, since the layer on a rank sees all N positions.

    check=True first all-gathers each rank's shapes, dtypes and options (a few dozen integers, one host
    synchronisation) so that a bad setup raises the same ValueError on every rank instead of hanging in the
    exchange; check=False skips that. Under torch.compile it is skipped too (the shapes are fixed per graph).
    """
    rope = layer_options.get("rope")
    options = {name: value for name, value in layer_options.items() if name != "rope"}
    group, layout = _prepare(q, k, v, group, rope, options, check)
    if "reduce_scores" in layer_options:  # after _prepare, so that every rank raises it
        raise ValueError("lighthouse: reduce_scores: expected it unset (context parallelism sets it), got a value")
    if rope is not None:
        layer_options["rope"] = _rope.full_tables(rope, q.shape[1], layout.world, group)
    if layout.kv_copies > 1:
        layer_options["reduce_scores"] = functools.partial(
            max_over_copies, kv_head=layout.kv_head, kv_heads=layout.kv_heads, group=group
        )
    q_heads, k_heads, v_heads = _exchange_inputs(q, k, v, layout, group)
    out = lighthouse_attention(q_heads, k_heads, v_heads, **layer_options)
    return heads_to_sequence(out, group, layout.world)


def context_parallel_dense_attention(q, k, v, *, group=None, scale=None, rope=None, rope_interleaved=False, check=True):
    """Plain causal SDPA of a sequence split over the ranks of group: the dense layers and the dense-resumption
    stage under the same sharding as context_parallel_attention (same shapes, rules and check).

    scale: the softmax scale (None: 1/sqrt(D)). rope = (cos, sin): q and k are un-rotated and are rotated here
    with lighthouse.rope.apply_rope (rope_interleaved picks the pairing), before the exchange, each rank with
    its own positions' rows: the full tables (all N positions) or this rank's shard of them.
    """
    options = {"scale": scale, "rope_interleaved": rope_interleaved}
    group, layout = _prepare(q, k, v, group, rope, options, check)
    if rope is not None:
        cos, sin = _rope.local_tables(rope, q.shape[1], layout.world, layout.rank)
        q, k = (apply_rope(t, cos, sin, interleaved=rope_interleaved) for t in (q, k))
    q_heads, k_heads, v_heads = _exchange_inputs(q, k, v, layout, group)
    out = dense_causal_attention(q_heads, k_heads, v_heads, scale=scale)
    return heads_to_sequence(out, group, layout.world)
