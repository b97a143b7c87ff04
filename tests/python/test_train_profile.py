"""The step profiler: every category present and non-negative, the categories adding up to the step, both
modes, the probes gone afterwards, and the command line's table and JSON."""

import json
import time

import pytest
import torch

from lighthouse.train import kernels as kernel_profile
from lighthouse.train import model as model_module
from lighthouse.train import profile as profile_module
from lighthouse.train.cli import main
from lighthouse.train.model import DENSE, LIGHTHOUSE
from lighthouse.train.trainer import Trainer

from test_train_trainer import configs, corpus  # noqa: F401 (corpus is a fixture)

MODEL_PARTS = {"attention", "projections", "mlp", "norms", "rope", "embedding", "head_loss"}


@pytest.mark.parametrize("rope", ["before", "pooled"])
def test_the_categories_add_up_to_the_timed_step(corpus, tmp_path, rope):  # noqa: F811
    trainer = Trainer(tmp_path, *configs(corpus, 2, 2, rope=rope))
    functions = {name: getattr(model_module, name) for name in profile_module._FUNCTIONS}
    for stage in (DENSE, LIGHTHOUSE):
        trainer.model.set_stage(stage)
        began = time.perf_counter()
        [seconds] = profile_module.profiled_steps(trainer, 1e-3, 1, model_parts=True)
        elapsed = time.perf_counter() - began
        assert all(value >= 0.0 for value in seconds.values())
        categories = {category for category, _ in seconds}
        assert MODEL_PARTS | {"data", "optimizer", "other"} <= categories
        # Every model part has backward time of its own, but the rotary tables and the embedding's input,
        # which need no gradient, are not marked on the way out.
        assert {c for c, backward in seconds if backward} >= {"attention", "projections", "mlp", "norms",
                                                             "head_loss", "embedding"}
        # The timestamps are the first and last things of the step: their span is the step, less the
        # profiler's own bookkeeping before and after (a loose bound: the test machine may be busy).
        assert 0.5 * elapsed <= sum(seconds.values()) <= elapsed
    # The probes are gone: the model's functions and hooks and the trainer's methods are the originals.
    assert {name: getattr(model_module, name) for name in functions} == functions
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in trainer.model.modules())
    assert not {"micro_batch", "forward_backward", "update"} & set(vars(trainer))


