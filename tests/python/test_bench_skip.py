"""Estimates and skip decisions of the benchmark suite: nothing too slow or too big is started, and every
skip says why."""

import json

import pytest
import torch

from conftest import GOLDEN_DIR
from lighthouse import _geometry
from lighthouse.bench.estimate import (
    Throughput, causal_attention_flops, dense_memory, dense_seconds, lighthouse_memory, lighthouse_seconds,
    memory_skip, plan_repeats,
)
from lighthouse.bench.points import LayerConfig, Point, config_problem, kept_entries, min_seq_len, pyramid_len
from lighthouse.bench.presets import PRESETS, preset
from lighthouse.bench.progress import Progress
from lighthouse.bench.sweep import Sweep, SweepSettings

K = 1024


def test_kept_entries_match_the_golden_manifest():
    with open(GOLDEN_DIR / "manifest.json") as f:
        cases = json.load(f)
    for case in cases:
        config = LayerConfig(levels=case["levels"], pooling=case["pooling_factor"], topk=case["topk"])
        assert kept_entries(config, case["N"]) == case["S"], case["name"]
        assert pyramid_len(config, case["N"]) == case["pyramid_len"], case["name"]


@pytest.mark.parametrize("seq_len", [2048, 2049, 3000, 4096, 5000, 65537])
@pytest.mark.parametrize("levels,pooling,topk,tile_budget", [(2, 2, 256, 128), (3, 4, 128, 32), (4, 2, 64, 16)])
def test_geometry_agrees_with_the_library(seq_len, levels, pooling, topk, tile_budget):
    config = LayerConfig(levels=levels, pooling=pooling, topk=topk, tile_budget=tile_budget)
    args = (levels, pooling, topk, tile_budget)
    assert min_seq_len(config) == _geometry.min_seq_len(*args)
    assert (config_problem(config, seq_len) is None) == _geometry.shrinks(seq_len, *args)
    if seq_len >= min_seq_len(config):
        assert kept_entries(config, seq_len) == _geometry.geometry(seq_len, *args).kept


def test_config_problem_names_the_reason():
    config = LayerConfig(levels=3, pooling=4, topk=2048)
    assert "32768" in config_problem(config, 16 * K)
    assert config_problem(config, 32 * K) is None
    assert "multiple of tile_budget" in config_problem(LayerConfig(topk=100), 1 << 20)
    assert "power of two" in config_problem(LayerConfig(pooling=3), 1 << 20)
    # k=2048, p=2, L=2: N=4096 keeps 2048 + 2*2048 = 6144 >= N.
    assert "would not shrink" in config_problem(LayerConfig(levels=2, pooling=2, topk=2048), 4096)


def test_attention_flops_formula():
    assert causal_attention_flops(1000, 2, 8, 128) == 2 * 1000**2 * 128 * 8 * 2


def test_estimates_grow_with_the_work():
    speed = Throughput(flops_per_s=1e12, bytes_per_s=1e11)
    small, large = (Point(n, 1, 8, 8, 128, "bfloat16", LayerConfig()) for n in (64 * K, 512 * K))
    assert dense_seconds(large, False, False, speed) == pytest.approx(64 * dense_seconds(small, False, False, speed))
    assert dense_seconds(small, True, False, speed) > dense_seconds(small, False, False, speed)
    assert dense_seconds(small, False, True, speed) > dense_seconds(small, False, False, speed)
    assert lighthouse_seconds(large, False, False, speed) < dense_seconds(large, False, False, speed)
    assert dense_memory(large, True, False) > dense_memory(large, False, False) > 0
    assert dense_memory(large, False, True) > 4 * 8 * (512 * K) ** 2  # the math backend's score matrix
    assert lighthouse_memory(large, True, False) > lighthouse_memory(large, False, False) > 0


