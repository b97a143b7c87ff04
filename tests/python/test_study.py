"""The paired study: step budgets, intervals and the resumable driver (CPU, tiny model)."""

import json
import math
import shutil
import statistics
import subprocess
import sys

import pytest

from lighthouse.train import study


def test_t975_matches_the_table_and_the_expansion():
    assert study.t975(1) == 12.706
    assert study.t975(2) == 4.303
    assert study.t975(30) == 2.042
    # Exact values: df 40 -> 2.0211, df 120 -> 1.9799.
    assert abs(study.t975(40) - 2.0211) < 0.003
    assert abs(study.t975(120) - 1.9799) < 0.001
    with pytest.raises(ValueError, match="degrees of freedom"):
        study.t975(0)


def test_paired_interval_is_the_student_t_interval():
    got = study.paired_interval([0.10, 0.20, 0.30])
    half = 4.303 * 0.1 / math.sqrt(3)
    assert got["delta_mean"] == pytest.approx(0.2)
    assert got["ci95_low"] == pytest.approx(0.2 - half)
    assert got["ci95_high"] == pytest.approx(0.2 + half)
    one = study.paired_interval([0.25])
    assert one == {"delta_mean": 0.25, "ci95_low": None, "ci95_high": None}
    with pytest.raises(ValueError, match="no differences"):
        study.paired_interval([])


@pytest.mark.parametrize("dense_steps,t_dense,t_lh,fraction", [
    (100, 1.0, 0.3, 0.2), (57, 0.9, 0.41, 0.2), (10, 2.0, 1.9, 0.4), (200, 0.5, 0.1, 0.0), (33, 1.0, 1.0, 0.2)])
def test_equal_time_steps_is_the_largest_count_within_the_budget(dense_steps, t_dense, t_lh, fraction):
    step_s = {"dense": t_dense, "lighthouse": t_lh}
    n = study.equal_time_steps(dense_steps, fraction, step_s)
    budget = dense_steps * t_dense
    assert study.arm_seconds(n, fraction, step_s) <= budget
    # Brute force: no larger count up to 20x fits.
    assert all(study.arm_seconds(m, fraction, step_s) > budget for m in range(n + 1, 20 * dense_steps))
    lighthouse, dense = study.decay_split(n, fraction)
    assert lighthouse + dense == n and dense == round(fraction * n)


def test_plan_gives_the_dense_count_to_equal_tokens_and_more_steps_to_equal_time():
    plan = study.make_plan(90.0, 0.2, {"dense": 0.9, "lighthouse": 0.3})
    arms = plan["arms"]
    assert arms["dense"]["steps"] == 100 and arms["equal-tokens"]["steps"] == 100
    assert arms["equal-time"]["steps"] == study.equal_time_steps(100, 0.2, plan["step_s"])
    assert arms["equal-time"]["steps"] > 100
    assert plan["seconds"]["equal-time"] <= plan["seconds"]["dense"]
    assert study.stage_split(10, 0.2) == (8, 2)
    assert study.stage_split(10, 0.2, switch=0.6) == (6, 4)
    assert study.arm_seconds(10, 0.2, {"dense": 1.0, "lighthouse": 0.5}, switch=0.6) == 6 * 0.5 + 4 * 1.0
    with pytest.raises(ValueError, match="at least one step in each stage"):
        study.make_plan(1.5, 0.2, {"dense": 1.0, "lighthouse": 0.3})


