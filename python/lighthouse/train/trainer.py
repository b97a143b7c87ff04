"""The two-stage pretraining loop: Lighthouse attention first, then dense resumption.

Steps ``0 .. lighthouse_steps-1`` run with Lighthouse in the non-boundary layers, the remaining
``dense_steps`` with dense attention everywhere. The switch only changes each layer's attention
mode: the optimizer (and its moments and step counts), the learning-rate schedule and the data
position carry straight on. A run directory holds ``config.json``, ``metrics.jsonl``,
``checkpoints/`` and, once finished, ``hf/`` (the exported dense model) and ``summary.json``.
"""

import dataclasses
import json
import math
import pathlib
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .data import SequenceSampler, default_corpus, load_corpus
from .evaluate import autocast_for, evaluate_model
from .export import export_hf
from .model import DENSE, LIGHTHOUSE, ByteLlama, ModelConfig
from .passkey import PasskeySettings
from .vocab import PAD


@dataclasses.dataclass
class TrainConfig:
    lighthouse_steps: int = 0
    dense_steps: int = 0
    batch_size: int = 4  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr
    warmup_steps: int = 20
    schedule: str = "cosine"  # or "constant" (after warmup)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    data: list = dataclasses.field(default_factory=list)  # empty: the embedded corpus
    val_fraction: float = 0.1
    val_tokens: int = 65536
    eval_batch_size: int = 4
    checkpoint_every: int = 0  # 0: only at the switch, on a stop and at the end
    keep_checkpoints: int = 2
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA; CPU always runs fp32
    compile: bool = False
    activation_checkpointing: bool = False
    export_dtype: str = "float32"
    passkey: PasskeySettings = dataclasses.field(default_factory=PasskeySettings)
    name: str = "custom"

    @property
    def total_steps(self) -> int:
        return self.lighthouse_steps + self.dense_steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        fields = dict(data)
        fields["passkey"] = PasskeySettings(**fields.get("passkey", {}))
        return cls(**fields)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """LR for optimizer step ``step`` (0-based): linear warmup, then constant or cosine decay."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule != "cosine":
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stage_at(cfg: TrainConfig, step: int) -> str:
    return LIGHTHOUSE if step < cfg.lighthouse_steps else DENSE


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Progress:
    """A tqdm bar on a terminal; in logs (or without tqdm) a plain line every ten steps on stderr."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        self.total = total
        if not enabled or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, record: dict) -> None:
        text = f"{record['stage']} loss {record['loss']:.4f} {record['tokens_per_s']:,.0f} tok/s"
        if self.bar is not None:
            self.bar.set_description(record["stage"], refresh=False)
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.enabled and record["step"] % 10 == 0:
            print(f"step {record['step']}/{self.total}: {text}, {record['wall_s'] / 60:.1f} min",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Builds (or restores) everything a run needs; ``run()`` trains until done or stopped."""

    def __init__(self, run_dir, model_config: ModelConfig = None, train_config: TrainConfig = None):
        self.run_dir = pathlib.Path(run_dir)
        latest = ckpt.latest_checkpoint(self.run_dir)
        state = ckpt.load_checkpoint(latest) if latest else None
        if state is not None:
            model_config = ModelConfig.from_dict(state["model_config"])
            train_config = TrainConfig.from_dict(state["train_config"])
        elif model_config is None or train_config is None:
            raise ValueError(f"{self.run_dir} has no checkpoint to resume; give a model and a train config")
        if train_config.total_steps < 1:
            raise ValueError("the run needs at least one step (lighthouse_steps + dense_steps)")
        self.model_config = model_config
        self.cfg = train_config
        self.device = resolve_device(train_config.device)
        self.bf16 = train_config.bf16 and self.device.type == "cuda"

        random.seed(train_config.seed)
        np.random.seed(train_config.seed)
        torch.manual_seed(train_config.seed)
        self.model = ByteLlama(model_config).to(self.device)
        self.model.activation_checkpointing = train_config.activation_checkpointing
        self.forward = torch.compile(self.model) if train_config.compile else self.model
        self.optimizer = self._make_optimizer()

        self.corpus = load_corpus(train_config.data or [default_corpus()], train_config.val_fraction, train_config.seed)
        self.sampler = SequenceSampler(self.corpus.train, model_config.max_seq_len, train_config.seed)
        self.step = 0
        self.wall_s = 0.0
        self.tokens = 0
        if state is not None:
            self._restore(state)
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(
                {"model": model_config.to_dict(), "train": train_config.to_dict()}, indent=2) + "\n")
            self._metrics_path().write_text("")
        self.model.set_stage(stage_at(self.cfg, min(self.step, self.cfg.total_steps - 1)))

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2),
                                 fused=self.device.type == "cuda")

    def _metrics_path(self) -> pathlib.Path:
        return self.run_dir / "metrics.jsonl"

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "wall_s": self.wall_s,
            "tokens": self.tokens,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(),
            "model_config": self.model_config.to_dict(),
            "train_config": self.cfg.to_dict(),
        }

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self.wall_s = state["wall_s"]
        self.tokens = state["tokens"]
        _set_rng_state(state["rng"])
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop metric records past the restored step (written after the checkpoint, before a kill).

        A kill in the middle of a write leaves a torn last line; it is dropped too.
        """
        path = self._metrics_path()
        kept = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record["step"] <= self.step:
                kept.append(line)
        text = "".join(line + "\n" for line in kept)
        ckpt.atomic_write(path, lambda f: f.write(text.encode()))

    def _log(self, record: dict) -> None:
        with open(self._metrics_path(), "a") as f:
            f.write(json.dumps(record) + "\n")

    def save(self) -> pathlib.Path:
        return ckpt.save_checkpoint(self.run_dir, self.step, self.state_dict(), self.cfg.keep_checkpoints)

    def enter_stage(self) -> None:
        """Set the layers' attention for the coming step (the switch happens here, nothing else)."""
        self.model.set_stage(stage_at(self.cfg, self.step))

    def train_step(self) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches; returns its metrics record."""
        self.enter_stage()
        start = time.perf_counter()
        self.model.train()
        lr = learning_rate(self.cfg, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for _ in range(self.cfg.grad_accum):
            batch = self.sampler.next_batch(self.cfg.batch_size).to(self.device, non_blocking=True)
            with autocast_for(self.device, self.bf16):
                logits = self.forward(batch[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), ignore_index=PAD)
            (loss / self.cfg.grad_accum).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = float(loss_sum) / self.cfg.grad_accum  # synchronises, so the timing is honest
        elapsed = time.perf_counter() - start
        tokens = self.cfg.grad_accum * self.cfg.batch_size * self.model_config.max_seq_len
        self.step += 1
        self.wall_s += elapsed
        self.tokens += tokens
        record = {"step": self.step, "stage": self.model.stage, "loss": loss_value, "lr": lr,
                  "grad_norm": float(grad_norm), "tokens": self.tokens, "step_s": elapsed,
                  "tokens_per_s": tokens / elapsed, "wall_s": self.wall_s}
        self._log(record)
        return record

    def run(self, max_minutes: float = None, stop_after_step: int = None, progress: bool = True) -> str:
        """Train until the last step ("done"), the wall-clock budget ("time") or a step ("paused").

        Checkpoints are written every ``checkpoint_every`` steps, at the end of the Lighthouse
        stage and whenever the loop stops. The budget check predicts the next step from the last.
        """
        began = time.perf_counter()
        bar = _Progress(self.cfg.total_steps, self.step, progress)
        status = "done"
        last_step_s = 0.0
        try:
            while self.step < self.cfg.total_steps:
                if stop_after_step is not None and self.step >= stop_after_step:
                    status = "paused"
                    break
                if max_minutes is not None and time.perf_counter() - began + last_step_s > 60.0 * max_minutes:
                    status = "time"
                    break
                record = self.train_step()
                last_step_s = record["step_s"]
                bar.update(record)
                every = self.cfg.checkpoint_every
                at_switch = self.step == self.cfg.lighthouse_steps and self.cfg.dense_steps > 0
                if (every and self.step % every == 0) or at_switch:
                    self.save()
        finally:
            bar.close()
        if ckpt.latest_checkpoint(self.run_dir) != ckpt.checkpoint_path(self.run_dir, self.step):
            self.save()
        return status

    def finish(self, status: str) -> dict:
        """Export (when done), evaluate (unless paused) and write ``summary.json``."""
        summary = {
            "name": self.cfg.name,
            "status": status,
            "step": self.step,
            "lighthouse_steps": self.cfg.lighthouse_steps,
            "dense_steps": self.cfg.dense_steps,
            "tokens": self.tokens,
            "wall_s": self.wall_s,
            "parameters": self.model.num_parameters(),
            "seq_len": self.model_config.max_seq_len,
            "device": str(self.device) if self.device.type != "cuda" else torch.cuda.get_device_name(self.device),
        }
        if status == "done":
            export_hf(self.model, self.model_config, self.run_dir / "hf", self.cfg.export_dtype)
            summary["hf_dir"] = "hf"
        if status != "paused":
            summary["eval"] = self.evaluate()
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def evaluate(self) -> dict:
        return evaluate_model(self.model, self.corpus.val, self.model_config.max_seq_len, self.cfg.val_tokens,
                              self.cfg.eval_batch_size, self.cfg.passkey, self.device, self.bf16)
