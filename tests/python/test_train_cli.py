"""The lighthouse-train command line: step options, and the tiny preset end to end."""

import json

import pytest

from lighthouse.train.cli import main, resolve_steps


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


def test_tiny_preset_end_to_end(tmp_path, capsys):
    run = tmp_path / "tiny"
    args = ["--preset", "tiny", "--out", str(run), "--steps", "4", "--lighthouse-steps", "2", "--batch-size", "2",
            "--val-tokens", "2048", "--passkey-trials", "1", "--no-progress"]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and (summary["lighthouse_steps"], summary["dense_steps"]) == (2, 2)
    assert 0 < summary["eval"]["val_bpb"] < 20
    assert len(summary["eval"]["passkey"]["cells"]) == 15
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["lighthouse", "lighthouse", "dense", "dense"]
    for name in ("report.md", "loss_vs_step.png", "loss_vs_wall.png", "passkey.png"):
        assert (run / "report" / name).stat().st_size > 0
    assert "| tiny | done | 4 (2 + 2) |" in (run / "report" / "report.md").read_text()
    assert (run / "hf" / "config.json").exists()

    # Running the finished folder again resumes at the end: nothing more is trained.
    assert main(["--out", str(run), "--no-progress", "--no-report"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4

    capsys.readouterr()
    assert main(["eval", str(run), "--passkey-lengths", "256", "--passkey-trials", "2", "--val-tokens", "1024"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 4 and len(result["passkey"]["cells"]) == 5 and result["val_bytes"] > 0

    assert main(["export", str(run), "--out", str(tmp_path / "hf16"), "--dtype", "bfloat16"]) == 0
    assert json.loads((tmp_path / "hf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"

    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "cmp")]) == 0
    assert "1.00x" in (tmp_path / "cmp" / "report.md").read_text()


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "holds no checkpoints" in capsys.readouterr().err
