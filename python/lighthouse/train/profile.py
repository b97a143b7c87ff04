"""Where the time of a training step goes, in dense and in Lighthouse mode (``lighthouse-train profile``).

A preset's model, data and optimizer are built by a Trainer in a scratch folder; the trainer's own step
(Trainer.optimize: micro-batches, forward, loss, backward, clipping, update) runs in each mode, first
``warmup`` steps, then ``steps`` steps timed as a whole (the throughput training gets: nothing added, no
waiting between steps), then ``steps`` steps with probes that cut the step into categories. The probed steps are
also timed one by one: their median, and the Lighthouse speedup by the medians, are not moved by one slow step.

The probes record a timestamp (timing.DeviceClock: CUDA events on CUDA, perf_counter elsewhere) wherever the
step's work changes category, and each timestamp names the category of the time that follows it, up to the
next one. On CUDA these are the device's times, the steps being queued back to back as in training: host
work done while the device is busy with earlier work costs nothing, and where the device waits for the host
the wait counts in the category the host is in. In the forward a probe wraps each part of the model: its entry marks the part's category and its
exit the category around it. In the backward an identity autograd function on the part's outputs marks the
part's category when the gradient reaches them, and one on its inputs marks the category around it when the
gradient leaves the part. The categories therefore add up to the step's time from its first timestamp to its
last, exactly: whatever no probe claims (the residual additions and reshapes of the model, the division of
the loss, the host's time between parts while the device waits for it) is "other". Parts nested in another
count for themselves (the RoPE of "before" mode inside the Lighthouse attention is RoPE).

Compiled (``--compile``), the model is one graph whose kernels mix the categories, and probes inside it would
break the graph: its forward and backward are then one category, "model".

The probes exist only while profiling: the trainer's methods and the model's functions are wrapped for the
measured steps and restored afterwards, so training itself never runs them.
"""

import contextlib
import json
import pathlib
import statistics
import tempfile

import torch

from . import kernels as kernel_profile
from . import model as model_module
from .model import DENSE, LIGHTHOUSE, MLP, RMSNorm, layer_modes
from .timing import DeviceClock
from .trainer import Trainer

CATEGORIES = {
    "attention": "attention core: SDPA (dense) or the Lighthouse op chain (pooling, selection, its own RoPE in "
                 "'pooled' mode, sparse attention, scatter)",
    "projections": "q, k, v and o projections",
    "mlp": "the MLP (gate, up, SiLU, down)",
    "norms": "RMSNorms",
    "rope": "rotary tables and rotations of q and k (dense layers; Lighthouse layers in 'before' mode)",
    "embedding": "token embedding",
    "head_loss": "LM head and cross-entropy, chunked (loss.py): one fused function",
    "model": "compiled forward and backward (--compile: one graph, not split)",
    "optimizer": "gradient clipping, AdamW step, zeroing the gradients",
    "data": "sampler, pinning and the copy to the device",
    "other": "everything no probe claims: residual additions, reshapes, loss scaling, host time the device waits",
}
MODES = (DENSE, LIGHTHOUSE)


class Timeline:
    """The timestamps of one step, each with the category of the time after it; and a stack of the categories
    of the forward's nested probes (its bottom: the category of time outside every probe)."""

    def __init__(self, clock: DeviceClock, outside: str):
        self.clock = clock
        self.stack = [outside]
        self.marks = []

    def mark(self, category: str, backward: bool = False) -> None:
        self.marks.append((self.clock.now(), category, backward))

    def enter(self, category: str) -> None:
        self.stack.append(category)
        self.mark(category)

    def leave(self) -> None:
        self.stack.pop()
        self.mark(self.stack[-1])

    @contextlib.contextmanager
    def span(self, category: str):
        self.enter(category)
        try:
            yield
        finally:
            self.leave()

    def seconds(self, first: int, last: int) -> dict:
        """{(category, backward): seconds} from timestamp first to timestamp last; waits for the device."""
        totals = {}
        span = self.marks[first:last + 1]
        for (start, category, backward), (end, _, _) in zip(span, span[1:]):
            key = (category, backward)
            totals[key] = totals.get(key, 0.0) + self.clock.seconds(start, end)
        return totals