def test_plan_repeats_fits_trims_and_skips():
    full = plan_repeats(0.1, warmup=2, repeats=10, min_repeats=3, budget_s=60, remaining_s=600)
    assert (full.repeats, full.skip) == (10, None)
    trimmed = plan_repeats(5.0, warmup=1, repeats=10, min_repeats=3, budget_s=30, remaining_s=600)
    assert (trimmed.repeats, trimmed.skip) == (5, None)  # floor(30 / 5) - 1 warm-up
    skipped = plan_repeats(20.0, warmup=1, repeats=10, min_repeats=3, budget_s=30, remaining_s=600)
    assert skipped.repeats == 0
    assert skipped.skip.startswith("skipped: estimated 80.0 s") and "per-measurement budget" in skipped.skip
    late = plan_repeats(1.0, warmup=1, repeats=10, min_repeats=3, budget_s=60, remaining_s=2)
    assert late.skip is not None and "remaining time" in late.skip
    assert plan_repeats(0.0, warmup=1, repeats=7, min_repeats=3, budget_s=1, remaining_s=1).repeats == 7
    with pytest.raises(ValueError):
        plan_repeats(float("nan"), warmup=1, repeats=3, min_repeats=1, budget_s=1, remaining_s=1)


def test_memory_skip():
    assert memory_skip(2**30, 2**31) is None
    reason = memory_skip(3 * 2**30, 2**30)
    assert reason.startswith("skipped: needs ~3.00 GiB") and "1.00 GiB available" in reason


def test_presets_are_well_formed():
    for name in PRESETS:
        chosen = preset(name)
        assert chosen.points and chosen.min_repeats <= min(chosen.repeats, chosen.large_repeats)
        assert [p.seq_len for p in chosen.points] == sorted(p.seq_len for p in chosen.points)
    paper = preset("paper")
    assert {p.seq_len for p in paper.points} == {32 * K, 64 * K, 128 * K, 256 * K, 512 * K, 1024 * K}
    assert all(config_problem(p.config, p.seq_len) is None for p in paper.points)
    assert {kept_entries(p.config, p.seq_len) for p in paper.points if p.seq_len == 512 * K} == {49152, 98304}
    assert paper.counts(512 * K)[1] == 5
    with pytest.raises(KeyError):
        preset("nope")


def _sweep(point: Point, **overrides) -> Sweep:
    chosen = preset("quick")
    from dataclasses import replace

    chosen = replace(chosen, points=(point,), **overrides)
    settings = SweepSettings(preset=chosen, device=torch.device("cpu"), dense_methods=("sdpa_math",),
                             run_check=False, run_stages=False)
    sweep = Sweep(settings, Progress(Sweep.tasks_per_point(settings), enabled=False), on_point=lambda records: None)
    sweep.speeds["float32"] = Throughput(flops_per_s=1e6, bytes_per_s=1e6)  # a very slow machine
    return sweep


def test_sweep_skips_what_the_estimate_says_is_too_slow():
    point = Point(4 * K, 1, 2, 1, 32, "float32", LayerConfig(levels=3, pooling=4, topk=128, tile_budget=32))
    record = _sweep(point).point(point)
    for method in ("lighthouse", "sdpa_math"):
        for mode in ("fwd", "fwd_bwd"):
            result = record["methods"][method][mode]
            assert result["status"] == "skipped"
            assert result["reason"].startswith("skipped: estimated") and "from FLOPs" in result["reason"]
    assert record["speedup"]["sdpa_math"] == {"fwd": None, "fwd_bwd": None}


def test_sweep_skips_invalid_configs_and_dense_past_the_preset_limit():
    point = Point(4 * K, 1, 2, 1, 32, "float32", LayerConfig(levels=3, pooling=4, topk=2048, tile_budget=32))
    record = _sweep(point, dense_max_seq_len=2 * K).point(point)
    assert record["kept"] is None
    assert record["methods"]["lighthouse"]["fwd"]["reason"].startswith("skipped: N=4096 < topk")
    assert "only up to N=2048" in record["methods"]["sdpa_math"]["fwd_bwd"]["reason"]
