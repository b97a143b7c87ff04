"""The Hugging Face path equals the training model's path: a ByteLlama in its Lighthouse stage (raw q/k with the
model's rotary tables, rope "pooled") and the same weights exported to a transformers Llama run with
attn_implementation="lighthouse" (prepare_model, the same Lighthouse options and dense boundary layers) give the
same logits, bit for bit, for every selection rule; in dense mode both are the plain dense model."""

import pytest
import torch

import lighthouse
import lighthouse.hf
from lighthouse.train.export import export_hf
from lighthouse.train.model import DENSE, LIGHTHOUSE, ByteLlama, LighthouseSettings, ModelConfig

transformers = pytest.importorskip("transformers")

SEQ_LEN = 256
# min N = topk * pooling^(levels-1) = 64; S = 128 + 2 * 32 = 192 < 256, so Lighthouse is active.
SETTINGS = {"levels": 2, "pooling": 2, "topk": 32, "tile_budget": 16}


def _pair(tmp_path, selection):
    config = ModelConfig(d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, ffn_hidden=128, max_seq_len=SEQ_LEN,
                         rope_theta=10000.0, dense_boundary=1,
                         lighthouse=LighthouseSettings(**SETTINGS, selection=selection, rope="pooled"))
    torch.manual_seed(0)
    ours = ByteLlama(config).eval()
    folder = export_hf(ours, config, tmp_path / "hf")
    lighthouse.register_hf()
    theirs = transformers.LlamaForCausalLM.from_pretrained(folder, attn_implementation="lighthouse").eval()
    theirs.config.lighthouse = {**SETTINGS, "selection": selection, "rope": "pooled", "dense_layers": [0, -1]}
    lighthouse.hf.prepare_model(theirs)
    return ours, theirs


@pytest.mark.parametrize("selection", ["paper", "lagged", "causal"])
def test_hf_lighthouse_logits_equal_the_training_model(tmp_path, selection, monkeypatch):
    ours, theirs = _pair(tmp_path, selection)
    tokens = torch.randint(0, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    calls = []
    original = lighthouse.hf.lighthouse_attention

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(lighthouse.hf, "lighthouse_attention", counting)
    with torch.no_grad():
        ours.set_stage(LIGHTHOUSE)
        lighthouse_logits = ours(tokens)
        hf_logits = theirs(input_ids=tokens, use_cache=False).logits
        ours.set_stage(DENSE)
        dense_logits = ours(tokens)
    assert len(calls) == 1 and calls[0]["selection"] == selection and calls[0]["rope"] is not None
    # The same computation in both stacks, to the bit (fp32 on the CPU).
    assert torch.equal(hf_logits, lighthouse_logits)
    # And the Lighthouse layer matters: the dense model's logits are clearly different.
    assert (dense_logits - lighthouse_logits).abs().max() > 1e-3 * lighthouse_logits.abs().max()
