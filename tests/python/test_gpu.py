"""CUDA: every operator against the CPU reference, opcheck, bf16 accuracy, determinism and a 512K point.

All tests are marked `gpu` and skipped without a CUDA device.
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import lighthouse
from lighthouse import ops
from lighthouse.attention import dense_causal_attention
from test_ops import OPCHECK_CASES, _opcheck_cases

pytestmark = pytest.mark.gpu

# Ragged N (1000 is no multiple of the coarsest block times the tiles), GQA 2:1.
CONFIG = {"levels": 3, "pooling": 2, "topk": 64, "tile_budget": 32}
B, N, H, HKV, D = 2, 1000, 4, 2, 64
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def make_qkv(dtype, shape=(B, N, H, HKV, D), seed=0, device="cpu"):
    batch, seq_len, heads, kv_heads, head_dim = shape
    g = torch.Generator(device).manual_seed(seed)
    q = torch.randn(batch, seq_len, heads, head_dim, generator=g, device=device)
    k, v = (torch.randn(batch, seq_len, kv_heads, head_dim, generator=g, device=device) for _ in range(2))
    return tuple(t.to(dtype) for t in (q, k, v))


def assert_same(cuda_result, cpu_result, name):
    """The same bits as the CPU reference, every dtype (the kernels sum in the CPU's order): equal values with
    equal signs of zero, and no NaN (NaN never matches)."""
    actual = cuda_result.cpu()
    assert actual.dtype == cpu_result.dtype and actual.shape == cpu_result.shape, name
    assert not torch.isnan(actual).any(), f"{name}: NaN in the CUDA result"
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
    differ = actual.view(bits) != cpu_result.view(bits)
    if differ.any():
        where = differ.nonzero()[0].tolist()
        pytest.fail(f"{name}: {int(differ.sum())} of {differ.numel()} elements differ from the CPU reference, "
                    f"first at {where}: {actual[tuple(where)].item()!r} vs {cpu_result[tuple(where)].item()!r}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_op_on_cuda_matches_the_cpu(dtype):
    q, k, v = make_qkv(dtype)
    cuda = lambda *ts: tuple(t.cuda() for t in ts)  # noqa: E731
    scores = ops.pool_score(q, k, **CONFIG)
    for name, a, b in zip(("scores_qk", "scores_kq"), ops.pool_score(*cuda(q, k), **CONFIG), scores):
        assert_same(a, b, name)
    indices, slots = ops.select(*scores, N, **CONFIG)
    cuda_indices, cuda_slots = ops.select(*cuda(*scores), N, **CONFIG)
    assert torch.equal(cuda_indices.cpu(), indices) and torch.equal(cuda_slots.cpu(), slots)
    selected = ops.gather(q, k, v, indices, **CONFIG)
    for name, a, b in zip(("q_sel", "k_sel", "v_sel"), ops.gather(*cuda(q, k, v, indices), **CONFIG), selected):
        assert_same(a, b, name)
    g = torch.Generator().manual_seed(1)
    o_sel = torch.randn(selected[0].shape, generator=g).to(dtype)
    assert_same(ops.scatter(*cuda(o_sel, slots), N, **CONFIG), ops.scatter(o_sel, slots, N, **CONFIG), "out")
    grad_out = torch.randn(B, N, H, D, generator=g).to(dtype)
    assert_same(
        ops.scatter_backward(*cuda(grad_out, indices), **CONFIG), ops.scatter_backward(grad_out, indices, **CONFIG),
        "grad_o_sel",
    )
    grads_sel = [torch.randn(t.shape, generator=g).to(dtype) for t in selected]
    expected = ops.gather_backward(*grads_sel, slots, N, **CONFIG)
    actual = ops.gather_backward(*cuda(*grads_sel, slots), N, **CONFIG)
    for name, a, b in zip(("grad_q", "grad_k", "grad_v"), actual, expected):
        assert_same(a, b, name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_pool_score_and_gather_on_cuda_give_the_unfused_bits(dtype):
    """pool_score_pooled's scores equal pool_score's, its pooled tensors equal the CPU's, and gather with them
    gives the bits of gather without them (on CUDA, and equal to the CPU's fused gather)."""
    q, k, v = make_qkv(dtype)
    cpu_fused = ops.pool_score_pooled(q, k, v, **CONFIG)
    qc, kc, vc = (t.cuda() for t in (q, k, v))
    fused = ops.pool_score_pooled(qc, kc, vc, **CONFIG)
    for a, b in zip(fused[:2], ops.pool_score(qc, kc, **CONFIG)):
        assert torch.equal(a, b)
    for name, a, b in zip(("pooled_q", "pooled_k", "pooled_v"), fused[2:], cpu_fused[2:]):
        assert_same(a, b, name)
    indices, _ = ops.select(*fused[:2], N, **CONFIG)
    plain = ops.gather(qc, kc, vc, indices, **CONFIG)
    with_pooled = ops.gather(qc, kc, vc, indices, **CONFIG, pooled=fused[2:])
    cpu_with_pooled = ops.gather(q, k, v, indices.cpu(), **CONFIG, pooled=cpu_fused[2:])
    for name, a, b, c in zip(("q_sel", "k_sel", "v_sel"), with_pooled, plain, cpu_with_pooled):
        assert torch.equal(a, b), name
        assert_same(a, c, name)


def test_dilated_scorer_on_cuda_selects_like_the_cpu():
    q, k, v = make_qkv(torch.float32)
    indices = []
    for device in ("cpu", "cuda"):
        qd, kd, vd = (t.to(device) for t in (q, k, v))
        base_qk, base_kq = lighthouse.attention.dilated_base_scores(qd, kd, vd, dilation=4)
        scores = ops.pool_score(qd, kd, base_qk=base_qk, base_kq=base_kq, **CONFIG)
        indices.append(ops.select(*scores, N, **CONFIG)[0].cpu())
    mismatch = (indices[0] != indices[1]).float().mean().item()
    assert mismatch < 0.01, "SDPA rounding may flip near-ties only"


@pytest.mark.parametrize("case", range(OPCHECK_CASES))
def test_opcheck_on_cuda(case):
    op, args, kwargs = _opcheck_cases("cuda")[case]
    torch.library.opcheck(op, args, kwargs)


def test_float64_and_mixed_devices_are_refused_on_cuda():
    q, k, v = make_qkv(torch.float64, device="cuda")
    with pytest.raises(ValueError, match=r"^lighthouse: q\.dtype: expected float32, bfloat16 or float16"):
        ops.pool_score(q, k, **CONFIG)
    q, k, v = make_qkv(torch.float32)
    with pytest.raises(ValueError, match=r"^lighthouse: k\.device: expected"):
        ops.pool_score(q, k.cuda(), **CONFIG)


def _relative_l2(actual, expected):
    actual, expected = actual.float(), expected.float()
    assert torch.isfinite(actual).all()
    return ((actual - expected).norm() / expected.norm()).item()


def test_bf16_layer_error_is_at_most_twice_that_of_bf16_sdpa():
    """Ours: the bf16 layer against the fp32 layer on the same (bf16-representable) inputs with the same
    selection. PyTorch's: bf16 dense causal SDPA against fp32 dense SDPA on the same inputs. Forward output
    and the three input gradients each."""
    shape = (1, 16384, 8, 8, 128)
    config = {"levels": 3, "pooling": 4, "topk": 256, "tile_budget": 128}
    q, k, v = make_qkv(torch.bfloat16, shape, device="cuda")
    grad_out = torch.randn(q.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(3)).bfloat16()
    indices, slots = ops.select(*ops.pool_score(q, k, **config), shape[1], **config)

    def fixed_layer(q, k, v):
        o_sel = torch.nn.functional.scaled_dot_product_attention(*ops.gather(q, k, v, indices, **config), is_causal=True)
        return ops.scatter(o_sel, slots, shape[1], **config)

    def forward_backward(fn, dtype):
        inputs = [t.detach().to(dtype).clone().requires_grad_() for t in (q, k, v)]
        out = fn(*inputs)
        out.backward(grad_out.to(dtype))
        return [out.detach()] + [t.grad for t in inputs]

    ours = forward_backward(lambda q, k, v: lighthouse.lighthouse_attention(q, k, v, fallback="error", **config), torch.bfloat16)
    reference = forward_backward(fixed_layer, torch.float32)
    sdpa = forward_backward(dense_causal_attention, torch.bfloat16)
    sdpa_reference = forward_backward(dense_causal_attention, torch.float32)
    for name, a, b, c, d in zip(("out", "grad_q", "grad_k", "grad_v"), ours, reference, sdpa, sdpa_reference):
        ours_error, sdpa_error = _relative_l2(a, b), _relative_l2(c, d)
        assert ours_error <= 2 * sdpa_error, f"{name}: ours {ours_error:.3e} vs bf16 SDPA {sdpa_error:.3e}"


def test_stages_give_the_same_bits_over_three_runs():
    q, k, v = make_qkv(torch.bfloat16, device="cuda")
    grad_out = torch.randn(q.shape, device="cuda").bfloat16()

    def stages():
        scores = ops.pool_score(q, k, **CONFIG)
        indices, slots = ops.select(*scores, N, **CONFIG)
        selected = ops.gather(q, k, v, indices, **CONFIG)
        out = ops.scatter(selected[0], slots, N, **CONFIG)
        grad_o_sel = ops.scatter_backward(grad_out, indices, **CONFIG)
        grads = ops.gather_backward(grad_o_sel, selected[1], selected[2], slots, N, **CONFIG)
        return [*scores, indices, slots, *selected, out, grad_o_sel, *grads]

    runs = [stages() for _ in range(3)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["math", "flash-deterministic"])
def test_layer_gives_the_same_bits_over_three_runs(backend):
    """The whole layer (forward and backward) is bitwise reproducible when its SDPA is. Deterministic SDPA
    choices: the MATH backend (matmuls and softmax, deterministic forward and backward), and FLASH_ATTENTION
    under torch.use_deterministic_algorithms(True), which switches its backward to the deterministic
    algorithm. By default the flash, memory-efficient and cuDNN backwards are not deterministic."""
    q, k, v = make_qkv(torch.bfloat16, (B, N, H, H, D), device="cuda")  # MHA: every backend takes it
    grad_out = torch.randn(q.shape, device="cuda").bfloat16()
    deterministic_before = torch.are_deterministic_algorithms_enabled()

    def run():
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = lighthouse.lighthouse_attention(*inputs, fallback="error", **CONFIG)
        out.backward(grad_out)
        return [out] + [t.grad for t in inputs]

    try:
        if backend == "math":
            with sdpa_kernel(SDPBackend.MATH):
                runs = [run() for _ in range(3)]
        else:
            torch.use_deterministic_algorithms(True)
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                runs = [run() for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_512k_bf16_forward_and_backward():
    """N = 512K in bf16 with B=1, H=8, D=128, p=4, L=3, k=2048 (S = 49,152): forward and backward run and
    give finite, non-zero gradients."""
    config = {"levels": 3, "pooling": 4, "topk": 2048, "tile_budget": 128}
    seq_len = 512 * 1024
    q, k, v = (t.requires_grad_() for t in make_qkv(torch.bfloat16, (1, seq_len, 8, 8, 128), device="cuda"))
    out = lighthouse.lighthouse_attention(q, k, v, fallback="error", **config)
    out.float().square().mean().backward()
    torch.cuda.synchronize()
    assert out.shape == (1, seq_len, 8, 128)
    assert torch.isfinite(out).all()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
