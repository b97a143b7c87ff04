"""The chunked LM head + cross-entropy against F.cross_entropy on the full logits: loss and gradients, PAD
targets, a ragged last chunk, the sum and mean forms the trainer uses, and the model's loss path."""

import pytest
import torch
import torch.nn.functional as F

from lighthouse.train.loss import chunked_cross_entropy
from lighthouse.train.model import ByteLlama, LighthouseSettings, ModelConfig
from lighthouse.train.vocab import PAD, VOCAB_SIZE


def _case(dtype, positions=37, dim=16, pad_every=5):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(positions, dim, generator=g, dtype=dtype)
    weight = torch.randn(VOCAB_SIZE, dim, generator=g, dtype=dtype) * 0.5
    targets = torch.randint(0, 258, (positions,), generator=g)
    targets[::pad_every] = PAD
    return hidden, weight, targets


def _loss_and_grads(loss_fn, hidden, weight, targets):
    hidden, weight = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = loss_fn(hidden, weight, targets)
    loss.backward()
    return loss.detach(), hidden.grad, weight.grad


def _reference(reduction):
    def loss_fn(hidden, weight, targets):
        return F.cross_entropy(F.linear(hidden, weight), targets, ignore_index=PAD, reduction=reduction)
    return loss_fn


@pytest.mark.parametrize("chunk", [1, 8, 37, 64], ids=lambda c: f"chunk{c}")
def test_sum_equals_full_cross_entropy_in_fp64(chunk):
    hidden, weight, targets = _case(torch.float64)
    # 37 positions: chunks of 8 leave a ragged last chunk of 5; 64 is one chunk larger than the input.
    got = _loss_and_grads(lambda h, w, t: chunked_cross_entropy(h, w, t, PAD, chunk), hidden, weight, targets)
    want = _loss_and_grads(_reference("sum"), hidden, weight, targets)
    assert got[0].dtype == torch.float64
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_mean_over_the_count_equals_the_mean_in_fp32():
    hidden, weight, targets = _case(torch.float32, positions=300)
    count = int((targets != PAD).sum())
    got = _loss_and_grads(lambda h, w, t: chunked_cross_entropy(h, w, t, PAD, 64) / count, hidden, weight, targets)
    want = _loss_and_grads(_reference("mean"), hidden, weight, targets)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_ignored_targets_give_no_loss_and_no_gradient():
    hidden, weight, targets = _case(torch.float64)
    targets[:] = PAD
    targets[3] = 7
    loss, grad_hidden, _ = _loss_and_grads(lambda h, w, t: chunked_cross_entropy(h, w, t, PAD, 8), hidden, weight,
                                           targets)
    assert torch.equal(grad_hidden[torch.arange(len(targets)) != 3], torch.zeros(len(targets) - 1, hidden.shape[1]))
    torch.testing.assert_close(loss, F.cross_entropy(F.linear(hidden[3:4], weight), targets[3:4], reduction="sum"))


def test_model_loss_is_the_cross_entropy_of_its_logits():
    torch.manual_seed(0)
    config = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=40,
                         dense_boundary=1, lighthouse=LighthouseSettings(levels=2, pooling=2, topk=4, tile_budget=4))
    model = ByteLlama(config).double()
    tokens = torch.randint(0, 256, (3, 41))
    tokens[1, 30:] = PAD
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    loss = model(inputs, targets)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    want = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten(), ignore_index=PAD, reduction="sum")
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    for got, expected in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
