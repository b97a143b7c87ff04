"""The benchmark suite on a CUDA device (skipped without one): the check in each dtype, and a small sweep
through CUDA-event timing, peak-memory accounting and the cuDNN and flash baselines."""

import pytest
import torch

from bench_outputs import check_measurement, check_outputs
from lighthouse.bench.check import check_point
from lighthouse.bench.cli import main
from lighthouse.bench.points import LayerConfig, Point

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("scorer", ["norm", "dilated"])
def test_check_passes_on_cuda(dtype, scorer):
    point = Point(8192, 1, 4, 2, 64, dtype, LayerConfig(levels=3, pooling=4, topk=256, tile_budget=64, scorer=scorer))
    result = check_point(point, torch.device("cuda"), seed=11)
    assert result["status"] == "passed", result["reason"]


def test_small_cuda_sweep(tmp_path, capsys):
    out = tmp_path / "cuda"
    status = main(["--preset", "quick", "--device", "cuda", "--dtype", "bfloat16", "--out", str(out), "--no-progress",
                   "--time-budget", "120"])
    printed = capsys.readouterr()
    assert status == 0, printed.out + printed.err
    document = check_outputs(out, expected_points=2)
    assert document["environment"]["gpu"]
    assert document["settings"]["dense_methods"] == ["sdpa_cudnn", "sdpa_flash"]
    for record in document["points"]:
        assert record["check"]["status"] == "passed"
        for mode in ("fwd", "fwd_bwd"):
            result = record["methods"]["lighthouse"][mode]
            assert check_measurement(result), result
            assert result["peak_memory_bytes"] > 0
        assert all(check_measurement(result) for result in record["stages"].values())
