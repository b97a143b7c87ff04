"""Command line of the benchmark suite: sizes, grid overrides, and the quick preset end to end."""

import argparse

import pytest
import torch

from bench_outputs import check_measurement, check_outputs
from lighthouse.bench.cli import customised, main, parser, size
from lighthouse.bench.presets import preset

K = 1024


def test_size_suffixes():
    assert (size("4096"), size("32K"), size("32k"), size("1M")) == (4096, 32 * K, 32 * K, K * K)
    for bad in ("", "K", "-4", "1.5K", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            size(bad)


def test_grid_options_replace_the_points():
    args = parser().parse_args(["--preset", "paper", "--seq-lens", "64K,32K", "--topk", "2048,4096",
                                "--dtype", "float16", "--repeats", "7"])
    chosen = customised(preset("paper"), args)
    assert [p.seq_len for p in chosen.points] == [32 * K] * 4 + [64 * K] * 4  # 2 topk x 2 levels of the preset
    assert {p.config.topk for p in chosen.points} == {2048, 4096}
    assert {p.config.levels for p in chosen.points} == {3, 4}
    assert {p.dtype for p in chosen.points} == {"float16"}
    assert {p.heads for p in chosen.points} == {8}
    assert (chosen.repeats, chosen.large_repeats) == (7, 7)


def test_no_overrides_keep_the_preset():
    chosen = customised(preset("paper"), parser().parse_args(["--preset", "paper"]))
    assert chosen == preset("paper")


def test_rope_option_turns_rope_on_for_every_point():
    chosen = customised(preset("quick"), parser().parse_args(["--preset", "quick", "--rope", "--seq-lens", "2K,4K"]))
    assert [p.seq_len for p in chosen.points] == [2 * K, 4 * K]
    assert all(p.config.rope and "rope" in p.series() for p in chosen.points)
    assert not any(p.config.rope for p in preset("quick").points)
    assert "rope" not in chosen.points[0].config.kwargs()


def test_bad_usage_exits_2(tmp_path, capsys):
    assert main(["--preset", "quick", "--heads", "3", "--kv-heads", "2", "--out", str(tmp_path)]) == 2
    assert "multiple of kv_heads" in capsys.readouterr().err
    assert main(["--preset", "quick", "--dense", "bogus", "--out", str(tmp_path)]) == 2
    assert main(["--preset", "quick", "--rope", "--head-dim", "31", "--out", str(tmp_path)]) == 2
    assert "head_dim must be even" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of a CUDA preset without CUDA")
def test_cuda_preset_without_cuda_exits_2(tmp_path, capsys):
    assert main(["--preset", "paper", "--out", str(tmp_path)]) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_quick_preset_end_to_end(tmp_path, capsys):
    """The CI run: every point is checked against the reference and timed; outputs are well-formed."""
    out = tmp_path / "quick"
    # A generous run budget: on a loaded CI machine the preset's own 30 s could skip everything.
    status = main(["--preset", "quick", "--out", str(out), "--no-progress", "--time-budget", "120"])
    printed = capsys.readouterr()
    assert status == 0, printed.out + printed.err
    document = check_outputs(out, expected_points=len(preset("quick").points))
    assert document["environment"]["device"] == "cpu"
    assert document["settings"]["dense_methods"] == ["sdpa_math"]
    for record in document["points"]:
        assert record["check"]["status"] == "passed", record["check"]
        assert 0.0 <= max(record["check"]["relative_errors"].values()) <= record["check"]["tolerance"]
    timed = [check_measurement(record["methods"]["lighthouse"][mode])
             for record in document["points"] for mode in ("fwd", "fwd_bwd")]
    assert any(timed), "no Lighthouse measurement ran"
    stages = [check_measurement(result) for record in document["points"] for result in record["stages"].values()]
    assert any(stages), "no stage measurement ran"
