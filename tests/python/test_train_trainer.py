"""The two-stage loop: both stages train, the switch keeps the optimizer, resume is bit-exact."""

import json
import math
import random

import pytest
import torch

from lighthouse.train import checkpoint as ckpt
from lighthouse.train import model as model_module
from lighthouse.train.model import DENSE, LIGHTHOUSE, LighthouseSettings, ModelConfig
from lighthouse.train.passkey import PasskeySettings
from lighthouse.train.trainer import TrainConfig, Trainer, learning_rate

WORDS = ("the", "house", "letter", "morning", "walk", "sister", "quite", "never", "said", "would",
         "Elinor", "Bath", "carriage", "fortune", "evening", "ball", "dear", "young", "man", "hope")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    lines = []
    for i in range(12):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(300, 600))) + ".\n"
        lines.append(json.dumps({"id": f"doc{i}", "text": text}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def configs(corpus, lighthouse_steps, dense_steps, **train_changes):
    # N = 64 with p=2, L=3, k=8, m=8 keeps S = 48 < 64 entries, so the middle layers run Lighthouse.
    model = ModelConfig(d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=64,
                        rope_theta=10000.0, dense_boundary=1,
                        lighthouse=LighthouseSettings(levels=3, pooling=2, topk=8, tile_budget=8))
    fields = dict(lighthouse_steps=lighthouse_steps, dense_steps=dense_steps, batch_size=2, grad_accum=2,
                  lr=3e-3, warmup_steps=2, data=[corpus], val_fraction=0.2, val_tokens=256, device="cpu",
                  checkpoint_every=2, passkey=PasskeySettings(lengths=[256], depths=[0.0, 1.0], trials=2))
    fields.update(train_changes)
    return model, TrainConfig(**fields)


def test_learning_rate_schedule():
    cfg = TrainConfig(lighthouse_steps=80, dense_steps=20, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9) == pytest.approx(1.0)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 55) == pytest.approx(0.55)
    assert learning_rate(cfg, 100) == pytest.approx(0.1)
    cfg.schedule = "constant"
    assert learning_rate(cfg, 99) == 1.0


def test_both_stages_train_with_their_attention(corpus, tmp_path, monkeypatch):
    calls = []
    original = model_module.sparse_attention
    monkeypatch.setattr(model_module, "sparse_attention", lambda *a: calls.append(1) or original(*a))
    trainer = Trainer(tmp_path, *configs(corpus, 2, 2))
    assert trainer.model.attention_modes() == [DENSE, LIGHTHOUSE, LIGHTHOUSE, DENSE]
    per_step = []
    for _ in range(4):
        before = len(calls)
        record = trainer.train_step()
        per_step.append((record["stage"], len(calls) - before))
        assert math.isfinite(record["loss"]) and record["tokens_per_s"] > 0
    # Two Lighthouse layers times two micro-batches per step in stage 1, none in stage 2.
    assert per_step == [(LIGHTHOUSE, 4), (LIGHTHOUSE, 4), (DENSE, 0), (DENSE, 0)]
    assert trainer.model.attention_modes() == [DENSE] * 4
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["tokens"] == 4 * 2 * 2 * 64


def _optimizer_snapshot(optimizer):
    return {id(p): (s, {k: v.clone() for k, v in s.items()}) for p, s in optimizer.state.items()}


def test_switch_keeps_optimizer_state(corpus, tmp_path):
    trainer = Trainer(tmp_path, *configs(corpus, 3, 2))
    optimizer = trainer.optimizer
    assert trainer.run(stop_after_step=3, progress=False) == "paused"
    assert trainer.model.stage == LIGHTHOUSE
    snapshot = _optimizer_snapshot(optimizer)
    assert len(snapshot) == len(list(trainer.model.parameters()))
    trainer.enter_stage()
    assert trainer.model.stage == DENSE and trainer.optimizer is optimizer
    for p, state in optimizer.state.items():
        same_dict, values = snapshot[id(p)]
        assert state is same_dict
        for key, value in values.items():
            assert torch.equal(state[key], value), key
        assert int(state["step"]) == 3
    assert trainer.run(progress=False) == "done"
    assert all(int(s["step"]) == 5 for s in optimizer.state.values())
    assert all(not torch.equal(optimizer.state[p]["exp_avg"], snapshot[id(p)][1]["exp_avg"])
               for p in trainer.model.parameters())


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_kill_and_resume_matches_an_uninterrupted_run(corpus, tmp_path):
    straight = Trainer(tmp_path / "straight", *configs(corpus, 3, 3))
    assert straight.run(progress=False) == "done"

    # Killed after step 3 (a checkpoint is written on the stop), then resumed by a new process.
    paused = Trainer(tmp_path / "paused", *configs(corpus, 3, 3))
    assert paused.run(stop_after_step=3, progress=False) == "paused"
    resumed = Trainer(tmp_path / "paused")
    assert resumed.step == 3
    assert resumed.run(progress=False) == "done"
    assert _losses(tmp_path / "paused") == _losses(tmp_path / "straight")
    _assert_same_weights(resumed, straight)

    # Killed during step 6 with the step-5 checkpoint lost: resume from step 4 and replay steps 5 and 6.
    lost = Trainer(tmp_path / "lost", *configs(corpus, 3, 3))
    lost.run(stop_after_step=5, progress=False)
    newest = ckpt.latest_checkpoint(tmp_path / "lost")
    assert newest.name == "step_00000005.pt"
    newest.unlink()
    with open(tmp_path / "lost" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "stage": "den')  # a record torn by the kill
    again = Trainer(tmp_path / "lost")
    assert again.step == 4
    again.run(progress=False)
    assert _losses(tmp_path / "lost") == _losses(tmp_path / "straight")
    _assert_same_weights(again, straight)


def test_time_budget_stops_with_a_checkpoint(corpus, tmp_path):
    trainer = Trainer(tmp_path, *configs(corpus, 2, 2))
    assert trainer.run(max_minutes=0.0, progress=False) == "time"
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000000.pt"


def test_checkpoints_are_pruned_and_never_left_half_written(corpus, tmp_path):
    trainer = Trainer(tmp_path, *configs(corpus, 4, 2, keep_checkpoints=2))
    trainer.run(progress=False)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004.pt", "step_00000006.pt"]
    assert not [p for p in ckpt.checkpoint_dir(tmp_path).iterdir() if p.name.startswith(".")]


def test_finish_exports_and_evaluates(corpus, tmp_path):
    trainer = Trainer(tmp_path, *configs(corpus, 1, 1))
    summary = trainer.finish(trainer.run(progress=False))
    assert summary["status"] == "done" and summary["step"] == 2
    assert (tmp_path / "hf" / "model.safetensors").exists()
    ev = summary["eval"]
    assert 0 < ev["val_bpb"] < 20 and ev["val_bytes"] > 0
    assert len(ev["passkey"]["cells"]) == 2 and 0 <= ev["passkey"]["accuracy"] <= 1
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