def test_profile_command_writes_the_table_and_the_json(tmp_path, capsys):
    assert main(["profile", "--preset", "tiny", "--steps", "1", "--warmup", "0", "--seq-len", "512",
                 "--batch-size", "1", "--device", "cpu", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert result["tokens_per_step"] == 512 and not result["compiled"]
    assert result["command"].startswith("lighthouse-train profile --preset tiny --steps 1")
    assert result["commit"] and result["date"].endswith("+00:00")
    assert set(result["modes"]) == {DENSE, LIGHTHOUSE} and result["lighthouse_speedup"] > 0
    for mode in result["modes"].values():
        categories = mode["categories"]
        assert MODEL_PARTS | {"data", "optimizer", "other"} <= set(categories) <= set(profile_module.CATEGORIES)
        for entry in categories.values():
            assert entry["ms"] >= 0 and entry["ms"] == pytest.approx(entry["forward_ms"] + entry["backward_ms"])
        assert sum(e["ms"] for e in categories.values()) == pytest.approx(mode["profiled_step_ms"], rel=1e-9)
        assert sum(e["share"] for e in categories.values()) == pytest.approx(1.0, rel=1e-9)
        assert len(mode["profiled_steps_ms"]) == 1 and mode["tokens_per_s"] > 0
        assert mode["profiled_median_ms"] == mode["profiled_steps_ms"][0]
    assert result["lighthouse_speedup_median"] == pytest.approx(
        result["modes"][DENSE]["profiled_median_ms"] / result["modes"][LIGHTHOUSE]["profiled_median_ms"])
    table = (tmp_path / "tiny.md").read_text()
    assert table == capsys.readouterr().out
    assert "| attention |" in table and "Lighthouse speedup over dense" in table
    assert "| step, profiled, median (ms) |" in table and "by the medians of the profiled steps" in table
    assert f"Commit `{result['commit']}`, {result['date']}: `{result['command']}`" in table
    assert result["layers"] == 4 and result["lighthouse_layers"] == 2
    assert "Lighthouse mode: 2 of 4 layers run Lighthouse, the others dense." in table


def test_profile_command_takes_the_dense_boundary(tmp_path):
    """--dense-boundary changes how many layers run Lighthouse, and the files say so in their name and text."""
    assert main(["profile", "--preset", "tiny", "--steps", "1", "--warmup", "0", "--seq-len", "512",
                 "--batch-size", "1", "--device", "cpu", "--modes", "lighthouse", "--dense-boundary", "0",
                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "tiny-dense-boundary-0.json").read_text())
    assert result["lighthouse_layers"] == 4 and set(result["modes"]) == {LIGHTHOUSE}
    assert "Lighthouse mode: 4 of 4 layers run Lighthouse" in (tmp_path / "tiny-dense-boundary-0.md").read_text()


def test_profile_refuses_no_steps():
    with pytest.raises(ValueError, match="--steps >= 1"):
        profile_module.profile(None, None, steps=0)


@pytest.mark.slow
def test_compiled_profile_has_one_model_category(corpus, tmp_path, monkeypatch):  # noqa: F811
    # aot_eager captures the same graphs as inductor without its C++ code generation (minutes on two cores).
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_(model, backend="aot_eager", **kw))
    model, train = configs(corpus, 2, 2, compile=True)
    result = profile_module.profile(model, train, steps=1, warmup=1)
    for mode in result["modes"].values():
        assert set(mode["categories"]) == {"data", "model", "optimizer", "other"}
        assert mode["categories"]["model"]["share"] > 0.5


@pytest.mark.gpu
def test_profile_on_cuda_times_with_events(tmp_path):
    assert main(["profile", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--device", "cuda",
                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert result["bf16"] and result["device"] != "cuda"  # the GPU's name
    for mode in result["modes"].values():
        categories = mode["categories"]
        assert MODEL_PARTS <= set(categories) and all(e["ms"] >= 0 for e in categories.values())
        assert sum(e["ms"] for e in categories.values()) == pytest.approx(mode["profiled_step_ms"], rel=1e-9)
        # The probes cost host time, which the device does not wait for when it is busy: the profiled step
        # stays near the uninstrumented one (the tiny model is small: a loose bound).
        assert mode["profiled_step_ms"] < 5 * mode["step_ms"]


@pytest.mark.gpu
def test_kernel_profile_on_cuda_splits_the_device_time_by_family(tmp_path):
    assert main(["profile", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--device", "cuda", "--kernels",
                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "tiny.json").read_text())
    for name, mode in result["modes"].items():
        kernels = mode["kernels"]
        families = kernels["families"]
        assert kernels["steps"] == 2 and kernels["busy_ms"] > 0
        assert sum(f["ms"] for f in families.values()) == pytest.approx(kernels["busy_ms"], rel=1e-9)
        assert sum(f["share"] for f in families.values()) == pytest.approx(1.0, rel=1e-9)
        assert families["attention"]["ms"] > 0 and families["gemm"]["ms"] > 0
        # The stage kernels run in Lighthouse mode only.
        assert ("lighthouse" in families) == (name == "lighthouse")
        assert kernels["top"] and all(k["family"] == kernel_profile.family(k["name"]) for k in kernels["top"])
    table = (tmp_path / "tiny.md").read_text()
    assert "## Device time by kernel family" in table and "| lighthouse |" in table


def test_kernel_profile_refuses_a_cpu_device(corpus, tmp_path):  # noqa: F811
    model, train = configs(corpus, 1, 1)
    with pytest.raises(ValueError, match="--kernels: needs a CUDA device, got cpu"):
        profile_module.profile(model, train, steps=1, warmup=0, kernels=True)


def test_the_median_of_the_profiled_steps_ignores_one_slow_step():
    per_step = [{("model", False): seconds} for seconds in (0.3, 0.1, 0.1, 0.1)]
    summary = profile_module._summary(per_step, step_s=0.1, tokens=100)
    assert summary["profiled_step_ms"] == pytest.approx(150.0)
    assert summary["profiled_median_ms"] == pytest.approx(100.0)