def test_median_step_s_leaves_out_the_warmup(tmp_path):
    path = tmp_path / "metrics.jsonl"
    times = [5.0, 4.0, 3.0, 1.0, 1.2, 0.9, 1.1, 1.0]
    lines = [{"kind": "train", "step": i + 1, "step_s": t} for i, t in enumerate(times)]
    lines.insert(4, {"kind": "eval", "step": 4, "step_s": 99.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert study.median_step_s(path, skip=3) == statistics.median(times[3:])
    with pytest.raises(ValueError, match="no train records"):
        study.median_step_s(path, skip=20)


def test_final_val_refuses_an_unfinished_arm():
    assert study.final_val_nats({"status": "done", "eval": {"val_bpb": 2.0}}) == pytest.approx(2 * math.log(2))
    with pytest.raises(ValueError, match="finished run"):
        study.final_val_nats({"name": "x", "status": "time"})


def test_driver_trains_paired_arms_resumes_and_summarizes(tmp_path):
    """Two seeds of the tiny model on the CPU: calibration, three arms each, a stop at the deadline and a
    resumption, then the summary's comparisons equal the arms' own final losses. The step counts come from
    given step times (a loaded CPU's timings would make them arbitrary); the calibration is checked apart."""
    runs, results = tmp_path / "runs", tmp_path / "results"
    small = ["--device", "cpu", "--val-windows", "2", "--passkey-trials", "1", "--retrieval-distances", "64",
             "--eval-every", "0"]
    base = [sys.executable, "-m", "lighthouse.train.study", "run", "--runs", str(runs), "--results", str(results),
            "--dense-preset", "tiny", "--lighthouse-preset", "tiny", "--seeds", "0", "1", "--parallel", "2",
            "--dense-seconds", "1.5", "--step-s", "0.25", "0.1"]
    # A deadline too close to start any arm: the plan is written, nothing else.
    first = subprocess.run(base + ["--deadline-s", "1", "--", *small], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    plan = json.loads((runs / "plan.json").read_text())
    assert {arm: spec["steps"] for arm, spec in plan["arms"].items()} == {
        "dense": 6, "equal-time": 12, "equal-tokens": 6}
    assert "seed 0: dense not started" in first.stdout
    assert not (runs / "seed0" / "dense").exists()
    second = subprocess.run(base + ["--deadline-s", "900", "--", *small], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    for seed in (0, 1):
        assert f"seed {seed}: dense done, equal-time done, equal-tokens done" in second.stdout
        for arm, spec in plan["arms"].items():
            summary = json.loads((results / f"seed{seed}" / arm / "summary.json").read_text())
            assert summary["step"] == spec["steps"]
            assert summary["lighthouse_steps"] == (spec["steps"] - round(0.2 * spec["steps"]) if spec["lighthouse"]
                                                   else 0)
    out = subprocess.run([sys.executable, "-m", "lighthouse.train.study", "summarize", str(results)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    summary = json.loads((results / "summary.json").read_text())
    finals = summary["final_val_nats"]
    for c in summary["comparisons"]:
        arm = "equal-time" if "equal-time" in c["comparison"] else "equal-tokens"
        assert c["seeds"] == [0, 1]
        assert c["per_seed"] == [finals[arm][s] - finals["dense"][s] for s in ("0", "1")]
        assert c["ci95_low"] < c["delta_mean"] < c["ci95_high"]
    assert summary["leak_and_spike"]["equal-time"]["0"]["leak_t1"] is not None

    # A lever: k = 32 and the switch at half the steps, at the dense arm's time with its own step time.
    lever = [sys.executable, "-m", "lighthouse.train.study", "lever", "k32-half", "--runs", str(runs), "--results",
             str(results), "--seeds", "0", "--switch", "0.5", "--lighthouse-step-s", "0.05", "--", *small,
             "--topk", "32"]
    done = subprocess.run(lever, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "seed 0: lever-k32-half done" in done.stdout
    spec = json.loads((runs / "levers" / "k32-half.json").read_text())
    assert spec["steps"] == study.equal_time_steps(6, 0.2, {"dense": 0.25, "lighthouse": 0.05}, 0.5) == 10
    arm = results / "seed0" / "lever-k32-half"
    assert json.loads((arm / "summary.json").read_text())["lighthouse_steps"] == 5
    assert json.loads((arm / "config.json").read_text())["model"]["lighthouse"]["topk"] == 32
    out = subprocess.run([sys.executable, "-m", "lighthouse.train.study", "summarize", str(results)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    summary = json.loads((results / "summary.json").read_text())
    (entry,) = summary["levers"]
    final = study.final_val_nats(json.loads((arm / "summary.json").read_text()))
    assert entry["lever"] == "k32-half" and entry["seed"] == 0
    assert entry["delta_vs_dense"] == final - summary["final_val_nats"]["dense"]["0"]
    assert entry["delta_vs_equal-time"] == final - summary["final_val_nats"]["equal-time"]["0"]


def test_calibration_times_each_mode_and_plans_from_it(tmp_path):
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "lighthouse.train.study", "run", "--runs", str(runs), "--results",
               str(tmp_path / "results"), "--dense-preset", "tiny", "--lighthouse-preset", "tiny", "--seeds", "0",
               "--calibration-steps", "5", "--dense-seconds", "1000", "--deadline-s", "1", "--",
               "--device", "cpu", "--val-windows", "2"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    plan = json.loads((runs / "plan.json").read_text())
    for mode, lighthouse_steps in (("dense", 0), ("lighthouse", 5)):
        folder = runs / "calibration" / mode
        assert plan["step_s"][mode] == study.median_step_s(folder / "metrics.jsonl")
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "paused" and summary["step"] == 5
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert sum(r["stage"] == "lighthouse" for r in records) == lighthouse_steps
    assert plan["arms"]["dense"]["steps"] == round(1000 / plan["step_s"]["dense"])


def test_bad_options_are_reported_with_their_name(tmp_path, capsys):
    assert study.main(["lever", "x", "--runs", str(tmp_path), "--results", str(tmp_path), "--switch", "1.5"]) == 2
    assert "--switch: expected a fraction strictly between 0 and 1, got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["summarize", str(tmp_path), "--", "--topk", "3"])


def test_too_few_calibration_steps_are_refused_before_any_run(tmp_path, capsys):
    command = ["run", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
               "--calibration-steps", "3", "--dense-preset", "tiny", "--lighthouse-preset", "tiny"]
    assert study.main(command) == 2
    assert "calibration steps: expected more than 3, got 3" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "calibration").exists()


def test_run_trains_only_the_arms_named(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    command = [sys.executable, "-m", "lighthouse.train.study", "run", "--runs", str(runs), "--results", str(results),
               "--dense-preset", "tiny", "--lighthouse-preset", "tiny", "--seeds", "0", "--dense-seconds", "1.5",
               "--step-s", "0.25", "0.1", "--arms", "equal-tokens", "--deadline-s", "900", "--", "--device", "cpu",
               "--val-windows", "2", "--passkey-trials", "1", "--retrieval-distances", "64", "--eval-every", "0"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "seed 0: equal-tokens done" in done.stdout
    assert sorted(p.name for p in (runs / "seed0").iterdir()) == ["equal-tokens"]
    assert json.loads((results / "seed0" / "equal-tokens" / "summary.json").read_text())["step"] == 6
    # Resumed from the results alone (run folders gone, e.g. on a fresh machine): a finished arm is not retrained.
    shutil.rmtree(runs / "seed0")
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "seed 0: equal-tokens done" in again.stdout and not (runs / "seed0").exists()
    with pytest.raises(SystemExit):
        study.main(["run", "--runs", str(runs), "--results", str(results), "--arms", "sparse"])


def test_summarize_before_any_finished_arm_writes_an_empty_summary(tmp_path):
    plan = study.make_plan(10.0, 0.2, {"dense": 1.0, "lighthouse": 0.5})
    plan.update({"dense_preset": "tiny", "lighthouse_preset": "tiny"})
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert study.main(["summarize", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["comparisons"] == [] and summary["levers"] == []
    assert not (tmp_path / "validation.png").exists()
