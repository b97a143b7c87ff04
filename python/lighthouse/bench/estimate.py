"""Work and size arithmetic: attention FLOPs, bytes of tensors, estimated
time and memory of a measurement, and the skip decisions built on them.

Everything here is plain arithmetic on a Point, so the sweep can decide what
to skip before it allocates or launches anything. Estimates err on the large
side: skipping a point that would have fit costs a table cell, running one
that does not fit costs the whole run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lighthouse.bench.points import Point, kept_entries, pyramid_len

# Backward of attention does 2.5x the forward's matmul work (five GEMMs vs two).
BACKWARD_FLOP_RATIO = 2.5
# Fraction of the calibrated matmul throughput an attention kernel reaches:
# fused kernels (flash, cuDNN, Lighthouse's inner SDPA) vs the math backend,
# which materialises the score matrix.
FUSED_EFFICIENCY = 0.35
MATH_EFFICIENCY = 0.1
# Margin applied to every memory estimate.
MEMORY_MARGIN = 1.3


def causal_attention_flops(seq: int, batch: int, heads: int, head_dim: int) -> float:
    """Forward FLOPs of causal attention: 2 GEMMs of 2*S*S*D each, halved by the mask."""
    return 2.0 * 2.0 * seq * seq * head_dim * heads * batch / 2.0


def fwd_bwd_flops(forward: float) -> float:
    return forward * (1.0 + BACKWARD_FLOP_RATIO)


@dataclass(frozen=True)
class Throughput:
    """Calibrated device speed: dense matmul FLOP/s in the point's dtype and copy bytes/s."""

    flops_per_s: float
    bytes_per_s: float


def input_bytes(point: Point) -> int:
    """q, k, v of one input set."""
    return point.elem_bytes * point.batch * point.seq_len * point.head_dim * (point.heads + 2 * point.kv_heads)


def output_bytes(point: Point) -> int:
    """One [B, N, H, D] tensor: the output, or the upstream gradient."""
    return point.elem_bytes * point.batch * point.seq_len * point.heads * point.head_dim


def dense_memory(point: Point, backward: bool, math_backend: bool) -> int:
    """Peak bytes of dense causal SDPA on the full sequence, inputs included."""
    n, b, h = point.seq_len, point.batch, point.heads
    total = input_bytes(point) + output_bytes(point) + 4 * b * h * n
    if backward:
        total += output_bytes(point) + input_bytes(point) + 4 * b * n * h * point.head_dim
    if math_backend:
        total += 4 * b * h * n * n * (4 if backward else 2)
    return int(total * MEMORY_MARGIN)


def lighthouse_memory(point: Point, backward: bool, math_backend: bool) -> int:
    """Peak bytes of the Lighthouse layer, inputs included."""
    c, b = point.config, point.batch
    s, pyr = kept_entries(c, point.seq_len), pyramid_len(c, point.seq_len)
    selected = point.elem_bytes * b * s * point.head_dim * (point.heads + 2 * point.kv_heads)
    o_sel = point.elem_bytes * b * s * point.heads * point.head_dim
    bookkeeping = 4 * b * point.kv_heads * (2 * pyr + pyr + s) + 4 * b * point.heads * s
    total = input_bytes(point) + output_bytes(point) + selected + o_sel + bookkeeping
    if backward:
        total += output_bytes(point) + input_bytes(point) + selected + o_sel + 4 * b * s * point.heads * point.head_dim
    if math_backend:
        total += 4 * b * point.heads * s * s * (4 if backward else 2)
    return int(total * MEMORY_MARGIN)


def dense_seconds(point: Point, backward: bool, math_backend: bool, speed: Throughput) -> float:
    """Estimated time of one dense SDPA call on the full sequence."""
    flops = causal_attention_flops(point.seq_len, point.batch, point.heads, point.head_dim)
    flops = fwd_bwd_flops(flops) if backward else flops
    efficiency = MATH_EFFICIENCY if math_backend else FUSED_EFFICIENCY
    return flops / (speed.flops_per_s * efficiency)


def lighthouse_seconds(point: Point, backward: bool, math_backend: bool, speed: Throughput) -> float:
    """Estimated time of one Lighthouse call: attention on S plus streaming the
    full-length tensors a few times (pooling, gather, scatter and their backward)."""
    s = kept_entries(point.config, point.seq_len)
    flops = causal_attention_flops(s, point.batch, point.heads, point.head_dim)
    flops = fwd_bwd_flops(flops) if backward else flops
    efficiency = MATH_EFFICIENCY if math_backend else FUSED_EFFICIENCY
    streamed = (input_bytes(point) + output_bytes(point)) * (6 if backward else 3)
    return flops / (speed.flops_per_s * efficiency) + streamed / speed.bytes_per_s


@dataclass(frozen=True)
class Plan:
    """Outcome of budgeting one measurement: how many repeats, or why not at all."""

    repeats: int
    skip: str | None = None


def plan_repeats(
    seconds_per_call: float,
    *,
    warmup: int,
    repeats: int,
    min_repeats: int,
    budget_s: float,
    remaining_s: float,
) -> Plan:
    """Fits warmup + repeats calls into the per-measurement budget (and the run's
    remaining time), trimming repeats down to min_repeats before giving up."""
    if not math.isfinite(seconds_per_call) or seconds_per_call < 0:
        raise ValueError(f"seconds_per_call must be finite and >= 0, got {seconds_per_call}")
    limit = min(budget_s, remaining_s)
    fitting = math.floor(limit / seconds_per_call) - warmup if seconds_per_call > 0 else repeats
    if fitting >= min_repeats:
        return Plan(repeats=min(repeats, fitting))
    needed = seconds_per_call * (warmup + min_repeats)
    which = "the per-measurement budget" if budget_s <= remaining_s else "the run's remaining time"
    return Plan(
        repeats=0,
        skip=f"skipped: estimated {needed:.1f} s for {warmup} warm-up + {min_repeats} repeats "
        f"> {limit:.1f} s ({which})",
    )


def memory_skip(needed: int, available: int) -> str | None:
    if needed <= available:
        return None
    return f"skipped: needs ~{needed / 2**30:.2f} GiB, {available / 2**30:.2f} GiB available"
