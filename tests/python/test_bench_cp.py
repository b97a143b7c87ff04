"""The context-parallel layer benchmark (lighthouse.bench.cp, cp_scaling): W = 2 over gloo on CPU processes,
the single-process command line, the scaling arithmetic against a brute-force definition, and bad arguments.
The timings themselves are only checked for being measured (finite, positive, one per rank); their values are
the benchmark's output, not something a test can know."""

import json
import math

import pytest
import torch

from _distributed_runner import run_ranks

SMALL = {"levels": 2, "pooling": 2, "topk": 128}  # shortest sequence 256
CLI_SMALL = ["--device", "cpu", "--dtype", "float32", "--head-dim", "16", "--levels", "2", "--pooling", "2",
             "--topk", "128", "--warmup", "1", "--repeats", "2"]


def _w2_job(rank, world):
    import torch.distributed as dist

    from lighthouse.bench import cp

    points = [cp.Point(512, 2, 2, 16), cp.Point(512, 2, 1, 16), cp.Point(512, 3, 3, 16), cp.Point(511, 2, 2, 16)]
    return cp.run(points, group=dist.group.WORLD, device=torch.device("cpu"), dtype=torch.float32,
                  layer_options=SMALL, warmup=1, repeats=2)


@pytest.fixture(scope="module")
def w2_results():
    return run_ranks(2, _w2_job)


def test_w2_rank0_gets_every_point_and_the_other_rank_nothing(w2_results):
    rank0, rank1 = w2_results
    assert rank1 == []
    assert [r["status"] for r in rank0] == ["ok", "ok", "skipped", "skipped"]
    assert [r["point"]["kv_heads"] for r in rank0[:2]] == [2, 1]
    assert "heads 3 are not a multiple of W = 2" in rank0[2]["reason"]
    assert "seq_len 511 is not a multiple of W = 2" in rank0[3]["reason"]


def test_w2_results_hold_each_ranks_medians_and_the_slowest(w2_results):
    for r in w2_results[0][:2]:
        assert r["world"] == 2
        assert [s["rank"] for s in r["samples"]] == [0, 1]
        for name in ("layer_fwd", "layer_fwd_bwd", "exchange_fwd", "exchange_fwd_bwd"):
            per_rank = r[name + "_ms_per_rank"]
            assert per_rank == [s[name]["median"] for s in r["samples"]]
            assert all(math.isfinite(t) and t > 0 for t in per_rank)
            assert r[name + "_ms"] == max(per_rank)
            assert all(s[name]["repeats"] == 2 for s in r["samples"])
        for mode in ("fwd", "fwd_bwd"):
            assert r[f"exchange_share_{mode}"] == r[f"exchange_{mode}_ms"] / r[f"layer_{mode}_ms"]
        assert r["peak_extra_bytes"] is None  # measured on CUDA only


def test_unsupported_names_each_rule():
    from lighthouse.bench.cp import Point, unsupported

    assert unsupported(Point(1024, 8, 2, 128), 4) is None  # Hkv divides W: copies
    assert unsupported(Point(1024, 8, 8, 128), 4) is None  # W divides Hkv
    assert "heads 8 are not a multiple of W = 16" in unsupported(Point(1024, 8, 8, 128), 16)
    assert "kv_heads 3" in unsupported(Point(1024, 6, 3, 128), 2)
    assert "heads 8 are not a multiple of kv_heads 3" in unsupported(Point(1024, 8, 3, 128), 1)
    assert "seq_len 1000" in unsupported(Point(1000, 8, 8, 128), 16)


def _document(world, times):
    """A launch's document with layer times {(N, Hkv): (fwd, fwd_bwd)}; each exchange takes a quarter of its layer."""
    results = [{"point": {"seq_len": n, "heads": 8, "kv_heads": kv, "head_dim": 128, "batch": 1}, "world": world,
                "status": "ok", "layer_fwd_ms": f, "layer_fwd_bwd_ms": fb, "exchange_fwd_ms": f / 4,
                "exchange_fwd_bwd_ms": fb / 4} for (n, kv), (f, fb) in times.items()]
    results.append({"point": {"seq_len": 3, "heads": 8, "kv_heads": 8, "head_dim": 128, "batch": 1},
                    "world": world, "status": "skipped", "reason": "x"})
    return {"environment": {"command": f"cmd{world}", "commit": "c", "date": "d"}, "results": results}


