"""lighthouse-train under torchrun with --context-parallel, end to end on two CPU processes (gloo): rank 0 alone
logs and writes the summary, the export and the report; the DCP checkpoint exports from one process; a bad
layout makes every rank exit with the error (never a hang: the commands run under a timeout)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import lighthouse
from lighthouse.train import checkpoint as ckpt

# The folder holding the lighthouse package this process imported (the installed one, or the source tree with its
# LIGHTHOUSE_OPS_LIBRARY), so the spawned processes import the same package.
PACKAGE_PARENT = pathlib.Path(lighthouse.__file__).resolve().parents[1]
TIMEOUT_S = 240


def _run(args, tmp_path):
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def _torchrun(processes, train_args, tmp_path, monitor_interval_s=None):
    """monitor_interval_s: how often torchrun's agent polls its workers. Once it sees one fail it stops the
    others, so a test that expects every rank's own error gives them this long to print it."""
    monitor = [] if monitor_interval_s is None else [f"--monitor-interval={monitor_interval_s}"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               *monitor, "-m", "lighthouse.train", *train_args]
    return _run(command, tmp_path)


TRAIN = ["--preset", "tiny", "--steps", "2", "--lighthouse-steps", "1", "--seq-len", "256", "--batch-size", "2",
         "--device", "cpu", "--val-windows", "2", "--passkey-trials", "1", "--retrieval-distances", "32",
         "--no-progress"]


def test_torchrun_with_context_parallel_trains_and_rank_0_writes(tmp_path):
    out = tmp_path / "run"
    result = _torchrun(2, [*TRAIN, "--out", str(out), "--context-parallel", "2"], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["step"] == 2
    assert summary["parallel"] == {"world": 2, "context_parallel": 2, "data_parallel": 1}
    assert json.loads(result.stdout) == summary  # printed once, by rank 0
    assert result.stderr.count("tiny: ") == 1 and "rank 0 of W = 2: C = 2 ranks share each sequence" in result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("train", 1), ("eval", 1), ("train", 2), ("eval", 2)]
    assert (out / "hf" / "model.safetensors").exists() and (out / "report" / "report.md").exists()
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000001", "step_00000002"]

    exported = _run([sys.executable, "-m", "lighthouse.train", "export", str(out), "--out", str(tmp_path / "hf")],
                    tmp_path)
    assert exported.returncode == 0, exported.stderr[-4000:]
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == (out / "hf" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--context-parallel", "3"], "--context-parallel: expected a divisor of the number of processes W = 2, got 3"),
    (["--context-parallel", "2", "--seq-len", "255"], "--seq-len: expected a multiple of --context-parallel C = 2"),
], ids=["C-not-dividing-W", "N-not-divisible-by-C"])
def test_torchrun_with_a_bad_layout_fails_on_every_rank(tmp_path, args, message):
    result = _torchrun(2, [*TRAIN, "--out", str(tmp_path / "run"), *args], tmp_path, monitor_interval_s=10)
    assert result.returncode != 0
    assert result.stderr.count(f"lighthouse-train: error: {message}") == 2, result.stderr[-4000:]
