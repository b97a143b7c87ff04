"""The two-stage pretraining loop: Lighthouse attention first, then dense resumption.

Steps ``0 .. lighthouse_steps-1`` run with Lighthouse in the non-boundary layers, the remaining
``dense_steps`` with dense attention everywhere. The switch only changes each layer's attention
mode: the optimizer (and its moments and step counts), the learning-rate schedule and the data
position carry straight on. A run directory holds ``config.json``, ``metrics.jsonl``,
``checkpoints/`` and, once finished, ``hf/`` (the exported dense model) and ``summary.json``.

``metrics.jsonl`` holds one record per line: ``"kind": "train"`` after every optimizer step (loss,
lr, grad_norm, step time, tokens/s of the step and of its stage so far) and ``"kind": "eval"`` for
every evaluation on the fixed validation set (every ``eval_every`` steps, at the switch and at the
end; see evaluate.py). Evaluation time is kept out of the step times, tokens/s and ``wall_s`` (the
training wall-clock) and recorded as ``eval_s``. Evaluations use their own seeded generators, so
they never change the training run.

A step never waits for the device: its loss and gradient norm stay device tensors and its time is taken with
device timestamps (timing.py), and the loop reads them, and writes the step's record, after it has queued
the next step (or before an evaluation, a checkpoint or the end). The loss is the chunked LM head +
cross-entropy of loss.py, so the logits of a whole batch never exist.
"""

import contextlib
import dataclasses
import json
import math
import pathlib
import random
import sys
import time

import numpy as np
import torch

from . import checkpoint as ckpt
from . import parallel as parallel_module
from . import sharded_checkpoint
from .data import SequenceSampler, default_corpus, load_corpus, windows_overlap
from .evaluate import Evaluator, autocast_for
from .export import export_hf
from .leak import LeakSettings
from .model import DENSE, LIGHTHOUSE, ByteLlama, ModelConfig, rope_tables
from .passkey import PasskeySettings
from .retrieval import RetrievalSettings
from .timing import DeviceClock
from .vocab import PAD

SCHEDULES = ("cosine", "constant", "wsd")


