"""The byte-level Llama: stage modes, causality, Lighthouse layers and the Hugging Face export."""

import json

import pytest
import torch
import transformers

from lighthouse.train import model as model_module
from lighthouse.train.export import export_hf
from lighthouse.train.model import DENSE, LIGHTHOUSE, ByteLlama, LighthouseSettings, ModelConfig, layer_modes
from lighthouse.train.vocab import VOCAB_SIZE


def micro_config(**changes) -> ModelConfig:
    # N = 64 with p=2, L=3, k=8, m=8 keeps S = 16 + 2*2*8 = 48 < 64 entries, so Lighthouse really runs.
    fields = dict(d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=64,
                  rope_theta=10000.0, dense_boundary=1,
                  lighthouse=LighthouseSettings(levels=3, pooling=2, topk=8, tile_budget=8))
    fields.update(changes)
    return ModelConfig(**fields)


def test_boundary_layers_stay_dense():
    config = micro_config(n_layers=6, dense_boundary=2)
    assert layer_modes(config, LIGHTHOUSE) == [DENSE, DENSE, LIGHTHOUSE, LIGHTHOUSE, DENSE, DENSE]
    assert layer_modes(config, DENSE) == [DENSE] * 6
    model = ByteLlama(config)
    model.set_stage(LIGHTHOUSE)
    assert model.attention_modes() == layer_modes(config, LIGHTHOUSE)
    model.set_stage(DENSE)
    assert model.attention_modes() == [DENSE] * 6
    with pytest.raises(ValueError):
        layer_modes(config, "sparse")


def test_invalid_shapes_are_refused():
    with pytest.raises(ValueError, match="n_kv_heads"):
        ByteLlama(micro_config(n_kv_heads=3))


def test_dense_forward_is_causal():
    # Only the dense stage is strictly causal: Lighthouse's top-k compares the scores of a whole
    # tile, so a later token can change which earlier entries are kept (the values still flow causally).
    torch.manual_seed(0)
    model = ByteLlama(micro_config()).eval()
    tokens = torch.randint(0, 256, (2, 64))
    changed = tokens.clone()
    changed[:, 40:] = (changed[:, 40:] + 1) % 256
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert a.shape == (2, 64, VOCAB_SIZE) and torch.isfinite(a).all()
    assert torch.equal(a[:, :40], b[:, :40])
    assert not torch.equal(a[:, 40:], b[:, 40:])


def test_lighthouse_layers_call_lighthouse_attention(monkeypatch):
    calls = []
    original = model_module.sparse_attention

    def counting(q, k, v, settings):
        calls.append((tuple(q.shape), tuple(k.shape), settings))
        return original(q, k, v, settings)

    monkeypatch.setattr(model_module, "sparse_attention", counting)
    torch.manual_seed(0)
    model = ByteLlama(micro_config())
    tokens = torch.randint(0, 256, (2, 64))
    with torch.no_grad():
        dense = model(tokens)
        assert calls == []
        model.set_stage(LIGHTHOUSE)
        sparse = model(tokens)
    assert [c[:2] for c in calls] == [((2, 64, 4, 8), (2, 64, 2, 8))] * 2
    assert torch.isfinite(sparse).all()
    # 48 of 64 entries are kept, so the Lighthouse layers really change the output.
    assert not torch.allclose(dense, sparse)


def test_lighthouse_stage_backpropagates_to_every_parameter():
    torch.manual_seed(0)
    model = ByteLlama(micro_config())
    model.set_stage(LIGHTHOUSE)
    tokens = torch.randint(0, 256, (2, 65))
    loss = torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_export_loads_in_transformers_with_equal_logits(tmp_path):
    torch.manual_seed(0)
    config = micro_config(n_layers=3, rope_theta=500000.0, max_seq_len=128)
    model = ByteLlama(config).eval()
    # Larger, non-uniform weights than the init so that attention, RoPE and the norms all matter.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 1.0) + (1.0 if p.ndim == 1 else 0.0))
    export_hf(model, config, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLM"] and saved["num_key_value_heads"] == 2
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert hf.dtype == torch.float32
    assert set(hf.state_dict()) >= set(model.state_dict())
    tokens = torch.randint(0, 259, (2, 100))
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(tokens).logits
    assert ours.abs().max() > 1.0
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
