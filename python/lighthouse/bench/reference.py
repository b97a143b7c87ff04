"""A plain-PyTorch Lighthouse layer for a given selection: mean pooling,
gather (with rope: the kept q and k entries rotated), causal SDPA, shifted
scatter. It is written from the semantics alone (no lighthouse kernel
involved), differentiable through autograd, and used by the pre-timing check
to bound the error of the kernels' forward and backward.

The selection itself (which entries are kept) is an input: the check compares
selections separately, exactly, between the device and the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lighthouse.bench.points import LayerConfig


def level_sizes(config: LayerConfig, seq_len: int) -> list[int]:
    return [seq_len // config.pooling**level for level in range(config.levels)]


def pyramid(x: torch.Tensor, config: LayerConfig) -> torch.Tensor:
    """[B, N, H, D] -> [B, H, pyramid_len, D]: level l holds the means of
    consecutive blocks of p^(l-1) tokens, levels concatenated finest first."""
    b, n, h, d = x.shape
    levels = []
    for level, size in enumerate(level_sizes(config, n)):
        block = config.pooling**level
        levels.append(x[:, : size * block].reshape(b, size, block, h, d).mean(dim=2))
    return torch.cat(levels, dim=1).transpose(1, 2)


def rope_positions(config: LayerConfig, seq_len: int, device: torch.device) -> torch.Tensor:
    """[pyramid_len]: the base position each pyramid entry is rotated at, the last one it covers
    ((i + 1) * c - 1 for entry i of a level of block c; docs/semantics.md, "Rotary positions")."""
    levels = []
    for level, size in enumerate(level_sizes(config, seq_len)):
        block = config.pooling**level
        levels.append((torch.arange(size, device=device) + 1) * block - 1)
    return torch.cat(levels)


def rotate_entries(x_sel: torch.Tensor, indices: torch.Tensor, rope: tuple, config: LayerConfig,
                   seq_len: int) -> torch.Tensor:
    """x_sel [B, H, S, D] of the entries at pyramid indices [B, H, S], rotated with the rotate-half tables
    rope = (cos, sin), each [N, D], at their rope_positions."""
    cos, sin = (table.to(x_sel.dtype)[rope_positions(config, seq_len, x_sel.device)[indices]] for table in rope)
    half = x_sel.shape[-1] // 2
    partner = torch.cat((-x_sel[..., half:], x_sel[..., :half]), dim=-1)
    return x_sel * cos + partner * sin


def gather_rows(table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """table [B, H, P, D], indices [B, H, S] -> [B, H, S, D]."""
    return torch.gather(table, 2, indices.unsqueeze(-1).expand(-1, -1, -1, table.shape[-1]))


def scatter_levels(o_sel: torch.Tensor, indices: torch.Tensor, config: LayerConfig, seq_len: int) -> torch.Tensor:
    """o_sel [B, H, S, D] at pyramid indices [B, H, S] -> [B, H, N, D]: the output
    of entry i of level l is added to base positions [i*c + c-1, i*c + 2c-2]."""
    b, h, _, d = o_sel.shape
    out = o_sel.new_zeros(b, h, seq_len, d)
    offset = 0
    for level, size in enumerate(level_sizes(config, seq_len)):
        block = config.pooling**level
        in_level = (indices >= offset) & (indices < offset + size)
        # Entries of other levels land in a spare row past the level's end.
        rows = torch.where(in_level, indices - offset, torch.full_like(indices, size))
        per_entry = o_sel.new_zeros(b, h, size + 1, d)
        per_entry = per_entry.scatter_add(2, rows.unsqueeze(-1).expand(-1, -1, -1, d), o_sel)[:, :, :size]
        spread = per_entry.repeat_interleave(block, dim=2)
        shifted = F.pad(spread, (0, 0, block - 1, 0))[:, :, :seq_len]
        out = out + F.pad(shifted, (0, 0, 0, seq_len - shifted.shape[2]))
        offset += size
    return out


def reference_layer(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, config: LayerConfig,
    rope: tuple | None = None,
) -> torch.Tensor:
    """q [B, N, H, D], k and v [B, N, Hkv, D], indices [B, Hkv, S] -> [B, N, H, D]; rope: None, or the
    rotate-half tables (cos, sin) [N, D] that the kept q and k entries are rotated with."""
    n, heads, kv_heads = q.shape[1], q.shape[2], k.shape[2]
    group = heads // kv_heads
    kv_indices = indices.long()
    q_indices = kv_indices.repeat_interleave(group, dim=1)
    q_sel = gather_rows(pyramid(q, config), q_indices)
    k_sel = gather_rows(pyramid(k, config), kv_indices)
    if rope is not None:
        q_sel = rotate_entries(q_sel, q_indices, rope, config, n)
        k_sel = rotate_entries(k_sel, kv_indices, rope, config, n)
    k_sel = k_sel.repeat_interleave(group, dim=1)
    v_sel = gather_rows(pyramid(v, config), kv_indices).repeat_interleave(group, dim=1)
    o_sel = F.scaled_dot_product_attention(q_sel, k_sel, v_sel, is_causal=True)
    return scatter_levels(o_sel, q_indices, config, n).transpose(1, 2)