class _BackwardMark(torch.autograd.Function):
    """The identity; its backward marks the timeline with a category when the gradient passes."""

    @staticmethod
    def forward(ctx, tensor, timeline, category):
        ctx.timeline, ctx.category = timeline, category
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        ctx.timeline.mark(ctx.category, backward=True)
        return grad, None, None


def _marked(value, timeline: Timeline, category: str):
    """value (a tensor, or a tuple or list of values) with every tensor that needs a gradient marked."""
    if isinstance(value, torch.Tensor):
        return _BackwardMark.apply(value, timeline, category) if value.requires_grad else value
    if isinstance(value, (tuple, list)):
        return type(value)(_marked(v, timeline, category) for v in value)
    return value


def _probed(fn, timeline: Timeline, category: str):
    """fn wrapped in a probe of the category (forward timestamps and backward marks)."""
    def probed(*args, **kwargs):
        args = _marked(args, timeline, timeline.stack[-1])
        with timeline.span(category):
            out = fn(*args, **kwargs)
        return _marked(out, timeline, category)
    return probed


def _module_categories(model) -> list:
    """(module, category) of every module the probes wrap."""
    found = []
    for module in model.modules():
        if isinstance(module, RMSNorm):
            found.append((module, "norms"))
        elif isinstance(module, MLP):
            found.append((module, "mlp"))
    found.append((model.model.embed_tokens, "embedding"))
    for layer in model.model.layers:
        attention = layer.self_attn
        found.append((attention.o_proj, "projections"))
    return found


# The functions of model.py the probes wrap (looked up by name where they are called).
_FUNCTIONS = {"project_qkv": "projections", "rope_tables": "rope", "apply_rope": "rope",
              "dense_attention": "attention", "sparse_attention": "attention", "chunked_cross_entropy": "head_loss"}


