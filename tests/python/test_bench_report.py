"""Outputs of the benchmark suite from a synthetic result document: JSON, markdown, PNGs, re-rendering."""

import json
import math
import shutil

import pytest

from bench_outputs import check_outputs
from lighthouse.bench import anchors, markdown, report
from lighthouse.bench.cli import main
from lighthouse.bench.points import LayerConfig, Point
from lighthouse.bench.timing import summarize

K = 1024


def measurement(median_ms, flops=None, nbytes=None):
    stats = summarize([median_ms * 0.9, median_ms, median_ms * 1.2])
    return {"status": "ok", "reason": None, "ms": stats, "peak_memory_bytes": 2**30, "flops": flops,
            "tflops": flops / (median_ms * 1e-3) / 1e12 if flops else None, "bytes": nbytes,
            "gbps": nbytes / (median_ms * 1e-3) / 1e9 if nbytes else None}


def record(seq_len, kept, lighthouse_ms, dense_ms):
    point = Point(seq_len, 1, 8, 8, 128, "bfloat16", LayerConfig())
    stages = {name: measurement(lighthouse_ms / 8, nbytes=10**8) for name in
              ("pool_score", "select", "gather", "scatter", "scatter_backward", "gather_backward")}
    stages["attention"] = measurement(lighthouse_ms / 4, flops=1e12)
    stages["attention_backward"] = measurement(lighthouse_ms / 2, flops=2.5e12)
    dense = {"fwd": measurement(dense_ms), "fwd_bwd": {"status": "skipped", "reason": "skipped: too slow"}}
    return {
        "point": point.to_json(), "series": point.series(), "kept": kept, "kept_ratio": kept / seq_len,
        "pyramid_len": seq_len + seq_len // 4 + seq_len // 16,
        "check": {"status": "passed", "reason": None, "relative_errors": {"out": 1e-3}, "tolerance": 5e-2,
                  "selection_match": 1.0},
        "fidelity": {"status": "ok", "reason": None, "relative_l2": 4.25e-3, "selection_match": 1.0},
        "methods": {"lighthouse": {"fwd": measurement(lighthouse_ms), "fwd_bwd": measurement(3 * lighthouse_ms)},
                    "sdpa_cudnn": dense},
        "stages": stages,
        "anchor": {"lighthouse_fwd": 2.58, "lighthouse_fwd_bwd": 8.45},
        "speedup": {"sdpa_cudnn": {"fwd": dense_ms / lighthouse_ms, "fwd_bwd": None}},
        "attention": {"tflops_fwd": 400.0, "tflops_bwd": math.inf},
        "rest": {"gbps_fwd": 2000.0, "gbps_bwd": None},
    }


def document():
    env = {"host": "h", "machine": "x86_64", "platform": "p", "cpu_count": 16, "python": "3.11", "torch": "2",
           "cuda": "12", "cudnn": 9, "device": "cuda", "gpu": "Some GPU", "gpu_memory_bytes": 2**37,
           "commit": "abc", "command": "python -m lighthouse.bench", "date": "2026-01-01T00:00:00+00:00"}
    return {"schema": report.SCHEMA, "complete": True, "elapsed_s": 1.0, "environment": env,
            "preset": {"name": "synthetic"}, "settings": {}, "calibration": {}, "anchors": anchors.to_json(),
            "points": [record(32 * K, 18432, 3.0, 4.0), record(64 * K, 20480, 3.5, 15.0)]}


def test_outputs_are_well_formed(tmp_path):
    written = report.write_outputs(document(), tmp_path)
    assert written["plot_note"] is None and len(written["plots"]) == 3
    saved = check_outputs(tmp_path, expected_points=2)
    assert saved["points"][0]["attention"]["tflops_bwd"] is None  # inf is not JSON: written as null
    text = (tmp_path / "results.md").read_text()
    assert "authors (measured separately)" in text
    assert "skipped: too slow" in text
    assert "| 32K | bfloat16 | 1×8/8×128 |" in text


def test_json_never_holds_nan_or_inf(tmp_path):
    doc = document()
    doc["points"][0]["kept_ratio"] = math.nan
    path = report.write_json(doc, tmp_path)
    parsed = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert parsed["points"][0]["kept_ratio"] is None


def test_from_json_rerenders_markdown_and_plots(tmp_path, capsys):
    source = tmp_path / "run"
    report.write_json(document(), source)
    again = tmp_path / "again"
    assert main(["--from-json", str(source / "results.json"), "--out", str(again)]) == 0
    check_outputs(again, expected_points=2)
    assert "| 64K |" in capsys.readouterr().out


def test_from_json_exit_status_reports_failed_checks(tmp_path):
    doc = document()
    doc["points"][1]["check"] = {"status": "failed", "reason": "out relative error 1 > 0.05"}
    report.write_json(doc, tmp_path)
    assert main(["--from-json", str(tmp_path / "results.json"), "--out", str(tmp_path / "r")]) == 1


def test_load_json_rejects_other_files(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(ValueError):
        report.load_json(path)


def test_missing_matplotlib_skips_plots_with_a_note(tmp_path, monkeypatch):
    from lighthouse.bench import plots

    def no_matplotlib():
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(plots, "_pyplot", no_matplotlib)
    written = report.write_outputs(document(), tmp_path)
    assert written["plots"] == [] and "matplotlib is not installed" in written["plot_note"]
    assert "Plots skipped" in (tmp_path / "results.md").read_text()
    assert not list(tmp_path.glob("*.png"))
    shutil.rmtree(tmp_path)


def stage_rows(text: str) -> list:
    """The stage breakdown's rows as dicts keyed by its header."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| N | config | pool_score |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))))
    return rows


def test_stage_breakdown_says_what_the_stages_leave_out(tmp_path):
    doc = document()
    # Point 2: the forward is faster than its stages (other < 0), and one backward stage did not run.
    doc["points"][1]["methods"]["lighthouse"]["fwd"] = measurement(2.0)
    doc["points"][1]["stages"]["gather_backward"] = {"status": "failed", "reason": "failed: out of memory"}
    report.write_outputs(doc, tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert "**other** is the layer's median minus the sum of its stages' medians" in text
    first, second = stage_rows(text)
    # Point 1: layer fwd 3.0 ms, forward stages 4 x 3/8 + 3/4 = 2.25 ms; fwd+bwd 9.0 ms, all stages 4.5 ms.
    assert (first["other fwd"], first["other fwd+bwd"]) == ("0.75 (25%)", "4.5 (50%)")
    # Point 2: forward stages 4 x 3.5/8 + 3.5/4 = 2.625 ms against a 2.0 ms layer.
    assert (second["other fwd"], second["other fwd+bwd"]) == ("-0.625 (-31%)", "—")
    assert second["gather_backward"] == "failed"


def test_point_label_names_rope_and_reads_results_without_it():
    plain = record(32 * K, 18432, 10.0, 20.0)
    rotated = {**plain, "point": Point(32 * K, 1, 8, 8, 128, "bfloat16", LayerConfig(rope=True)).to_json()}
    legacy = json.loads(json.dumps(plain))
    del legacy["point"]["config"]["rope"]
    assert markdown.point_label(rotated)[2].endswith(" rope")
    assert markdown.point_label(plain) == markdown.point_label(legacy)
    assert "rope" not in markdown.point_label(plain)[2]
