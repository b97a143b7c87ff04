"""The leak probe: exactly 0 for causal forwards, clearly positive for a forward that reads the label."""

import pytest
import torch

from lighthouse.train.leak import LeakSettings, leak_probe, make_plan
from lighthouse.train.model import LIGHTHOUSE, ByteLlama, LighthouseSettings, ModelConfig
from lighthouse.train.vocab import BOS, VOCAB_SIZE

from _train_options import option_params

N = 64


def _windows(count=2, seed=0):
    windows = torch.randint(0, 256, (count, N + 1), generator=torch.Generator().manual_seed(seed))
    windows[0, 20] = BOS  # a special token among the inputs that may be replaced
    return windows


def _model(selection="paper", rope="before"):
    # N = 64 with p=2, L=3, k=8, m=8: Lighthouse is active (N >= k*p^(L-1) = 32 and S = 48 < N).
    torch.manual_seed(0)
    config = ModelConfig(d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=N,
                         rope_theta=10000.0, dense_boundary=1,
                         lighthouse=LighthouseSettings(levels=3, pooling=2, topk=8, tile_budget=8, selection=selection,
                                                       rope=rope))
    model = ByteLlama(config).eval()
    # Weights larger than the init, so that attention (and with it the selection) shapes the output.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.3)
    return model


def test_plan_is_seeded_inside_the_window_and_replaces_with_another_token():
    windows = _windows()
    settings = LeakSettings(positions=12, offsets=[1, 3, 16])
    plan = make_plan(windows, settings)
    again = make_plan(windows, settings)
    assert plan.positions.shape == (2, 12)
    assert torch.equal(plan.positions, again.positions)
    assert all(torch.equal(plan.replacements[o], again.replacements[o]) for o in settings.offsets)
    assert not torch.equal(make_plan(windows, LeakSettings(positions=12, seed=5)).positions, plan.positions)
    for row in plan.positions:
        assert len(set(row.tolist())) == 12 and row.tolist() == sorted(row.tolist())
        assert row.min() >= N // 8 and row.max() + 16 <= N - N // 8
    for offset, tokens in plan.replacements.items():
        old = windows.gather(1, plan.positions + offset)
        assert (tokens != old).all() and (tokens >= 0).all() and (tokens < 256).all()
    with pytest.raises(ValueError, match="leak positions"):
        make_plan(windows, LeakSettings(positions=40))
    with pytest.raises(ValueError, match="leak offsets"):
        make_plan(windows, LeakSettings(offsets=[0, 1]))


def test_each_copy_carries_exactly_one_replacement():
    windows = _windows()
    plan = make_plan(windows, LeakSettings(positions=6, offsets=[1, 16]))
    seen = []

    def recording(tokens):
        seen.append(tokens.clone())
        return torch.zeros(*tokens.shape, VOCAB_SIZE)

    assert leak_probe(recording, plan, batch_size=4, device="cpu") == {
        "leak_t1": 0.0, "leak_t1_se": 0.0, "leak_t16": 0.0, "leak_t16_se": 0.0}
    # Per window: the unchanged copies, then the copies for each offset, in batches of 4 + 2 rows.
    assert [len(t) for t in seen] == [4, 2] * 3 * 2
    for w in range(2):
        inputs = windows[w, :-1]
        base = torch.cat(seen[6 * w : 6 * w + 2])
        assert (base == inputs).all()
        for i, offset in enumerate((1, 16)):
            changed = torch.cat(seen[6 * w + 2 * (i + 1) : 6 * w + 2 * (i + 2)])
            for j, t in enumerate(plan.positions[w].tolist()):
                diff = (changed[j] != inputs).nonzero().flatten().tolist()
                assert diff == [t + offset]
                assert changed[j, t + offset] == plan.replacements[offset][w, j]


def test_dense_model_gives_exactly_zero():
    model = _model()
    plan = make_plan(_windows(), LeakSettings(positions=8))
    result = leak_probe(model, plan, batch_size=3, device="cpu")
    assert result == {"leak_t1": 0.0, "leak_t1_se": 0.0, "leak_t16": 0.0, "leak_t16_se": 0.0}


def test_a_forward_that_reads_the_next_token_leaks_at_t1_only():
    def leaky(tokens):
        # Logit 8 on the token that follows each position: the label of position t is input t + 1.
        logits = torch.zeros(*tokens.shape, VOCAB_SIZE)
        logits[:, :-1].scatter_(-1, tokens[:, 1:, None], 8.0)
        return logits

    result = leak_probe(leaky, make_plan(_windows(), LeakSettings(positions=8)), batch_size=16, device="cpu")
    # Unchanged: loss log(1 + 263 e^-8) = 0.085 nats; replaced: log(e^8 + 263) = 8.085 nats, 8 nats more.
    assert result["leak_t1"] > 7.0 and result["leak_t1_se"] < 0.1
    assert result["leak_t16"] == 0.0 and result["leak_t16_se"] == 0.0


@pytest.mark.parametrize("selection, rope", option_params(selections=("paper", "causal")))
def test_lighthouse_selection_leaks_unless_causal(selection, rope):
    model = _model(selection, rope)
    model.set_stage(LIGHTHOUSE)
    plan = make_plan(_windows(count=4), LeakSettings(positions=12))
    result = leak_probe(model, plan, batch_size=12, device="cpu")
    if selection == "causal":
        assert result == {"leak_t1": 0.0, "leak_t1_se": 0.0, "leak_t16": 0.0, "leak_t16_se": 0.0}
    else:
        # An untrained model does not exploit the channel, so the sign is random; the loss at t moves.
        assert result["leak_t1_se"] > 0.0
