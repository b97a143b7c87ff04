"""The training loop on CUDA: bf16 autocast, fused AdamW, both stages, activation checkpointing, evaluations, no
host synchronisation in a queued step, and --compile."""

import json
import math
import random

import pytest
import torch

from lighthouse.train.model import DENSE, LIGHTHOUSE, LighthouseSettings, ModelConfig
from lighthouse.train.passkey import PasskeySettings
from lighthouse.train.retrieval import RetrievalSettings
from lighthouse.train.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.gpu


def _corpus(tmp_path):
    rng = random.Random(0)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": "".join(rng.choice("abcdefgh ") for _ in range(20000))}) + "\n"
                            for _ in range(8)))
    return docs


@pytest.mark.parametrize("activation_checkpointing", [False, True])
def test_two_stages_on_cuda_in_bf16(tmp_path, activation_checkpointing):
    docs = _corpus(tmp_path)
    # N = 4096 with p=4, L=3, k=256, m=128 keeps S = 256 + 2*4*256 = 2304 entries.
    model = ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=256, max_seq_len=4096,
                        dense_boundary=1, lighthouse=LighthouseSettings(levels=3, pooling=4, topk=256, tile_budget=128))
    train = TrainConfig(lighthouse_steps=3, dense_steps=2, batch_size=2, warmup_steps=1, data=[str(docs)],
                        val_fraction=0.25, val_windows=2, eval_every=2, device="cuda", bf16=True,
                        activation_checkpointing=activation_checkpointing,
                        passkey=PasskeySettings(lengths=[1024, 4096], trials=2),
                        retrieval=RetrievalSettings(windows=2))
    trainer = Trainer(tmp_path / "run", model, train)
    assert trainer.run(progress=False) == "done"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r["kind"] == "train"]
    evals = [r for r in map(json.loads, lines) if r["kind"] == "eval"]
    assert [r["stage"] for r in records] == [LIGHTHOUSE] * 3 + [DENSE] * 2
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in records)
    assert records[-1]["loss"] < records[0]["loss"]
    assert [r["step"] for r in evals] == [2, 3, 4, 5]
    for r in evals:
        assert all(math.isfinite(r[k]) for k in ("val_bpb", "val_lh_bpb", "leak_t1", "leak_t16"))
    summary = trainer.finish("done")
    assert math.isfinite(summary["eval"]["val_bpb"])
    assert [p["distance"] for p in summary["eval"]["retrieval"]] == [64, 256, 1024]
    assert next(trainer.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("stage", [LIGHTHOUSE, DENSE])
def test_a_queued_step_never_waits_for_the_device(tmp_path, stage):
    docs = _corpus(tmp_path)
    model = ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=256, max_seq_len=4096,
                        dense_boundary=1, lighthouse=LighthouseSettings(levels=3, pooling=4, topk=256, tile_budget=128))
    lighthouse_steps = 4 if stage == LIGHTHOUSE else 0
    train = TrainConfig(lighthouse_steps=lighthouse_steps, dense_steps=4 - lighthouse_steps, batch_size=2,
                        warmup_steps=1, data=[str(docs)], val_fraction=0.25, val_windows=2, device="cuda", bf16=True)
    trainer = Trainer(tmp_path / "run", model, train)
    trainer.train_step()  # the first step allocates the optimizer state and initialises the libraries
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        launched = [trainer.launch_step() for _ in range(2)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    records = [trainer.finish_step(step) for step in launched]
    assert [r["stage"] for r in records] == [stage, stage] and all(math.isfinite(r["loss"]) for r in records)


def test_compiled_training_on_cuda_matches_eager(tmp_path):
    docs = _corpus(tmp_path)
    model = ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=256, max_seq_len=4096,
                        dense_boundary=1, lighthouse=LighthouseSettings(levels=3, pooling=4, topk=256, tile_budget=128))
    losses = {}
    for compiled in (False, True):
        train = TrainConfig(lighthouse_steps=2, dense_steps=1, batch_size=2, warmup_steps=1, data=[str(docs)],
                            val_fraction=0.25, val_windows=2, device="cuda", bf16=True, compile=compiled)
        trainer = Trainer(tmp_path / str(compiled), model, train)
        records = [trainer.train_step() for _ in range(3)]
        assert [r["stage"] for r in records] == [LIGHTHOUSE, LIGHTHOUSE, DENSE]
        losses[compiled] = [r["loss"] for r in records]
    # bf16: inductor's fused kernels round differently from eager's.
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)


def test_fused_norm_trains_like_the_composite_norm_on_cuda(tmp_path):
    """The RMSNorm option on CUDA under bf16 autocast: the same first losses (bf16 rounding apart)."""
    docs = _corpus(tmp_path)
    losses = {}
    for norm in ("composite", "fused"):
        model = ModelConfig(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=256, max_seq_len=4096,
                            dense_boundary=1, norm=norm,
                            lighthouse=LighthouseSettings(levels=3, pooling=4, topk=256, tile_budget=128))
        train = TrainConfig(lighthouse_steps=2, dense_steps=1, batch_size=2, warmup_steps=1, data=[str(docs)],
                            val_fraction=0.25, val_windows=2, device="cuda", bf16=True)
        trainer = Trainer(tmp_path / norm, model, train)
        losses[norm] = [trainer.train_step()["loss"] for _ in range(3)]
    assert losses["fused"] == pytest.approx(losses["composite"], rel=1e-2)
