"""Rotary tables under context parallelism.

Every rank passes rope = (cos, sin) as either the FULL tables (all N positions, the same on every rank) or
its SHARD of them (its own N/W positions, rank r rows [r * N/W, (r + 1) * N/W)); the sequence is the
second-to-last dimension ([N, R], [B, N, R] or [1, N, R] with R = D or D/2, as lighthouse_attention takes
them). Both are accepted, told apart by their length (N or N/W; with W = 1 they are the same).

The Lighthouse layer after the exchange sees all N positions, so it needs the full tables: shards are
all-gathered (N * D float32 per table). The dense layer rotates q and k before the exchange, so it needs
only this rank's rows: full tables are sliced.
"""

import torch
import torch.distributed._functional_collectives as funcol


def check(rope, local_len, world):
    """ValueError naming rope, rope_cos or rope_sin unless rope is None or a pair of tables whose sequence
    dimension has N = world * local_len (full) or local_len (shard) rows, both tables the same shape."""
    if rope is None:
        return
    if not isinstance(rope, (tuple, list)) or len(rope) != 2:
        raise ValueError(f"lighthouse: rope: expected a pair (cos, sin) of tables, got {type(rope).__name__}")
    for name, table in zip(("rope_cos", "rope_sin"), rope):
        if not isinstance(table, torch.Tensor) or table.dim() not in (2, 3):
            got = f"{table.dim()} dimensions {list(table.shape)}" if isinstance(table, torch.Tensor) else table
            raise ValueError(f"lighthouse: {name}: expected a tensor [N, R], [B, N, R] or [1, N, R], got {got}")
        if table.shape[-2] not in (local_len, world * local_len):
            raise ValueError(
                f"lighthouse: {name}.shape[-2]: expected the full length N = {world * local_len} (the same table on "
                f"every rank) or this rank's shard length N / W = {local_len}, got {table.shape[-2]}"
            )
    if rope[0].shape != rope[1].shape:
        raise ValueError(
            f"lighthouse: rope_sin.shape: expected the shape of rope_cos {list(rope[0].shape)}, "
            f"got {list(rope[1].shape)}"
        )


def full_tables(rope, local_len, world, group):
    """The tables over all N positions: as given when full, else the shards of all ranks gathered in rank order."""
    if rope is None or rope[0].shape[-2] == world * local_len:
        return rope
    return tuple(funcol.wait_tensor(funcol.all_gather_tensor(t.contiguous(), t.dim() - 2, group)) for t in rope)


def local_tables(rope, local_len, world, rank):
    """This rank's rows [rank * local_len, (rank + 1) * local_len) of the tables."""
    if rope is None or rope[0].shape[-2] == local_len:
        return rope
    return tuple(t.narrow(-2, rank * local_len, local_len) for t in rope)
