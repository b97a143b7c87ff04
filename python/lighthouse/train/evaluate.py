"""Final evaluation of a model: validation bits per byte and passkey retrieval, both dense."""

import contextlib
import math

import torch
import torch.nn.functional as F

from .data import validation_windows
from .model import DENSE
from .passkey import PasskeySettings, run_passkey
from .vocab import PAD


def autocast_for(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def bits_per_byte(model, windows: torch.Tensor, batch_size: int, device: torch.device, bf16: bool) -> dict:
    """Mean negative log2-likelihood per byte of the validation targets.

    The numerator is the loss of every non-PAD target (bytes and the BOS/EOS framing tokens); the
    denominator counts only byte targets, so the figure is bits per byte of text.
    """
    nats = 0.0
    targets_scored = 0
    byte_targets = 0
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size].to(device)
        targets = batch[:, 1:]
        with autocast_for(device, bf16):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=PAD, reduction="sum")
        nats += float(loss)
        targets_scored += int((targets != PAD).sum())
        byte_targets += int((targets < 256).sum())
    return {"val_bpb": nats / math.log(2) / byte_targets, "val_nats_per_token": nats / targets_scored,
            "val_bytes": byte_targets}


def evaluate_model(model, val_stream, seq_len: int, val_tokens: int, batch_size: int,
                   passkey: PasskeySettings, device: torch.device, bf16: bool) -> dict:
    """Evaluate with every layer dense (the model's stage is restored afterwards)."""
    stage, was_training = model.stage, model.training
    model.set_stage(DENSE)
    model.eval()

    def forward(tokens):
        with autocast_for(device, bf16):
            return model(tokens)

    try:
        result = bits_per_byte(model, validation_windows(val_stream, seq_len, val_tokens), batch_size, device, bf16)
        result["passkey"] = run_passkey(forward, passkey, device)
    finally:
        model.set_stage(stage)
        model.train(was_training)
    return result