def test_efficiencies_match_their_definitions():
    from lighthouse.bench import cp_scaling

    one = {(1024, 8): (10.0, 30.0), (2048, 8): (21.0, 62.0)}
    two = {(2048, 8): (12.0, 40.0), (4096, 8): (30.0, 70.0), (2048, 2): (5.0, 9.0)}
    rows = cp_scaling.efficiencies(cp_scaling.layer_times([_document(1, one), _document(2, two)]))
    got = {(r["seq_len"], r["kv_heads"], r["mode"]): (r["strong"], r["weak"]) for r in rows}
    assert set(got) == {(n, kv, m) for n, kv in two for m in ("fwd", "fwd_bwd")}
    assert got[(2048, 8, "fwd")] == (21.0 / (2 * 12.0), 10.0 / 12.0)
    assert got[(2048, 8, "fwd_bwd")] == (62.0 / (2 * 40.0), 30.0 / 40.0)
    assert got[(4096, 8, "fwd")] == (None, 21.0 / 30.0)  # no W = 1 time at 4096
    assert got[(2048, 2, "fwd_bwd")] == (None, None)  # no W = 1 time with Hkv = 2
    # Against the W = 1 layer without its exchange (here three quarters of the layer).
    bare = {(r["seq_len"], r["kv_heads"], r["mode"]): (r["strong_no_exchange"], r["weak_no_exchange"]) for r in rows}
    assert bare[(2048, 8, "fwd")] == (0.75 * 21.0 / (2 * 12.0), 0.75 * 10.0 / 12.0)
    assert bare[(4096, 8, "fwd_bwd")] == (None, 0.75 * 62.0 / 70.0)
    assert bare[(2048, 2, "fwd")] == (None, None)


def test_command_line_alone_writes_the_launch_and_the_scaling_files(tmp_path):
    from lighthouse.bench import cp

    assert cp.main(CLI_SMALL + ["--seq-lens", "256,512", "--heads", "2", "--kv-heads", "2", "--out",
                                str(tmp_path)]) == 0
    document = json.loads((tmp_path / "cp-w1.json").read_text())
    info = document["environment"]
    assert info["command"].startswith("python -m lighthouse.bench.cp --device cpu")
    assert info["commit"] and info["date"] and info["gpus"] == 0
    assert [r["status"] for r in document["results"]] == ["ok", "ok"]
    assert document["layer_options"] == SMALL
    markdown = (tmp_path / "cp-w1.md").read_text()
    assert "| 256 | 2 | 2 |" in markdown and info["command"] in markdown
    # A second launch's file (as a W = 2 launch would write it) gives the scaling table.
    w2 = {**document, "world": 2, "results": [{**r, "world": 2} for r in document["results"]]}
    (tmp_path / "cp-w2.json").write_text(json.dumps(w2))
    assert cp.main(["--summarize", str(tmp_path)]) == 0
    scaling = (tmp_path / "scaling.md").read_text()
    assert "| 2 | 512 | 2 | 2 | fwd |" in scaling and info["command"] in scaling


def test_summarize_without_results_names_the_folder(tmp_path):
    from lighthouse.bench import cp

    with pytest.raises(SystemExit, match=f"no cp-w\\*.json in {tmp_path}"):
        cp.main(["--summarize", str(tmp_path)])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--repeats", "0"], "--repeats: expected at least 1, got 0"),
        (["--heads", "0"], "--heads: expected a positive integer, got 0"),
        (["--warmup", "-1"], "--warmup: expected a non-negative integer, got -1"),
        (["--topk", "100"], "topk: expected a positive multiple of tile_budget"),
        (["--pooling", "3"], "pooling: expected a power of two"),
    ],
)
def test_bad_arguments_are_named(arguments, message, tmp_path):
    from lighthouse.bench import cp

    with pytest.raises((SystemExit, ValueError), match=message.replace("(", "\\(")):
        cp.main(CLI_SMALL + arguments + ["--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_unparsable_size_is_a_usage_error(capsys):
    from lighthouse.bench import cp

    with pytest.raises(SystemExit) as stop:
        cp.main(["--seq-lens", "12Q"])
    assert stop.value.code == 2
    assert "expected a positive size" in capsys.readouterr().err


@pytest.mark.gpu
def test_single_gpu_over_nccl_measures_time_and_memory(tmp_path):
    from lighthouse.bench import cp

    assert cp.main(["--device", "cuda", "--seq-lens", "64K", "--heads", "4", "--kv-heads", "4,1", "--levels", "3",
                    "--topk", "1024", "--warmup", "1", "--repeats", "3", "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "cp-w1.json").read_text())
    assert document["environment"]["gpus"] == 1
    for r in document["results"]:
        assert r["status"] == "ok"
        assert r["peak_extra_bytes"] > 0
        assert 0 < r["exchange_fwd_bwd_ms"] and 0 < r["layer_fwd_bwd_ms"]


def test_a_point_out_of_memory_is_skipped_and_the_next_one_measured(monkeypatch, tmp_path):
    from lighthouse.bench import cp

    measure = cp.measure_rank

    def measure_or_fail(point, **kwargs):
        if point.seq_len == 512:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 24.00 GiB.\nmore detail")
        return measure(point, **kwargs)

    monkeypatch.setattr(cp, "measure_rank", measure_or_fail)
    assert cp.main(CLI_SMALL + ["--seq-lens", "512,256", "--heads", "2", "--kv-heads", "2", "--out",
                                str(tmp_path)]) == 0
    results = json.loads((tmp_path / "cp-w1.json").read_text())["results"]
    assert [r["status"] for r in results] == ["skipped", "ok"]
    assert results[0]["reason"] == "out of memory on rank 0: CUDA out of memory. Tried to allocate 24.00 GiB."
    assert results[1]["layer_fwd_bwd_ms"] > 0
    assert "skipped: out of memory on rank 0" in (tmp_path / "cp-w1.md").read_text()
