"""The Lighthouse stages as PyTorch operators.

Each function calls torch.ops.lighthouse.<stage> (CPU and CUDA kernels in the compiled library). This module
also registers, for every operator, a fake kernel (shapes only, for torch.compile and meta tensors) and the
autograd rules: gather and scatter are differentiable (their backwards are gather_backward and
scatter_backward, and the other way round, so double backward works too); pool_score, pool_score_pooled and
select produce gradient-free outputs.

Fusion: pool_score_pooled also returns the pooled level-L q, k, v (the means of each coarsest block), made in
the same pass over the base; gather(pooled=...) copies its level-L entries from them instead of re-pooling
q, k, v (the same bits). The pooled tensors are a gradient-free cache of values computed from q, k, v:
gather's gradient reaches q, k, v through gather_backward, the exact adjoint of gather as a function of q, k,
v, so the pooled tensors themselves must not require grad.

Rotary positions: gather(rope=(cos, sin)) takes un-rotated q and k and rotates every kept q and k entry at the
last base position it covers (docs/semantics.md, "Rotary positions"); gather_backward(rope=...) rotates their
gradients back. The tables are gradient-free constants of both maps.

Layouts: q is [B, N, H, D], k and v are [B, N, Hkv, D] (H % Hkv == 0, unit-stride last dimension, any other
strides). Scores and slots are [B, Hkv, P] with P the pyramid length, indices [B, Hkv, S] with S the kept
entries. gather returns [B, H|Hkv, S, D] views of [B, S, H|Hkv, D] memory, the layout fused SDPA kernels read
without a copy; scatter accepts o_sel with any strides (unit-stride last dimension).
"""

import torch

from . import _geometry

_OPS = torch.ops.lighthouse
SELECTIONS = ("paper", "lagged", "causal")


def pool_score(q, k, *, levels, pooling, topk, tile_budget=128, base_qk=None, base_kq=None):
    """Pyramid scores per KV head: (scores_qk, scores_kq), each [B, Hkv, P] float32.

    The base score of a position is ||q|| maxed over the KV head's query heads (query side) and ||k|| (key
    side), unless base_qk / base_kq ([B, Hkv, N] float32) are given; a coarser entry scores the max of its
    block's base scores. The outputs carry no gradient.
    """
    return _OPS.pool_score(q, k, base_qk, base_kq, levels=levels, pooling=pooling, topk=topk, tile_budget=tile_budget)


def pool_score_pooled(q, k, v, *, levels, pooling, topk, tile_budget=128, base_qk=None, base_kq=None):
    """pool_score plus the pooled level-L tensors for gather:
    (scores_qk, scores_kq, pooled_q [B, n_L, H, D], pooled_k [B, n_L, Hkv, D], pooled_v [B, n_L, Hkv, D]).

    n_L = N // pooling^(levels-1), the coarsest level's entries. Pass the last three as gather's pooled=. The
    outputs carry no gradient.
    """
    return _OPS.pool_score_pooled(
        q, k, v, base_qk, base_kq, levels=levels, pooling=pooling, topk=topk, tile_budget=tile_budget
    )


def select(scores_qk, scores_kq, seq_len, *, levels, pooling, topk, tile_budget=128, selection="paper"):
    """Chunked coarse-to-fine selection: (indices [B, Hkv, S] int32 in causal order, slots [B, Hkv, P] int32).

    slots maps a pyramid entry to its position in indices, or -1 when the entry is not kept. selection is the
    rule: "paper" (per-tile top-k on each entry's own score), "lagged" (the same top-k on the score of the entry
    one coarsest block earlier) or "causal" (a streaming rule under which the output at t never depends on an
    input after t); docs/semantics.md defines them.
    """
    return _OPS.select(
        scores_qk, scores_kq, seq_len, levels=levels, pooling=pooling, topk=topk, tile_budget=tile_budget,
        selection=selection,
    )


