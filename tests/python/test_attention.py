"""lighthouse_attention, the dilated scorer, LighthouseAttention and set_attention_mode on the CPU."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import _reference as ref
import lighthouse
from lighthouse import ops
from lighthouse.attention import dense_causal_attention, dilated_base_scores

CONFIG = {"levels": 3, "pooling": 2, "topk": 8, "tile_budget": 4}
B, N, H, HKV, D = 2, 99, 4, 2, 8


def make_qkv(dtype=torch.float32, seq_len=N, heads=H, kv_heads=HKV, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = ((B, seq_len, heads, D), (B, seq_len, kv_heads, D), (B, seq_len, kv_heads, D))
    return tuple(torch.randn(shape, generator=g).to(dtype) for shape in shapes)


def reference_layer(q, k, v, indices, scale=None):
    """The layer in fp64 from the dense gather / scatter matrices and the given selection."""
    q_sel, k_sel, v_sel = ref.gather(q, k, v, indices, CONFIG["levels"], CONFIG["pooling"])
    o_sel = F.scaled_dot_product_attention(q_sel, k_sel, v_sel, is_causal=True, scale=scale, enable_gqa=True)
    return ref.scatter(o_sel, indices, q.shape[1], CONFIG["levels"], CONFIG["pooling"])


def selection(q, k, v, scorer="norm", dilation=4, scale=None):
    base = dilated_base_scores(q, k, v, dilation=dilation, scale=scale) if scorer == "dilated" else (None, None)
    scores_qk, scores_kq = ops.pool_score(q, k, base_qk=base[0], base_kq=base[1], **CONFIG)
    return ops.select(scores_qk, scores_kq, q.shape[1], **CONFIG)[0]


@pytest.mark.parametrize("heads", [HKV, H])
@pytest.mark.parametrize("scorer", ["norm", "dilated"])
def test_layer_matches_the_reference_composition(heads, scorer):
    q, k, v = make_qkv(heads=heads)
    out = lighthouse.lighthouse_attention(q, k, v, scorer=scorer, scale=0.3, fallback="error", **CONFIG)
    expected = reference_layer(q, k, v, selection(q, k, v, scorer, scale=0.3), scale=0.3)
    assert out.shape == q.shape
    assert ref.max_relative_error(out, expected) < 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_layer_is_close_to_fp64_with_its_own_selection(dtype):
    q, k, v = make_qkv(dtype)
    out = lighthouse.lighthouse_attention(q, k, v, fallback="error", **CONFIG)
    assert out.dtype == dtype
    assert ref.max_relative_error(out, reference_layer(q, k, v, selection(q, k, v))) < 3e-2


def test_layer_gradients_match_the_reference_composition():
    q, k, v = (t.double().requires_grad_() for t in make_qkv())
    indices = selection(q.detach(), k.detach(), v.detach())
    grad_out = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lighthouse.lighthouse_attention(q, k, v, fallback="error", **CONFIG).backward(grad_out)
    ours = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    reference_layer(q, k, v, indices).backward(grad_out)
    for mine, expected in zip(ours, (q.grad, k.grad, v.grad)):
        assert ref.max_relative_error(mine, expected) < 1e-10


@pytest.mark.parametrize("seq_len", [8, 32])
def test_dense_fallback_when_lighthouse_would_not_shrink(seq_len):
    """N = 8 is below topk * pooling^(levels-1) = 32; at N = 32 the selection would keep S = 40 >= N."""
    q, k, v = make_qkv(seq_len=seq_len)
    out = lighthouse.lighthouse_attention(q, k, v, **CONFIG)
    assert torch.equal(out, dense_causal_attention(q, k, v))
    expected = F.scaled_dot_product_attention(
        *(t.transpose(1, 2) for t in (q, k.repeat_interleave(2, 2), v.repeat_interleave(2, 2))), is_causal=True
    ).transpose(1, 2)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match=r"^lighthouse: seq_len: expected"):
        lighthouse.lighthouse_attention(q, k, v, fallback="error", **CONFIG)


@pytest.mark.parametrize("seq_len", [96, 99])
def test_dilated_scores_run_each_residue_class_as_its_own_causal_sequence(seq_len):
    q, k, v = make_qkv(seq_len=seq_len)
    delta = 4
    base_qk, base_kq = dilated_base_scores(q, k, v, dilation=delta)
    expected_qk = torch.empty(B, H, seq_len)
    expected_kq = torch.empty(B, H, seq_len)
    bhnd = lambda t: t.transpose(1, 2).repeat_interleave(H // t.shape[2], dim=1)  # noqa: E731
    for r in range(delta):
        qr, kr, vr = (bhnd(t[:, r::delta]) for t in (q, k, v))
        expected_qk[..., r::delta] = F.scaled_dot_product_attention(qr, kr, vr, is_causal=True).norm(dim=-1)
        expected_kq[..., r::delta] = F.scaled_dot_product_attention(kr, qr, vr, is_causal=True).norm(dim=-1)
    for actual, expected in ((base_qk, expected_qk), (base_kq, expected_kq)):
        assert actual.shape == (B, HKV, seq_len) and actual.dtype == torch.float32
        torch.testing.assert_close(actual, expected.reshape(B, HKV, H // HKV, seq_len).amax(2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options, argument",
    [
        ({"scorer": "random"}, "scorer"),
        ({"fallback": "skip"}, "fallback"),
        ({"levels": 1}, "levels"),
        ({"tile_budget": 3}, "tile_budget"),
        ({"scorer": "dilated", "dilation": 0}, "dilation"),
    ],
)
def test_invalid_options_are_value_errors(options, argument):
    q, k, v = make_qkv()
    with pytest.raises(ValueError, match=rf"^lighthouse: {argument}: expected"):
        lighthouse.lighthouse_attention(q, k, v, **{**CONFIG, **options})


@pytest.mark.parametrize("seq_len", [8, N])
def test_mismatched_shapes_are_value_errors_on_both_paths(seq_len):
    q, k, v = make_qkv(seq_len=seq_len)
    with pytest.raises(ValueError, match=r"^lighthouse: k\.shape\[1\]: expected seq_len"):
        lighthouse.lighthouse_attention(q, k[:, :-1], v[:, :-1], **CONFIG)
    with pytest.raises(ValueError, match=r"^lighthouse: v\.shape: expected"):
        lighthouse.lighthouse_attention(q, k, v[..., :-1], **CONFIG)
    with pytest.raises(ValueError, match=r"^lighthouse: q\.shape\[2\] % k\.shape\[2\]: expected 0"):
        lighthouse.lighthouse_attention(q[:, :, :3], k, v, **CONFIG)


def test_module_runs_the_function_or_dense_attention():
    q, k, v = make_qkv()
    module = lighthouse.LighthouseAttention(scale=0.5, **CONFIG)
    assert torch.equal(module(q, k, v), lighthouse.lighthouse_attention(q, k, v, scale=0.5, **CONFIG))
    assert "lighthouse" in repr(module)
    module.lighthouse_mode = "dense"
    assert torch.equal(module(q, k, v), dense_causal_attention(q, k, v, scale=0.5))


def test_set_attention_mode_keeps_the_listed_layers_dense():
    model = nn.ModuleList([lighthouse.LighthouseAttention(**CONFIG) for _ in range(5)])
    modes = lighthouse.set_attention_mode(model, "lighthouse", dense_layers=(0, -1))
    assert modes == ["dense", "lighthouse", "lighthouse", "lighthouse", "dense"]
    assert [m.lighthouse_mode for m in model] == modes
    assert lighthouse.set_attention_mode(model, "dense") == ["dense"] * 5
    with pytest.raises(ValueError, match=r"^lighthouse: mode: expected"):
        lighthouse.set_attention_mode(model, "sparse")
    with pytest.raises(ValueError, match=r"^lighthouse: dense_layers: expected"):
        lighthouse.set_attention_mode(model, "lighthouse", dense_layers=(5,))
    with pytest.raises(ValueError, match=r"^lighthouse: model: expected"):
        lighthouse.set_attention_mode(nn.Linear(2, 2), "dense")
