"""Rotary position embedding of whole sequences, with the arithmetic of the gather kernels.

lighthouse_attention(rope=...) takes un-rotated q and k. Where it does not run the kernels (the dense fallback,
the dilated scorer's attention) it rotates every position with apply_rope, so the layer means the same thing
on every path: an element is a*cos - partner*sin (first element of its pair) or a*cos + partner*sin (second),
each product rounded in float32 (float64 for float64 inputs), then one rounded add, stored in x's dtype.
"""

import torch


def rotary_tables(length: int, head_dim: int, theta: float = 10000.0, device=None, *, per_pair: bool = False):
    """cos and sin, float32 [length, head_dim], of the rotate-half pairs (j, j + D/2) at positions 0..length-1
    with Llama's frequencies theta^(-2j/D): the tables lighthouse_attention(rope=...) takes. per_pair=True gives
    [length, head_dim // 2], one value per pair (the same rotation at half the bytes)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    if not per_pair:
        angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def per_element(table, head_dim: int, *, interleaved=False):
    """A rope table with one value per element ([..., head_dim]): per-pair tables ([..., head_dim // 2]) have
    each pair's value repeated at both of its elements; per-element tables are returned as they are."""
    if table.shape[-1] == head_dim:
        return table
    if interleaved:
        return table.repeat_interleave(2, dim=-1)
    return torch.cat((table, table), dim=-1)


def apply_rope(x, cos, sin, *, interleaved=False):
    """x [B, N, heads, D] rotated at each position n by row n of the tables (float32 [N, R] or [B, N, R], with
    R = D values per row, or D/2: one per rotation pair).

    interleaved=False pairs element j with j + D/2 (Hugging Face's rotate_half), True pairs 2j with 2j + 1.
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    a = x.to(compute)
    cos, sin = (per_element(t, x.shape[-1], interleaved=interleaved).to(compute) for t in (cos, sin))
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [B|1, N, 1, D], the same for every head
    if interleaved:
        partner = torch.stack((-a[..., 1::2], a[..., 0::2]), dim=-1).flatten(-2)
    else:
        half = a.shape[-1] // 2
        partner = torch.cat((-a[..., half:], a[..., :half]), dim=-1)
    return (a * cos + partner * sin).to(x.dtype)
