"""The benchmark's "fidelity vs fp32" column: the layer in bf16 against the same layer in fp32 on the same inputs,
measured, written to the JSON and shown in the markdown table."""

import json
import math

import torch

import lighthouse
from bench_outputs import check_outputs
from lighthouse.bench import report
from lighthouse.bench.cli import main
from lighthouse.bench.fidelity import measure_fidelity
from lighthouse.bench.points import LayerConfig, Point
from test_bench_report import document

CONFIG = LayerConfig(levels=3, pooling=4, topk=128, tile_budget=32)
BF16_POINT = Point(2048, 1, 2, 1, 32, "bfloat16", CONFIG)
CPU = torch.device("cpu")


def test_bf16_point_is_measured_against_fp32():
    result = measure_fidelity(BF16_POINT, CPU, seed=5)
    assert result["status"] == "ok", result
    # bf16 keeps 8 significant bits: the output lands within a few 2^-9 of fp32's, and is not fp32's bits.
    assert 1e-4 < result["relative_l2"] < 2e-2
    # Scores are computed in fp32 from the same values in both runs, so the selections agree exactly.
    assert result["selection_match"] == 1.0
    assert measure_fidelity(BF16_POINT, CPU, seed=5) == result, "same seed, same number"


def test_dilated_scorer_point_is_measured():
    point = Point(2048, 1, 2, 1, 32, "bfloat16", LayerConfig(levels=3, pooling=4, topk=128, tile_budget=32,
                                                               scorer="dilated"))
    result = measure_fidelity(point, CPU, seed=5)
    assert result["status"] == "ok", result
    # Its scores come out of attention in bf16: the selections differ in places (about 6% of the index list
    # here), which moves the output further from fp32 than rounding alone (about 5e-2 here).
    assert 0.5 < result["selection_match"] < 1.0 and 0 < result["relative_l2"] < 0.2


def test_fp32_points_are_not_measured():
    result = measure_fidelity(Point(2048, 1, 2, 1, 32, "float32", CONFIG), CPU, seed=5)
    assert result == {"status": "skipped", "reason": "skipped: the point runs in float32"}


def test_a_less_faithful_layer_measures_further(monkeypatch):
    clean = measure_fidelity(BF16_POINT, CPU, seed=5)["relative_l2"]
    layer = lighthouse.lighthouse_attention

    def damaged(q, *args, **kwargs):
        out = layer(q, *args, **kwargs)
        return out * 1.01 if q.dtype == torch.bfloat16 else out

    monkeypatch.setattr(lighthouse, "lighthouse_attention", damaged)
    assert measure_fidelity(BF16_POINT, CPU, seed=5)["relative_l2"] > clean + 5e-3
    monkeypatch.setattr(lighthouse, "lighthouse_attention", lambda q, *a, **k: damaged(q, *a, **k) * math.nan)
    result = measure_fidelity(BF16_POINT, CPU, seed=5)
    assert result["status"] == "failed" and "non-finite" in result["reason"]


def test_markdown_shows_the_column(tmp_path):
    report.write_outputs(document(), tmp_path)
    lines = (tmp_path / "results.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| N | dtype |"))
    column = header.split(" | ").index("fidelity vs fp32")
    row = next(line for line in lines if line.startswith("| 32K |"))
    assert row.split(" | ")[column] == "4.25e-03"


def test_bf16_run_records_and_reports_the_fidelity(tmp_path):
    out = tmp_path / "bf16"
    status = main(["--preset", "quick", "--dtype", "bfloat16", "--seq-lens", "2K", "--dense", "none", "--no-stages",
                   "--repeats", "1", "--warmup", "1", "--no-progress", "--out", str(out),
                   # Budgets far above the point's cost: on a loaded machine the estimate must not skip it.
                   "--measure-budget", "600", "--time-budget", "1200"])
    assert status == 0
    record = check_outputs(out, expected_points=1)["points"][0]
    fidelity = record["fidelity"]
    assert fidelity["status"] == "ok" and 0 < fidelity["relative_l2"] < 2e-2, fidelity
    assert json.loads((out / "results.json").read_text())["points"][0]["fidelity"] == fidelity
    assert f"| {fidelity['relative_l2']:.2e} |" in (out / "results.md").read_text()