def rope_tables(rope, batch, seq_len, head_dim):
    """The op arguments (rope_cos, rope_sin) for rope = None or a pair (cos, sin) of rotation tables.

    Each table is [seq_len, R], [batch, seq_len, R] or [1, seq_len, R] (one table for every batch row, passed on as
    2-d), with R = head_dim (a value per element, Hugging Face's tables) or R = head_dim // 2 (a value per rotation
    pair, FlashAttention's form: half the bytes for the kernels to read); cos and sin of one form. Each is converted
    to a contiguous float32 tensor, the layout the kernels read. Raises ValueError naming rope_cos / rope_sin for
    anything else.
    """
    if rope is None:
        return None, None
    if not isinstance(rope, (tuple, list)) or len(rope) != 2:
        _fail("rope", "a pair (cos, sin) of tables", type(rope).__name__)
    tables = []
    for name, table in zip(("rope_cos", "rope_sin"), rope):
        if not isinstance(table, torch.Tensor) or table.dim() not in (2, 3):
            got = f"{table.dim()} dimensions {list(table.shape)}" if isinstance(table, torch.Tensor) else table
            _fail(name, "a tensor [seq_len, R] or [batch, seq_len, R] (R = head_dim or head_dim // 2)", got)
        if table.dim() == 3 and table.shape[0] == 1 and batch != 1:
            table = table[0]
        width = table.shape[-1] if table.shape[-1] in (head_dim, head_dim // 2) else head_dim
        expected = [seq_len, width] if table.dim() == 2 else [batch, seq_len, width]
        if list(table.shape) != expected:
            _fail(f"{name}.shape", f"{expected} ([seq_len, R] or [batch, seq_len, R], R = head_dim {head_dim} or "
                  f"head_dim // 2 {head_dim // 2})", list(table.shape))
        tables.append(table.to(torch.float32).contiguous())
    if tables[0].shape != tables[1].shape:
        _fail("rope_sin.shape", f"the shape of rope_cos {list(tables[0].shape)}", list(tables[1].shape))
    return tuple(tables)


def gather(q, k, v, indices, *, levels, pooling, topk, tile_budget=128, pooled=None, rope=None,
           rope_interleaved=False):
    """Pooled q, k, v at the selected entries: (q_sel [B, H, S, D], k_sel [B, Hkv, S, D], v_sel [B, Hkv, S, D]).

    pooled: None, or (pooled_q, pooled_k, pooled_v) from pool_score_pooled on the same q, k, v and
    configuration; level-L entries are then copied from them (same result, less reading of q, k, v).
    rope: None, or (cos, sin) rotation tables ([N, D], [B, N, D] or [1, N, D]; converted to contiguous
    float32, see rope_tables). q and k are then un-rotated inputs: every kept q and k entry is rotated at the
    last base position it covers, (i + 1) * pooling^(l-1) - 1 for entry i of level l; v is not rotated.
    rope_interleaved picks the pairs (2j, 2j+1) (torchtitan) instead of (j, j + D/2) (Hugging Face).
    """
    pooled_q, pooled_k, pooled_v = (None, None, None) if pooled is None else pooled
    rope_cos, rope_sin = rope_tables(rope, q.shape[0], q.shape[1], q.shape[-1])
    return _OPS.gather(
        q, k, v, indices, pooled_q, pooled_k, pooled_v, rope_cos, rope_sin, levels=levels, pooling=pooling,
        topk=topk, tile_budget=tile_budget, rope_interleaved=rope_interleaved,
    )


def scatter(o_sel, slots, seq_len, *, levels, pooling, topk, tile_budget=128):
    """Expands the attention output of the kept entries back to [B, N, H, D] (sum over levels, zero elsewhere)."""
    return _OPS.scatter(o_sel, slots, seq_len, levels=levels, pooling=pooling, topk=topk, tile_budget=tile_budget)


def scatter_backward(grad_out, indices, *, levels, pooling, topk, tile_budget=128):
    """Gradient of scatter: grad_o_sel [B, H, S, D], each entry summing grad_out over its scatter window."""
    return _OPS.scatter_backward(grad_out, indices, levels=levels, pooling=pooling, topk=topk, tile_budget=tile_budget)


def gather_backward(grad_q_sel, grad_k_sel, grad_v_sel, slots, seq_len, *, levels, pooling, topk, tile_budget=128,
                    rope=None, rope_interleaved=False):
    """Gradient of gather: (grad_q [B, N, H, D], grad_k [B, N, Hkv, D], grad_v [B, N, Hkv, D]).

    rope / rope_interleaved: the tables and convention gather rotated with (as in gather); the q and k
    gradients are then rotated back before they are spread over the base positions.
    """
    rope_cos, rope_sin = rope_tables(rope, grad_q_sel.shape[0], seq_len, grad_q_sel.shape[-1])
    return _OPS.gather_backward(
        grad_q_sel, grad_k_sel, grad_v_sel, slots, seq_len, rope_cos, rope_sin, levels=levels, pooling=pooling,
        topk=topk, tile_budget=tile_budget, rope_interleaved=rope_interleaved,
    )


# Fake kernels: output shapes and strides equal to the real kernels', plus the checks those shapes rely on.


def _fail(argument, expected, actual):
    raise ValueError(f"lighthouse: {argument}: expected {expected}, got {actual}")


def _check_devices(tensors):
    (ref_name, ref), *rest = tensors
    for name, t in rest:
        if t is not None and t.device != ref.device:
            _fail(f"{name}.device", f"the device of {ref_name} ({ref.device})", t.device)


def _check_rank(t, rank, name, layout):
    if t.dim() != rank:
        _fail(name, f"{rank} dimensions {layout}", f"{t.dim()} dimensions {list(t.shape)}")


def _empty_bhsd(like, batch, heads, kept, head_dim):
    return like.new_empty((batch, kept, heads, head_dim)).transpose(1, 2)


@torch.library.register_fake("lighthouse::pool_score")
def _pool_score_fake(q, k, base_qk=None, base_kq=None, *, levels, pooling, topk, tile_budget=128):
    _check_devices([("q", q), ("k", k), ("base_qk", base_qk), ("base_kq", base_kq)])
    _check_rank(q, 4, "q", "[batch, seq_len, heads, head_dim]")
    _check_rank(k, 4, "k", "[batch, seq_len, kv_heads, head_dim]")
    batch, seq_len, _, _ = q.shape
    geo = _geometry.geometry(seq_len, levels, pooling, topk, tile_budget)
    shape = (batch, k.shape[2], geo.pyramid_len)
    return q.new_empty(shape, dtype=torch.float32), q.new_empty(shape, dtype=torch.float32)


@torch.library.register_fake("lighthouse::pool_score_pooled")
def _pool_score_pooled_fake(q, k, v, base_qk=None, base_kq=None, *, levels, pooling, topk, tile_budget=128):
    _check_devices([("q", q), ("k", k), ("v", v), ("base_qk", base_qk), ("base_kq", base_kq)])
    _check_rank(v, 4, "v", "[batch, seq_len, kv_heads, head_dim]")
    scores_qk, scores_kq = _pool_score_fake(
        q, k, base_qk, base_kq, levels=levels, pooling=pooling, topk=topk, tile_budget=tile_budget
    )
    batch, seq_len, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    coarsest = _geometry.geometry(seq_len, levels, pooling, topk, tile_budget).coarsest
    return (
        scores_qk,
        scores_kq,
        q.new_empty((batch, coarsest, heads, head_dim)),
        q.new_empty((batch, coarsest, kv_heads, head_dim)),
        q.new_empty((batch, coarsest, kv_heads, head_dim)),
    )


@torch.library.register_fake("lighthouse::select")
def _select_fake(scores_qk, scores_kq, seq_len, *, levels, pooling, topk, tile_budget=128, selection="paper"):
    _check_devices([("scores_qk", scores_qk), ("scores_kq", scores_kq)])
    _check_rank(scores_qk, 3, "scores_qk", "[batch, kv_heads, pyramid_len]")
    if selection not in SELECTIONS:
        _fail("selection", f"one of {SELECTIONS}", repr(selection))
    geo = _geometry.geometry(seq_len, levels, pooling, topk, tile_budget)
    batch, kv_heads, _ = scores_qk.shape
    indices = scores_qk.new_empty((batch, kv_heads, geo.kept), dtype=torch.int32)
    slots = scores_qk.new_empty((batch, kv_heads, geo.pyramid_len), dtype=torch.int32)
    return indices, slots


def _check_rope_given(rope_cos, rope_sin):
    if (rope_cos is None) != (rope_sin is None):
        _fail("rope_cos, rope_sin", "both given or neither", "only rope_cos" if rope_sin is None else "only rope_sin")


@torch.library.register_fake("lighthouse::gather")
def _gather_fake(q, k, v, indices, pooled_q=None, pooled_k=None, pooled_v=None, rope_cos=None, rope_sin=None, *,
                 levels, pooling, topk, tile_budget=128, rope_interleaved=False):
    _check_devices([
        ("q", q), ("k", k), ("v", v), ("indices", indices), ("pooled_q", pooled_q), ("pooled_k", pooled_k),
        ("pooled_v", pooled_v), ("rope_cos", rope_cos), ("rope_sin", rope_sin),
    ])
    given = sum(t is not None for t in (pooled_q, pooled_k, pooled_v))
    if given not in (0, 3):
        _fail("pooled_q, pooled_k, pooled_v", "all three or none", f"{given} given")
    _check_rope_given(rope_cos, rope_sin)
    _check_rank(q, 4, "q", "[batch, seq_len, heads, head_dim]")
    _check_rank(k, 4, "k", "[batch, seq_len, kv_heads, head_dim]")
    batch, seq_len, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    kept = _geometry.geometry(seq_len, levels, pooling, topk, tile_budget).kept
    return (
        _empty_bhsd(q, batch, heads, kept, head_dim),
        _empty_bhsd(q, batch, kv_heads, kept, head_dim),
        _empty_bhsd(q, batch, kv_heads, kept, head_dim),
    )


@torch.library.register_fake("lighthouse::scatter")
def _scatter_fake(o_sel, slots, seq_len, *, levels, pooling, topk, tile_budget=128):
    _check_devices([("o_sel", o_sel), ("slots", slots)])
    _check_rank(o_sel, 4, "o_sel", "[batch, heads, kept, head_dim]")
    _geometry.geometry(seq_len, levels, pooling, topk, tile_budget)
    batch, heads, _, head_dim = o_sel.shape
    return o_sel.new_empty((batch, seq_len, heads, head_dim))


@torch.library.register_fake("lighthouse::scatter_backward")
def _scatter_backward_fake(grad_out, indices, *, levels, pooling, topk, tile_budget=128):
    _check_devices([("grad_out", grad_out), ("indices", indices)])
    _check_rank(grad_out, 4, "grad_out", "[batch, seq_len, heads, head_dim]")
    batch, seq_len, heads, head_dim = grad_out.shape
    kept = _geometry.geometry(seq_len, levels, pooling, topk, tile_budget).kept
    return _empty_bhsd(grad_out, batch, heads, kept, head_dim)


@torch.library.register_fake("lighthouse::gather_backward")
def _gather_backward_fake(grad_q_sel, grad_k_sel, grad_v_sel, slots, seq_len, rope_cos=None, rope_sin=None, *, levels,
                          pooling, topk, tile_budget=128, rope_interleaved=False):
    _check_devices([
        ("grad_q_sel", grad_q_sel), ("grad_k_sel", grad_k_sel), ("grad_v_sel", grad_v_sel), ("slots", slots),
        ("rope_cos", rope_cos), ("rope_sin", rope_sin),
    ])
    _check_rope_given(rope_cos, rope_sin)
    _check_rank(grad_q_sel, 4, "grad_q_sel", "[batch, heads, kept, head_dim]")
    _check_rank(grad_k_sel, 4, "grad_k_sel", "[batch, kv_heads, kept, head_dim]")
    _geometry.geometry(seq_len, levels, pooling, topk, tile_budget)
    batch, heads, _, head_dim = grad_q_sel.shape
    kv_heads = grad_k_sel.shape[1]
    return (
        grad_q_sel.new_empty((batch, seq_len, heads, head_dim)),
        grad_q_sel.new_empty((batch, seq_len, kv_heads, head_dim)),
        grad_q_sel.new_empty((batch, seq_len, kv_heads, head_dim)),
    )


# Autograd. The backward ops need the inverse map of the one their forward received (gather gets indices,
# gather_backward needs slots; scatter gets slots, scatter_backward needs indices); both are rebuilt with one
# scatter_ of S entries, negligible next to the stages.


def _slots_from_indices(indices, pyramid_len):
    """slots[b, h, indices[b, h, s]] = s; -1 for entries that are not kept."""
    slots = torch.full((*indices.shape[:2], pyramid_len), -1, dtype=torch.int32, device=indices.device)
    positions = torch.arange(indices.shape[2], dtype=torch.int32, device=indices.device).expand(indices.shape)
    return slots.scatter_(2, indices.long(), positions)


def _indices_from_slots(slots, kept):
    """indices[b, h, slots[b, h, p]] = p for kept entries. Entries with slot -1 land in a dropped extra column."""
    target = torch.where(slots >= 0, slots, kept).long()
    entries = torch.arange(slots.shape[2], dtype=torch.int32, device=slots.device).expand(slots.shape)
    indices = torch.empty((*slots.shape[:2], kept + 1), dtype=torch.int32, device=slots.device)
    return indices.scatter_(2, target, entries)[:, :, :kept].contiguous()


def _unit_last_stride(t):
    """A gradient the kernels can read: copied when its last dimension is strided (e.g. an expanded scalar)."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _config(keyword_only_inputs):
    return {name: keyword_only_inputs[name] for name in ("levels", "pooling", "topk", "tile_budget")}


def _gradient_free_setup(ctx, inputs, keyword_only_inputs, output):
    ctx.mark_non_differentiable(*output)


def _no_gradient(ctx, *grads):
    return (None,) * len(ctx.needs_input_grad)


def _pyramid_len(seq_len, config):
    return _geometry.geometry(seq_len, **config).pyramid_len


# gather <-> gather_backward and scatter <-> scatter_backward are adjoint linear maps, so each one's
# backward is the other (which also makes double backward work).


# The rope tables are constants of both maps (no gradient); each op hands them, with the convention, to its
# adjoint, which rotates back exactly what it rotated.


def _check_gradient_free(names, tensors, why):
    for name, t in zip(names, tensors):
        if t is not None and t.requires_grad:
            _fail(name, f"a gradient-free tensor ({why})", "one that requires grad")


def _gather_setup(ctx, inputs, keyword_only_inputs, output):
    q, _, _, indices, *pooled, rope_cos, rope_sin = inputs
    _check_gradient_free(("pooled_q", "pooled_k", "pooled_v"), pooled, "gather's gradient reaches q, k, v directly")
    _check_gradient_free(("rope_cos", "rope_sin"), (rope_cos, rope_sin), "the rotation tables get no gradient")
    ctx.config = _config(keyword_only_inputs)
    ctx.rope_interleaved = keyword_only_inputs["rope_interleaved"]
    ctx.seq_len = q.shape[1]
    ctx.save_for_backward(indices, rope_cos, rope_sin)


def _gather_grad(ctx, grad_q_sel, grad_k_sel, grad_v_sel):
    indices, rope_cos, rope_sin = ctx.saved_tensors
    slots = _slots_from_indices(indices, _pyramid_len(ctx.seq_len, ctx.config))
    grads = (_unit_last_stride(g) for g in (grad_q_sel, grad_k_sel, grad_v_sel))
    grad_q, grad_k, grad_v = _OPS.gather_backward(
        *grads, slots, ctx.seq_len, rope_cos, rope_sin, **ctx.config, rope_interleaved=ctx.rope_interleaved
    )
    return grad_q, grad_k, grad_v, None, None, None, None, None, None


def _gather_backward_setup(ctx, inputs, keyword_only_inputs, output):
    grad_q_sel, _, _, slots, _, rope_cos, rope_sin = inputs
    _check_gradient_free(("rope_cos", "rope_sin"), (rope_cos, rope_sin), "the rotation tables get no gradient")
    ctx.config = _config(keyword_only_inputs)
    ctx.rope_interleaved = keyword_only_inputs["rope_interleaved"]
    ctx.kept = grad_q_sel.shape[2]
    ctx.save_for_backward(slots, rope_cos, rope_sin)


def _gather_backward_grad(ctx, grad_grad_q, grad_grad_k, grad_grad_v):
    slots, rope_cos, rope_sin = ctx.saved_tensors
    indices = _indices_from_slots(slots, ctx.kept)
    grads = (_unit_last_stride(g) for g in (grad_grad_q, grad_grad_k, grad_grad_v))
    grad_q_sel, grad_k_sel, grad_v_sel = _OPS.gather(
        *grads, indices, None, None, None, rope_cos, rope_sin, **ctx.config, rope_interleaved=ctx.rope_interleaved
    )
    return grad_q_sel, grad_k_sel, grad_v_sel, None, None, None, None


def _scatter_setup(ctx, inputs, keyword_only_inputs, output):
    o_sel, slots, _ = inputs
    ctx.config = _config(keyword_only_inputs)
    ctx.kept = o_sel.shape[2]
    ctx.save_for_backward(slots)


def _scatter_grad(ctx, grad_out):
    (slots,) = ctx.saved_tensors
    indices = _indices_from_slots(slots, ctx.kept)
    return _OPS.scatter_backward(_unit_last_stride(grad_out), indices, **ctx.config), None, None


def _scatter_backward_setup(ctx, inputs, keyword_only_inputs, output):
    grad_out, indices = inputs
    ctx.config = _config(keyword_only_inputs)
    ctx.seq_len = grad_out.shape[1]
    ctx.save_for_backward(indices)


def _scatter_backward_grad(ctx, grad_grad_o_sel):
    (indices,) = ctx.saved_tensors
    slots = _slots_from_indices(indices, _pyramid_len(ctx.seq_len, ctx.config))
    return _OPS.scatter(_unit_last_stride(grad_grad_o_sel), slots, ctx.seq_len, **ctx.config), None


torch.library.register_autograd("lighthouse::pool_score", _no_gradient, setup_context=_gradient_free_setup)
torch.library.register_autograd(
    "lighthouse::pool_score_pooled", _no_gradient, setup_context=_gradient_free_setup
)
torch.library.register_autograd("lighthouse::select", _no_gradient, setup_context=_gradient_free_setup)
torch.library.register_autograd("lighthouse::gather", _gather_grad, setup_context=_gather_setup)
torch.library.register_autograd("lighthouse::gather_backward", _gather_backward_grad, setup_context=_gather_backward_setup)
torch.library.register_autograd("lighthouse::scatter", _scatter_grad, setup_context=_scatter_setup)
torch.library.register_autograd(
    "lighthouse::scatter_backward", _scatter_backward_grad, setup_context=_scatter_backward_setup
)