@dataclasses.dataclass
class TrainConfig:
    lighthouse_steps: int = 0
    dense_steps: int = 0
    batch_size: int = 4  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # floor of the cosine and wsd decays, as a fraction of lr
    warmup_steps: int = 20
    schedule: str = "cosine"  # or "constant" (after warmup) or "wsd" (warmup, stable, decay)
    decay_fraction: float = 0.2  # wsd: the last fraction of the steps decays
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    data: list = dataclasses.field(default_factory=list)  # empty: the embedded corpus
    val_fraction: float = 0.1
    val_windows: int = 64  # the fixed validation set: windows of max_seq_len + 1 tokens
    eval_every: int = 0  # evaluate every this many steps (0: only at the switch and the end)
    eval_batch_size: int = 4
    checkpoint_every: int = 0  # 0: only at the switch, on a stop and at the end
    keep_checkpoints: int = 2
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA; CPU always runs fp32
    compile: bool = False
    activation_checkpointing: bool = False
    export_dtype: str = "float32"
    passkey: PasskeySettings = dataclasses.field(default_factory=PasskeySettings)
    leak: LeakSettings = dataclasses.field(default_factory=LeakSettings)
    retrieval: RetrievalSettings = dataclasses.field(default_factory=RetrievalSettings)
    name: str = "custom"

    @property
    def total_steps(self) -> int:
        return self.lighthouse_steps + self.dense_steps

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction: expected a value in [0, 1], got {self.decay_fraction}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every: expected 0 (only at the switch and the end) or more, got {self.eval_every}")
        if self.val_windows < 1:
            raise ValueError(f"val_windows: expected at least 1, got {self.val_windows}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        fields = dict(data)
        # Configs written before the fixed validation set measured the first val_tokens of the stream.
        fields.pop("val_tokens", None)
        fields["passkey"] = PasskeySettings(**fields.get("passkey", {}))
        fields["leak"] = LeakSettings(**fields.get("leak", {}))
        fields["retrieval"] = RetrievalSettings(**fields.get("retrieval", {}))
        return cls(**fields)


def decay_steps(cfg: TrainConfig) -> int:
    """Steps of the wsd decay: the last ``decay_fraction`` of the run, rounded to whole steps."""
    return round(cfg.decay_fraction * cfg.total_steps)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """LR for optimizer step ``step`` (0-based).

    Every schedule starts with a linear warmup over ``warmup_steps`` (step s gets lr·(s+1)/warmup).
    Then "constant" stays at lr; "cosine" follows a half cosine from lr at the end of warmup to
    ``min_lr_ratio·lr`` at ``total_steps``; "wsd" (warmup–stable–decay) holds lr until the last
    ``decay_steps`` steps and decays *linearly* over them, so the first decay step already lies one
    decrement below lr and the run's last step (total_steps − 1) is exactly ``min_lr_ratio·lr``.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":
        decay = decay_steps(cfg)
        into_decay = step - (cfg.total_steps - decay) + 1
        if into_decay <= 0 or decay == 0:
            return cfg.lr
        return cfg.lr - (cfg.lr - floor) * min(1.0, into_decay / decay)
    if cfg.schedule != "cosine":
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {cfg.schedule!r}")
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
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


@dataclasses.dataclass
class LaunchedStep:
    """An optimizer step queued on the device (Trainer.launch_step) whose numbers are not read yet."""

    step: int  # the step count once it is done (the step number of its record)
    stage: str
    lr: float
    loss_sum: torch.Tensor  # the summed mean losses of its micro-batches, on the device
    grad_norm: torch.Tensor
    start: object  # DeviceClock timestamps around its work
    end: object


class _Progress:
    """A tqdm bar on a terminal; in logs (or without tqdm) a plain line every ten steps on stderr.

    The plain line's ETA extrapolates the elapsed time of this invocation (steps, evaluations and
    checkpoints) per step over the remaining steps.
    """

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        self.total = total
        self.initial = initial
        self.began = time.perf_counter()
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
            done = record["step"] - self.initial
            eta = (time.perf_counter() - self.began) / done * (self.total - record["step"])
            print(f"step {record['step']}/{self.total}: {text}, {record['wall_s'] / 60:.1f} min, "
                  f"ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A line between progress updates (an evaluation's result)."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Builds (or restores) everything a run needs; ``run()`` trains until done or stopped.

    ``context_parallel`` None: a run in this one process. C: a run over the W processes of a torchrun launch
    (or of an already initialized default process group), C ranks sharing each sequence and W / C groups
    splitting each batch (parallel.py); every rank builds its Trainer alike. Rank 0 alone writes config.json,
    metrics.jsonl, the progress display, summary.json and the export, and it alone evaluates: the whole
    model is gathered to it and measured in one process. Checkpoints are then DCP folders
    (sharded_checkpoint.py), which any layout, or a single process, can resume.
    """

    def __init__(self, run_dir, model_config: ModelConfig = None, train_config: TrainConfig = None,
                 context_parallel: int = None):
        self.run_dir = pathlib.Path(run_dir)
        latest = ckpt.latest_checkpoint(self.run_dir)
        sharded = latest is not None and ckpt.is_sharded(latest)
        if latest is None:
            state = None
        else:
            state = sharded_checkpoint.read_run_state(latest) if sharded else ckpt.load_checkpoint(latest)
        if state is not None:
            model_config = ModelConfig.from_dict(state["model_config"])
            train_config = TrainConfig.from_dict(state["train_config"])
        elif model_config is None or train_config is None:
            raise ValueError(f"{self.run_dir} has no checkpoint to resume; give a model and a train config")
        if train_config.total_steps < 1:
            raise ValueError("the run needs at least one step (lighthouse_steps + dense_steps)")
        train_config.validate()
        if context_parallel is not None:
            parallel_module.check_layout(parallel_module.process_count(), context_parallel, model_config,
                                         train_config)
            if latest is not None and not sharded:
                raise ValueError(f"{latest}: expected the checkpoint folder of a run over several processes, got "
                                 f"the file of a single-process run (resume it without torchrun)")
        self.model_config = model_config
        self.cfg = train_config
        self.device = resolve_device(train_config.device)
        self.parallel = None
        if context_parallel is not None:
            self.device = parallel_module.device_for_rank(self.device)
            self.parallel = parallel_module.Parallel(context_parallel, self.device)
        self.bf16 = train_config.bf16 and self.device.type == "cuda"

        random.seed(train_config.seed)
        np.random.seed(train_config.seed)
        torch.manual_seed(train_config.seed)
        self.model = ByteLlama(model_config).to(self.device)
        if self.parallel is not None:
            self.parallel.wrap(self.model)
        self.model.activation_checkpointing = train_config.activation_checkpointing
        # The rotary tables of the training length, made once rather than in every step. Over a sequence
        # shard each rank would keep the whole sequence's tables for the run (1 GiB at 1M positions and
        # head_dim 128), so context parallelism computes them in each step instead.
        self.rope = None
        if self.model.sequence_shard is None:
            self.rope = rope_tables(model_config, model_config.max_seq_len, self.device)
        # fullgraph: a graph break would cut the step into pieces run eagerly between compiled graphs. The
        # switch of stage changes the layers' attention modes, so the model compiles once for each stage.
        self.forward = torch.compile(self.model, fullgraph=True) if train_config.compile else self.model
        self.clock = DeviceClock(self.device)
        self.optimizer = self._make_optimizer()

        self.corpus = load_corpus(train_config.data or [default_corpus()], train_config.val_fraction, train_config.seed)
        self.sampler = SequenceSampler(self.corpus.train, model_config.max_seq_len, train_config.seed)
        self.evaluator = Evaluator(self.corpus.val, model_config.max_seq_len, train_config, self.device, self.bf16,
                                   lighthouse=train_config.lighthouse_steps > 0)
        self.step = 0
        self.wall_s = 0.0
        self.tokens = 0
        self.eval_s = 0.0
        # Per stage: [seconds, tokens] of its steps so far (the running tokens/s of train records).
        self.stage_totals = {LIGHTHOUSE: [0.0, 0], DENSE: [0.0, 0]}
        if state is not None:
            self._restore(latest, state)
        elif self.is_main:
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

    @property
    def is_main(self) -> bool:
        """True in a single-process run and on rank 0 of a run over several processes."""
        return self.parallel is None or self.parallel.is_main

    def _metrics_path(self) -> pathlib.Path:
        return self.run_dir / "metrics.jsonl"

    def validation_note(self) -> str:
        """One line describing the fixed validation set (for the start of a run's log)."""
        windows = self.evaluator.windows
        overlap = " (overlapping: the stream is short)" if windows_overlap(windows, len(self.corpus.val)) else ""
        return (f"validation: {len(windows)} windows of {windows.shape[1] - 1} tokens from "
                f"{len(self.corpus.val):,} tokens of {self.corpus.val_docs} documents{overlap}")

    def _run_state(self) -> dict:
        """The trainer's state but the model and the optimizer (the same on every rank of a run)."""
        state = {
            "step": self.step,
            "wall_s": self.wall_s,
            "tokens": self.tokens,
            "eval_s": self.eval_s,
            "stage_totals": {stage: list(totals) for stage, totals in self.stage_totals.items()},
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(),
            "model_config": self.model_config.to_dict(),
            "train_config": self.cfg.to_dict(),
        }
        if self.parallel is not None:
            state["parallel"] = self.parallel.describe()
        return state

    def state_dict(self) -> dict:
        return {**self._run_state(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def _restore(self, path: pathlib.Path, state: dict) -> None:
        """Restore from the checkpoint at path; state is what was read of it (all of a .pt file; a folder's
        run state, its model and optimizer being loaded here, resharded to this run's layout)."""
        if ckpt.is_sharded(path):
            sharded_checkpoint.load(path, self.model, self.optimizer)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self.wall_s = state["wall_s"]
        self.tokens = state["tokens"]
        # Checkpoints written before evaluation curves lack these two; they start from zero then.
        self.eval_s = state.get("eval_s", 0.0)
        self.stage_totals.update({k: list(v) for k, v in state.get("stage_totals", {}).items()})
        _set_rng_state(state["rng"])
        if self.is_main:
            self._truncate_metrics()

    def _read_metrics(self) -> list:
        """Every complete record of metrics.jsonl (a line torn by a kill is left out)."""
        path = self._metrics_path()
        records = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def _truncate_metrics(self) -> None:
        """Drop metric records past the restored step (written after the checkpoint, before a kill).

        A kill in the middle of a write leaves a torn last line; it is dropped too.
        """
        kept = [r for r in self._read_metrics() if r["step"] <= self.step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        ckpt.atomic_write(self._metrics_path(), lambda f: f.write(text.encode()))

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self._metrics_path(), "a") as f:
            f.write(json.dumps(record) + "\n")

    def save(self) -> pathlib.Path:
        """Write the checkpoint of the current step (over several processes: collective, a DCP folder)."""
        if self.parallel is None:
            return ckpt.save_checkpoint(self.run_dir, self.step, self.state_dict(), self.cfg.keep_checkpoints)
        return sharded_checkpoint.save(self.run_dir, self.step, self.model, self.optimizer, self._run_state(),
                                       self.cfg.keep_checkpoints, self.parallel)

    def _checkpoint_path(self) -> pathlib.Path:
        """Where save() puts the checkpoint of the current step."""
        if self.parallel is None:
            return ckpt.checkpoint_path(self.run_dir, self.step)
        return sharded_checkpoint.checkpoint_path(self.run_dir, self.step)

    def enter_stage(self) -> None:
        """Set the layers' attention for the coming step (the switch happens here, nothing else)."""
        self.model.set_stage(stage_at(self.cfg, self.step))

    def train_step(self) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches; returns its metrics record (waiting for it)."""
        return self.finish_step(self.launch_step())

    def launch_step(self) -> LaunchedStep:
        """Queue the next optimizer step on the device without waiting for it; ``self.step`` counts it at once.

        Its loss, gradient norm and time stay on the device until finish_step reads them, so the host can
        prepare and queue the following step while this one runs. Steps must be finished in launch order.
        """
        self.enter_stage()
        start = self.clock.now()
        lr = learning_rate(self.cfg, self.step)
        loss_sum, grad_norm = self.optimize(lr)
        end = self.clock.now()
        self.step += 1
        return LaunchedStep(self.step, self.model.stage, lr, loss_sum, grad_norm, start, end)

    def finish_step(self, launched: LaunchedStep) -> dict:
        """Read a launched step's numbers (waiting for the device until it has run), add its tokens and time to
        the totals and log its metrics record."""
        elapsed = self.clock.seconds(launched.start, launched.end)
        loss_value = float(launched.loss_sum) / self.cfg.grad_accum
        tokens = self.cfg.grad_accum * self.cfg.batch_size * self.model_config.max_seq_len
        self.wall_s += elapsed
        self.tokens += tokens
        stage = self.stage_totals[launched.stage]
        stage[0] += elapsed
        stage[1] += tokens
        record = {"kind": "train", "step": launched.step, "stage": launched.stage, "loss": loss_value,
                  "lr": launched.lr, "grad_norm": float(launched.grad_norm), "tokens": self.tokens, "step_s": elapsed,
                  "tokens_per_s": tokens / elapsed, "stage_tokens_per_s": stage[1] / stage[0], "wall_s": self.wall_s}
        self._log(record)
        return record

    def optimize(self, lr: float):
        """The work of one optimizer step in the model's current stage: ``grad_accum`` micro-batches forward and
        backward, clipping and the update at learning rate lr. Returns (the summed mean losses of the
        micro-batches, the gradient norm before clipping) as device tensors, without waiting for the device."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.cfg.grad_accum):
            inputs, targets, count = self.micro_batch()
            loss_sum += self.forward_backward(inputs, targets, count, last=micro == self.cfg.grad_accum - 1)
        if self.parallel is not None:
            loss_sum = self.parallel.total(loss_sum)  # the ranks' shares of the loss add up to the batch mean
        return loss_sum, self.update()

    def micro_batch(self):
        """The next micro-batch on the device: (inputs, targets, count), count being the number of scored (non-PAD)
        targets of the whole micro-batch. Over several processes, this rank's part of the global micro-batch.

        On CUDA the host batch is pinned first, so the copy to the device does not wait for the device.
        """
        batch = self.sampler.next_batch(self.cfg.batch_size)
        if self.parallel is None:
            inputs, targets, count = batch[:, :-1], batch[:, 1:], int((batch[:, 1:] != PAD).sum())
        else:
            inputs, targets, count = self.parallel.shard_batch(batch)
        return self._to_device(inputs), self._to_device(targets), count

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            tensor = tensor.contiguous().pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def forward_backward(self, inputs: torch.Tensor, targets: torch.Tensor, count: int, last: bool) -> torch.Tensor:
        """Forward and backward of a micro-batch; returns its loss: the summed loss of its scored targets over
        count. In one process that is the micro-batch's mean loss; over several processes, this rank's share of
        the global micro-batch's mean, the gradients being reduce-scattered (summed over the ranks) in the
        backward of the step's last micro-batch only.
        """
        if self.parallel is not None:
            self.parallel.sync_gradients(self.model, last)
        with autocast_for(self.device, self.bf16):
            loss = self.forward(inputs, targets, rope=self.rope) / count
        (loss / self.cfg.grad_accum).backward()
        return loss.detach()

    def update(self) -> torch.Tensor:
        """Clip the accumulated gradients, step the optimizer and clear the gradients; returns the norm before
        clipping (a device tensor)."""
        if self.parallel is None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        else:
            grad_norm = self.parallel.clip_grad_norm(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def evaluation_due(self) -> bool:
        """After the current step: every ``eval_every`` steps, at the switch and at the last step."""
        every = self.cfg.eval_every
        at_switch = self.step == self.cfg.lighthouse_steps and self.cfg.dense_steps > 0
        return self.step == self.cfg.total_steps or at_switch or bool(every and self.step % every == 0)

    def _evaluation_model(self):
        """The model to measure and export: the training model itself in one process; over several processes
        a plain copy of it gathered to rank 0 (None on the other ranks; every rank must call this)."""
        if self.parallel is None:
            return self.model
        return self.parallel.full_model(self.model, self.device)

    def evaluate(self):
        """Measure the current model on the fixed validation set and log it as an ``eval`` record.

        The time it takes goes to ``eval_s``, never to ``wall_s``; the model's stage and train/eval
        mode are restored afterwards. Over several processes every rank calls it and rank 0 measures the
        gathered model and returns the record; the other ranks return None.
        """
        start = time.perf_counter()
        model = self._evaluation_model()
        return None if model is None else self._measure(model, start)

    def _measure(self, model, start: float) -> dict:
        """evaluate()'s measurement of model, its time counted from start."""
        point = self.evaluator.point(model)
        elapsed = time.perf_counter() - start
        self.eval_s += elapsed
        record = {"kind": "eval", "step": self.step, "stage": stage_at(self.cfg, max(0, self.step - 1)),
                  "tokens": self.tokens, "wall_s": self.wall_s, **point, "eval_s": elapsed}
        self._log(record)
        return record

    def run(self, max_minutes: float = None, stop_after_step: int = None, progress: bool = True) -> str:
        """Train until the last step ("done"), the wall-clock budget ("time") or a step ("paused").

        Each step is launched before the previous one is finished (its numbers read and its record logged),
        so the device never waits for the host between steps. Evaluations run when ``evaluation_due()``,
        before that step's checkpoint (a kill during an evaluation replays the step and its evaluation), and
        both come after the step is finished, so metrics.jsonl keeps its order. Checkpoints are written every
        ``checkpoint_every`` steps, at the end of the Lighthouse stage and whenever the loop stops. The
        budget check predicts the next step's end from the last finished step's time (twice that while a
        launched step is still running ahead of it).
        """
        began = time.perf_counter()
        bar = _Progress(self.cfg.total_steps, self.step, progress and self.is_main)
        status = "done"
        last_step_s = 0.0
        running = None
        try:
            while self.step < self.cfg.total_steps:
                if stop_after_step is not None and self.step >= stop_after_step:
                    status = "paused"
                    break
                ahead = last_step_s * (2 if running is not None else 1)
                if max_minutes is not None and self._out_of_time(time.perf_counter() - began + ahead, max_minutes):
                    status = "time"
                    break
                launched = self.launch_step()
                if running is not None:
                    last_step_s = self._finish(running, bar)
                running = launched
                every = self.cfg.checkpoint_every
                at_switch = self.step == self.cfg.lighthouse_steps and self.cfg.dense_steps > 0
                checkpoint_due = bool(every and self.step % every == 0) or at_switch
                evaluation_due = self.evaluation_due()
                if not (evaluation_due or checkpoint_due):
                    continue
                last_step_s, running = self._finish(running, bar), None
                if evaluation_due:
                    evaluation = self.evaluate()
                    if evaluation is not None:
                        bar.note(_eval_line(evaluation))
                if checkpoint_due:
                    self.save()
            if running is not None:
                self._finish(running, bar)
        finally:
            bar.close()
        if ckpt.latest_checkpoint(self.run_dir) != self._checkpoint_path():
            self.save()
        return status

    def _finish(self, launched: LaunchedStep, bar: _Progress) -> float:
        """finish_step, shown on the progress display; returns the step's seconds."""
        record = self.finish_step(launched)
        bar.update(record)
        return record["step_s"]

    def _out_of_time(self, predicted_s: float, max_minutes: float) -> bool:
        """True when the next step would end past the budget; over several processes, when it would on any rank
        (every rank must stop at the same step)."""
        over = predicted_s > 60.0 * max_minutes
        return over if self.parallel is None else self.parallel.any_rank(over, self.device)

    def last_evaluation(self):
        """The eval record of the current step in metrics.jsonl, or None."""
        found = [r for r in self._read_metrics() if r.get("kind") == "eval" and r["step"] == self.step]
        return found[-1] if found else None

    def finish(self, status: str, progress: bool = True):
        """Export (when done), evaluate (unless paused) and write ``summary.json``.

        The summary's ``eval`` holds the validation point of the final step (measured by the loop, or
        here for a run stopped by its budget), the retrieval curve and passkey accuracy. With
        ``progress`` each phase says on stderr what it does and how long it took. Over several processes
        every rank calls it; rank 0 does the work on the gathered model and the others return None.
        """
        model = self._evaluation_model() if status != "paused" else self.model
        if not self.is_main:
            return None
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
        if self.parallel is not None:
            summary["parallel"] = self.parallel.describe()
        if status == "done":
            with phase(f"export: the dense model to {self.run_dir / 'hf'}", progress):
                export_hf(model, self.model_config, self.run_dir / "hf", self.cfg.export_dtype)
            summary["hf_dir"] = "hf"
        if status != "paused":
            point = self.last_evaluation()
            if point is None:
                with phase(f"final evaluation: validation loss at step {self.step}", progress):
                    point = self._measure(model, time.perf_counter())
            start = time.perf_counter()
            summary["eval"] = {key: value for key, value in point.items() if key.startswith(("val_", "leak_"))}
            with phase(f"final evaluation: retrieval at distances {self.cfg.retrieval.distances}", progress):
                summary["eval"]["retrieval"] = self.evaluator.retrieval(model)
            passkey = self.cfg.passkey
            prompts = passkey.trials * len(passkey.lengths) * len(passkey.depths)
            with phase(f"final evaluation: passkey, {prompts} prompts at lengths {passkey.lengths}", progress):
                summary["eval"]["passkey"] = self.evaluator.passkey(model)
            summary["final_eval_s"] = time.perf_counter() - start
        summary["eval_s"] = self.eval_s
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


@contextlib.contextmanager
def phase(text: str, enabled: bool = True):
    """On stderr, ``text ...`` as a phase starts and its seconds on the same line when it ends."""
    if enabled:
        print(f"{text} ...", end="", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        yield
    finally:
        if enabled:
            print(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def _eval_line(record: dict) -> str:
    text = f"eval @ step {record['step']}: dense {record['val_bpb']:.4f} bits/byte"
    if "val_lh_bpb" in record:
        text += f", Lighthouse {record['val_lh_bpb']:.4f} bits/byte"
        text += "".join(f", leak t+{key[len('leak_t'):]} {record[key]:+.4f} nats" for key in record
                        if key.startswith("leak_t") and not key.endswith("_se"))
    return text + f" ({record['eval_s']:.1f} s)"
