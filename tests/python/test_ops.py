"""The operators on the CPU: opcheck, independent references, dtypes, strides, gradients, bad input."""

import re

import pytest
import torch

import _reference as ref
from lighthouse import _geometry, ops

# Small problem: N = 96 is ragged (not a multiple of pooling^(levels-1) * tiles), GQA with 2 query heads
# per KV head.
CONFIG = {"levels": 3, "pooling": 2, "topk": 8, "tile_budget": 4}
B, N, H, HKV, D = 2, 99, 4, 2, 8
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def make_qkv(dtype=torch.float32, seed=0, seq_len=N, heads=H, kv_heads=HKV):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, seq_len, heads, D, generator=g).to(dtype)
    k = torch.randn(B, seq_len, kv_heads, D, generator=g).to(dtype)
    v = torch.randn(B, seq_len, kv_heads, D, generator=g).to(dtype)
    return q, k, v


def select_for(q, k, config=CONFIG):
    scores_qk, scores_kq = ops.pool_score(q, k, **config)
    return ops.select(scores_qk, scores_kq, q.shape[1], **config)


def test_shapes_follow_the_geometry():
    q, k, v = make_qkv()
    geo = _geometry.geometry(N, **CONFIG)
    scores_qk, scores_kq = ops.pool_score(q, k, **CONFIG)
    assert scores_qk.shape == scores_kq.shape == (B, HKV, geo.pyramid_len)
    indices, slots = ops.select(scores_qk, scores_kq, N, **CONFIG)
    assert indices.shape == (B, HKV, geo.kept) and indices.dtype == torch.int32
    assert slots.shape == (B, HKV, geo.pyramid_len) and slots.dtype == torch.int32
    q_sel, k_sel, v_sel = ops.gather(q, k, v, indices, **CONFIG)
    assert q_sel.shape == (B, H, geo.kept, D) and k_sel.shape == v_sel.shape == (B, HKV, geo.kept, D)
    assert q_sel.transpose(1, 2).is_contiguous(), "gather returns [B, H, S, D] views of [B, S, H, D] memory"


