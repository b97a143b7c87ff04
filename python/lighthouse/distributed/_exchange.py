"""The all-to-all exchanges between sequence shards and head shards (differentiable, exact data movement).

torch.distributed's functional all_to_all_single with autograd splits dim 0 of its input into W equal parts,
sends part j to rank j and concatenates what it receives in rank order; its backward is the reverse
all-to-all. Every other step of sequence_to_heads and heads_to_sequence is a reshape, permute, copy or split,
so they move bits without changing them, forward and backward; copy_heads' backward adds up the copies. The
functional collectives trace under torch.compile.
"""

import torch
import torch.distributed._functional_collectives as funcol


def _all_to_all(x, group):
    return funcol.wait_tensor(funcol.all_to_all_single_autograd(x, None, None, group))


def copy_heads(x, copies):
    """[B, n, h, D] -> [B, n, h * copies, D], each head repeated copies times in a row. Its gradient sums the
    copies (a plain reduction: deterministic)."""
    if copies == 1:
        return x
    batch, length, heads, dim = x.shape
    return x.unsqueeze(3).expand(batch, length, heads, copies, dim).reshape(batch, length, heads * copies, dim)


def sequence_to_heads(tensors, group, world):
    """Sequence shards -> head shards, one all-to-all for all tensors.

    Each tensor is [B, n, h_i, D] (this rank's n positions of all h_i heads, h_i divisible by W); returns for
    each [B, W * n, h_i / W, D]: all positions, in rank order, of this rank's h_i / W heads (heads
    [r * h_i/W, (r + 1) * h_i/W) on rank r).
    """
    batch, length, _, dim = tensors[0].shape
    widths = [t.shape[2] // world for t in tensors]
    # [W, B, n, sum h_i/W, D]: part j holds the heads rank j runs, in one contiguous block.
    send = torch.cat(
        [t.reshape(batch, length, world, w, dim).permute(2, 0, 1, 3, 4) for t, w in zip(tensors, widths)], dim=3
    ).contiguous()
    received = _all_to_all(send, group)  # part j: positions of rank j
    return [
        part.permute(1, 0, 2, 3, 4).reshape(batch, world * length, w, dim)
        for part, w in zip(received.split(widths, dim=3), widths)
    ]


def heads_to_sequence(x, group, world):
    """Head shards -> sequence shards, the inverse of sequence_to_heads for one tensor.

    x is [B, N, h, D] (all N positions of this rank's h heads); returns [B, N / W, W * h, D], this rank's
    positions of all heads, heads of rank j at [j * h, (j + 1) * h).
    """
    batch, seq_len, heads, dim = x.shape
    length = seq_len // world
    send = x.reshape(batch, world, length, heads, dim).permute(1, 0, 2, 3, 4).contiguous()
    received = _all_to_all(send, group)  # part j: this rank's positions of rank j's heads
    return received.permute(1, 2, 0, 3, 4).reshape(batch, length, world * heads, dim)
