"""The timed callables: the Lighthouse layer, dense causal SDPA per backend,
and each Lighthouse stage on its own. Each is a Measurable: a `run` taking the
result of an untimed `prepare(i)` (which picks input set i of a rotation, or
builds the state a backward consumes), plus the work it does (FLOPs of the
attention part, bytes of every tensor read or written) for rates."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import lighthouse

from lighthouse.bench.estimate import BACKWARD_FLOP_RATIO, causal_attention_flops
from lighthouse.bench.points import Point
from lighthouse.rope import rotary_tables

# Dense baselines: method name -> SDPA backend. CUDA runs cuDNN and flash; the
# CPU runs the math backend.
DENSE_BACKENDS = {
    "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa_flash": SDPBackend.FLASH_ATTENTION,
    "sdpa_math": SDPBackend.MATH,
}

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_dense_methods(device: torch.device) -> tuple[str, ...]:
    return ("sdpa_cudnn", "sdpa_flash") if device.type == "cuda" else ("sdpa_math",)


@dataclass
class Measurable:
    run: Callable[[Any], Any]
    prepare: Callable[[int], Any]
    context: Callable[[], ContextManager] = contextlib.nullcontext
    flops: float | None = None
    bytes: int | None = None


@dataclass
class Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grad_out: torch.Tensor


def make_inputs(point: Point, device: torch.device, seed: int, *, heads_first: bool, grad: bool) -> Inputs:
    """Standard-normal q, k, v and upstream gradient. Lighthouse takes [B, N, H, D];
    dense SDPA gets [B, H, N, D], its native layout, so it pays no transpose."""
    generator = torch.Generator(device=device).manual_seed(seed)
    dtype = TORCH_DTYPES[point.dtype]

    def tensor(heads: int) -> torch.Tensor:
        shape = (point.batch, heads, point.seq_len, point.head_dim) if heads_first else (
            point.batch, point.seq_len, heads, point.head_dim)
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    q, k, v = tensor(point.heads), tensor(point.kv_heads), tensor(point.kv_heads)
    for t in (q, k, v):
        t.requires_grad_(grad)
    return Inputs(q, k, v, tensor(point.heads))


def rope_tables(point: Point, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The rotary tables of a point with rope on, else None: float32 cos and sin [N, D] of the rotate-half
    pairs (j, j + D/2), base 10000, one table for every batch row, as a model computes them once per step."""
    return rotary_tables(point.seq_len, point.head_dim, device=device) if point.config.rope else None


def layer_kwargs(point: Point, device: torch.device) -> dict:
    """Keyword arguments of the timed and checked layer: the point's configuration and rotary tables, and
    fallback="error" so that the dense fallback is never measured by accident (the sweep only measures
    configurations that shrink)."""
    return {**point.config.kwargs(), "fallback": "error", "rope": rope_tables(point, device)}


def tensor_bytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _rotation(sets: list[Inputs]) -> Callable[[int], Inputs]:
    return lambda index: sets[index % len(sets)]


def lighthouse_measurable(point: Point, sets: list[Inputs], backward: bool) -> Measurable:
    """The whole layer; the forward is timed with inputs that require grad, as in training."""
    attention = lighthouse.lighthouse_attention
    kwargs = layer_kwargs(point, sets[0].q.device)
    if backward:
        def run(x: Inputs):
            out = attention(x.q, x.k, x.v, **kwargs)
            return torch.autograd.grad(out, (x.q, x.k, x.v), x.grad_out)
    else:
        def run(x: Inputs):
            return attention(x.q, x.k, x.v, **kwargs)
    return Measurable(run=run, prepare=_rotation(sets))


def dense_measurable(point: Point, sets: list[Inputs], backend: SDPBackend, backward: bool) -> Measurable:
    """Causal SDPA on the full sequence, restricted to one backend."""
    gqa = point.heads != point.kv_heads
    flops = causal_attention_flops(point.seq_len, point.batch, point.heads, point.head_dim)
    if backward:
        def run(x: Inputs):
            out = F.scaled_dot_product_attention(x.q, x.k, x.v, is_causal=True, enable_gqa=gqa)
            return torch.autograd.grad(out, (x.q, x.k, x.v), x.grad_out)
        flops *= 1.0 + BACKWARD_FLOP_RATIO
    else:
        def run(x: Inputs):
            return F.scaled_dot_product_attention(x.q, x.k, x.v, is_causal=True, enable_gqa=gqa)
    return Measurable(run=run, prepare=_rotation(sets), context=lambda: sdpa_kernel(backend), flops=flops)
