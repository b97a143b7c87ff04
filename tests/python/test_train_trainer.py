"""The two-stage loop: both stages train, the switch keeps the optimizer, resume is bit-exact, the
schedules, and the validation curve (fixed set, both modes, leak probe, time kept out of training)."""

import dataclasses
import json
import math
import random
import time

import pytest
import torch

from lighthouse.train import checkpoint as ckpt
from lighthouse.train import evaluate as evaluate_module
from lighthouse.train import model as model_module
from lighthouse.train import trainer as trainer_module
from lighthouse.train.leak import LeakSettings
from lighthouse.train.model import DENSE, LIGHTHOUSE, LighthouseSettings, ModelConfig, rope_tables
from lighthouse.train.passkey import PasskeySettings
from lighthouse.train.retrieval import RetrievalSettings
from lighthouse.train.trainer import TrainConfig, Trainer, learning_rate

from _train_options import option_params

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


def configs(corpus, lighthouse_steps, dense_steps, selection="paper", rope="before", **train_changes):
    # N = 64 with p=2, L=3, k=8, m=8 keeps S = 48 < 64 entries, so the middle layers run Lighthouse.
    model = ModelConfig(d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=64,
                        rope_theta=10000.0, dense_boundary=1,
                        lighthouse=LighthouseSettings(levels=3, pooling=2, topk=8, tile_budget=8, selection=selection,
                                                      rope=rope))
    fields = dict(lighthouse_steps=lighthouse_steps, dense_steps=dense_steps, batch_size=2, grad_accum=2,
                  lr=3e-3, warmup_steps=2, data=[corpus], val_fraction=0.2, val_windows=4, device="cpu",
                  checkpoint_every=2, passkey=PasskeySettings(lengths=[256], depths=[0.0, 1.0], trials=2),
                  leak=LeakSettings(windows=2, positions=4), retrieval=RetrievalSettings(span=8, distances=[8, 32],
                                                                                         windows=2))
    fields.update(train_changes)
    return model, TrainConfig(**fields)


def _records(run_dir, kind=None):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if kind is None or r["kind"] == kind]


def test_learning_rate_schedule():
    cfg = TrainConfig(lighthouse_steps=80, dense_steps=20, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9) == pytest.approx(1.0)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 55) == pytest.approx(0.55)
    assert learning_rate(cfg, 100) == pytest.approx(0.1)
    cfg.schedule = "constant"
    assert learning_rate(cfg, 99) == 1.0
    cfg.schedule = "linear"
    with pytest.raises(ValueError, match="schedule: expected one of"):
        learning_rate(cfg, 50)


def test_wsd_schedule_boundaries():
    # 100 steps, decay 0.2: warmup over steps 0-9, lr through step 79, a linear decay over steps 80-99.
    cfg = TrainConfig(lighthouse_steps=80, dense_steps=20, lr=1.0, warmup_steps=10, min_lr_ratio=0.1,
                      schedule="wsd", decay_fraction=0.2)
    assert trainer_module.decay_steps(cfg) == 20
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9) == 1.0
    assert learning_rate(cfg, 10) == 1.0
    assert learning_rate(cfg, 79) == 1.0
    assert learning_rate(cfg, 80) == pytest.approx(1.0 - 0.9 / 20)
    assert learning_rate(cfg, 89) == pytest.approx(0.55)
    assert learning_rate(cfg, 98) == pytest.approx(0.1 + 0.9 / 20)
    assert learning_rate(cfg, 99) == pytest.approx(0.1)
    assert learning_rate(cfg, 100) == pytest.approx(0.1)
    lrs = [learning_rate(cfg, s) for s in range(80, 100)]
    assert all(b < a for a, b in zip(lrs, lrs[1:]))
    cfg.decay_fraction = 0.0
    assert learning_rate(cfg, 99) == 1.0
    cfg.decay_fraction = 1.5
    with pytest.raises(ValueError, match="decay_fraction"):
        cfg.validate()


