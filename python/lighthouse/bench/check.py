"""The check every point passes before it is timed: on a slice of the problem
(batch 1, one KV head and its group of query heads, the full sequence length,
so the selection geometry is the timed one) the layer must

* select exactly what the CPU operators select from the same values in fp32
  (norm scorer; the dilated scorer's scores come out of SDPA, whose rounding
  differs between backends, and would cost O(N^2) on the CPU, so its selection
  is not compared), and
* produce an output and q/k/v gradients within a dtype-dependent relative
  error of the plain-PyTorch reference in fp32 (reference.py), given the
  layer's own selection.

A failed check marks the point in every output; it does not stop the sweep.
"""

from __future__ import annotations

import torch

import lighthouse
from lighthouse import ops
from lighthouse.bench.methods import TORCH_DTYPES, Inputs, layer_kwargs
from lighthouse.bench.points import Point
from lighthouse.bench.reference import reference_layer
from lighthouse.bench.stages import pool_score_call

# Relative Frobenius error allowed against the fp32 reference, by dtype of the
# timed run: fp32 differs only in summation order; the half types round the
# pooled vectors, the attention inputs and its output.
TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 2e-2}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in fp64; inf when anything is not finite."""
    actual, expected = actual.double(), expected.double()
    if not (torch.isfinite(actual).all() and torch.isfinite(expected).all()):
        return float("inf")
    scale = expected.norm().item()
    return (actual - expected).norm().item() / (scale if scale > 0 else 1.0)


def _select(point: Point, x: Inputs, rope: tuple | None) -> torch.Tensor:
    scores_qk, scores_kq, *_ = pool_score_call(point, rope)(x)
    indices, _ = ops.select(scores_qk, scores_kq, point.seq_len, **point.config.stage_kwargs())
    return indices


def check_point(point: Point, device: torch.device, seed: int) -> dict:
    group = point.heads // point.kv_heads
    generator = torch.Generator(device=device).manual_seed(seed)
    shape = (1, point.seq_len, group, point.head_dim)
    dtype = TORCH_DTYPES[point.dtype]
    q, grad_out = (torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(2))
    k, v = (torch.randn(shape[:2] + (1, shape[3]), generator=generator, device=device, dtype=dtype) for _ in range(2))
    sliced = Inputs(q, k, v, grad_out)

    kwargs = layer_kwargs(point, device)
    selection_required = point.config.scorer == "norm"  # which ignores the rotary tables
    selection_match = None
    with torch.no_grad():
        indices = _select(point, sliced, kwargs["rope"])
        if selection_required:
            cpu_indices = _select(point, Inputs(*(t.detach().float().cpu() for t in (q, k, v, grad_out))), None)
            selection_match = (indices.cpu() == cpu_indices).double().mean().item()

    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = lighthouse.lighthouse_attention(*leaves, **kwargs)
    grads = torch.autograd.grad(out, leaves, grad_out)

    ref_leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref_out = reference_layer(*ref_leaves, indices, point.config, rope=kwargs["rope"])
    ref_grads = torch.autograd.grad(ref_out, ref_leaves, grad_out.float())

    errors = {"out": relative_error(out, ref_out)}
    for name, actual, expected in zip(("grad_q", "grad_k", "grad_v"), grads, ref_grads):
        errors[name] = relative_error(actual, expected)
    tolerance = TOLERANCE[point.dtype]
    problems = [f"{name} relative error {err:.3g} > {tolerance:g}" for name, err in errors.items() if not err <= tolerance]
    if selection_required and selection_match != 1.0:
        problems.insert(0, f"selection differs from the CPU operators ({selection_match:.4%} of indices equal)")
    return {
        "status": "failed" if problems else "passed",
        "reason": "; ".join(problems) or None,
        "slice": f"batch 0, KV head 0 and its {group} query head(s), N={point.seq_len}",
        "reference": "plain-PyTorch layer in float32 on " + device.type,
        "selection_reference": "CPU operators in float32" if selection_required else None,
        "selection_match": selection_match,
        "selection_required": selection_required,
        "relative_errors": {name: (err if err != float("inf") else None) for name, err in errors.items()},
        "tolerance": tolerance,
    }