def test_norm_scores_match_their_definition():
    q, k, _ = make_qkv()
    scores_qk, scores_kq = ops.pool_score(q, k, **CONFIG)
    base_qk = q.norm(dim=-1).reshape(B, N, HKV, H // HKV).amax(-1).transpose(1, 2)
    base_kq = k.norm(dim=-1).transpose(1, 2)
    for scores, base in ((scores_qk, base_qk), (scores_kq, base_kq)):
        expected = torch.cat(
            [base[..., : N // c * c].reshape(B, HKV, N // c, c).amax(-1) for c in (1, 2, 4)], dim=-1
        )
        torch.testing.assert_close(scores, expected, rtol=1e-6, atol=0)


def test_given_base_scores_are_max_pooled():
    q, k, _ = make_qkv()
    g = torch.Generator().manual_seed(3)
    base_qk, base_kq = torch.rand(2, B, HKV, N, generator=g)
    scores_qk, scores_kq = ops.pool_score(q, k, base_qk=base_qk, base_kq=base_kq, **CONFIG)
    for scores, base in ((scores_qk, base_qk), (scores_kq, base_kq)):
        expected = torch.cat([base[..., : N // c * c].reshape(B, HKV, N // c, c).amax(-1) for c in (1, 2, 4)], -1)
        assert torch.equal(scores, expected)


def causal_keys(indices, slots, seq_len, levels, pooling):
    """The sort key of every kept entry (docs/semantics.md, "Causal order"), times 2^L to make it an integer: an
    unselected entry of level l sorts at its first position c_l*i, a selected one (its children kept) just after
    its last, at c_l*(i+1) - 2^(1-l)."""
    level, local = ref.level_and_local(indices, seq_len, levels, pooling)  # level is 0-based: l - 1
    block = pooling**level
    offsets = torch.tensor([sum(seq_len // pooling**j for j in range(i)) for i in range(levels)])
    first_child = torch.where(level > 0, offsets[(level - 1).clamp(min=0)] + local * pooling, 0)
    selected = (level > 0) & (slots.long().gather(2, first_child) >= 0)
    unit = 2**levels
    return torch.where(selected, (local + 1) * block * unit - 2 ** (levels - level), local * block * unit)


def test_selection_is_a_causally_ordered_set_of_the_right_size():
    q, k, _ = make_qkv()
    indices, slots = select_for(q, k)
    geo = _geometry.geometry(N, **CONFIG)
    for row in indices.reshape(-1, geo.kept):
        assert len(set(row.tolist())) == geo.kept
    keys = causal_keys(indices, slots, N, CONFIG["levels"], CONFIG["pooling"])
    assert bool((keys[..., 1:] > keys[..., :-1]).all()), "kept entries must be in strictly increasing key order"
    assert torch.equal(slots.gather(2, indices.long()), torch.arange(geo.kept, dtype=torch.int32).expand_as(indices))
    assert int((slots >= 0).sum()) == indices.numel(), "slots marks exactly the kept entries"
    tail = N - N // 4 * 4
    assert torch.equal(indices[..., -tail:], torch.arange(N - tail, N, dtype=torch.int32).expand(B, HKV, tail))


def test_causal_keys_follow_the_definition():
    """The key of the check above on a hand-made 2-level pyramid (N = 8, p = 2): base tokens 0..7, level-2
    entries 8..11 covering pairs; entry 9 (tokens 2-3) selected, so tokens 2 and 3 are kept."""
    indices = torch.tensor([[[8, 2, 3, 9, 10, 11]]], dtype=torch.int32)
    slots = torch.full((1, 1, 12), -1, dtype=torch.int32)
    slots[0, 0, indices[0, 0].long()] = torch.arange(6, dtype=torch.int32)
    keys = causal_keys(indices, slots, 8, 2, 2)
    # Unselected pairs 8, 10, 11 at 4 * their first position (0, 4, 6), tokens t at 4t, the selected pair 9 at
    # 4 * (2 * 2) - 2^(2-1) = 14, after its tokens 2 and 3.
    assert keys.tolist() == [[[0, 8, 12, 14, 16, 24]]]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gather_and_scatter_match_the_dense_references(dtype):
    q, k, v = make_qkv(dtype)
    indices, slots = select_for(q, k)
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    selected = ops.gather(q, k, v, indices, **CONFIG)
    for actual, expected in zip(selected, ref.gather(q, k, v, indices, CONFIG["levels"], CONFIG["pooling"])):
        assert actual.dtype == dtype
        assert ref.max_relative_error(actual, expected) < tolerance
    out = ops.scatter(selected[0], slots, N, **CONFIG)
    expected = ref.scatter(selected[0], indices, N, CONFIG["levels"], CONFIG["pooling"])
    assert out.dtype == dtype and out.shape == (B, N, H, D)
    assert ref.max_relative_error(out, expected) < tolerance


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_backward_ops_are_the_adjoints(dtype):
    q, k, v = make_qkv(dtype)
    indices, slots = select_for(q, k)
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    g = torch.Generator().manual_seed(5)
    grad_out = torch.randn(B, N, H, D, generator=g).to(dtype)
    grad_o_sel = ops.scatter_backward(grad_out, indices, **CONFIG)
    w = ref.per_query_head(ref.scatter_matrix(indices, N, CONFIG["levels"], CONFIG["pooling"]), H)
    assert ref.max_relative_error(grad_o_sel, w.transpose(-1, -2) @ grad_out.double().transpose(1, 2)) < tolerance
    q_sel, k_sel, v_sel = (torch.randn(t.shape, generator=g).to(dtype) for t in ops.gather(q, k, v, indices, **CONFIG))
    grads = ops.gather_backward(q_sel, k_sel, v_sel, slots, N, **CONFIG)
    a = ref.gather_matrix(indices, N, CONFIG["levels"], CONFIG["pooling"])
    for grad, sel, matrix in zip(grads, (q_sel, k_sel, v_sel), (ref.per_query_head(a, H), a, a)):
        expected = (matrix.transpose(-1, -2) @ sel.double()).transpose(1, 2)
        assert grad.dtype == dtype and ref.max_relative_error(grad, expected) < tolerance


def test_strided_inputs_give_the_same_bits():
    q, k, v = make_qkv()
    indices, slots = select_for(q, k)
    q_bhnd = q.transpose(1, 2).contiguous().transpose(1, 2)  # [B, N, H, D] view of [B, H, N, D] memory
    k_wide = torch.cat([k, k], dim=-1)[..., :D]  # padded rows: seq and head strides of 2 * D
    for actual, expected in zip(ops.gather(q_bhnd, k_wide, v, indices, **CONFIG), ops.gather(q, k, v, indices, **CONFIG)):
        assert torch.equal(actual, expected)
    o_sel = ops.gather(q, k, v, indices, **CONFIG)[0]
    assert torch.equal(ops.scatter(o_sel.contiguous(), slots, N, **CONFIG), ops.scatter(o_sel, slots, N, **CONFIG))


def test_pool_score_and_select_outputs_carry_no_gradient():
    """pool_score's scores stay out of the graph of q and k; select takes scores that require grad and returns
    integer tensors outside any graph, selecting what it selects from the same scores without grad."""
    q, k, _ = make_qkv()
    q.requires_grad_()
    k.requires_grad_()
    scores_qk, scores_kq = ops.pool_score(q, k, **CONFIG)
    for scores in (scores_qk, scores_kq):
        assert not scores.requires_grad and scores.grad_fn is None
    tracked = [scores.detach().requires_grad_() for scores in (scores_qk, scores_kq)]
    selected = ops.select(*tracked, N, **CONFIG)
    for out, plain in zip(selected, ops.select(scores_qk, scores_kq, N, **CONFIG)):
        assert out.dtype == torch.int32 and not out.requires_grad and out.grad_fn is None
        assert torch.equal(out, plain)


def _opcheck_cases(device):
    q, k, v = (t.to(device) for t in make_qkv())
    indices, slots = (t.to(device) for t in select_for(*make_qkv()[:2]))
    scores_qk, scores_kq = ops.pool_score(q, k, **CONFIG)
    pooled = ops.pool_score_pooled(q, k, v, **CONFIG)[2:]
    q_sel, k_sel, v_sel = ops.gather(q, k, v, indices, **CONFIG)
    grad_out = torch.randn(B, N, H, D, device=device)
    base = torch.rand(B, HKV, N, device=device)
    grad = lambda t: t.detach().clone().requires_grad_()  # noqa: E731
    op = torch.ops.lighthouse
    return [
        (op.pool_score.default, (q, k, None, None), CONFIG),
        (op.pool_score.default, (grad(q), grad(k), base, base), CONFIG),
        (op.pool_score_pooled.default, (q, k, v, None, None), CONFIG),
        (op.pool_score_pooled.default, (grad(q), grad(k), grad(v), base, base), CONFIG),
        (op.select.default, (scores_qk, scores_kq, N), CONFIG),
        (op.gather.default, (grad(q), grad(k), grad(v), indices), CONFIG),
        (op.gather.default, (grad(q), grad(k), grad(v), indices, *pooled), CONFIG),
        (op.scatter.default, (grad(q_sel), slots, N), CONFIG),
        (op.scatter_backward.default, (grad(grad_out), indices), CONFIG),
        (op.gather_backward.default, (grad(q_sel), grad(k_sel), grad(v_sel), slots, N), CONFIG),
    ]


OPCHECK_CASES = 10


@pytest.mark.parametrize("case", range(OPCHECK_CASES))
def test_opcheck(case):
    op, args, kwargs = _opcheck_cases("cpu")[case]
    torch.library.opcheck(op, args, kwargs)


# Numerical Jacobians perturb every input element: a tiny problem keeps them fast.
GRAD_CONFIG = {"levels": 2, "pooling": 2, "topk": 4, "tile_budget": 2}
GRAD_N = 21


def tiny_fp64_qkv():
    g = torch.Generator().manual_seed(7)
    q = torch.randn(1, GRAD_N, 2, 3, generator=g, dtype=torch.float64).requires_grad_()
    k, v = (torch.randn(1, GRAD_N, 1, 3, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    indices, slots = select_for(q.detach(), k.detach(), GRAD_CONFIG)
    return q, k, v, indices, slots


def test_gradcheck_gather_and_scatter_in_fp64():
    q, k, v, indices, slots = tiny_fp64_qkv()
    gather = lambda q, k, v: ops.gather(q, k, v, indices, **GRAD_CONFIG)  # noqa: E731
    torch.autograd.gradcheck(gather, (q, k, v))
    torch.autograd.gradgradcheck(gather, (q, k, v))
    o_sel = gather(q, k, v)[0].detach().requires_grad_()
    scatter = lambda o: ops.scatter(o, slots, GRAD_N, **GRAD_CONFIG)  # noqa: E731
    torch.autograd.gradcheck(scatter, (o_sel,))
    torch.autograd.gradgradcheck(scatter, (o_sel,))


def test_gradcheck_the_layer_with_fixed_indices_in_fp64():
    q, k, v, indices, slots = tiny_fp64_qkv()

    def layer(q, k, v):
        q_sel, k_sel, v_sel = ops.gather(q, k, v, indices, **GRAD_CONFIG)
        o_sel = torch.nn.functional.scaled_dot_product_attention(q_sel, k_sel, v_sel, is_causal=True, enable_gqa=True)
        return ops.scatter(o_sel, slots, GRAD_N, **GRAD_CONFIG)

    torch.autograd.gradcheck(layer, (q, k, v))


# Invalid inputs: each raises ValueError whose message names the argument.


def _bad_calls():
    q, k, v = make_qkv()
    indices, slots = select_for(q, k)
    scores_qk, scores_kq = ops.pool_score(q, k, **CONFIG)
    return {
        "q 3-d": (lambda: ops.pool_score(q[0], k, **CONFIG), "q"),
        "int32 q": (lambda: ops.gather(q.int(), k.int(), v.int(), indices, **CONFIG), "q.dtype"),
        "mixed dtypes": (lambda: ops.gather(q, k.double(), v, indices, **CONFIG), "k.dtype"),
        "devices": (lambda: ops.gather(q, k.to("meta"), v, indices, **CONFIG), "k.device"),
        "heads % kv_heads": (lambda: ops.pool_score(q[:, :, :3], k, **CONFIG), "q.shape[2] % k.shape[2]"),
        "strided last dim": (lambda: ops.gather(q, k.transpose(1, 3).contiguous().transpose(1, 3), v, indices, **CONFIG), "k.stride(-1)"),
        "short sequence": (lambda: ops.pool_score(q[:, :31], k[:, :31], **CONFIG), "seq_len"),
        "bad pooling": (lambda: ops.pool_score(q, k, **{**CONFIG, "pooling": 3}), "pooling"),
        "topk not a multiple": (lambda: ops.pool_score(q, k, **{**CONFIG, "topk": 6}), "topk"),
        "indices dtype": (lambda: ops.gather(q, k, v, indices.long(), **CONFIG), "indices.dtype"),
        "indices length": (lambda: ops.gather(q, k, v, indices[..., 1:], **CONFIG), "indices.shape[2]"),
        "scores length": (lambda: ops.select(scores_qk, scores_kq, N + 4, **CONFIG), "scores_qk.shape[2]"),
        "slots batch": (lambda: ops.scatter(ops.gather(q, k, v, indices, **CONFIG)[0], slots[:1], N, **CONFIG), "slots.shape[0]"),
        "v shape": (lambda: ops.gather(q, k, v[:, :, :1], indices, **CONFIG), "v.shape"),
    }


@pytest.mark.parametrize("name", sorted(_bad_calls()))
def test_invalid_input_is_a_clear_value_error(name):
    call, argument = _bad_calls()[name]
    with pytest.raises(ValueError, match=r"^lighthouse: " + re.escape(argument) + ": expected"):
        call()
