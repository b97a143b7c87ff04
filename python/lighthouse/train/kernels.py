"""Device time of a training step by kernel family (``lighthouse-train profile --kernels``).

The probe categories of profile.py cannot split a compiled step: torch.compile fuses the model into one graph
whose kernels mix them. The kernels the device ran can still be told apart by name, in every mode: the SDPA
kernels, the Lighthouse stage kernels, the matrix multiplies, the Triton kernels torch.compile generates, and
ATen's own. Here the trainer's step runs under torch.profiler (CUDA activity only) and every kernel, copy and
fill is summed into its family: milliseconds per step and share of the device's busy time, the kernels
that took the most time, and every Lighthouse stage kernel (the split of the stages' time in a real step).

The busy time is the sum of the kernels' durations; the step's wall time beside it (CUDA events, the steps
queued back to back as training queues them) tells how much of the step the device waited for the host. The
idle time says where: the intervals of the profiled window that no device activity covers, and the longest of
them with the activities on either side.
"""

import torch

# Families in the order they are tested: the first whose pattern a kernel's name holds takes it.
FAMILIES = {
    "lighthouse": ("Lighthouse stage kernels: pool_score, select, gather, scatter and their backward",
                   ("lighthouse::",)),
    # Triton kernels are named after the operations they fuse (a transpose feeding SDPA can carry
    # "attention" in its name), so they are told apart before the names of library kernels.
    "triton": ("Triton kernels torch.compile generates: fused norms, RoPE, SiLU, residuals, loss pieces",
               ("triton_",)),
    "attention": ("SDPA kernels: flash, cuDNN and memory-efficient attention, forward and backward",
                  ("flash", "fmha", "sdpa", "attention", "attn")),
    "gemm": ("matrix multiplies (cuBLAS, CUTLASS): projections, MLP, LM head",
             ("gemm", "nvjet", "xmma", "cutlass", "cublas", "wgmma")),
    "copy": ("memory copies and fills", ("memcpy", "memset")),
    "aten": ("ATen's own element-wise, reduction, indexing and sort kernels", ("at::", "at_cuda_detail", "cub::")),
    "other": ("every kernel no pattern above matches", ()),
}
TOP_KERNELS = 10
# Idle intervals of the device listed per mode (the longest).
TOP_GAPS = 5
# Prefix of the Lighthouse kernels' demangled names, dropped in their table.
STAGE_PREFIX = "lighthouse::cuda::(anonymous namespace)::"


def family(name: str) -> str:
    """The family of a kernel from its (demangled) name."""
    lowered = name.lower()
    for key, (_, patterns) in FAMILIES.items():
        if any(p.lower() in lowered for p in patterns):
            return key
    return "other"


def stage_name(name: str) -> str:
    """A Lighthouse kernel's name without its return type, namespaces and parameter list."""
    short = name.removeprefix("void ").replace(STAGE_PREFIX, "")
    if not short.endswith(")"):
        return short
    depth = 0  # walk back from the last ")" to the "(" that opens the parameter list
    for i in range(len(short) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(short[i], 0)
        if depth == 0:
            return short[:i]
    return short


def _require_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"kernel profile: expected steps >= 1, got {steps}")


def device_spans(prof) -> list:
    """(start us, end us, name) of every device activity a torch.profiler run recorded."""
    from torch.autograd import DeviceType

    return [(e.time_range.start, e.time_range.end, e.name) for e in prof.events() if e.device_type == DeviceType.CUDA]


def durations(spans: list) -> list:
    """(name, microseconds) of each (start us, end us, name) span."""
    return [(name, end - start) for start, end, name in spans]


def kernel_times(prof) -> list:
    """(name, microseconds) of every device activity a torch.profiler run recorded."""
    return durations(device_spans(prof))


def idle(spans: list, steps: int) -> dict:
    """The device's idle time in the window from the first activity's start to the last one's end: what no
    activity covers (overlapping activities count once), in ms per step, and the TOP_GAPS longest idle intervals
    with the activity that ends before each (the last to end) and the one that starts it."""
    _require_steps(steps)
    gaps, total_us = [], 0.0
    ordered = sorted(spans)
    if ordered:
        covered_to, last = ordered[0][1], ordered[0][2]
        for start, end, name in ordered[1:]:
            if start > covered_to:
                gaps.append((start - covered_to, last, name))
                total_us += start - covered_to
            if end > covered_to:
                covered_to, last = end, name
    gaps.sort(key=lambda gap: -gap[0])
    return {"ms": total_us / 1000.0 / steps, "intervals": len(gaps) / steps,
            "longest": [{"ms": us / 1000.0, "after": after, "before": before} for us, after, before in gaps[:TOP_GAPS]]}


