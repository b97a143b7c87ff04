"""Text generation with a trained byte model: the token choice, the decoding loop and the generate command."""

import math

import pytest
import torch

from lighthouse.train import checkpoint as ckpt
from lighthouse.train.cli import main
from lighthouse.train.generate import generate, generate_tokens, next_token
from lighthouse.train.model import LIGHTHOUSE, ByteLlama, LighthouseSettings, ModelConfig
from lighthouse.train.trainer import TrainConfig
from lighthouse.train.vocab import BOS, EOS, PAD, VOCAB_SIZE

NEVER = [BOS, *range(PAD, VOCAB_SIZE)]


def micro_config(**changes) -> ModelConfig:
    # N = 64 with p=2, L=3, k=8 keeps the Lighthouse stage's layers really sparse.
    fields = dict(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=64, rope_theta=10000.0,
                  dense_boundary=1, lighthouse=LighthouseSettings(levels=3, pooling=2, topk=8, tile_budget=8))
    fields.update(changes)
    return ModelConfig(**fields)


def random_model(seed: int = 0, **changes) -> ByteLlama:
    torch.manual_seed(seed)
    model = ByteLlama(micro_config(**changes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 1.0) + (1.0 if p.ndim == 1 else 0.0))
    return model


def designed_logits(probs: dict) -> torch.Tensor:
    """Logits giving the bytes in ``probs`` those probabilities, every other byte next to none, and the
    never-emitted ids the largest logits of all."""
    logits = torch.full((VOCAB_SIZE,), -1e4)
    for token, p in probs.items():
        logits[token] = math.log(p)
    logits[NEVER] = 50.0
    return logits


def test_next_token_greedy_and_excluded_ids():
    generator = torch.Generator().manual_seed(0)
    logits = designed_logits({65: 0.5, 66: 0.3, 67: 0.2})
    assert next_token(logits, 0.0, generator) == 65
    logits[EOS] = 10.0
    assert next_token(logits, 0.0, generator) == EOS  # EOS may be emitted: it ends the text
    for _ in range(200):
        assert next_token(designed_logits({65: 0.5, 66: 0.5}), 1.0, generator) in (65, 66)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_next_token_samples_softmax_of_logits_over_temperature(temperature):
    probs = {65: 0.5, 66: 0.3, 67: 0.2}
    logits = designed_logits(probs)
    generator = torch.Generator().manual_seed(1)
    draws = 20000
    counts = dict.fromkeys(probs, 0)
    for _ in range(draws):
        counts[next_token(logits, temperature, generator)] += 1
    weights = {t: p ** (1 / temperature) for t, p in probs.items()}
    total = sum(weights.values())
    for token, weight in weights.items():
        expected = weight / total
        sigma = math.sqrt(expected * (1 - expected) / draws)
        assert abs(counts[token] / draws - expected) < 5 * sigma, (token, counts, expected)


def brute_force_greedy(model: ByteLlama, prompt: str, count: int) -> list:
    """Argmax over the allowed ids of the last position, the whole sequence re-run every step."""
    tokens = [BOS] + list(prompt.encode())
    out = []
    with torch.no_grad():
        for _ in range(count):
            logits = model(torch.tensor([tokens + out]))[0, -1].clone()
            logits[NEVER] = -torch.inf
            token = int(logits.argmax())
            if token == EOS:
                break
            out.append(token)
    return out


def test_greedy_generation_is_the_argmax_of_the_dense_model():
    # 61 to 80 tokens: long enough for the Lighthouse layers to attend to a real subsequence.
    model = random_model(max_seq_len=128)
    prompt = "Zürich: " * 6 + "the lake, the old town"
    ours = generate_tokens(model, prompt, 20, temperature=0.0)
    assert ours == brute_force_greedy(model, prompt, 20) and len(ours) == 20
    # A model in its Lighthouse stage still generates with dense attention, and gets its stage back.
    tokens = torch.tensor([[BOS] + list(prompt.encode()) + ours])
    with torch.no_grad():
        dense = model(tokens)
        model.set_stage(LIGHTHOUSE)
        assert not torch.allclose(model(tokens), dense)  # the Lighthouse stage computes something else
    model.train()
    assert generate_tokens(model, prompt, 20, temperature=0.0) == ours
    assert model.stage == LIGHTHOUSE and model.training


def test_sampling_is_seeded():
    model = random_model()
    first = generate_tokens(model, "abc", 30, temperature=1.0, seed=5)
    assert generate_tokens(model, "abc", 30, temperature=1.0, seed=5) == first
    assert generate_tokens(model, "abc", 30, temperature=1.0, seed=6) != first
    assert generate(model, "abc", 30, temperature=1.0, seed=5) == bytes(first).decode("utf-8", errors="replace")


def test_generation_stops_at_eos():
    # Every position sees the same hidden state (zero attention and MLP outputs, one embedding row), and
    # the output projection points EOS at it: the first choice is EOS, so nothing is generated.
    model = random_model()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.randn(32).expand(VOCAB_SIZE, 32))
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[EOS] = model.model.embed_tokens.weight[0]
    assert generate_tokens(model, "hello", 10, temperature=0.0) == []
    assert generate_tokens(model, "hello", 10, temperature=0.01, seed=3) == []


def test_bad_arguments_name_themselves():
    model = random_model()
    with pytest.raises(ValueError, match="max_new_tokens: expected at least 1, got 0"):
        generate(model, "a", 0)
    with pytest.raises(ValueError, match="temperature: expected 0 \\(greedy\\) or more, got -0.5"):
        generate(model, "a", 5, temperature=-0.5)
    with pytest.raises(ValueError, match="temperature: expected 0 \\(greedy\\) or more, got nan"):
        generate(model, "a", 5, temperature=math.nan)
    # 64 tokens of context, BOS + 10 prompt bytes: 53 more fit.
    assert len(generate_tokens(model, "0123456789", 53, temperature=1.0)) <= 53
    with pytest.raises(ValueError, match="max_new_tokens: expected at most 53 .* got 54"):
        generate(model, "0123456789", 54)


def test_generate_command(tmp_path, capsys):
    model = random_model()
    state = {"step": 7, "model": model.state_dict(), "model_config": model.config.to_dict(),
             "train_config": TrainConfig(lighthouse_steps=5, dense_steps=5, device="cpu").to_dict()}
    ckpt.save_checkpoint(tmp_path, 7, state, keep=1)
    capsys.readouterr()
    assert main(["generate", str(tmp_path), "--prompt", "Hello", "--max-new-tokens", "12", "--temperature", "0.7",
                 "--seed", "3"]) == 0
    assert capsys.readouterr().out == generate(model, "Hello", 12, temperature=0.7, seed=3) + "\n"
    assert main(["generate", str(ckpt.checkpoint_path(tmp_path, 7)), "--prompt", "Hello", "--max-new-tokens", "12",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out == generate(model, "Hello", 12) + "\n"
    assert main(["generate", str(tmp_path), "--prompt", "Hello", "--max-new-tokens", "100"]) == 2
    assert "max_new_tokens: expected at most 58" in capsys.readouterr().err
