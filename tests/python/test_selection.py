"""Selection rules through the PyTorch API: the causal rule keeps the layer's output at t independent of every
input after t, bit for bit (CPU and CUDA, fp32 and bf16, norm and dilated scorers, GQA, ragged N), while the
paper and lagged rules are measurably not causal; S is the same under every rule; bad names raise."""

import pytest
import torch

import lighthouse
from lighthouse import ops

# N in [1024, 1900]: Lighthouse is active (N >= topk * p^(L-1) = 512 and S = N/4 + 512 + tail < N).
CONFIG = {"levels": 3, "pooling": 2, "topk": 128, "tile_budget": 32}


def _inputs(seed, batch, seq_len, heads, kv_heads, head_dim, dtype, device):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, seq_len, heads, head_dim, generator=g)
    k, v = (torch.randn(batch, seq_len, kv_heads, head_dim, generator=g) for _ in range(2))
    return tuple(t.to(dtype).to(device) for t in (q, k, v))


def _perturbed_after(tensors, u, seed):
    """Copies of q, k, v with every position >= u replaced by fresh values."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in tensors:
        fresh = torch.randn(t.shape, generator=g).to(t.dtype).to(t.device)
        t = t.clone()
        t[:, u:] = fresh[:, u:]
        out.append(t)
    return out


def _prefix_unchanged(seed, selection, device, dtype, scorer="norm"):
    g = torch.Generator().manual_seed(1000 + seed)
    seq_len = int(torch.randint(1024, 1900, (1,), generator=g))
    kv_heads = int(torch.randint(1, 3, (1,), generator=g))
    heads = kv_heads * int(torch.randint(1, 3, (1,), generator=g))
    u = int(torch.randint(1, seq_len, (1,), generator=g))
    q, k, v = _inputs(seed, 2, seq_len, heads, kv_heads, 16, dtype, device)
    options = dict(CONFIG, selection=selection, scorer=scorer, dilation=2, fallback="error")
    out = lighthouse.lighthouse_attention(q, k, v, **options)
    out_perturbed = lighthouse.lighthouse_attention(*_perturbed_after((q, k, v), u, seed + 1), **options)
    return torch.equal(out[:, :u], out_perturbed[:, :u])


def _check_causal(device, dtype, scorer, cases):
    for seed in range(cases):
        assert _prefix_unchanged(seed, "causal", device, dtype, scorer), f"seed {seed}"


def _count_leaks(selection, device, dtype, cases):
    return sum(not _prefix_unchanged(seed, selection, device, dtype) for seed in range(cases))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scorer", ["norm", "dilated"])
def test_causal_selection_output_before_t_ignores_inputs_after_t(dtype, scorer):
    _check_causal("cpu", dtype, scorer, cases=6)


def test_paper_and_lagged_selections_leak():
    # The same check on the per-tile top-k rules finds outputs before u that change.
    for selection in ("paper", "lagged"):
        assert _count_leaks(selection, "cpu", torch.float32, cases=6) >= 3, selection


@pytest.mark.parametrize("selection", ["paper", "lagged", "causal"])
def test_every_rule_keeps_the_same_number_of_entries(selection):
    q, k, _ = _inputs(0, 1, 1500, 2, 2, 8, torch.float32, "cpu")
    scores = ops.pool_score(q, k, **CONFIG)
    indices, slots = ops.select(*scores, 1500, **CONFIG, selection=selection)
    paper_indices, _ = ops.select(*scores, 1500, **CONFIG)
    assert indices.shape == paper_indices.shape
    assert int((slots >= 0).sum()) == indices.numel()
    for row in indices.flatten(0, 1):
        assert torch.unique(row).numel() == row.numel()


def test_rules_differ_on_the_same_scores():
    q, k, _ = _inputs(1, 1, 1500, 2, 2, 8, torch.float32, "cpu")
    scores = ops.pool_score(q, k, **CONFIG)
    chosen = {s: ops.select(*scores, 1500, **CONFIG, selection=s)[0] for s in ("paper", "lagged", "causal")}
    assert not torch.equal(chosen["paper"], chosen["lagged"])
    assert not torch.equal(chosen["paper"], chosen["causal"])


def test_unknown_selection_raises_naming_it():
    q, k, v = _inputs(0, 1, 1100, 1, 1, 8, torch.float32, "cpu")
    with pytest.raises(ValueError, match="selection"):
        lighthouse.lighthouse_attention(q, k, v, **CONFIG, selection="greedy")
    scores = ops.pool_score(q, k, **CONFIG)
    with pytest.raises(ValueError, match="selection"):
        ops.select(*scores, 1100, **CONFIG, selection="greedy")


def test_causal_selection_under_compile_matches_eager():
    q, k, v = _inputs(2, 1, 1100, 2, 1, 8, torch.float32, "cpu")
    fn = lambda q, k, v: lighthouse.lighthouse_attention(q, k, v, **CONFIG, selection="causal")  # noqa: E731
    assert torch.equal(torch.compile(fn, fullgraph=True)(q, k, v), fn(q, k, v))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scorer", ["norm", "dilated"])
def test_causal_selection_is_causal_on_cuda(dtype, scorer):
    _check_causal("cuda", dtype, scorer, cases=8)


@pytest.mark.gpu
def test_paper_selection_leaks_on_cuda():
    assert _count_leaks("paper", "cuda", torch.bfloat16, cases=8) >= 4


@pytest.mark.gpu
@pytest.mark.parametrize("selection", ["paper", "lagged", "causal"])
def test_cuda_select_equals_cpu_for_every_rule(selection):
    q, k, _ = _inputs(3, 2, 1777, 4, 2, 16, torch.float32, "cpu")
    scores = ops.pool_score(q, k, **CONFIG)
    cpu = ops.select(*scores, 1777, **CONFIG, selection=selection)
    cuda = ops.select(*(s.cuda() for s in scores), 1777, **CONFIG, selection=selection)
    for a, b in zip(cuda, cpu):
        assert torch.equal(a.cpu(), b)