def summarize(times: list, steps: int, wall_ms: float) -> dict:
    """Per-step milliseconds and shares by family, the top kernels by time and every Lighthouse stage kernel, from
    (name, us) pairs."""
    _require_steps(steps)
    families, kernels = {}, {}
    for name, us in times:
        key = family(name)
        families[key] = families.get(key, 0.0) + us
        entry = kernels.setdefault(name, [0.0, 0])
        entry[0] += us
        entry[1] += 1
    busy_us = sum(families.values())
    ranked = sorted(kernels.items(), key=lambda item: -item[1][0])

    def per_step(name, us, calls):
        return {"name": name, "ms": us / 1000.0 / steps, "calls": calls / steps}

    return {
        "steps": steps,
        "wall_ms": wall_ms,
        "busy_ms": busy_us / 1000.0 / steps,
        "families": {key: {"ms": us / 1000.0 / steps, "share": us / busy_us if busy_us else 0.0}
                     for key, us in sorted(families.items(), key=lambda item: -item[1])},
        "top": [{**per_step(name, us, calls), "family": family(name)} for name, (us, calls) in ranked[:TOP_KERNELS]],
        "stages": [per_step(stage_name(name), us, calls) for name, (us, calls) in ranked
                   if family(name) == "lighthouse"],
    }


def require_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError(f"--kernels: needs a CUDA device, got {device}")


def profile_kernels(trainer, lr: float, steps: int) -> dict:
    """Run `steps` training steps of the trainer (its model in its current stage) under torch.profiler."""
    require_cuda(trainer.device)
    from torch.profiler import ProfilerActivity, profile

    clock = trainer.clock
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = clock.now()
        for _ in range(steps):
            trainer.optimize(lr)
        wall_ms = 1000.0 * clock.seconds(start, clock.now()) / steps
    torch.cuda.synchronize(trainer.device)
    return summarize_profile(prof, steps, wall_ms)


def summarize_profile(prof, steps: int, wall_ms: float) -> dict:
    """summarize and idle of one torch.profiler run, its device activities read once (a long profile holds
    hundreds of thousands of events)."""
    spans = device_spans(prof)
    return {**summarize(durations(spans), steps, wall_ms), "idle": idle(spans, steps)}


def markdown(modes: dict) -> list:
    """Lines of the family table of every mode that has a kernel profile, then each mode's top kernels."""
    names = [m for m in modes if "kernels" in modes[m]]
    if not names:
        return []
    runs = [modes[m]["kernels"] for m in names]
    lines = ["", "## Device time by kernel family (torch.profiler)", "",
             f"Means of {runs[0]['steps']} more steps per mode, run under the profiler after the ones above.", "",
             "| family | " + " | ".join(f"{m} ms | {m} share" for m in names) + " |",
             "|---|" + "---:|---:|" * len(names)]
    keys = [k for k in FAMILIES if any(k in r["families"] for r in runs)]
    empty = {"ms": 0.0, "share": 0.0}
    for key in keys:
        cells = [r["families"].get(key, empty) for r in runs]
        lines.append(f"| {key} | " + " | ".join(f"{c['ms']:.2f} | {100 * c['share']:.1f}%" for c in cells) + " |")
    lines.append("| **device busy** | " + " | ".join(f"**{r['busy_ms']:.2f}** | 100%" for r in runs) + " |")
    lines.append("| step, wall (under the profiler) | " + " | ".join(f"{r['wall_ms']:.2f} | " for r in runs) + " |")
    if all("idle" in r for r in runs):
        lines.append("| device idle between activities | " +
                     " | ".join(f"{r['idle']['ms']:.2f} | {r['idle']['intervals']:.0f} intervals" for r in runs) + " |")
    lines += ["", "Families (a kernel's name decides; the first match in this order):", ""]
    lines += [f"* {key}: {FAMILIES[key][0]}" for key in keys]
    for mode, run in zip(names, runs):
        lines += ["", f"Top kernels, {mode}:", "", "| kernel | family | ms per step | calls per step |",
                  "|---|---|---:|---:|"]
        for k in run["top"]:
            lines.append(f"| `{_short(k['name'])}` | {k['family']} | {k['ms']:.2f} | {k['calls']:.0f} |")
    for mode, run in zip(names, runs):
        if run.get("idle", {}).get("longest"):
            lines += ["", f"Longest idle intervals of the device, {mode} (the profiled steps):", "",
                      "| ms | after | before |", "|---:|---|---|"]
            lines += [f"| {g['ms']:.3f} | `{_short(g['after'])}` | `{_short(g['before'])}` |"
                      for g in run["idle"]["longest"]]
    for mode, run in zip(names, runs):
        if run.get("stages"):
            lines += ["", f"Lighthouse stage kernels, {mode}:", "", "| kernel | ms per step | calls per step |",
                      "|---|---:|---:|"]
            lines += [f"| `{k['name']}` | {k['ms']:.3f} | {k['calls']:.0f} |" for k in run["stages"]]
    return lines


def _short(name: str) -> str:
    """A kernel's name for a table cell: at most 100 characters, pipes escaped."""
    short = name if len(name) <= 100 else name[:97] + "..."
    return short.replace("|", "\\|")
