"""The benchmark's plain-PyTorch reference layer and its pre-timing check."""

import math

import pytest
import torch

import lighthouse
from lighthouse.bench import check
from lighthouse.bench.points import LayerConfig, Point
from lighthouse.bench.reference import reference_layer


def test_reference_layer_reproduces_the_golden_vectors(golden):
    case, t = golden
    config = LayerConfig(levels=case["levels"], pooling=case["pooling_factor"], topk=case["topk"])
    q, k, v = (t[name].clone().requires_grad_() for name in "qkv")
    out = reference_layer(q, k, v, t["indices"], config)
    grads = torch.autograd.grad(out, (q, k, v), t["grad_out"].transpose(1, 2))
    assert check.relative_error(out, t["out"].transpose(1, 2)) < 1e-5
    for name, grad in zip(("grad_q", "grad_k", "grad_v"), grads):
        assert check.relative_error(grad, t[name]) < 1e-5, name


def test_relative_error_never_passes_nan_or_inf():
    good = torch.ones(4)
    assert check.relative_error(good, good) == 0.0
    assert check.relative_error(torch.tensor([1.0, math.nan]), good[:2]) == math.inf
    assert check.relative_error(torch.tensor([1.0, math.inf]), good[:2]) == math.inf


POINT = Point(2048, 1, 2, 1, 32, "float32", LayerConfig(levels=3, pooling=4, topk=128, tile_budget=32))
ROPE_POINT = Point(2048, 1, 2, 1, 32, "float32", LayerConfig(levels=3, pooling=4, topk=128, tile_budget=32, rope=True))


def test_check_passes_on_the_cpu_layer():
    result = check.check_point(POINT, torch.device("cpu"), seed=3)
    assert result["status"] == "passed", result["reason"]
    assert result["selection_match"] == 1.0
    assert all(0.0 <= err <= result["tolerance"] for err in result["relative_errors"].values())


@pytest.mark.parametrize("damage", [lambda out: out * 1.01, lambda out: out + math.nan])
def test_check_fails_when_the_layer_is_wrong(monkeypatch, damage):
    layer = lighthouse.lighthouse_attention
    monkeypatch.setattr(lighthouse, "lighthouse_attention", lambda *args, **kwargs: damage(layer(*args, **kwargs)))
    result = check.check_point(POINT, torch.device("cpu"), seed=3)
    assert result["status"] == "failed"
    assert "out relative error" in result["reason"]


def test_check_passes_with_rope_and_fails_when_the_layer_ignores_the_tables(monkeypatch):
    result = check.check_point(ROPE_POINT, torch.device("cpu"), seed=3)
    assert result["status"] == "passed", result["reason"]
    layer = lighthouse.lighthouse_attention
    monkeypatch.setattr(lighthouse, "lighthouse_attention",
                        lambda *args, **kwargs: layer(*args, **{**kwargs, "rope": None}))
    result = check.check_point(ROPE_POINT, torch.device("cpu"), seed=3)
    assert result["status"] == "failed" and "out relative error" in result["reason"]
