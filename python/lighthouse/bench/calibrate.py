"""Measures the device's matmul throughput and copy bandwidth once per dtype,
so time estimates (and hence skip decisions) follow the machine the sweep runs
on rather than a table of guesses."""

from __future__ import annotations

import statistics

import torch

from lighthouse.bench.estimate import Throughput
from lighthouse.bench.timing import measure

_MATMUL_SIZE = {"cuda": 4096, "cpu": 512}
_COPY_BYTES = {"cuda": 256 * 2**20, "cpu": 32 * 2**20}


def calibrate(device: torch.device, dtype: torch.dtype) -> Throughput:
    n = _MATMUL_SIZE[device.type]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    matmul_ms = statistics.median(measure(lambda _: a @ b, device=device, warmup=2, repeats=5))
    source = torch.empty(_COPY_BYTES[device.type] // 4, device=device, dtype=torch.float32)
    target = torch.empty_like(source)
    copy_ms = statistics.median(measure(lambda _: target.copy_(source), device=device, warmup=2, repeats=5))
    return Throughput(
        flops_per_s=2.0 * n**3 / (max(matmul_ms, 1e-6) * 1e-3),
        bytes_per_s=2.0 * source.numel() * 4 / (max(copy_ms, 1e-6) * 1e-3),
    )
