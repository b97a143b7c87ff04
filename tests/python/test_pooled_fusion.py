"""The pooled level-L fusion on the CPU: pool_score_pooled and gather(pooled=...).

pool_score_pooled must score exactly like pool_score and return the coarsest blocks' means; gather with them
must give the bits of gather without them, must really read them, and its gradient must stay the exact
adjoint with respect to q, k, v.
"""

import re

import pytest
import torch

from lighthouse import _geometry, ops
from test_ops import B, CONFIG, D, FLOAT_DTYPES, GRAD_CONFIG, H, HKV, N, make_qkv, tiny_fp64_qkv


def given_base_scores():
    g = torch.Generator().manual_seed(3)
    base_qk, base_kq = torch.rand(2, B, HKV, N, generator=g)
    return {"base_qk": base_qk, "base_kq": base_kq}


def coarsest_means(t, coarsest, block):
    """Mean of each coarsest block in fp64 (an independent reference, not the kernels' summation order)."""
    batch, _, heads, head_dim = t.shape
    return t[:, : coarsest * block].double().reshape(batch, coarsest, block, heads, head_dim).mean(2)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("scorer", ["norm", "given"])
def test_pool_score_pooled_scores_like_pool_score_and_pools_the_coarsest_level(dtype, scorer):
    q, k, v = make_qkv(dtype)
    base = given_base_scores() if scorer == "given" else {}
    scores_qk, scores_kq, pooled_q, pooled_k, pooled_v = ops.pool_score_pooled(q, k, v, **CONFIG, **base)
    expected_qk, expected_kq = ops.pool_score(q, k, **CONFIG, **base)
    assert torch.equal(scores_qk, expected_qk) and torch.equal(scores_kq, expected_kq)
    geo = _geometry.geometry(N, **CONFIG)
    block = CONFIG["pooling"] ** (CONFIG["levels"] - 1)
    assert geo.coarsest == N // block
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-6}.get(dtype, 1e-2)
    for pooled, base_tensor, heads in ((pooled_q, q, H), (pooled_k, k, HKV), (pooled_v, v, HKV)):
        assert pooled.shape == (B, geo.coarsest, heads, D) and pooled.dtype == dtype and pooled.is_contiguous()
        expected = coarsest_means(base_tensor, geo.coarsest, block)
        torch.testing.assert_close(pooled.double(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("heads", [HKV, H])
def test_fused_gather_gives_the_bits_of_the_unfused_gather(dtype, heads):
    q, k, v = make_qkv(dtype, heads=heads)
    scores_qk, scores_kq, *pooled = ops.pool_score_pooled(q, k, v, **CONFIG)
    indices, _ = ops.select(scores_qk, scores_kq, N, **CONFIG)
    fused = ops.gather(q, k, v, indices, **CONFIG, pooled=pooled)
    plain = ops.gather(q, k, v, indices, **CONFIG)
    for name, a, b in zip(("q_sel", "k_sel", "v_sel"), fused, plain):
        assert torch.isfinite(a).all(), name
        assert a.shape == b.shape and a.stride() == b.stride(), name
        assert torch.equal(a, b), name


def test_fused_gather_reads_the_pooled_tensors_for_level_l_only():
    """Poisoned pooled tensors show up exactly in the level-L entries (so the fused path is really taken)."""
    q, k, v = make_qkv()
    scores_qk, scores_kq, *pooled = ops.pool_score_pooled(q, k, v, **CONFIG)
    indices, _ = ops.select(scores_qk, scores_kq, N, **CONFIG)
    poisoned = [torch.full_like(t, float("nan")) for t in pooled]
    q_sel, k_sel, v_sel = ops.gather(q, k, v, indices, **CONFIG, pooled=poisoned)
    level_l = indices >= _geometry.geometry(N, **CONFIG).pyramid_len - _geometry.geometry(N, **CONFIG).coarsest
    assert level_l.any() and not level_l.all()
    for t, group in ((q_sel, H // HKV), (k_sel, 1), (v_sel, 1)):
        nan_rows = t.isnan().all(-1)
        assert torch.equal(nan_rows, level_l.repeat_interleave(group, dim=1))
        assert not t.isnan().any(-1)[~nan_rows].any()


def test_fused_gather_gradients_equal_the_unfused_ones():
    q, k, v = (t.requires_grad_() for t in make_qkv())
    scores_qk, scores_kq, *pooled = ops.pool_score_pooled(q, k, v, **CONFIG)
    assert not any(t.requires_grad for t in (scores_qk, scores_kq, *pooled))
    indices, _ = ops.select(scores_qk, scores_kq, N, **CONFIG)
    g = torch.Generator().manual_seed(5)
    weights = [torch.randn(t.shape, generator=g) for t in ops.gather(q, k, v, indices, **CONFIG)]

    def grads(pooled_or_none):
        selected = ops.gather(q, k, v, indices, **CONFIG, pooled=pooled_or_none)
        loss = sum((t * w).sum() for t, w in zip(selected, weights))
        return torch.autograd.grad(loss, (q, k, v))

    for a, b in zip(grads(pooled), grads(None)):
        assert torch.isfinite(a).all() and torch.equal(a, b)


def test_gradcheck_the_fused_gather_in_fp64():
    """The pooled cache is recomputed from the perturbed inputs (detached), so the numerical Jacobian is that
    of the fused composition; the analytical one is gather_backward's."""
    q, k, v, indices, _ = tiny_fp64_qkv()

    def fused_gather(q, k, v):
        pooled = ops.pool_score_pooled(q.detach(), k.detach(), v.detach(), **GRAD_CONFIG)[2:]
        return ops.gather(q, k, v, indices, **GRAD_CONFIG, pooled=pooled)

    torch.autograd.gradcheck(fused_gather, (q, k, v))
    torch.autograd.gradgradcheck(fused_gather, (q, k, v))


def _bad_calls():
    q, k, v = make_qkv()
    scores_qk, scores_kq, *pooled = ops.pool_score_pooled(q, k, v, **CONFIG)
    indices, _ = ops.select(scores_qk, scores_kq, N, **CONFIG)
    pooled_q, pooled_k, pooled_v = pooled
    gather = lambda pooled_q, pooled_k, pooled_v: ops.gather(  # noqa: E731
        q, k, v, indices, **CONFIG, pooled=(pooled_q, pooled_k, pooled_v)
    )
    op = torch.ops.lighthouse.gather
    return {
        "two of three": (lambda: op(q, k, v, indices, pooled_q, pooled_k, None, **CONFIG), "pooled_q, pooled_k, pooled_v"),
        "pooled_q length": (lambda: gather(pooled_q[:, 1:], pooled_k, pooled_v), "pooled_q.shape[1]"),
        "pooled_k heads": (lambda: gather(pooled_q, pooled_q, pooled_v), "pooled_k.shape[2]"),
        "pooled_v dtype": (lambda: gather(pooled_q, pooled_k, pooled_v.double()), "pooled_v.dtype"),
        "pooled_q strided": (
            lambda: gather(pooled_q.transpose(1, 3).contiguous().transpose(1, 3), pooled_k, pooled_v),
            "pooled_q.stride(-1)",
        ),
        "pool_score_pooled v shape": (lambda: ops.pool_score_pooled(q, k, v[:, 1:], **CONFIG), "v.shape"),
        "pooled requires grad": (
            lambda: gather(pooled_q.clone().requires_grad_(), pooled_k, pooled_v), "pooled_q",
        ),
    }


@pytest.mark.parametrize("name", sorted(_bad_calls()))
def test_invalid_fusion_input_is_a_clear_value_error(name):
    call, argument = _bad_calls()[name]
    with pytest.raises(ValueError, match=r"^lighthouse: " + re.escape(argument) + ": expected"):
        call()
