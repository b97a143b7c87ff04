"""Per-stage timing of the Lighthouse layer. Every stage runs on its own with
inputs produced once, untimed, by the stages before it, so a stage's time
excludes its neighbours'. The attention stage is the call the layer makes
(F.scaled_dot_product_attention on the gathered [B, H, S, D] views, default
backend dispatch); its backward is timed through autograd with the forward
graph built in the untimed prepare step. With rope on (LayerConfig.rope), gather
and gather_backward get the layer's rotary tables, and the dilated scorer rotates
q and k as the layer does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lighthouse.bench.estimate import BACKWARD_FLOP_RATIO, causal_attention_flops
from lighthouse import ops
from lighthouse.attention import dilated_base_scores
from lighthouse.bench.methods import Inputs, Measurable, rope_tables, tensor_bytes
from lighthouse.bench.points import Point, kept_entries
from lighthouse.bench.reference import rope_positions
from lighthouse.rope import apply_rope

FORWARD_STAGES = ("pool_score", "select", "gather", "attention", "scatter")
BACKWARD_STAGES = ("scatter_backward", "attention_backward", "gather_backward")
STAGES = FORWARD_STAGES + BACKWARD_STAGES


@dataclass
class StageState:
    """One input set and every intermediate of the layer computed from it."""

    x: Inputs
    rope: tuple | None
    scores: tuple
    pooled: tuple
    indices: torch.Tensor
    slots: torch.Tensor
    selected: tuple
    o_sel: torch.Tensor
    out: torch.Tensor
    grad_o_sel: torch.Tensor
    grad_selected: tuple
    grads: tuple


def pool_score_call(point: Point, rope: tuple | None = None):
    """The layer's fused pool_score: x -> (scores_qk, scores_kq, pooled_q, pooled_k, pooled_v); rope: the
    layer's rotary tables, which the dilated scorer's attention sees q and k rotated with."""
    kw = point.config.stage_kwargs()
    if point.config.scorer == "dilated":
        dilation = point.config.dilation

        def dilated(x: Inputs):
            q, k = (x.q, x.k) if rope is None else (apply_rope(x.q, *rope), apply_rope(x.k, *rope))
            base_qk, base_kq = dilated_base_scores(q, k, x.v, dilation=dilation)
            return ops.pool_score_pooled(x.q, x.k, x.v, **kw, base_qk=base_qk, base_kq=base_kq)

        return dilated
    return lambda x: ops.pool_score_pooled(x.q, x.k, x.v, **kw)


def _finer_levels_fraction(point: Point) -> float:
    """Share of the base rows the fused gather still reads: the blocks of the kept entries of levels
    1..L-1 (p * topk per level, a level-l entry covering pooling^(l-1) tokens) and the tail, at most all."""
    config, n = point.config, point.seq_len
    coarsest_block = config.pooling ** (config.levels - 1)
    tail = n - n // coarsest_block * coarsest_block
    finer = sum(config.pooling * config.topk * config.pooling ** (level - 1) for level in range(1, config.levels))
    return min(1.0, (finer + tail) / n)


def _attention(point: Point):
    gqa = point.heads != point.kv_heads
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)


def _rope_rows_bytes(point: Point, rope: tuple | None, indices: torch.Tensor) -> int:
    """Bytes of the table rows gather and gather_backward read: cos and sin at each distinct position a kept
    entry rotates at (a row serves every head, and gather_backward's every position the entry covers)."""
    if rope is None:
        return 0
    positions = rope_positions(point.config, point.seq_len, indices.device)[indices.long()]
    return positions.unique().numel() * point.head_dim * (rope[0].element_size() + rope[1].element_size())


def build_state(point: Point, x: Inputs) -> StageState:
    kw, n = point.config.stage_kwargs(), point.seq_len
    attention = _attention(point)
    rope = rope_tables(point, x.q.device)
    with torch.no_grad():
        scores_qk, scores_kq, *pooled = pool_score_call(point, rope)(x)
        scores = (scores_qk, scores_kq)
        indices, slots = ops.select(*scores, n, **kw)
        selected = ops.gather(x.q, x.k, x.v, indices, **kw, pooled=pooled, rope=rope)
        o_sel = attention(*selected)
        out = ops.scatter(o_sel, slots, n, **kw)
        grad_o_sel = ops.scatter_backward(x.grad_out, indices, **kw)
    leaves = [t.detach().requires_grad_() for t in selected]
    grad_selected = torch.autograd.grad(attention(*leaves), leaves, grad_o_sel)
    with torch.no_grad():
        grads = ops.gather_backward(*grad_selected, slots, n, **kw, rope=rope)
    return StageState(x, rope, scores, tuple(pooled), indices, slots, selected, o_sel, out, grad_o_sel, grad_selected,
                      grads)


def stage_measurables(point: Point, states: list[StageState]) -> dict[str, Measurable]:
    """Stage name -> Measurable; states rotate like the layer's input sets."""
    kw, n = point.config.stage_kwargs(), point.seq_len
    first = states[0]
    attention, pool_score = _attention(point), pool_score_call(point, first.rope)
    pick = lambda index: states[index % len(states)]  # noqa: E731
    rope_bytes = _rope_rows_bytes(point, first.rope, first.indices)
    flops = causal_attention_flops(kept_entries(point.config, n), point.batch, point.heads, point.head_dim)

    def no_grad(fn):
        def run(state):
            with torch.no_grad():
                return fn(state)
        return run

    def prepare_backward(index: int):
        state = pick(index)
        leaves = [t.detach().requires_grad_() for t in state.selected]
        return attention(*leaves), leaves, state.grad_o_sel

    return {
        "pool_score": Measurable(
            run=no_grad(lambda s: pool_score(s.x)), prepare=pick,
            bytes=tensor_bytes(first.x.q, first.x.k, first.x.v, *first.scores, *first.pooled)),
        "select": Measurable(
            run=no_grad(lambda s: ops.select(*s.scores, n, **kw)), prepare=pick,
            bytes=tensor_bytes(*first.scores, first.indices, first.slots)),
        "gather": Measurable(
            run=no_grad(lambda s: ops.gather(s.x.q, s.x.k, s.x.v, s.indices, **kw, pooled=s.pooled, rope=s.rope)),
            prepare=pick,
            bytes=round(tensor_bytes(first.x.q, first.x.k, first.x.v) * _finer_levels_fraction(point))
            + tensor_bytes(*first.pooled, first.indices, *first.selected) + rope_bytes),
        "attention": Measurable(run=no_grad(lambda s: attention(*s.selected)), prepare=pick, flops=flops),
        "scatter": Measurable(
            run=no_grad(lambda s: ops.scatter(s.o_sel, s.slots, n, **kw)), prepare=pick,
            bytes=tensor_bytes(first.o_sel, first.slots, first.out)),
        "scatter_backward": Measurable(
            run=no_grad(lambda s: ops.scatter_backward(s.x.grad_out, s.indices, **kw)), prepare=pick,
            bytes=tensor_bytes(first.x.grad_out, first.indices, first.grad_o_sel)),
        "attention_backward": Measurable(
            run=lambda graph: torch.autograd.grad(*graph), prepare=prepare_backward,
            flops=flops * BACKWARD_FLOP_RATIO),
        "gather_backward": Measurable(
            run=no_grad(lambda s: ops.gather_backward(*s.grad_selected, s.slots, n, **kw, rope=s.rope)), prepare=pick,
            bytes=tensor_bytes(*first.grad_selected, first.slots, *first.grads) + rope_bytes),
    }
