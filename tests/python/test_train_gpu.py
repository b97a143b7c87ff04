"""The training loop on CUDA: bf16 autocast, fused AdamW, both stages, activation checkpointing, evaluations."""

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


@pytest.mark.parametrize("activation_checkpointing", [False, True])
def test_two_stages_on_cuda_in_bf16(tmp_path, activation_checkpointing):
    rng = random.Random(0)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": "".join(rng.choice("abcdefgh ") for _ in range(20000))}) + "\n"
                            for _ in range(8)))
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
