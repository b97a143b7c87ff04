"""The lighthouse-train command line: step and recipe options, the help, and the tiny preset end to end."""

import json
import pathlib
import re

import pytest

from lighthouse.train.cli import _configs_from_args, build_parser, main, resolve_steps
from lighthouse.train.report import compare

POC_RUNS = pathlib.Path(__file__).resolve().parents[2] / "bench" / "results" / "poc-64k"


def test_resolve_steps():
    assert resolve_steps(300, 240, None, None, None) == (240, 60)
    assert resolve_steps(300, 240, 100, None, None) == (80, 20)
    assert resolve_steps(300, 240, 100, "0.75", None) == (75, 25)
    assert resolve_steps(300, 240, None, None, "30") == (270, 30)
    assert resolve_steps(300, 240, None, "10", "5") == (10, 5)
    assert resolve_steps(200, 0, None, None, None) == (0, 200)
    with pytest.raises(ValueError):
        resolve_steps(300, 240, 100, "60", "60")
    with pytest.raises(ValueError):
        resolve_steps(300, 240, 10, "20", None)


def _configs(*args):
    return _configs_from_args(build_parser().parse_args(["train", *args]))


def test_recipe_options():
    model, train = _configs("--preset", "study-paper")
    assert (train.lighthouse_steps, train.dense_steps, train.schedule) == (480, 120, "wsd")
    _, train = _configs("--preset", "study-paper", "--steps", "100", "--decay-fraction", "0.3")
    assert (train.lighthouse_steps, train.dense_steps, train.decay_fraction) == (70, 30, 0.3)
    # Explicit stage lengths win over the preset's switch placement; an explicit --switch-at-decay conflicts.
    _, train = _configs("--preset", "study-paper", "--lighthouse-steps", "500")
    assert (train.lighthouse_steps, train.dense_steps) == (500, 100)
    with pytest.raises(ValueError, match="--switch-at-decay sets the stage lengths"):
        _configs("--preset", "study-paper", "--switch-at-decay", "--dense-steps", "10")
    with pytest.raises(ValueError, match="expected --schedule wsd, got cosine"):
        _configs("--preset", "study-paper", "--schedule", "cosine", "--switch-at-decay")
    _, train = _configs("--preset", "study-paper", "--no-switch-at-decay", "--steps", "10")
    assert (train.lighthouse_steps, train.dense_steps) == (8, 2)
    _, train = _configs("--preset", "study-dense")
    assert (train.lighthouse_steps, train.dense_steps) == (0, 600)
    _, train = _configs("--preset", "study-dense", "--switch-at-decay", "--steps", "50")
    assert (train.lighthouse_steps, train.dense_steps) == (40, 10)
    model, train = _configs("--preset", "tiny", "--selection", "causal", "--rope", "before", "--eval-every", "7",
                            "--val-windows", "3", "--retrieval-distances", "64", "512", "--schedule", "constant")
    assert (model.lighthouse.selection, model.lighthouse.rope) == ("causal", "before")
    assert (train.eval_every, train.val_windows, train.retrieval.distances, train.schedule) == (7, 3, [64, 512],
                                                                                                "constant")
    assert (train.lighthouse_steps, train.dense_steps) == (240, 60)  # the preset's split without a decay
    model, _ = _configs("--preset", "long-paper", "--topk", "2304", "--scorer", "dilated", "--dense-boundary", "2",
                        "--norm", "fused")
    assert (model.lighthouse.topk, model.lighthouse.scorer, model.dense_boundary) == (2304, "dilated", 2)
    assert model.norm == "fused" and _configs("--preset", "long-paper")[0].norm == "composite"
    assert model.max_seq_len == 131072


def test_top_level_help_lists_the_training_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--preset", "--steps", "--selection", "--rope", "--topk", "--scorer", "--dense-boundary", "--norm",
                   "--schedule", "--decay-fraction",
                   "--switch-at-decay", "--eval-every", "--val-windows", "--retrieval-distances", "--max-minutes",
                   "{train,eval,export,generate,compare,profile}"):
        assert option in text, option


