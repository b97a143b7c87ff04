"""bench/ab_compare.py (the same-run comparison of two stage-benchmark builds) and the argument checks of
scripts/bench_ab.sh, on synthetic benchmark documents: no GPU needed."""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ab_compare", ROOT / "bench" / "ab_compare.py")
ab_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ab_compare)


def document(commit, pool_ms, scatter_ms, *, heads=8, seq_len=524288):
    """A stage-benchmark JSON document with two stages at one length, as lighthouse_stage_bench writes it."""
    return {
        "commit": commit, "gpu": "NVIDIA H200", "date": "2026-12-03T07:00:00Z", "dtype": "bfloat16", "batch": 1,
        "heads": heads, "kv_heads": 8, "head_dim": 128, "pooling": 4, "reps": 30, "copy_gbps": 4255.9,
        "sizes": [{
            "seq_len": seq_len, "levels": 3, "topk": 2048, "kept": 49152,
            "forward_ms": pool_ms + scatter_ms, "backward_ms": 2.0,
            "stages": [
                {"stage": "pool_score", "median_ms": pool_ms, "bytes": 1, "gbps": 1.0, "pct_of_copy": 1.0},
                {"stage": "scatter", "median_ms": scatter_ms, "bytes": 1, "gbps": 1.0, "pct_of_copy": 1.0},
            ],
        }],
    }


def write_rounds(outdir, base, new):
    """base and new: lists of (pool_ms, scatter_ms), one per round."""
    for build, values, commit in (("base", base, "aaaaaaa"), ("new", new, "bbbbbbb")):
        for r, (pool_ms, scatter_ms) in enumerate(values, start=1):
            (outdir / f"{build}-{r}.json").write_text(json.dumps(document(commit, pool_ms, scatter_ms)))


def rows_by_stage(outdir):
    assert ab_compare.main([str(outdir)]) == 0
    summary = json.loads((outdir / "ab.json").read_text())
    return {row["stage"]: row for row in summary["rows"]}, (outdir / "ab.md").read_text()


def test_separated_rounds_are_called_faster_or_slower_and_overlapping_ones_are_not(tmp_path):
    # pool_score: every new round below every base round; scatter: every new round above; sums overlap.
    write_rounds(tmp_path, base=[(1.00, 0.50), (1.02, 0.52), (0.98, 0.51)],
                 new=[(0.93, 0.55), (0.95, 0.56), (0.94, 0.54)])
    rows, text = rows_by_stage(tmp_path)
    assert rows["pool_score"]["verdict"] == "faster"
    assert rows["pool_score"]["base_ms"] == 1.00 and rows["pool_score"]["new_ms"] == 0.94
    assert rows["pool_score"]["change"] == pytest.approx(0.94 / 1.00 - 1)
    assert rows["scatter"]["verdict"] == "slower"
    assert rows["scatter"]["change"] == pytest.approx(0.55 / 0.51 - 1)
    assert rows["**forward sum**"]["verdict"] == "within spread"
    assert "| 524288 | pool_score | 1.000 | 0.940 | -6.0% | 0.980–1.020 | 0.930–0.950 | faster |" in text
    assert "base: commit aaaaaaa; new: commit bbbbbbb" in text


def test_one_overlapping_round_makes_a_difference_within_spread(tmp_path):
    # Medians 1.00 against 0.95, but one new round is slower than the fastest base round.
    write_rounds(tmp_path, base=[(1.00, 0.5), (1.01, 0.5), (0.97, 0.5)], new=[(0.95, 0.5), (0.94, 0.5), (0.98, 0.5)])
    rows, _ = rows_by_stage(tmp_path)
    assert rows["pool_score"]["verdict"] == "within spread"
    assert rows["scatter"]["verdict"] == "within spread"


def test_rounds_are_read_in_numeric_order(tmp_path):
    base = [(1.0 + r / 100, 0.5) for r in range(11)]
    new = [(0.5 + r / 100, 0.5) for r in range(11)]
    write_rounds(tmp_path, base, new)
    rows, _ = rows_by_stage(tmp_path)
    assert rows["pool_score"]["base_rounds"] == [b for b, _ in base]
    assert rows["pool_score"]["new_rounds"] == [n for n, _ in new]


def test_a_stage_measured_by_one_build_only_is_left_out(tmp_path):
    write_rounds(tmp_path, base=[(1.0, 0.5)], new=[(0.9, 0.5)])
    doc = json.loads((tmp_path / "new-1.json").read_text())
    doc["sizes"][0]["stages"].pop()  # the new build did not measure scatter
    (tmp_path / "new-1.json").write_text(json.dumps(doc))
    rows, _ = rows_by_stage(tmp_path)
    assert "scatter" not in rows and "pool_score" in rows


def test_builds_that_measured_different_configurations_are_refused(tmp_path, capsys):
    write_rounds(tmp_path, base=[(1.0, 0.5)], new=[(0.9, 0.5)])
    (tmp_path / "new-1.json").write_text(json.dumps(document("bbbbbbb", 0.9, 0.5, heads=4)))
    assert ab_compare.main([str(tmp_path)]) == 2
    assert "new-1.json: heads: expected 8 (as in base-1.json), got 4" in capsys.readouterr().err
    assert not (tmp_path / "ab.md").exists()


def test_unequal_round_counts_and_missing_files_are_refused(tmp_path, capsys):
    write_rounds(tmp_path, base=[(1.0, 0.5), (1.0, 0.5)], new=[(0.9, 0.5)])
    assert ab_compare.main([str(tmp_path)]) == 2
    assert "expected as many base as new rounds, got 2 base and 1 new" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ab_compare.main([str(empty)]) == 2
    assert "expected base-<round>.json files, found none" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ([], "usage:"),
    (["no-such-revision-xyz", "OUT"], "BASE: expected a git revision of"),
    (["HEAD", "OUT", "0"], "ROUNDS: expected a positive integer, got '0'"),
    (["HEAD", "OUT", "three"], "ROUNDS: expected a positive integer, got 'three'"),
])
def test_the_script_names_a_bad_argument_before_building(tmp_path, args, message):
    args = [str(tmp_path / a) if a == "OUT" else a for a in args]
    result = subprocess.run(["bash", str(ROOT / "scripts" / "bench_ab.sh"), *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "OUT").exists()
