"""The benchmark's per-stage pipeline must be the layer's own computation, or its breakdown means nothing."""

from dataclasses import replace

import pytest
import torch

import lighthouse
from lighthouse.bench.check import check_point
from lighthouse.bench.methods import make_inputs, rope_tables
from lighthouse.bench.points import LayerConfig, Point
from lighthouse.bench.stages import STAGES, build_state, stage_measurables


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("scorer", ["norm", "dilated"])
def test_stages_reproduce_the_layer(scorer, rope):
    point = Point(2048, 1, 2, 1, 16, "float32", LayerConfig(levels=3, pooling=4, topk=128, tile_budget=32,
                                                             scorer=scorer, rope=rope))
    x = make_inputs(point, torch.device("cpu"), seed=5, heads_first=False, grad=True)
    state = build_state(point, x)
    assert (state.rope is not None) == rope
    out = lighthouse.lighthouse_attention(x.q, x.k, x.v, **point.config.kwargs(),
                                          rope=rope_tables(point, torch.device("cpu")))
    grads = torch.autograd.grad(out, (x.q, x.k, x.v), x.grad_out)
    assert torch.equal(state.out, out)
    for stage_grad, layer_grad in zip(state.grads, grads):
        assert torch.equal(stage_grad, layer_grad)

    measurables = stage_measurables(point, [state])
    assert set(measurables) == set(STAGES)
    for name, measurable in measurables.items():
        result = measurable.run(measurable.prepare(0))
        assert result is not None, name
        assert (measurable.flops is None) != (measurable.bytes is None), name
    assert torch.equal(measurables["scatter"].run(state), out)


def test_check_passes_for_the_dilated_scorer():
    point = Point(2048, 1, 2, 1, 16, "float32", LayerConfig(levels=3, pooling=4, topk=128, tile_budget=32,
                                                             scorer="dilated"))
    result = check_point(point, torch.device("cpu"), seed=1)
    assert result["status"] == "passed", result["reason"]
    assert result["selection_match"] is None and result["selection_required"] is False


def test_rope_stage_bytes_count_the_table_rows():
    plain = Point(2048, 1, 2, 1, 16, "float32", LayerConfig(levels=3, pooling=4, topk=128, tile_budget=32))
    rotated = replace(plain, config=replace(plain.config, rope=True))
    x = make_inputs(plain, torch.device("cpu"), seed=5, heads_first=False, grad=False)
    without, with_rope = (stage_measurables(p, [build_state(p, x)]) for p in (plain, rotated))
    for name in ("gather", "gather_backward"):
        extra = with_rope[name].bytes - without[name].bytes
        # cos and sin rows (16 fp32 each) at distinct positions: at least one, at most one per kept entry.
        assert 0 < extra <= 2 * 16 * 4 * build_state(plain, x).indices.numel(), name
        assert extra % (2 * 16 * 4) == 0, name
    assert with_rope["scatter"].bytes == without["scatter"].bytes
