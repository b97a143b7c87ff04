"""Hugging Face transformers: a tiny random LlamaForCausalLM with attn_implementation="lighthouse" trains on
the CPU, and switching its layers to dense changes (finite) logits."""

import pytest
import torch

import lighthouse
import lighthouse.hf

transformers = pytest.importorskip("transformers")

SEQ_LEN = 512
# min N = topk * pooling^(levels-1) = 128; S = 128 + 2 * 2 * 32 = 256 < 512.
OPTIONS = {"levels": 3, "pooling": 2, "topk": 32, "tile_budget": 16, "dense_layers": [0]}


def tiny_llama(options=OPTIONS):
    lighthouse.register_hf()
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=SEQ_LEN, attention_dropout=0.0,
    )
    config.lighthouse = dict(options)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM._from_config(config, attn_implementation="lighthouse")


@pytest.fixture
def lighthouse_calls(monkeypatch):
    """Counts the layer calls that took the Lighthouse path."""
    calls = []
    original = lighthouse.hf.lighthouse_attention

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(lighthouse.hf, "lighthouse_attention", counting)
    return calls


def test_tiny_llama_trains_with_lighthouse(lighthouse_calls):
    model = tiny_llama()
    assert model.config._attn_implementation == "lighthouse"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 64, (2, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(3):
        loss = model(input_ids=tokens, labels=tokens).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    # Layer 0 is dense by the config; layers 1 and 2 ran Lighthouse in each of the 3 steps.
    assert len(lighthouse_calls) == 6
    assert lighthouse_calls[0]["levels"] == 3 and lighthouse_calls[0]["topk"] == 32


def test_switching_to_dense_changes_the_logits(lighthouse_calls):
    model = tiny_llama()
    tokens = torch.randint(0, 64, (1, SEQ_LEN), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sparse = model(input_ids=tokens).logits
        assert lighthouse.set_attention_mode(model, "dense") == ["dense"] * 3
        dense = model(input_ids=tokens).logits
        lighthouse.set_attention_mode(model, "lighthouse", dense_layers=[0])
        again = model(input_ids=tokens).logits
    assert len(lighthouse_calls) == 4
    assert torch.isfinite(sparse).all() and torch.isfinite(dense).all()
    assert not torch.allclose(sparse, dense)
    assert torch.equal(sparse, again)


def test_padding_masks_are_refused():
    model = tiny_llama()
    tokens = torch.randint(0, 64, (2, SEQ_LEN), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(tokens)
    mask[0, :5] = 0
    with pytest.raises(ValueError, match=r"^lighthouse: attention_mask: expected None"):
        model(input_ids=tokens, attention_mask=mask)


def test_unknown_config_keys_are_refused():
    model = tiny_llama({**OPTIONS, "top_k": 8})
    with pytest.raises(ValueError, match=r"^lighthouse: config.lighthouse: expected keys"):
        model(input_ids=torch.zeros(1, SEQ_LEN, dtype=torch.long))
