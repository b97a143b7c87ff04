"""Timing of one callable: warm-up, repeats, and summary statistics.

On CUDA each repeat is bracketed by a pair of CUDA events recorded on the
current stream, so host launch overhead overlaps earlier work the way it does
in training; on the CPU it is bracketed by time.perf_counter. A `prepare`
step runs before each repeat outside the timed region (e.g. the forward pass
whose graph a timed backward consumes, or picking the next input set).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch

# Nominal cache size assumed on the CPU, where no portable query exists.
CPU_CACHE_BYTES = 32 * 2**20
# At most this many input sets are kept for rotation.
MAX_INPUT_SETS = 4


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    weight = position - low
    return sorted_values[low] * (1.0 - weight) + sorted_values[high] * weight


def summarize(samples_ms: list[float]) -> dict:
    """Median and spread (min, max, quartiles, IQR) of timing samples in ms."""
    if not samples_ms:
        raise ValueError("summarize needs at least one sample")
    if not all(math.isfinite(s) and s >= 0.0 for s in samples_ms):
        raise ValueError(f"timing samples must be finite and non-negative: {samples_ms}")
    ordered = sorted(samples_ms)
    p25, p75 = percentile(ordered, 0.25), percentile(ordered, 0.75)
    return {
        "median": percentile(ordered, 0.5),
        "min": ordered[0],
        "max": ordered[-1],
        "p25": p25,
        "p75": p75,
        "iqr": p75 - p25,
        "repeats": len(ordered),
        "samples": list(samples_ms),
    }


def cache_bytes(device: torch.device) -> int:
    """Last-level cache the inputs compete for: the GPU's L2, or a nominal CPU size."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)) or CPU_CACHE_BYTES
    return CPU_CACHE_BYTES


def input_sets(bytes_per_set: int, cache: int, max_sets: int = MAX_INPUT_SETS) -> int:
    """How many distinct input sets to rotate through so that consecutive
    repeats do not find their inputs in cache: enough sets to overflow twice
    the cache, at most max_sets; one when a set alone exceeds the cache."""
    if bytes_per_set <= 0:
        raise ValueError(f"bytes_per_set must be positive, got {bytes_per_set}")
    if bytes_per_set >= cache:
        return 1
    return max(1, min(max_sets, math.ceil(2 * cache / bytes_per_set)))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    run: Callable[[Any], Any],
    *,
    device: torch.device,
    warmup: int,
    repeats: int,
    prepare: Callable[[int], Any] = lambda index: None,
) -> list[float]:
    """Runs `run(prepare(i))` warmup + repeats times; returns the repeats' times in ms."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for index in range(warmup):
        run(prepare(index))
    synchronize(device)
    if device.type == "cuda":
        return _measure_cuda(run, prepare, warmup, repeats)
    samples = []
    for index in range(warmup, warmup + repeats):
        argument = prepare(index)
        start = time.perf_counter()
        run(argument)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _measure_cuda(run, prepare, first: int, repeats: int) -> list[float]:
    events = []
    for index in range(first, first + repeats):
        argument = prepare(index)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(argument)
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]

