"""The byte-level Llama: stage modes, causality, Lighthouse layers, RoPE placement and the HF export."""

import json

import pytest
import torch
import transformers

import lighthouse
from lighthouse.train import model as model_module
from lighthouse.train.export import export_hf
from lighthouse.train.model import (DENSE, LIGHTHOUSE, Attention, ByteLlama, LighthouseSettings, ModelConfig,
                                    apply_rope, dense_attention, layer_modes, layer_options, project_qkv,
                                    rope_tables)
from lighthouse.train.vocab import VOCAB_SIZE

from _train_options import option_params


def micro_config(selection="paper", rope="before", **changes) -> ModelConfig:
    # N = 64 with p=2, L=3, k=8, m=8 keeps S = 16 + 2*2*8 = 48 < 64 entries, so Lighthouse really runs.
    fields = dict(d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=64,
                  rope_theta=10000.0, dense_boundary=1,
                  lighthouse=LighthouseSettings(levels=3, pooling=2, topk=8, tile_budget=8, selection=selection,
                                                rope=rope))
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


def test_invalid_shapes_and_options_are_refused():
    with pytest.raises(ValueError, match="n_kv_heads"):
        ByteLlama(micro_config(n_kv_heads=3))
    with pytest.raises(ValueError, match="lighthouse.selection: expected one of .*got 'top'"):
        ByteLlama(micro_config(selection="top"))
    with pytest.raises(ValueError, match="lighthouse.rope: expected one of .*got 'after'"):
        ByteLlama(micro_config(rope="after"))
    bad = micro_config()
    bad.lighthouse.scorer = "sum"
    with pytest.raises(ValueError, match="lighthouse.scorer: expected one of .*got 'sum'"):
        ByteLlama(bad)
    bad = micro_config()
    bad.lighthouse.topk = 0
    with pytest.raises(ValueError, match="lighthouse.topk: expected at least 1, got 0"):
        ByteLlama(bad)
    with pytest.raises(ValueError, match="dense_boundary: expected 0 or more, got -1"):
        ByteLlama(micro_config(dense_boundary=-1))
    with pytest.raises(ValueError, match="norm: expected one of .*got 'layer'"):
        ByteLlama(micro_config(norm="layer"))


def test_fused_norm_computes_the_composite_norm():
    """F.rms_norm against the composite arithmetic, forward and backward, on fp32 input (the model's residual
    stream is fp32, also under bf16 autocast); they round differently, hence a tolerance of a few fp32 ulps."""
    torch.manual_seed(0)
    composite, fused = model_module.RMSNorm(32, 1e-5), model_module.RMSNorm(32, 1e-5, fused=True)
    with torch.no_grad():
        composite.weight.uniform_(0.5, 1.5)
        fused.weight.copy_(composite.weight)
    x = 3 * torch.randn(2, 64, 32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = composite(xa), fused(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-6, atol=1e-6)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.weight.grad, composite.weight.grad, rtol=1e-5, atol=1e-5)


def test_fused_norm_model_matches_and_old_configs_stay_composite():
    torch.manual_seed(0)
    composite = ByteLlama(micro_config())
    fused = ByteLlama(micro_config(norm="fused"))
    fused.load_state_dict(composite.state_dict())
    tokens = torch.randint(0, VOCAB_SIZE, (2, 64))
    for stage in (DENSE, LIGHTHOUSE):
        composite.set_stage(stage)
        fused.set_stage(stage)
        torch.testing.assert_close(fused(tokens), composite(tokens), rtol=1e-5, atol=1e-5)
    saved = micro_config(norm="fused").to_dict()
    assert ModelConfig.from_dict(saved).norm == "fused"
    del saved["norm"]
    assert ModelConfig.from_dict(saved).norm == "composite"


def test_old_configs_keep_rotating_before_pooling():
    old = micro_config().to_dict()
    del old["lighthouse"]["rope"], old["lighthouse"]["selection"]
    settings = ModelConfig.from_dict(old).lighthouse
    assert (settings.rope, settings.selection) == ("before", "paper")
    new = micro_config(selection="causal", rope="pooled")
    assert ModelConfig.from_dict(new.to_dict()) == new
    assert LighthouseSettings().rope == "pooled"


def test_layer_options_carry_the_settings():
    cos, sin = torch.ones(4, 8), torch.zeros(4, 8)
    original = layer_options(LighthouseSettings(levels=3, pooling=2, topk=8, tile_budget=8, rope="before"), cos, sin)
    assert original == {"levels": 3, "pooling": 2, "topk": 8, "tile_budget": 8, "scorer": "norm", "dilation": 4,
                        "fallback": "dense", "selection": "paper", "rope": None}
    options = layer_options(LighthouseSettings(selection="causal", rope="pooled"), cos, sin)
    assert options["selection"] == "causal" and options["rope"][0] is cos and options["rope"][1] is sin


