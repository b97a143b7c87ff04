"""Hugging Face transformers: a tiny random LlamaForCausalLM with attn_implementation="lighthouse" trains on
the CPU, switching its layers to dense changes (finite) logits, the Lighthouse layers get un-rotated q and k
with the model's rotary tables (config.lighthouse rope "pooled"), and dense layers, cached prefill and decoding
keep transformers' exact behaviour."""

import copy

import pytest
import torch

import lighthouse
import lighthouse.hf

transformers = pytest.importorskip("transformers")

SEQ_LEN = 512
# min N = topk * pooling^(levels-1) = 128; S = 128 + 2 * 2 * 32 = 256 < 512.
OPTIONS = {"levels": 3, "pooling": 2, "topk": 32, "tile_budget": 16, "dense_layers": [0]}
LIGHTHOUSE_ARGS = {"levels": 3, "pooling": 2, "topk": 32, "tile_budget": 16}


def tiny_llama(options=OPTIONS, attn_implementation="lighthouse", prepare=True):
    lighthouse.register_hf()
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=SEQ_LEN + 8, attention_dropout=0.0,
    )
    config.lighthouse = dict(options)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation=attn_implementation)
    return lighthouse.hf.prepare_model(model) if prepare else model


def tokens(batch=1, length=SEQ_LEN, seed=2):
    return torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(seed))


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
    batch = tokens(2, seed=1)
    losses = []
    for _ in range(3):
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    # Layer 0 is dense by the config; layers 1 and 2 ran Lighthouse in each of the 3 steps, with the tables.
    assert len(lighthouse_calls) == 6
    assert lighthouse_calls[0]["levels"] == 3 and lighthouse_calls[0]["topk"] == 32
    assert all(call["rope"] is not None for call in lighthouse_calls)


def test_switching_to_dense_changes_the_logits(lighthouse_calls):
    model = tiny_llama()
    ids = tokens()
    with torch.no_grad():
        sparse = model(input_ids=ids).logits
        assert lighthouse.set_attention_mode(model, "dense") == ["dense"] * 3
        dense = model(input_ids=ids).logits
        lighthouse.set_attention_mode(model, "lighthouse", dense_layers=[0])
        again = model(input_ids=ids).logits
    assert len(lighthouse_calls) == 4
    assert torch.isfinite(sparse).all() and torch.isfinite(dense).all()
    assert not torch.allclose(sparse, dense)
    assert torch.equal(sparse, again)


def _attention_inputs(model, layer):
    """Records the hidden states that reach model layer `layer`'s attention module, and its output."""
    seen = {}
    attention = model.model.layers[layer].self_attn

    def record(module, args, kwargs, output):
        seen["hidden_states"] = kwargs["hidden_states"]
        seen["output"] = output[0]

    attention.register_forward_hook(record, with_kwargs=True)
    return seen