def test_both_stages_train_with_their_attention(corpus, tmp_path, monkeypatch):
    calls = []
    original = model_module.sparse_attention
    monkeypatch.setattr(model_module, "sparse_attention", lambda *a: calls.append(1) or original(*a))
    trainer = Trainer(tmp_path, *configs(corpus, 2, 2, eval_every=0))
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
    records = _records(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and {r["kind"] for r in records} == {"train"}
    assert records[-1]["tokens"] == 4 * 2 * 2 * 64
    for r in records:
        assert r["grad_norm"] > 0 and r["lr"] > 0 and r["step_s"] > 0
    # Each stage's running throughput is its tokens over its step time so far.
    assert records[1]["stage_tokens_per_s"] == pytest.approx(2 * 256 / (records[0]["step_s"] + records[1]["step_s"]))
    assert records[2]["stage_tokens_per_s"] == pytest.approx(records[2]["tokens_per_s"])


def test_steps_reuse_the_trainers_rotary_tables(corpus, tmp_path, monkeypatch):
    """The trainer makes the rotary tables of its length once and every step's forward gets those tensors."""
    trainer = Trainer(tmp_path, *configs(corpus, 1, 1, eval_every=0))
    expected = rope_tables(trainer.model_config, trainer.model_config.max_seq_len, trainer.device)
    assert all(torch.equal(made, want) for made, want in zip(trainer.rope, expected))
    given = []
    original = trainer.forward
    monkeypatch.setattr(trainer, "forward", lambda *a, **kw: given.append(kw["rope"]) or original(*a, **kw))
    trainer.train_step()
    trainer.train_step()
    assert len(given) == 4 and all(rope is trainer.rope for rope in given)  # two micro-batches a step


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
    return [r["loss"] for r in _records(run_dir, "train")]


def _evals(run_dir):
    """Eval records without their timings (which differ from run to run)."""
    return [{k: v for k, v in r.items() if k not in ("eval_s", "wall_s")} for r in _records(run_dir, "eval")]


def _assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_kill_and_resume_matches_an_uninterrupted_run(corpus, tmp_path):
    straight = Trainer(tmp_path / "straight", *configs(corpus, 3, 3, eval_every=2))
    assert straight.run(progress=False) == "done"
    assert [r["step"] for r in _records(tmp_path / "straight", "eval")] == [2, 3, 4, 6]

    # Killed after step 3 (a checkpoint is written on the stop), then resumed by a new process.
    paused = Trainer(tmp_path / "paused", *configs(corpus, 3, 3, eval_every=2))
    assert paused.run(stop_after_step=3, progress=False) == "paused"
    resumed = Trainer(tmp_path / "paused")
    assert resumed.step == 3
    assert resumed.run(progress=False) == "done"
    assert _losses(tmp_path / "paused") == _losses(tmp_path / "straight")
    assert _evals(tmp_path / "paused") == _evals(tmp_path / "straight")
    _assert_same_weights(resumed, straight)

    # Killed during step 6 with the step-5 checkpoint lost: resume from step 4 and replay steps 5 and 6.
    lost = Trainer(tmp_path / "lost", *configs(corpus, 3, 3, eval_every=2))
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
    assert _evals(tmp_path / "lost") == _evals(tmp_path / "straight")
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
    final = _records(tmp_path, "eval")[-1]
    assert final["step"] == 2
    assert {k: ev[k] for k in final if k.startswith(("val_", "leak_"))} == {
        k: v for k, v in final.items() if k.startswith(("val_", "leak_"))}
    assert 0 < ev["val_bpb"] < 20 and ev["val_bytes"] == 4 * 64 - sum(
        int((w[1:] >= 256).sum()) for w in trainer.evaluator.windows)
    assert 0 < ev["val_lh_bpb"] < 20 and {"leak_t1", "leak_t1_se", "leak_t16", "leak_t16_se"} <= set(ev)
    assert [(p["distance"], p["tokens"]) for p in ev["retrieval"]] == [(8, 12), (32, 12)]
    assert all(math.isfinite(p["loss_copy"]) and math.isfinite(p["loss_base"]) for p in ev["retrieval"])
    assert len(ev["passkey"]["cells"]) == 2 and 0 <= ev["passkey"]["accuracy"] <= 1
    assert summary["eval_s"] > 0 and summary["final_eval_s"] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_a_dense_run_measures_dense_mode_only(corpus, tmp_path):
    trainer = Trainer(tmp_path, *configs(corpus, 0, 3, eval_every=2))
    trainer.finish(trainer.run(progress=False))
    evals = _records(tmp_path, "eval")
    assert [r["step"] for r in evals] == [2, 3]
    for record in evals:
        assert record["stage"] == DENSE and 0 < record["val_bpb"] < 20
        assert not [k for k in record if k.startswith(("val_lh", "leak"))]


def test_evaluation_is_fixed_restores_the_model_and_stays_out_of_the_training_time(corpus, tmp_path, monkeypatch):
    trainer = Trainer(tmp_path, *configs(corpus, 2, 2, eval_every=1))
    windows = trainer.evaluator.windows.clone()
    original = evaluate_module.Evaluator.point
    seen = []

    class Clock:
        """The trainer's clock; every evaluation takes 1000 s on it."""

        offset = 0.0

        @staticmethod
        def perf_counter():
            return time.perf_counter() + Clock.offset

    def slow_point(self, model):
        seen.append((model.stage, model.training))
        Clock.offset += 1000.0
        result = original(self, model)
        seen.append((model.stage, model.training))
        return result

    monkeypatch.setattr(trainer_module, "time", Clock)
    monkeypatch.setattr(evaluate_module.Evaluator, "point", slow_point)
    trainer.run(progress=False)
    assert torch.equal(trainer.evaluator.windows, windows)
    assert seen == [(LIGHTHOUSE, True)] * 4 + [(DENSE, True)] * 4
    train, evals = _records(tmp_path, "train"), _records(tmp_path, "eval")
    assert [r["step"] for r in evals] == [1, 2, 3, 4]
    assert [r["stage"] for r in evals] == [LIGHTHOUSE, LIGHTHOUSE, DENSE, DENSE]
    assert all(r["eval_s"] >= 1000.0 for r in evals)
    assert all(r["step_s"] < 1000.0 for r in train)
    wall = 0.0
    for r, e in zip(train, evals):
        wall += r["step_s"]
        assert r["wall_s"] == pytest.approx(wall) and e["wall_s"] == r["wall_s"]
        assert r["tokens_per_s"] == pytest.approx(256 / r["step_s"])
    assert trainer.eval_s == pytest.approx(sum(r["eval_s"] for r in evals))
    # The same weights measured again give the same numbers: the set and the probe are fixed.
    again = trainer.evaluator.point(trainer.model)
    assert {k: v for k, v in evals[-1].items() if k.startswith(("val_", "leak_"))} == again


@pytest.mark.parametrize("selection, rope", option_params())
def test_two_stage_runs_with_every_layer_option(corpus, tmp_path, selection, rope):
    trainer = Trainer(tmp_path, *configs(corpus, 2, 1, selection=selection, rope=rope, eval_every=0))
    assert trainer.run(progress=False) == "done"
    switch, end = _records(tmp_path, "eval")
    assert (switch["step"], end["step"]) == (2, 3)
    for record in (switch, end):
        assert math.isfinite(record["val_lh_bpb"]) and math.isfinite(record["leak_t1"])
    if selection == "causal":
        assert switch["leak_t1"] == 0.0 and switch["leak_t16"] == 0.0


def test_old_configs_load(corpus, tmp_path):
    model, train = configs(corpus, 2, 2)
    old = train.to_dict()
    for key in ("val_windows", "eval_every", "decay_fraction", "leak", "retrieval"):
        del old[key]
    old["val_tokens"] = 65536
    restored = TrainConfig.from_dict(old)
    assert restored.val_windows == 64 and restored.leak == LeakSettings() and restored.eval_every == 0
    assert dataclasses.replace(restored, val_windows=4, leak=train.leak, retrieval=train.retrieval) == train


def test_progress_line_shows_an_eta(capsys):
    bar = trainer_module._Progress(total=40, initial=0, enabled=True)  # stderr is not a terminal here
    bar.began -= 30.0  # as if the first 10 steps took 30 s
    bar.update({"step": 10, "stage": DENSE, "loss": 1.0, "tokens_per_s": 5.0, "wall_s": 60.0})
    assert "step 10/40: dense loss 1.0000 5 tok/s, 1.0 min, ETA 1.5 min" in capsys.readouterr().err


def test_run_queues_each_step_before_reading_the_last(corpus, tmp_path, monkeypatch):
    events = []
    launch, finish = Trainer.launch_step, Trainer.finish_step

    def launch_step(self):
        launched = launch(self)
        events.append(f"launch {launched.step}")
        return launched

    def finish_step(self, launched):
        events.append(f"finish {launched.step}")
        return finish(self, launched)

    monkeypatch.setattr(Trainer, "launch_step", launch_step)
    monkeypatch.setattr(Trainer, "finish_step", finish_step)
    monkeypatch.setattr(Trainer, "evaluate", lambda self: events.append(f"evaluate {self.step}"))
    trainer = Trainer(tmp_path / "queued", *configs(corpus, 3, 2, eval_every=0, checkpoint_every=0))
    assert trainer.run(progress=False) == "done"
    # Step s + 1 is queued before step s is read, except where an evaluation or checkpoint needs step s read:
    # at the switch (step 3) and at the end.
    assert events == ["launch 1", "launch 2", "finish 1", "launch 3", "finish 2", "finish 3", "evaluate 3",
                      "launch 4", "launch 5", "finish 4", "finish 5", "evaluate 5"]
    stepped = Trainer(tmp_path / "stepped", *configs(corpus, 3, 2, eval_every=0, checkpoint_every=0))
    for _ in range(5):
        stepped.train_step()
    assert _losses(tmp_path / "queued") == _losses(tmp_path / "stepped")
    queued, one_by_one = _records(tmp_path / "queued"), _records(tmp_path / "stepped")
    assert [{k: r[k] for k in ("step", "stage", "lr", "grad_norm", "tokens")} for r in queued] == \
        [{k: r[k] for k in ("step", "stage", "lr", "grad_norm", "tokens")} for r in one_by_one]
    assert trainer.wall_s == pytest.approx(sum(r["step_s"] for r in queued))
