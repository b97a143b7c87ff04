"""The "fidelity vs fp32" column: how far the layer run in a 16-bit dtype (bf16, fp16) lands from the same layer
run in fp32 on the same inputs. Each run makes its own selection. The norm scorer computes its scores in fp32
from the same values in both runs, so the selections are the same and the distance is the rounding of the pooled
tensors, of the attention and of the output; the dilated scorer's scores come out of attention in the run's
dtype, so its selections may differ as well (selection_match: the fraction of places in the causally ordered
index lists where the two runs agree).

Measured on the check's slice (batch 0, KV head 0 and its query heads, the full sequence length) with the inputs
drawn in the point's dtype and widened exactly to fp32 for the reference run. Not measured for fp32 points.
"""

from __future__ import annotations

import torch

import lighthouse
from lighthouse import ops
from lighthouse.bench.check import relative_error
from lighthouse.bench.methods import TORCH_DTYPES, Inputs, layer_kwargs
from lighthouse.bench.points import Point
from lighthouse.bench.stages import pool_score_call


def _selection(point: Point, rope: tuple | None, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores_qk, scores_kq, *_ = pool_score_call(point, rope)(Inputs(q, k, v, q))
    return ops.select(scores_qk, scores_kq, point.seq_len, **point.config.stage_kwargs())[0]


def measure_fidelity(point: Point, device: torch.device, seed: int) -> dict:
    """{"status": "ok", "relative_l2", "selection_match", "reference", "slice"}; status "skipped" for fp32 points
    and "failed" when an output is not finite, each with the reason."""
    if point.dtype == "float32":
        return {"status": "skipped", "reason": "skipped: the point runs in float32"}
    group = point.heads // point.kv_heads
    generator = torch.Generator(device=device).manual_seed(seed)
    dtype = TORCH_DTYPES[point.dtype]
    q = torch.randn(1, point.seq_len, group, point.head_dim, generator=generator, device=device, dtype=dtype)
    k, v = (torch.randn(1, point.seq_len, 1, point.head_dim, generator=generator, device=device, dtype=dtype)
            for _ in range(2))
    wide = [t.float() for t in (q, k, v)]
    kwargs = layer_kwargs(point, device)
    with torch.no_grad():
        out = lighthouse.lighthouse_attention(q, k, v, **kwargs)
        reference = lighthouse.lighthouse_attention(*wide, **kwargs)
        rope = kwargs["rope"]
        selection_match = (_selection(point, rope, q, k, v) == _selection(point, rope, *wide)).double().mean().item()
    distance = relative_error(out, reference)
    if distance == float("inf"):
        return {"status": "failed", "reason": f"failed: a non-finite output in {point.dtype} or float32"}
    return {
        "status": "ok",
        "reason": None,
        "relative_l2": distance,
        "selection_match": selection_match,
        "reference": f"the same layer in float32 on the same (exactly widened) inputs, on {device.type}",
        "slice": f"batch 0, KV head 0 and its {group} query head(s), N={point.seq_len}",
    }
