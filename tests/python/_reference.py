"""Independent dense references of the data-movement stages, for tests.

Gather and scatter are linear maps between the base sequence and the kept entries; these helpers build them
as explicit matrices from the selected pyramid indices, straight from the definitions in the spec
(an entry of level l, index i covers base positions [i c, i c + c - 1] and feeds positions
[i c + c - 1, i c + 2c - 2] clipped to N, with c = pooling^(l-1)).
"""

import torch


def level_and_local(indices, seq_len, levels, pooling):
    """Level (0-based) and index within its level of every pyramid index."""
    sizes = [seq_len // pooling**level for level in range(levels)]
    offsets = torch.tensor([sum(sizes[:level]) for level in range(levels + 1)], dtype=torch.int64)
    idx = indices.long()
    level = torch.searchsorted(offsets[1:], idx, right=True)
    return level, idx - offsets[level]


def gather_matrix(indices, seq_len, levels, pooling, dtype=torch.float64):
    """A[b, h, s, t] = 1/c if base position t is in entry s's block (gather = A @ x)."""
    level, local = level_and_local(indices, seq_len, levels, pooling)
    block = pooling**level
    first = (local * block)[..., None]
    t = torch.arange(seq_len)
    inside = (t >= first) & (t < first + block[..., None])
    return inside.to(dtype) / block[..., None].to(dtype)


def scatter_matrix(indices, seq_len, levels, pooling, dtype=torch.float64):
    """W[b, h, t, s] = 1 if base position t is in entry s's scatter window (scatter = W @ o_sel)."""
    level, local = level_and_local(indices, seq_len, levels, pooling)
    block = pooling**level
    first = (local * block + block - 1)[..., None]
    last = torch.clamp(local * block + 2 * block - 2, max=seq_len - 1)[..., None]
    t = torch.arange(seq_len)
    return ((t >= first) & (t <= last)).to(dtype).transpose(-1, -2)


def per_query_head(matrix, heads):
    """Repeat a per-KV-head matrix [B, Hkv, ...] for the query heads of each group: [B, H, ...]."""
    return matrix.repeat_interleave(heads // matrix.shape[1], dim=1)


def gather(q, k, v, indices, levels, pooling):
    """q_sel, k_sel, v_sel as [B, h, S, D] float64."""
    seq_len = q.shape[1]
    a = gather_matrix(indices, seq_len, levels, pooling)
    bhnd = lambda x: x.double().transpose(1, 2)  # noqa: E731
    return per_query_head(a, q.shape[2]) @ bhnd(q), a @ bhnd(k), a @ bhnd(v)


def scatter(o_sel, indices, seq_len, levels, pooling):
    """out [B, N, H, D] float64 from o_sel [B, H, S, D]."""
    w = per_query_head(scatter_matrix(indices, seq_len, levels, pooling), o_sel.shape[1])
    return (w @ o_sel.double()).transpose(1, 2)


def max_relative_error(actual, expected):
    """max |actual - expected| / max |expected|; NaN anywhere gives inf, so it never passes a bound."""
    actual, expected = actual.double(), expected.double()
    if not torch.isfinite(actual).all():
        return float("inf")
    return ((actual - expected).abs().max() / expected.abs().max()).item()
