"""The study presets: the model and recipe they describe, and arms that differ only in the layer options."""

import json
import random

import pytest
import torch

from lighthouse import _geometry
from lighthouse.train.model import ByteLlama
from lighthouse.train.presets import get_preset, preset_names
from lighthouse.train.trainer import Trainer, decay_steps

ARMS = ("study-dense", "study-paper", "study-lagged", "study-causal", "study-paper-before")


def test_study_presets_describe_the_study():
    for name in ARMS:
        preset = get_preset(name)
        model, train = preset.model, preset.train
        assert (model.d_model, model.n_layers, model.n_heads, model.n_kv_heads, model.head_dim) == (384, 8, 3, 3, 128)
        assert (model.ffn_hidden, model.max_seq_len, model.dense_boundary) == (1024, 32768, 1)
        lh = model.lighthouse
        assert (lh.pooling, lh.levels, lh.topk, lh.tile_budget) == (4, 3, 1024, 128)
        assert (train.batch_size, train.lr, train.warmup_steps, train.schedule) == (2, 2e-3, 50, "wsd")
        assert (train.decay_fraction, train.eval_every, train.val_windows) == (0.2, 50, 64)
        assert (train.device, train.bf16, train.data, train.name) == ("cuda", True, ["data/prose.jsonl.xz"], name)
        assert train.total_steps == 600
        if name == "study-dense":
            assert (train.lighthouse_steps, preset.switch_at_decay) == (0, False)
        else:
            # The switch sits at the start of the decay.
            assert train.dense_steps == decay_steps(train) == 120 and preset.switch_at_decay
    # Lighthouse really shrinks the work at 32K: N >= topk * p^(L-1) and S < N.
    geo = _geometry.geometry(32768, 3, 4, 1024, 128)
    assert 32768 >= 1024 * 16 and geo.kept == 10240
    options = {name: (get_preset(name).model.lighthouse.selection, get_preset(name).model.lighthouse.rope)
               for name in ARMS[1:]}
    assert options == {"study-paper": ("paper", "pooled"), "study-lagged": ("lagged", "pooled"),
                       "study-causal": ("causal", "pooled"), "study-paper-before": ("paper", "before")}
    assert 14e6 < ByteLlama(get_preset("study-paper").model).num_parameters() < 16e6
    assert set(ARMS) <= set(preset_names())


def test_arms_with_one_seed_start_from_the_same_weights_and_batches(tmp_path):
    rng = random.Random(0)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(rng.choice(("a", "bb", "ccc")) for _ in range(900))}) + "\n"
                              for _ in range(10)))
    trainers = {}
    for name in ARMS:
        preset = get_preset(name)
        model, train = preset.model, preset.train
        # The study's recipe at CPU size: only the sizes, the data and the device change.
        model.d_model, model.n_layers, model.n_heads, model.n_kv_heads, model.ffn_hidden = 32, 4, 2, 2, 64
        model.max_seq_len = 128
        model.lighthouse.topk, model.lighthouse.tile_budget, model.lighthouse.pooling = 8, 8, 2
        train.data, train.device, train.val_windows, train.val_fraction = [str(corpus)], "cpu", 2, 0.2
        trainers[name] = Trainer(tmp_path / name, model, train)
    first = trainers["study-dense"]
    batch = first.sampler.next_batch(2)
    for name, trainer in trainers.items():
        for (key, a), (_, b) in zip(first.model.state_dict().items(), trainer.model.state_dict().items()):
            assert torch.equal(a, b), (name, key)
        if trainer is not first:
            assert torch.equal(trainer.sampler.next_batch(2), batch), name
            assert torch.equal(trainer.evaluator.windows, first.evaluator.windows), name


def test_tiny_preset_keeps_its_recipe():
    preset = get_preset("tiny")
    assert (preset.train.lighthouse_steps, preset.train.dense_steps) == (240, 60)
    assert preset.train.schedule == "wsd" and decay_steps(preset.train) == 60 and preset.switch_at_decay
    assert preset.train.eval_every > 0 and preset.train.val_windows <= 16


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("study-nope")
