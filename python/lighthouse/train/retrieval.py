"""Retrieval over distance: the loss on the second occurrence of a repeated span.

Each validation window gets one seeded position ``b``; the ``span`` tokens at ``b`` are the second
occurrence and stay as they are. For every distance ``d`` a copy of them is written over the tokens at
``b - d`` (the first occurrence). A model that can reach back ``d`` tokens then predicts the span almost
for free; one that cannot sees ordinary text. The measure reports the mean loss over the span's tokens
with the earlier copy (``loss_copy``) and without it (``loss_base``, the unmodified window). Every
distance scores the same tokens at the same positions and shares the baseline, so
``loss_copy - loss_base`` is what the earlier occurrence is worth at that distance. The first ``skip``
tokens of the span are left out: nothing announces that a repeat starts, so its first tokens are not
predictable from the earlier occurrence. This works at any scale (unlike passkey retrieval, which
needs a model that follows an instruction).
"""

import dataclasses

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class RetrievalSettings:
    distances: list = dataclasses.field(default_factory=list)  # empty: powers of 4 from 64 to seq_len - span
    span: int = 32  # tokens copied
    skip: int = 2  # first tokens of the copy that are not scored
    windows: int = 8  # validation windows, one copy each per distance
    seed: int = 1618


def distances_for(settings: RetrievalSettings, seq_len: int) -> list:
    """The distances measured for windows of ``seq_len`` inputs; explicit ones must fit."""
    if not 0 <= settings.skip < settings.span:
        raise ValueError(f"retrieval skip: expected 0 <= skip < span ({settings.span}), got {settings.skip}")
    longest = seq_len - settings.span
    if not settings.distances:
        found, d = [], 64
        while d <= longest:
            if d >= settings.span:
                found.append(d)
            d *= 4
        return found
    for d in settings.distances:
        if not settings.span <= d <= longest:
            raise ValueError(f"retrieval distance: expected span ({settings.span}) <= d <= seq_len - span "
                             f"({longest}), got {d}")
    return sorted(settings.distances)


def _position_losses(forward, windows: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """Per-position loss [W, N] (float64, on the CPU): position t predicts windows[:, t + 1]."""
    out = []
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size].to(device)
        logits = forward(batch[:, :-1]).float()
        loss = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
        out.append(loss.double().cpu())
    return torch.cat(out)


@torch.no_grad()
def retrieval_curve(forward, windows: torch.Tensor, settings: RetrievalSettings, batch_size: int, device) -> list:
    """``[{"distance", "loss_copy", "loss_base", "tokens"}, ...]`` per distance, losses in nats/token.

    ``forward(tokens [B, N]) -> logits [B, N, vocab]``; ``windows`` are [W, N + 1] token windows (the
    first ``settings.windows`` are used). The span's position is seeded per window, so the same
    settings and windows give the same copies every time.
    """
    windows = windows[: settings.windows]
    seq_len = windows.shape[1] - 1
    distances = distances_for(settings, seq_len)
    # Token indices of the window: the span [b, b + span) must end by index N, and its copy
    # [b - d, b - d + span) must start at 0 or later for the longest distance.
    generator = torch.Generator().manual_seed(settings.seed)
    second = torch.randint(distances[-1], seq_len + 2 - settings.span, (len(windows), 1), generator=generator)
    span = second + torch.arange(settings.span)
    rows = torch.arange(len(windows))[:, None]
    # Target index j is predicted at position j - 1; the first `skip` tokens of the span are not scored.
    positions = second + torch.arange(settings.skip, settings.span) - 1
    loss_base = float(_position_losses(forward, windows, batch_size, device)[rows, positions].mean())
    result = []
    for d in distances:
        copied = windows.clone()
        copied[rows, span - d] = windows[rows, span]
        loss_copy = _position_losses(forward, copied, batch_size, device)[rows, positions]
        result.append({"distance": d, "loss_copy": float(loss_copy.mean()), "loss_base": loss_base,
                       "tokens": positions.numel()})
    return result
