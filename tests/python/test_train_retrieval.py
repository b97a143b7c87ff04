"""Retrieval over distance: where the copies go, the distances, determinism, and a copier that uses them."""

import math

import pytest
import torch

from lighthouse.train.model import ByteLlama, ModelConfig
from lighthouse.train.retrieval import RetrievalSettings, distances_for, retrieval_curve
from lighthouse.train.vocab import VOCAB_SIZE

N = 256


def _windows(count=3):
    return torch.randint(0, 256, (count, N + 1), generator=torch.Generator().manual_seed(0))


def test_distances():
    assert distances_for(RetrievalSettings(), 32768) == [64, 256, 1024, 4096, 16384]
    assert distances_for(RetrievalSettings(), 1024) == [64, 256]
    assert distances_for(RetrievalSettings(span=100), 32768) == [256, 1024, 4096, 16384]
    assert distances_for(RetrievalSettings(distances=[200, 32]), N) == [32, 200]
    with pytest.raises(ValueError, match="retrieval distance: .* got 240"):
        distances_for(RetrievalSettings(distances=[64, 240]), N)
    with pytest.raises(ValueError, match="retrieval distance: .* got 16"):
        distances_for(RetrievalSettings(distances=[16]), N)
    with pytest.raises(ValueError, match="retrieval skip"):
        distances_for(RetrievalSettings(skip=32), N)


def test_copies_land_at_the_distance_and_the_span_is_scored():
    # Tokens repeat only every 256 positions, so a copy over a distance below 256 changes every token it covers.
    windows = torch.stack([(torch.arange(N + 1) * 7 + w) % 256 for w in range(3)])
    settings = RetrievalSettings(distances=[32, 100, 224], span=32, skip=2, windows=3)
    table = torch.randn(N, VOCAB_SIZE, generator=torch.Generator().manual_seed(1))
    seen = []

    def recording(tokens):
        # Logits depend on the position only, so the loss tells exactly which (position, target) was scored.
        seen.append(tokens.clone())
        return table.expand(len(tokens), -1, -1)

    def loss(t, target):
        return float(torch.nn.functional.cross_entropy(table[t], torch.tensor(target)))

    result = retrieval_curve(recording, windows, settings, batch_size=8, device="cpu")
    assert [r["distance"] for r in result] == [32, 100, 224]
    assert all(r["tokens"] == 3 * 30 for r in result)
    assert torch.equal(seen[0], windows[:, :-1])
    seconds = []
    for d, copied, point in zip((32, 100, 224), seen[1:], result):
        losses = []
        for w in range(3):
            changed = (copied[w] != windows[w, :-1]).nonzero().flatten().tolist()
            b = changed[0] + d
            seconds.append(b)
            assert 224 <= b <= N + 1 - 32
            # Only the earlier copy is written; the span itself (and the targets) stay as they were.
            assert changed == list(range(b - d, b - d + 32))
            assert torch.equal(copied[w, b - d : b - d + 32], windows[w, b : b + 32])
            losses += [loss(j - 1, int(windows[w, j])) for j in range(b + 2, b + 32)]
        # The recording forward's logits depend on the position only, so both losses are these targets' losses.
        assert point["loss_copy"] == pytest.approx(sum(losses) / 90, rel=1e-6)
        assert point["loss_base"] == pytest.approx(sum(losses) / 90, rel=1e-6)
    # Every distance scores the same span of a window, so the baseline is shared.
    assert seconds[:3] == seconds[3:6] == seconds[6:]
    assert result[0]["loss_base"] == result[1]["loss_base"] == result[2]["loss_base"]


def _copier(tokens):
    """A perfect copier: after a 4-token context seen before, predict what followed it then."""
    logits = torch.zeros(*tokens.shape, VOCAB_SIZE)
    for row, seq in enumerate(tokens.tolist()):
        last = {}
        for t in range(3, len(seq)):
            key = tuple(seq[t - 3 : t + 1])
            if key in last:
                logits[row, t, seq[last[key] + 1]] = 20.0
            if t + 1 < len(seq):
                last[key] = t
    return logits


def test_a_copier_scores_the_copies_and_not_the_baseline():
    result = retrieval_curve(_copier, _windows(), RetrievalSettings(distances=[32, 64, 200], skip=4, windows=3),
                             batch_size=2, device="cpu")
    for point in result:
        assert point["loss_copy"] < 0.01
        assert point["loss_base"] == pytest.approx(math.log(VOCAB_SIZE), abs=0.05)


def test_tiny_model_curve_is_deterministic_and_finite():
    torch.manual_seed(0)
    model = ByteLlama(ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64,
                                  max_seq_len=N)).eval()
    settings = RetrievalSettings(windows=2)
    first = retrieval_curve(model, _windows(), settings, batch_size=2, device="cpu")
    again = retrieval_curve(model, _windows(), settings, batch_size=1, device="cpu")
    assert [p["distance"] for p in first] == [64]
    assert first[0]["tokens"] == 2 * 30
    assert math.isfinite(first[0]["loss_copy"]) and math.isfinite(first[0]["loss_base"])
    assert first[0]["loss_copy"] == pytest.approx(again[0]["loss_copy"], rel=1e-6)
    assert first == retrieval_curve(model, _windows(), settings, batch_size=2, device="cpu")
