"""lighthouse_attention: the whole layer, pool_score -> select -> gather -> dense causal SDPA -> scatter.

pool_score runs fused (pool_score_pooled): its pass over q, k, v also pools the coarsest level, which gather
then copies instead of re-reading the whole sequence.

Every Python-level decision depends only on shapes and arguments, so the function traces under
torch.compile(fullgraph=True) without graph breaks.
"""

import torch
import torch.nn.functional as F

from . import _geometry, ops
from .ops import SELECTIONS
from .rope import apply_rope

SCORERS = ("norm", "dilated")
FALLBACKS = ("dense", "error")


def _check_inputs(q, k, v):
    for name, t, layout in (
        ("q", q, "[batch, seq_len, heads, head_dim]"),
        ("k", k, "[batch, seq_len, kv_heads, head_dim]"),
        ("v", v, "[batch, seq_len, kv_heads, head_dim]"),
    ):
        if t.dim() != 4:
            raise ValueError(f"lighthouse: {name}: expected 4 dimensions {layout}, got {t.dim()} dimensions {list(t.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"lighthouse: v.shape: expected the shape of k {list(k.shape)}, got {list(v.shape)}")
    for dim, what in ((0, "batch"), (1, "seq_len"), (3, "head_dim")):
        if k.shape[dim] != q.shape[dim]:
            raise ValueError(
                f"lighthouse: k.shape[{dim}]: expected {what} of q = {q.shape[dim]}, got {k.shape[dim]} "
                f"(shape {list(k.shape)})"
            )
    if k.shape[2] == 0 or q.shape[2] % k.shape[2]:
        raise ValueError(
            f"lighthouse: q.shape[2] % k.shape[2]: expected 0: heads ({q.shape[2]}) a multiple of kv_heads "
            f"({k.shape[2]}), got {q.shape[2] % k.shape[2] if k.shape[2] else 'kv_heads = 0'}"
        )


def check_options(*, levels, pooling, topk, tile_budget, scorer, dilation, fallback, selection="paper"):
    """Raises ValueError for an invalid layer configuration (independent of the sequence length)."""
    _geometry.validate_config(levels, pooling, topk, tile_budget)
    if selection not in SELECTIONS:
        raise ValueError(f"lighthouse: selection: expected one of {SELECTIONS}, got {selection!r}")
    if scorer not in SCORERS:
        raise ValueError(f"lighthouse: scorer: expected one of {SCORERS}, got {scorer!r}")
    if scorer == "dilated" and (not isinstance(dilation, int) or dilation < 1):
        raise ValueError(f"lighthouse: dilation: expected an integer >= 1, got {dilation!r}")
    if fallback not in FALLBACKS:
        raise ValueError(f"lighthouse: fallback: expected one of {FALLBACKS}, got {fallback!r}")


def dense_causal_attention(q, k, v, *, scale=None):
    """Plain causal SDPA over the whole sequence, in the layer's [B, N, H, D] layout."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=scale,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return out.transpose(1, 2)


def dilated_base_scores(q, k, v, *, dilation, scale=None):
    """Base scores of the dilated scorer: (base_qk, base_kq), each [B, Hkv, N] float32, gradient-free.

    Positions j with the same residue t = j mod dilation form their own causal sequence; all of them run as
    one batched SDPA by folding dilation consecutive tokens into heads (the end is zero-padded to a multiple
    of dilation: padding comes last in every residue sequence, so causality keeps it from the real tokens).
    base_qk = ||SDPA(q, k, v)||, base_kq = ||SDPA(k, q, v)|| (query and key roles swapped), then per KV head
    the max over its group of query heads. With GQA the key side runs k and v repeated to the query heads.
    """
    q, k, v = q.detach(), k.detach(), v.detach()
    batch, seq_len, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    group = heads // kv_heads
    pad = (-seq_len) % dilation
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
    folded_len = (seq_len + pad) // dilation

    def fold(t):  # [B, N, h, D] -> [B, dilation * h, N / dilation, D]; token i*dilation + r -> head r*h + j
        return t.reshape(batch, folded_len, dilation * t.shape[2], head_dim).transpose(1, 2)

    def unfold_norms(o):  # [B, dilation * h, N / dilation, D] -> ||.|| as [B, h, N] float32
        norms = torch.linalg.vector_norm(o.float(), dim=-1)
        norms = norms.reshape(batch, dilation, -1, folded_len).permute(0, 2, 3, 1)
        return norms.reshape(batch, norms.shape[1], folded_len * dilation)[:, :, :seq_len]

    def per_kv_head(scores):  # [B, H, N] -> [B, Hkv, N], max over each KV head's query heads
        return scores.reshape(batch, kv_heads, group, seq_len).amax(dim=2).contiguous()

    query_side = F.scaled_dot_product_attention(
        fold(q), fold(k), fold(v), is_causal=True, scale=scale, enable_gqa=group > 1
    )
    if group > 1:
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    key_side = F.scaled_dot_product_attention(fold(k), fold(q), fold(v), is_causal=True, scale=scale)
    return per_kv_head(unfold_norms(query_side)), per_kv_head(unfold_norms(key_side))


def lighthouse_attention(
    q, k, v, *, levels=3, pooling=4, topk=2048, tile_budget=128, scorer="norm", dilation=4, scale=None,
    fallback="dense", selection="paper", rope=None, rope_interleaved=False, reduce_scores=None,
):
    """Lighthouse causal attention. q is [B, N, H, D], k and v are [B, N, Hkv, D]; returns [B, N, H, D].

    scale is the softmax scale (None: 1/sqrt(D)). When Lighthouse would not shrink the work (the kept entries
    S >= N, or N < topk * pooling^(levels-1)), fallback="dense" runs plain causal SDPA on the full sequence
    and fallback="error" raises ValueError naming seq_len.

    selection picks the selection rule: "paper" (the authors' per-tile top-k, default), "lagged" (the same
    top-k on scores lagged by one coarsest block) or "causal" (the output at position t never depends on an input
    after t, bit for bit); docs/semantics.md defines them and what they cost.

    rope: None (q and k are used as given, e.g. already rotated), or the model's rotary tables (cos, sin), each
    [N, R], [B, N, R] or [1, N, R] with R = D (a value per element) or D // 2 (a value per rotation pair: the same
    rotation, with half the table bytes for the kernels to read). q and k must then be *un-rotated*: every kept q
    and k entry is rotated at the last base position it covers (docs/semantics.md, "Rotary positions"), and the
    dense fallback and the dilated scorer rotate q and k at every position themselves, so the layer means the same
    on every path.
    rope_interleaved picks the pairs (2j, 2j+1) (torchtitan) instead of (j, j + D/2) (Hugging Face).

    reduce_scores: None, or a function (scores_qk, scores_kq) -> (scores_qk, scores_kq) applied to the pyramid
    scores ([B, Hkv, P] float32) before selection. Context parallelism (lighthouse.distributed) passes one
    that takes the max over the ranks holding the other query heads of a KV head, so each rank selects
    with the scores of the whole group.
    """
    check_options(
        levels=levels, pooling=pooling, topk=topk, tile_budget=tile_budget, scorer=scorer, dilation=dilation,
        fallback=fallback, selection=selection,
    )
    _check_inputs(q, k, v)
    seq_len = q.shape[1]
    config = {"levels": levels, "pooling": pooling, "topk": topk, "tile_budget": tile_budget}
    tables = ops.rope_tables(rope, q.shape[0], seq_len, q.shape[3])

    def rotated(x):  # x at every position, for the paths that do not run gather
        return x if rope is None else apply_rope(x, *tables, interleaved=rope_interleaved)

    if not _geometry.shrinks(seq_len, **config):
        if fallback == "dense":
            return dense_causal_attention(rotated(q), rotated(k), v, scale=scale)
        geo = _geometry.geometry(seq_len, **config)  # raises when seq_len is below the minimum
        raise ValueError(
            f"lighthouse: seq_len: expected a length for which Lighthouse keeps fewer entries than seq_len, "
            f"got {seq_len} (it would keep S = {geo.kept})"
        )
    base_qk = base_kq = None
    if scorer == "dilated":
        # The scorer's attention sees q and k as the model means them: rotated at every position.
        base_qk, base_kq = dilated_base_scores(
            rotated(q.detach()), rotated(k.detach()), v, dilation=dilation, scale=scale
        )
    scores_qk, scores_kq, *pooled = ops.pool_score_pooled(q, k, v, **config, base_qk=base_qk, base_kq=base_kq)
    if reduce_scores is not None:
        scores_qk, scores_kq = reduce_scores(scores_qk, scores_kq)
    indices, slots = ops.select(scores_qk, scores_kq, seq_len, **config, selection=selection)
    q_sel, k_sel, v_sel = ops.gather(
        q, k, v, indices, **config, pooled=pooled, rope=None if rope is None else tables,
        rope_interleaved=rope_interleaved,
    )
    o_sel = F.scaled_dot_product_attention(
        q_sel, k_sel, v_sel, is_causal=True, scale=scale, enable_gqa=q.shape[2] != k.shape[2]
    )
    return ops.scatter(o_sel, slots, seq_len, **config)
