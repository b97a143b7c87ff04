"""Leak probe: does the loss at position t depend on an input after t?

A causal model's prediction at t sees only inputs 0..t, so changing the input at t + δ (δ ≥ 1)
leaves the loss at t exactly as it was. Lighthouse's paper selection is not causal (spec §11): a
model can learn to read the label x[t+1] through the selection and score an optimistic loss. The
probe measures that: for positions t, it replaces the input token at t + δ by a different byte and
reports the mean change of the loss of predicting the original target x[t+1], against the same
forward without the replacement.

Every copy of a window carries exactly one replacement (copy j is changed at t_j + δ only), so no
other change can reach position t_j. The unchanged copies run through the same forward with the same
batch shapes, so for a causal forward the two losses at t_j have the same bits and the probe reads 0.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class LeakSettings:
    windows: int = 4  # validation windows probed
    positions: int = 8  # positions t per window (one perturbed copy of the window each)
    offsets: list = dataclasses.field(default_factory=lambda: [1, 16])
    seed: int = 2718


@dataclasses.dataclass
class LeakPlan:
    """What the probe changes: fixed once, so every evaluation of a run probes the same spots."""

    windows: torch.Tensor  # [W, N + 1] int64 token windows (inputs are [:, :-1], targets [:, 1:])
    positions: torch.Tensor  # [W, P] int64 positions t whose loss is measured, ascending per window
    replacements: dict  # offset δ -> [W, P] int64 token written at input t + δ (never the token there)


def make_plan(windows: torch.Tensor, settings: LeakSettings) -> LeakPlan:
    """Seeded positions and replacement bytes for ``windows``.

    Positions are drawn without replacement from [N/8, 7N/8 − max δ], away from both window ends. A
    replacement is a uniformly drawn byte different from the token it replaces.
    """
    if not settings.offsets or min(settings.offsets) < 1:
        raise ValueError(f"leak offsets: expected integers >= 1, got {settings.offsets}")
    n = windows.shape[1] - 1
    low, high = n // 8, n - n // 8 - max(settings.offsets)
    if settings.positions < 1 or high - low + 1 < settings.positions:
        raise ValueError(f"leak positions: expected 1 to {max(0, high - low + 1)} positions in a window of {n} "
                         f"with offsets up to {max(settings.offsets)}, got {settings.positions}")
    generator = torch.Generator().manual_seed(settings.seed)
    positions = torch.stack([
        torch.randperm(high - low + 1, generator=generator)[: settings.positions].sort().values + low
        for _ in range(len(windows))
    ])
    replacements = {}
    for offset in settings.offsets:
        old = windows.gather(1, positions + offset)
        drawn = torch.randint(0, 255, old.shape, generator=generator)
        # Bytes other than `old` are 0..old-1 and old+1..255; special tokens (>= 256) differ from every byte.
        replacements[offset] = torch.where(old < 256, drawn + (drawn >= old).long(), drawn)
    return LeakPlan(windows, positions, replacements)


def _losses_at(forward, copies: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor,
               batch_size: int, device) -> torch.Tensor:
    """Loss (nats, float64) of row j at position positions[j] for target targets[j]; [rows]."""
    out = []
    for i in range(0, len(copies), batch_size):
        logits = forward(copies[i : i + batch_size].to(device))
        rows = torch.arange(logits.shape[0], device=logits.device)
        picked = logits[rows, positions[i : i + batch_size].to(logits.device)].float()
        out.append(F.cross_entropy(picked, targets[i : i + batch_size].to(logits.device), reduction="none"))
    return torch.cat(out).double().cpu()


@torch.no_grad()
def leak_probe(forward, plan: LeakPlan, batch_size: int, device) -> dict:
    """Mean and standard error of the loss change at t when input t + δ is replaced, per offset δ.

    ``forward(tokens [B, N]) -> logits [B, N, vocab]`` (any model or function; it runs on ``device``).
    Returns ``{"leak_t1": mean, "leak_t1_se": se, ...}`` in nats, one pair per offset, over all probed
    positions. A causal forward gives exactly 0 for every offset.
    """
    changes = {offset: [] for offset in plan.replacements}
    for w, window in enumerate(plan.windows):
        positions = plan.positions[w]
        count = len(positions)
        copies = window[:-1].repeat(count, 1)
        targets = window[positions + 1]
        base = _losses_at(forward, copies, positions, targets, batch_size, device)
        for offset, tokens in plan.replacements.items():
            changed = copies.clone()
            changed[torch.arange(count), positions + offset] = tokens[w]
            changes[offset].append(_losses_at(forward, changed, positions, targets, batch_size, device) - base)
    result = {}
    for offset, parts in changes.items():
        values = torch.cat(parts)
        se = float(values.std(unbiased=True)) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        result[f"leak_t{offset}"] = float(values.mean())
        result[f"leak_t{offset}_se"] = se
    return result
