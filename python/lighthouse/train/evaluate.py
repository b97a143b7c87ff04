"""Evaluation of a model on a fixed held-out set: validation loss, leak probe, retrieval, passkey.

The validation set is built once (``val_windows`` windows spread over the validation stream) and
reused for every evaluation of a run, so the points of a validation curve are comparable. The loss is
measured in dense mode (every layer dense: the model a run delivers) and, for a run with a Lighthouse
stage, also in Lighthouse mode (the stage-1 layer modes) together with the leak probe. Retrieval and
passkey are measured in dense mode.
"""

import contextlib
import math

import torch

from .data import spread, validation_windows
from .leak import leak_probe, make_plan
from .model import DENSE, LIGHTHOUSE
from .passkey import run_passkey
from .retrieval import retrieval_curve
from .vocab import PAD


def autocast_for(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def evaluation_mode(model, stage: str):
    """Put the model in eval mode with the layer modes of ``stage``; restore stage and mode afterwards."""
    stage_before, was_training = model.stage, model.training
    model.set_stage(stage)
    model.eval()
    try:
        yield
    finally:
        model.set_stage(stage_before)
        model.train(was_training)


@torch.no_grad()
def bits_per_byte(model, windows: torch.Tensor, batch_size: int, device: torch.device, bf16: bool) -> dict:
    """Mean loss of the validation targets, per token (nats) and per byte of text (bits).

    The numerator is the loss of every non-PAD target (bytes and the BOS/EOS framing tokens); the
    bits/byte denominator counts only byte targets, so that figure is bits per byte of text.
    """
    nats = 0.0
    targets_scored = 0
    byte_targets = 0
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size].to(device)
        targets = batch[:, 1:]
        with autocast_for(device, bf16):
            loss = model(batch[:, :-1], targets)  # summed over the scored targets, without the full logits
        nats += float(loss)
        targets_scored += int((targets != PAD).sum())
        byte_targets += int((targets < 256).sum())
    return {"val_bpb": nats / math.log(2) / byte_targets, "val_nats_per_token": nats / targets_scored,
            "val_bytes": byte_targets}


class Evaluator:
    """The fixed validation set of a run and the measurements taken on it.

    ``cfg`` is the run's TrainConfig (val_windows, eval_batch_size, leak, retrieval, passkey);
    ``lighthouse`` says whether the run has a Lighthouse stage, which adds the Lighthouse-mode loss and
    the leak probe to every point.
    """

    def __init__(self, val_stream, seq_len: int, cfg, device: torch.device, bf16: bool, lighthouse: bool):
        self.cfg = cfg
        self.device = device
        self.bf16 = bf16
        self.lighthouse = lighthouse
        self.windows = validation_windows(val_stream, seq_len, cfg.val_windows)
        self.leak_plan = make_plan(spread(self.windows, cfg.leak.windows), cfg.leak) if lighthouse else None

    def _forward(self, model):
        def forward(tokens):
            with autocast_for(self.device, self.bf16):
                return model(tokens)
        return forward

    def point(self, model) -> dict:
        """Dense-mode validation loss; with a Lighthouse stage also Lighthouse-mode loss and the leak probe."""
        batch = self.cfg.eval_batch_size
        with evaluation_mode(model, DENSE):
            result = bits_per_byte(model, self.windows, batch, self.device, self.bf16)
        if self.lighthouse:
            with evaluation_mode(model, LIGHTHOUSE):
                sparse = bits_per_byte(model, self.windows, batch, self.device, self.bf16)
                result["val_lh_bpb"] = sparse["val_bpb"]
                result["val_lh_nats_per_token"] = sparse["val_nats_per_token"]
                result.update(leak_probe(self._forward(model), self.leak_plan, batch, self.device))
        return result

    def retrieval(self, model) -> list:
        with evaluation_mode(model, DENSE):
            windows = spread(self.windows, self.cfg.retrieval.windows)
            return retrieval_curve(self._forward(model), windows, self.cfg.retrieval, self.cfg.eval_batch_size,
                                   self.device)

    def passkey(self, model) -> dict:
        with evaluation_mode(model, DENSE):
            return run_passkey(self._forward(model), self.cfg.passkey, self.device)