def test_tiny_preset_end_to_end(tmp_path, capsys):
    # rope "before" runs on every version of the layer; the pooled placement is covered in test_train_model.
    # At 512 tokens the Lighthouse layers still shrink the work (S = 128 + 2*2*64 = 384).
    run = tmp_path / "tiny"
    args = ["--preset", "tiny", "--out", str(run), "--steps", "3", "--seq-len", "512", "--batch-size", "2",
            "--rope", "before", "--eval-every", "2", "--val-windows", "2", "--retrieval-distances", "64", "256",
            "--passkey-trials", "1"]
    assert main(args) == 0
    # After the last step every final phase says what it does and how long it took, one line each.
    log = capsys.readouterr().err
    for phase in ("export: the dense model to", "final evaluation: retrieval at distances [64, 256]",
                  "final evaluation: passkey, 15 prompts at lengths [256, 512, 1024]", "report: "):
        assert re.search(re.escape(phase) + r".* \.\.\. \d+\.\d s\n", log), phase
    summary = json.loads((run / "summary.json").read_text())
    # 3 steps with the tiny preset's decay of 0.2: 1 decay step, the switch right before it.
    assert summary["status"] == "done" and (summary["lighthouse_steps"], summary["dense_steps"]) == (2, 1)
    assert 0 < summary["eval"]["val_bpb"] < 20 and 0 < summary["eval"]["val_lh_bpb"] < 20
    assert "leak_t1" in summary["eval"] and "leak_t16_se" in summary["eval"]
    assert [p["distance"] for p in summary["eval"]["retrieval"]] == [64, 256]
    assert len(summary["eval"]["passkey"]["cells"]) == 15
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"], r["stage"]) for r in records] == [
        ("train", 1, "lighthouse"), ("train", 2, "lighthouse"), ("eval", 2, "lighthouse"),
        ("train", 3, "dense"), ("eval", 3, "dense")]
    for name in ("report.md", "loss_vs_step.png", "loss_vs_wall.png", "validation.png", "retrieval.png",
                 "passkey.png"):
        assert (run / "report" / name).stat().st_size > 0
    report = (run / "report" / "report.md").read_text()
    assert report.startswith("# Lighthouse run report: tiny\n")
    assert "| tiny | done | 3 (2 + 1) |" in report
    assert "comparison" not in report and "speedup" not in report and "1.00x" not in report
    assert "| passkey acc. (chance 10%) |" in report and "chance is 10%" in report
    assert "adapts to dense attention" in report and "part of the jump is the loss of the leak" in report
    assert (run / "hf" / "config.json").exists() and (run / "hf" / "tokenizer.json").exists()

    # Running the finished folder again resumes at the end: nothing more is trained or measured.
    assert main(["--out", str(run), "--no-progress", "--no-report"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 5

    capsys.readouterr()
    assert main(["eval", str(run), "--passkey-lengths", "256", "--passkey-trials", "2", "--val-windows", "2",
                 "--retrieval-distances", "100"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 3 and len(result["passkey"]["cells"]) == 5 and result["val_bytes"] > 0
    assert result["val_bpb"] == summary["eval"]["val_bpb"] and result["leak_t1"] == summary["eval"]["leak_t1"]
    assert [p["distance"] for p in result["retrieval"]] == [100]

    assert main(["export", str(run), "--out", str(tmp_path / "hf16"), "--dtype", "bfloat16"]) == 0
    assert json.loads((tmp_path / "hf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"

    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "It is a truth", "--max-new-tokens", "8", "--seed", "1"]) == 0
    assert 0 < len(capsys.readouterr().out.encode()) <= 8 * 3 + 1  # up to 8 bytes (U+FFFD is 3) and a newline

    assert main(["compare", str(run), str(POC_RUNS / "dense"), "--out", str(tmp_path / "cmp")]) == 0
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert report.startswith("# Lighthouse run comparison\n") and "speedup" in report and "| 1.00x |" in report


def test_compare_reads_runs_from_before_the_evaluation_curves(tmp_path):
    # Metrics without "kind", no eval records, a summary without retrieval or leak values.
    report = compare([POC_RUNS / "dense", POC_RUNS / "lighthouse"], tmp_path).read_text()
    assert "| lighthouse | done | 720 (504 + 216) |" in report
    assert "| dense | 3.229" not in report  # losses are shown in nats/byte
    assert f"| dense | {3.229313037529738 * 0.6931471805599453:.4f} | 3.2293 |" in report
    assert (tmp_path / "retrieval.png").exists() is False and (tmp_path / "validation.png").exists() is False


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "holds no checkpoints" in capsys.readouterr().err