@contextlib.contextmanager
def probes(trainer: Trainer, timeline: Timeline, model_parts: bool):
    """Wrap the trainer's step in probes for the duration; with model_parts, also the model's parts."""
    saved = {name: getattr(trainer, name) for name in ("micro_batch", "forward_backward", "update")}
    trainer.micro_batch = _probed(saved["micro_batch"], timeline, "data")
    trainer.forward_backward = _probed(saved["forward_backward"], timeline, "other" if model_parts else "model")
    trainer.update = _probed(saved["update"], timeline, "optimizer")
    functions = {name: getattr(model_module, name) for name in _FUNCTIONS} if model_parts else {}
    handles = []
    try:
        for name, fn in functions.items():
            setattr(model_module, name, _probed(fn, timeline, _FUNCTIONS[name]))
        for module, category in _module_categories(trainer.model) if model_parts else []:
            handles.append(module.register_forward_pre_hook(_enter_hook(timeline, category)))
            handles.append(module.register_forward_hook(_leave_hook(timeline, category)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for name, fn in functions.items():
            setattr(model_module, name, fn)
        for name in saved:
            delattr(trainer, name)


def _enter_hook(timeline: Timeline, category: str):
    def hook(module, args):
        args = _marked(args, timeline, timeline.stack[-1])
        timeline.enter(category)
        return args
    return hook


def _leave_hook(timeline: Timeline, category: str):
    def hook(module, args, out):
        timeline.leave()
        return _marked(out, timeline, category)
    return hook


def _mode_profile(trainer: Trainer, mode: str, steps: int, warmup: int, compiled: bool, kernels: bool) -> dict:
    """The uninstrumented step time and the per-category profile of one mode; with kernels, also the device
    time by kernel family of `steps` more steps (kernels.py)."""
    clock, lr = trainer.clock, trainer.cfg.lr
    trainer.model.set_stage(mode)
    for _ in range(warmup):
        trainer.optimize(lr)
    start = clock.now()
    for _ in range(steps):
        trainer.optimize(lr)
    step_s = clock.seconds(start, clock.now()) / steps
    per_step = profiled_steps(trainer, lr, steps, model_parts=not compiled)
    summary = _summary(per_step, step_s, _tokens_per_step(trainer))
    if kernels:
        summary["kernels"] = kernel_profile.profile_kernels(trainer, lr, steps)
    return summary


def profiled_steps(trainer: Trainer, lr: float, steps: int, model_parts: bool) -> list:
    """Steps of the trainer (in the model's current stage) with probes: per step {(category, backward): seconds}.

    The steps are queued back to back, as training queues them, and read at the end: the device's
    timeline is then the one of training, the host running ahead of it.
    """
    timeline = Timeline(trainer.clock, "other")
    bounds = []
    with probes(trainer, timeline, model_parts):
        for _ in range(steps):
            bounds.append(len(timeline.marks))
            timeline.mark("other")
            trainer.optimize(lr)
        bounds.append(len(timeline.marks))
        timeline.mark("other")
    return [timeline.seconds(first, last) for first, last in zip(bounds, bounds[1:])]


def _tokens_per_step(trainer: Trainer) -> int:
    return trainer.cfg.grad_accum * trainer.cfg.batch_size * trainer.model_config.max_seq_len


def _summary(per_step: list, step_s: float, tokens: int) -> dict:
    """Mean milliseconds per category over the profiled steps, their shares, and the two throughputs."""
    steps = len(per_step)
    keys = sorted({key for seconds in per_step for key in seconds})
    mean_ms = {key: 1000.0 * sum(s.get(key, 0.0) for s in per_step) / steps for key in keys}
    totals_ms = [1000.0 * sum(s.values()) for s in per_step]
    profiled_ms = sum(totals_ms) / steps
    categories = {}
    for (category, backward), ms in mean_ms.items():
        entry = categories.setdefault(category, {"ms": 0.0, "forward_ms": 0.0, "backward_ms": 0.0})
        entry["ms"] += ms
        entry["backward_ms" if backward else "forward_ms"] += ms
    for entry in categories.values():
        entry["share"] = entry["ms"] / profiled_ms
    return {"step_ms": 1000.0 * step_s, "tokens_per_s": tokens / step_s, "profiled_step_ms": profiled_ms,
            "profiled_tokens_per_s": tokens / (profiled_ms / 1000.0), "profiled_steps_ms": totals_ms,
            "profiled_median_ms": statistics.median(totals_ms), "categories": categories}


def profile(model_config, train_config, steps: int = 5, warmup: int = 2, modes=MODES, kernels: bool = False) -> dict:
    """Profile the step of these configurations in each of modes (``train_config.compile`` compiles the model;
    kernels adds the device time by kernel family, CUDA only)."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"profile: expected --steps >= 1 and --warmup >= 0, got {steps} and {warmup}")
    with tempfile.TemporaryDirectory(prefix="lighthouse-profile-") as scratch:
        trainer = Trainer(scratch, model_config, train_config)
        if kernels:
            kernel_profile.require_cuda(trainer.device)
        result = {
            "preset": train_config.name,
            "device": _device_name(trainer.device),
            "compiled": train_config.compile,
            "bf16": trainer.bf16,
            "seq_len": model_config.max_seq_len,
            "batch_size": train_config.batch_size,
            "grad_accum": train_config.grad_accum,
            "tokens_per_step": _tokens_per_step(trainer),
            "parameters": trainer.model.num_parameters(),
            "norm": model_config.norm,
            "layers": model_config.n_layers,
            "lighthouse_layers": layer_modes(model_config, LIGHTHOUSE).count(LIGHTHOUSE),
            "steps": steps,
            "warmup": warmup,
            "modes": {mode: _mode_profile(trainer, mode, steps, warmup, train_config.compile, kernels)
                      for mode in modes},
        }
    if set(MODES) <= set(result["modes"]):
        dense, lighthouse = result["modes"][DENSE], result["modes"][LIGHTHOUSE]
        result["lighthouse_speedup"] = dense["step_ms"] / lighthouse["step_ms"]
        # A slow step (the first profiled one often is) moves a mean of a few steps but not the median.
        result["lighthouse_speedup_median"] = dense["profiled_median_ms"] / lighthouse["profiled_median_ms"]
    return result


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def markdown(result: dict) -> str:
    """The profile as a markdown report: the throughput of each mode, then the table of categories."""
    modes = list(result["modes"])
    runs = [result["modes"][mode] for mode in modes]
    how = "compiled (fullgraph)" if result["compiled"] else "eager"
    lines = [
        f"# Training step profile: {result['preset']}, {how}",
        "",
        f"{result['device']}, {'bf16 autocast' if result['bf16'] else 'fp32'}, {result['parameters']:,} "
        f"parameters, RMSNorm {result.get('norm', 'composite')}; {result['tokens_per_step']:,} tokens per step (batch {result['batch_size']} x "
        f"{result['seq_len']:,}, {result['grad_accum']} micro-batch(es)); means of {result['steps']} steps after "
        f"{result['warmup']} warm-up steps per mode.",
        "",
    ]
    if "lighthouse_layers" in result:
        lines += [f"Lighthouse mode: {result['lighthouse_layers']} of {result['layers']} layers run Lighthouse, the "
                  "others dense.", ""]
    if "commit" in result:
        lines += [f"Commit `{result['commit']}`, {result['date']}: `{result['command']}`", ""]
    lines += [
        "| | " + " | ".join(modes) + " |",
        "|---|" + "---:|" * len(modes),
        "| step, uninstrumented (ms) | " + " | ".join(f"{r['step_ms']:.1f}" for r in runs) + " |",
        "| tokens/s, uninstrumented | " + " | ".join(f"{r['tokens_per_s']:,.0f}" for r in runs) + " |",
        "| step, profiled (ms) | " + " | ".join(f"{r['profiled_step_ms']:.1f}" for r in runs) + " |",
        "| step, profiled, median (ms) | " + " | ".join(f"{r['profiled_median_ms']:.1f}" for r in runs) + " |",
    ]
    if "lighthouse_speedup" in result:
        lines += ["", f"Lighthouse speedup over dense (uninstrumented step): {result['lighthouse_speedup']:.2f}x; "
                  f"by the medians of the profiled steps: {result['lighthouse_speedup_median']:.2f}x"]
    lines += ["", "| category | " + " | ".join(f"{m} ms | {m} share | {m} backward ms" for m in modes) + " |",
              "|---|" + "---:|---:|---:|" * len(modes)]
    present = [c for c in CATEGORIES if any(c in r["categories"] for r in runs)]
    empty = {"ms": 0.0, "share": 0.0, "backward_ms": 0.0}
    for category in present:
        cells = [r["categories"].get(category, empty) for r in runs]
        lines.append(f"| {category} | " + " | ".join(
            f"{c['ms']:.2f} | {100 * c['share']:.1f}% | {c['backward_ms']:.2f}" for c in cells) + " |")
    lines.append("| **step** | " + " | ".join(f"**{r['profiled_step_ms']:.2f}** | 100% | " for r in runs) + " |")
    lines += ["", "Categories (each includes its backward; they add up to the profiled step, see profile.py):", ""]
    lines += [f"* {category}: {CATEGORIES[category]}" for category in present]
    lines += kernel_profile.markdown(result["modes"])
    return "\n".join(lines) + "\n"


def write(result: dict, out: pathlib.Path, suffix: str = "") -> pathlib.Path:
    """Write <preset>[-compiled][-fused-norm]<suffix>.md and .json into the folder out; returns the markdown's
    path."""
    out.mkdir(parents=True, exist_ok=True)
    stem = result["preset"] + ("-compiled" if result["compiled"] else "") + (
        "-fused-norm" if result.get("norm") == "fused" else "") + suffix
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    path = out / f"{stem}.md"
    path.write_text(markdown(result))
    return path
