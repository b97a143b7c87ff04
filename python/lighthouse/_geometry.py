"""Pyramid geometry and configuration checks in Python, mirroring the C++ core (config.h, geometry.h).

The fake (meta) kernels and lighthouse_attention's shape-only decisions (dense fallback, output sizes) need
these numbers without running a kernel; they work on plain ints and on the symbolic sizes of torch.compile.
"""

from dataclasses import dataclass

MAX_LEVELS = 16


def _fail(argument: str, expected: str, actual) -> None:
    raise ValueError(f"lighthouse: {argument}: expected {expected}, got {actual}")


def validate_config(levels: int, pooling: int, topk: int, tile_budget: int) -> None:
    """Raises ValueError naming the first invalid field, as lighthouse::validate(Config) does."""
    if not 2 <= levels <= MAX_LEVELS:
        _fail("levels", f"an integer in [2, {MAX_LEVELS}]", levels)
    if pooling < 2 or pooling & (pooling - 1):
        _fail("pooling", "a power of two >= 2", pooling)
    if pooling ** (levels - 1) > 2**40:
        _fail("pooling^(levels-1)", "at most 2^40", "a larger value")
    if tile_budget < 2 or tile_budget % 2:
        _fail("tile_budget", "an even integer >= 2", tile_budget)
    if topk <= 0 or topk % tile_budget:
        _fail("topk", f"a positive multiple of tile_budget ({tile_budget})", topk)


def min_seq_len(levels: int, pooling: int, topk: int, tile_budget: int) -> int:
    """Shortest sequence every selection tile accepts: topk * pooling^(levels-1)."""
    validate_config(levels, pooling, topk, tile_budget)
    return topk * pooling ** (levels - 1)


@dataclass(frozen=True)
class Geometry:
    seq_len: int
    levels: int
    pooling: int
    pyramid_len: int  # entries of all levels together
    coarsest: int  # n_L: entries of the coarsest level L
    kept: int  # S: entries the selection keeps per (batch, KV head)


def geometry(seq_len, levels: int, pooling: int, topk: int, tile_budget: int) -> Geometry:
    """Validated geometry for seq_len; raises ValueError naming seq_len when it is too short."""
    shortest = min_seq_len(levels, pooling, topk, tile_budget)
    if seq_len < shortest:
        _fail(
            "seq_len",
            f"at least topk * pooling^(levels-1) = {shortest} (each selection tile needs tile_budget coarsest entries)",
            seq_len,
        )
    if seq_len + seq_len // (pooling - 1) >= 2**31 - 1:
        _fail("seq_len", "a pyramid of fewer than 2^31 entries (int32 indices)", seq_len)
    coarsest_block = pooling ** (levels - 1)
    pyramid_len = sum(seq_len // pooling**level for level in range(levels))
    coarsest = seq_len // coarsest_block
    tail = seq_len - coarsest * coarsest_block
    kept = coarsest + (levels - 1) * pooling * topk + tail
    return Geometry(seq_len=seq_len, levels=levels, pooling=pooling, pyramid_len=pyramid_len, coarsest=coarsest, kept=kept)


def shrinks(seq_len, levels: int, pooling: int, topk: int, tile_budget: int) -> bool:
    """True when the configuration is valid for seq_len and keeps fewer than seq_len entries."""
    if seq_len < min_seq_len(levels, pooling, topk, tile_budget):
        return False
    return geometry(seq_len, levels, pooling, topk, tile_budget).kept < seq_len