def test_rope_reaches_the_layer_as_configured(monkeypatch):
    """pooled: the layer gets raw q/k and the model's tables; before: rotated q/k; dense mode: unchanged."""
    calls = []

    def recording(q, k, v, **options):
        calls.append((q, k, options))
        return model_module.dense_attention(q, k, v)

    monkeypatch.setattr(lighthouse, "lighthouse_attention", recording)
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (2, 64))
    results = {}
    for rope in ("pooled", "before"):
        model = ByteLlama(micro_config(rope=rope))
        model.load_state_dict(ByteLlama(micro_config()).state_dict() if rope == "pooled" else results["weights"])
        results["weights"] = model.state_dict()
        with torch.no_grad():
            results[rope, DENSE] = model(tokens)
            model.set_stage(LIGHTHOUSE)
            calls.clear()
            results[rope, LIGHTHOUSE] = model(tokens)
        layer = model.model.layers[1]
        hidden = model.model.layers[0](model.model.embed_tokens(tokens), *rope_tables(model.config, 64, "cpu"))
        normed = layer.input_layernorm(hidden)
        raw_q = layer.self_attn.q_proj(normed).view(2, 64, 4, 8)
        raw_k = layer.self_attn.k_proj(normed).view(2, 64, 2, 8)
        q, k, options = calls[0]
        cos, sin = rope_tables(model.config, 64, "cpu")
        if rope == "pooled":
            assert torch.equal(q, raw_q) and torch.equal(k, raw_k)
            assert torch.equal(options["rope"][0], cos) and torch.equal(options["rope"][1], sin)
            assert options["rope"][0].dtype == torch.float32 and options["rope"][0].shape == (64, 8)
        else:
            assert torch.equal(q, apply_rope(raw_q, cos, sin)) and torch.equal(k, apply_rope(raw_k, cos, sin))
            assert options["rope"] is None
        assert len(calls) == 2
    # A recording layer that runs dense attention on what it gets: rotating first gives the dense model back.
    assert torch.equal(results["before", DENSE], results["pooled", DENSE])
    assert torch.equal(results["before", LIGHTHOUSE], results["before", DENSE])
    assert not torch.allclose(results["pooled", LIGHTHOUSE], results["pooled", DENSE])


def test_given_rope_tables_are_used_as_computed_ones(monkeypatch):
    """forward(rope=tables) uses the caller's tables: the same bits as tables it computes, those exact tensors in
    the Lighthouse layers, and other tables change the result; tables of another shape are refused."""
    calls = []

    def recording(q, k, v, **options):
        calls.append(options["rope"])
        return model_module.dense_attention(q, k, v)

    monkeypatch.setattr(lighthouse, "lighthouse_attention", recording)
    torch.manual_seed(0)
    tokens, targets = torch.randint(0, 256, (2, 64)), torch.randint(0, 256, (2, 64))
    model = ByteLlama(micro_config(rope="pooled"))
    tables = rope_tables(model.config, 64, "cpu")
    with torch.no_grad():
        for stage in (DENSE, LIGHTHOUSE):
            model.set_stage(stage)
            calls.clear()
            given = model(tokens, targets, rope=tables)
            assert torch.equal(given, model(tokens, targets))
            if stage == LIGHTHOUSE:
                assert calls[0][0] is tables[0] and calls[0][1] is tables[1]
            shifted = rope_tables(ByteLlama(micro_config(rope="pooled", rope_theta=500.0)).config, 64, "cpu")
            assert not torch.equal(model(tokens, targets, rope=shifted), given)
        short = rope_tables(model.config, 32, "cpu")
        with pytest.raises(ValueError, match=r"rope: expected cos and sin tables of shape \(64, 8\), got \(32, 8\)"):
            model(tokens, rope=short)
        with pytest.raises(ValueError, match=r"got \(64, 8\) and \(64, 4\)"):
            model(tokens, rope=(tables[0], tables[1][:, :4]))


def _gradients(outputs, inputs):
    """Gradients of a fixed random weighting of outputs with respect to inputs (fresh, fp64)."""
    generator = torch.Generator().manual_seed(1)
    total = sum((o * torch.randn(o.shape, generator=generator, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(total, inputs)


def test_qkv_projection_computes_the_separate_linears():
    """q, k and v come from one GEMM over concatenated weights: the values and gradients (of the input and of every
    weight) are those of the separate Linear layers, in their order."""
    torch.manual_seed(0)
    attention = Attention(micro_config()).double()
    x = torch.randn(2, 64, 32, dtype=torch.float64, requires_grad=True)
    fused = project_qkv(x, attention)
    assert [t.shape for t in fused] == [(2, 64, 4, 8), (2, 64, 2, 8), (2, 64, 2, 8)]
    separate = (attention.q_proj(x).view(2, 64, 4, 8), attention.k_proj(x).view(2, 64, 2, 8),
                attention.v_proj(x).view(2, 64, 2, 8))
    weights = [x, attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]
    for got, want in zip(list(fused) + list(_gradients(fused, weights)),
                         list(separate) + list(_gradients(separate, weights))):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_dense_attention_with_kv_groups_equals_repeated_kv_heads():
    """enable_gqa reads each KV head for its group of query heads: the same as repeating k and v per query head,
    forward and backward (fp64)."""
    torch.manual_seed(0)
    q = torch.randn(2, 48, 4, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 48, 2, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out = dense_attention(q, k, v)
    heads = [t.transpose(1, 2) for t in (q, k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2))]
    want = torch.nn.functional.scaled_dot_product_attention(*heads, is_causal=True).transpose(1, 2)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    for got, expected in zip(_gradients([out], [q, k, v]), _gradients([want], [q, k, v])):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


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

    def counting(q, k, v, settings, cos, sin):
        calls.append((tuple(q.shape), tuple(k.shape), settings))
        return original(q, k, v, settings, cos, sin)

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


@pytest.mark.parametrize("selection, rope", option_params())
def test_lighthouse_stage_backpropagates_to_every_parameter(selection, rope):
    torch.manual_seed(0)
    model = ByteLlama(micro_config(selection=selection, rope=rope))
    tokens = torch.randint(0, 256, (2, 65))
    with torch.no_grad():
        dense = model(tokens[:, :-1])
    model.set_stage(LIGHTHOUSE)
    logits = model(tokens[:, :-1])
    assert torch.isfinite(logits).all() and not torch.allclose(logits, dense)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
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