def test_lighthouse_layers_get_raw_q_k_and_the_model_tables():
    """A Lighthouse layer's output equals o_proj(lighthouse_attention(raw q, raw k, v, rope=model tables)), and
    differs from the same call on q and k rotated before pooling."""
    model = tiny_llama().float().eval()
    attention = model.model.layers[1].self_attn
    with torch.no_grad():  # sharp attention, so that where q and k are rotated shows in the output
        attention.q_proj.weight.mul_(20)
        attention.k_proj.weight.mul_(20)
    seen = _attention_inputs(model, 1)
    ids = tokens(2, seed=4)
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
        h = seen["hidden_states"]
        batch, seq_len, _ = h.shape
        q = attention.q_proj(h).view(batch, seq_len, 4, 16)
        k = attention.k_proj(h).view(batch, seq_len, 2, 16)
        v = attention.v_proj(h).view(batch, seq_len, 2, 16)
        positions = torch.arange(seq_len)[None]
        cos, sin = model.model.rotary_emb(h, positions)
        expected = lighthouse.lighthouse_attention(
            q, k, v, scale=attention.scaling, rope=(cos, sin), **LIGHTHOUSE_ARGS
        )
        expected = attention.o_proj(expected.reshape(batch, seq_len, -1))
        rotate = transformers.models.llama.modeling_llama.apply_rotary_pos_emb
        q_rot, k_rot = rotate(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        before = lighthouse.lighthouse_attention(
            q_rot.transpose(1, 2), k_rot.transpose(1, 2), v, scale=attention.scaling, **LIGHTHOUSE_ARGS
        )
        before = attention.o_proj(before.reshape(batch, seq_len, -1))
    torch.testing.assert_close(seen["output"], expected, rtol=1e-6, atol=1e-7)
    assert (seen["output"] - before).abs().max() > 1e-2 * expected.abs().max()


def test_rope_before_keeps_the_rotation_of_every_token(lighthouse_calls):
    """rope "before" needs no hooks: Lighthouse gets transformers' rotated q and k and no tables."""
    model = tiny_llama({**OPTIONS, "rope": "before"}, prepare=False).eval()
    seen = _attention_inputs(model, 1)
    with torch.no_grad():
        model(input_ids=tokens(), use_cache=False)
        attention = model.model.layers[1].self_attn
        h = seen["hidden_states"]
        q = attention.q_proj(h).view(1, SEQ_LEN, 4, 16).transpose(1, 2)
        k = attention.k_proj(h).view(1, SEQ_LEN, 2, 16).transpose(1, 2)
        v = attention.v_proj(h).view(1, SEQ_LEN, 2, 16)
        cos, sin = model.model.rotary_emb(h, torch.arange(SEQ_LEN)[None])
        q, k = transformers.models.llama.modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
        expected = lighthouse.lighthouse_attention(
            q.transpose(1, 2), k.transpose(1, 2), v, scale=attention.scaling, **LIGHTHOUSE_ARGS
        )
        expected = attention.o_proj(expected.reshape(1, SEQ_LEN, -1))
    assert all(call["rope"] is None for call in lighthouse_calls) and len(lighthouse_calls) == 2
    assert torch.equal(seen["output"], expected)


def test_dense_layers_are_unchanged_by_the_hooks():
    """All layers dense: the prepared Lighthouse model gives transformers' SDPA model's logits bit for bit, with
    and without a cache."""
    model = tiny_llama().eval()
    reference = tiny_llama(attn_implementation="sdpa", prepare=False).eval()
    reference.load_state_dict(model.state_dict())
    lighthouse.set_attention_mode(model, "dense")
    ids = tokens(2, seed=5)
    with torch.no_grad():
        for use_cache in (False, True):
            assert torch.equal(model(input_ids=ids, use_cache=use_cache).logits,
                               reference(input_ids=ids, use_cache=use_cache).logits)


def test_cached_prefill_stores_rotated_keys_and_decoding_is_transformers_own(lighthouse_calls):
    model = tiny_llama().eval()
    ids = tokens(seed=6)
    hidden = [_attention_inputs(model, layer) for layer in range(3)]
    with torch.no_grad():
        uncached = model(input_ids=ids, use_cache=False).logits
        prefill = model(input_ids=ids, use_cache=True)
        assert len(lighthouse_calls) == 4
        # The prefill ran Lighthouse with the pooled rotation (same logits as without a cache) ...
        assert torch.equal(prefill.logits, uncached)
        cache = prefill.past_key_values
        # ... and every layer's cache holds the keys rotated by transformers, exactly.
        rotate = transformers.models.llama.modeling_llama.apply_rotary_pos_emb
        for layer, seen in enumerate(hidden):
            attention = model.model.layers[layer].self_attn
            h = seen["hidden_states"]
            k = attention.k_proj(h).view(1, SEQ_LEN, 2, 16).transpose(1, 2)
            cos, sin = model.model.rotary_emb(h, torch.arange(SEQ_LEN)[None])
            assert torch.equal(cache.layers[layer].keys, rotate(k, k, cos, sin)[1]), f"layer {layer}"
            assert torch.equal(cache.layers[layer].values, attention.v_proj(h).view(1, SEQ_LEN, 2, 16).transpose(1, 2))
        # A decoding step runs transformers' attention on that cache: the same logits as an unprepared model.
        plain = tiny_llama({**OPTIONS, "rope": "before"}, prepare=False).eval()
        plain.load_state_dict(model.state_dict())
        step = prefill.logits[:, -1:].argmax(-1)
        decoded = model(input_ids=step, cache=copy.deepcopy(cache), use_cache=True).logits
        assert torch.equal(decoded, plain(input_ids=step, cache=copy.deepcopy(cache), use_cache=True).logits)
        assert len(lighthouse_calls) == 4
        # generate() (prefill with Lighthouse, then cached greedy steps) agrees with those steps.
        generated = model.generate(input_ids=ids, max_new_tokens=2, do_sample=False)
        assert torch.equal(generated[:, SEQ_LEN], step[:, 0])
        assert torch.equal(generated[:, SEQ_LEN + 1], decoded[:, -1].argmax(-1))


def test_unprepared_model_with_pooled_rope_is_refused():
    model = tiny_llama(prepare=False)
    with pytest.raises(ValueError, match=r"^lighthouse: config.lighthouse\['rope'\]: expected a model prepared"):
        model(input_ids=tokens())


def test_prepare_model_twice_installs_the_hooks_once():
    model = tiny_llama()
    assert lighthouse.hf.prepare_model(model) is model
    attention = model.model.layers[1].self_attn
    assert len(attention._forward_pre_hooks) == 1 and len(attention._forward_hooks) == 1


def test_padding_masks_are_refused():
    model = tiny_llama()
    ids = tokens(2, seed=3)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    with pytest.raises(ValueError, match=r"^lighthouse: attention_mask: expected None"):
        model(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize(
    "options, message",
    [({**OPTIONS, "top_k": 8}, r"^lighthouse: config.lighthouse: expected keys"),
     ({**OPTIONS, "rope": "after"}, r"^lighthouse: config.lighthouse\['rope'\]: expected one of")],
    ids=["unknown key", "rope mode"],
)
def test_invalid_config_is_refused(options, message):
    model = tiny_llama(options, prepare=False)
    with pytest.raises(ValueError, match=message):
        model(input_ids=torch.zeros(1, SEQ_LEN, dtype=torch.long))
