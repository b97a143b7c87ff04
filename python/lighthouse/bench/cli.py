"""Command line of the benchmark suite (`python -m lighthouse.bench`, or the
`lighthouse-bench` console script).

A run starts from a named preset (presets.py). Any of the grid options
(--seq-lens, --topk, --pooling, --levels, --tile-budget, --scorer,
--dilation, --dtype, --batch, --heads, --kv-heads, --head-dim) replaces the
preset's points by the full product of the given values, each axis not given
keeping the values the preset uses. --rope gives every point's layer rotary
tables (recorded in each point's config and series). Exit status: 0 when every check passed and
every Lighthouse measurement that ran succeeded, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from lighthouse.bench import anchors, environment, report
from lighthouse.bench.markdown import main_table
from lighthouse.bench.points import LayerConfig
from lighthouse.bench.presets import PRESETS, Preset, grid, preset
from lighthouse.bench.progress import Progress

SUFFIXES = {"K": 1024, "M": 1024**2}
DENSE_NAMES = {"cudnn": "sdpa_cudnn", "flash": "sdpa_flash", "math": "sdpa_math"}


def size(text: str) -> int:
    """'32768', '32K' or '1M' -> int (K = 1024)."""
    text = text.strip().upper()
    factor = SUFFIXES.get(text[-1:], 1)
    digits = text[:-1] if factor != 1 else text
    if not digits.isdigit() or int(digits) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size like 4096, 32K or 1M, got {text!r}")
    return int(digits) * factor


def listed(parse):
    def parse_list(text: str) -> list:
        return [parse(item) for item in text.split(",") if item.strip()]
    return parse_list


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lighthouse.bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="presets:\n" + "\n".join(f"  {name}: {PRESETS[name]().description}"
                                                                 for name in sorted(PRESETS)))
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--out", type=Path, help="output folder (default: bench/results/<preset>)")
    ap.add_argument("--device", choices=("cpu", "cuda"), help="default: the preset's")
    axes = ap.add_argument_group("grid (comma-separated lists; sizes accept K and M suffixes)")
    axes.add_argument("--seq-lens", type=listed(size))
    axes.add_argument("--topk", type=listed(size))
    axes.add_argument("--pooling", type=listed(int))
    axes.add_argument("--levels", type=listed(int))
    axes.add_argument("--tile-budget", type=listed(int))
    axes.add_argument("--scorer", type=listed(str))
    axes.add_argument("--dilation", type=listed(int))
    axes.add_argument("--dtype", type=listed(str))
    axes.add_argument("--batch", type=listed(int))
    axes.add_argument("--heads", type=listed(int))
    axes.add_argument("--kv-heads", type=listed(int))
    axes.add_argument("--head-dim", type=listed(int))
    ap.add_argument("--rope", action="store_true",
                    help="give the layer rotary tables (float32 [N, D], rotate-half): gather rotates the kept q and k, "
                    "gather_backward rotates their gradients back; dense SDPA is timed without")
    timing = ap.add_argument_group("timing and budgets")
    timing.add_argument("--dense", type=listed(str), help="dense SDPA backends: cudnn, flash, math, or none "
                        "(default: cudnn,flash on CUDA, math on CPU)")
    timing.add_argument("--warmup", type=int, help="warm-up calls for every N")
    timing.add_argument("--repeats", type=int, help="timed calls for every N")
    timing.add_argument("--min-repeats", type=int)
    timing.add_argument("--measure-budget", type=float, help="seconds one measurement may take")
    timing.add_argument("--time-budget", type=float, help="seconds the whole run may take")
    timing.add_argument("--dense-max-seq-len", type=size)
    ap.add_argument("--no-check", action="store_true",
                    help="skip the check against the reference and the fidelity vs fp32 of 16-bit points")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--from-json", type=Path, help="re-render markdown and plots of an existing results.json")
    return ap


def _values(given, found):
    return given if given else sorted(set(found))


def customised(base: Preset, args: argparse.Namespace) -> Preset:
    """The preset with the command line's overrides applied."""
    points = base.points
    grid_axes = ("seq_lens", "topk", "pooling", "levels", "tile_budget", "scorer", "dilation", "dtype", "batch",
                 "heads", "kv_heads", "head_dim")
    if any(getattr(args, axis) for axis in grid_axes):
        configs = [p.config for p in points]
        config_axes = ("topk", "pooling", "levels", "tile_budget", "scorer", "dilation")
        if any(getattr(args, axis) for axis in config_axes):
            values = {axis: _values(getattr(args, axis), [getattr(c, axis) for c in configs]) for axis in config_axes}
            configs = [LayerConfig(levels=l, pooling=p, topk=k, tile_budget=m, scorer=s, dilation=d)
                       for k in values["topk"] for p in values["pooling"] for l in values["levels"]
                       for m in values["tile_budget"] for s in values["scorer"] for d in values["dilation"]]
        configs = list(dict.fromkeys(configs))
        points = grid(
            _values(args.seq_lens, [p.seq_len for p in points]), configs,
            _values(args.dtype, [p.dtype for p in points]), _values(args.batch, [p.batch for p in points]),
            _values(args.heads, [p.heads for p in points]), _values(args.kv_heads, [p.kv_heads for p in points]),
            _values(args.head_dim, [p.head_dim for p in points]),
        )
    if args.rope:
        points = tuple(replace(p, config=replace(p.config, rope=True)) for p in points)
    changes = {"points": points}
    if args.warmup is not None:
        changes.update(warmup=args.warmup, large_warmup=args.warmup)
    if args.repeats is not None:
        changes.update(repeats=args.repeats, large_repeats=args.repeats)
    optional = {"min_repeats": args.min_repeats, "measure_budget_s": args.measure_budget,
                "time_budget_s": args.time_budget, "dense_max_seq_len": args.dense_max_seq_len}
    changes.update({key: value for key, value in optional.items() if value is not None})
    return replace(base, **changes)


def validate(chosen: Preset, dense: tuple[str, ...]) -> str | None:
    for point in chosen.points:
        if point.dtype not in ("float32", "bfloat16", "float16"):
            return f"--dtype: expected float32, bfloat16 or float16, got {point.dtype!r}"
        if point.heads % point.kv_heads:
            return f"--heads/--kv-heads: heads ({point.heads}) must be a multiple of kv_heads ({point.kv_heads})"
        if min(point.batch, point.heads, point.kv_heads, point.head_dim) < 1:
            return "--batch, --heads, --kv-heads and --head-dim must be positive"
        if point.config.rope and point.head_dim % 2:
            return f"--rope: head_dim must be even, got {point.head_dim}"
    if chosen.warmup < 1 or chosen.large_warmup < 1:
        return "--warmup must be at least 1 (the first warm-up call sizes the repeats)"
    if min(chosen.repeats, chosen.large_repeats, chosen.min_repeats) < 1:
        return "--repeats and --min-repeats must be at least 1"
    unknown = [name for name in dense if name not in DENSE_NAMES.values()]
    if unknown:
        return f"--dense: expected cudnn, flash, math or none, got {', '.join(unknown)}"
    return None


def pick_device(chosen: Preset, requested: str | None) -> torch.device:
    name = requested or chosen.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from lighthouse.bench.methods import default_dense_methods
    from lighthouse.bench.sweep import Sweep, SweepSettings

    chosen = customised(preset(args.preset), args)
    device = pick_device(chosen, args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"preset {chosen.name!r} runs on CUDA, which is not available here; pass --device cpu to run it on "
              "the CPU anyway", file=sys.stderr)
        return 2
    if args.dense is None:
        dense = default_dense_methods(device)
    else:
        dense = tuple(DENSE_NAMES.get(name, name) for name in args.dense if name != "none")
    problem = validate(chosen, dense)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    settings = SweepSettings(preset=chosen, device=device, dense_methods=dense, run_check=not args.no_check,
                             run_stages=not args.no_stages, seed=args.seed)
    out = args.out or Path("bench") / "results" / chosen.name
    started = time.monotonic()
    document = {
        "schema": report.SCHEMA,
        "complete": False,
        "elapsed_s": 0.0,
        "environment": environment.describe(device, argv),
        "preset": preset_json(chosen),
        "settings": {"dense_methods": list(dense), "check": settings.run_check, "stages": settings.run_stages,
                     "seed": settings.seed},
        "calibration": {},
        "anchors": anchors.to_json(),
        "points": [],
    }
    progress = Progress(len(chosen.points) * Sweep.tasks_per_point(settings), enabled=not args.no_progress)
    sweep = Sweep(settings, progress, on_point=lambda records: checkpoint(document, sweep, records, started, out))
    try:
        sweep.run()
    finally:
        progress.close()
    document["complete"] = True
    checkpoint(document, sweep, document["points"], started, out)
    return finish(document, out)


def checkpoint(document: dict, sweep, records: list[dict], started: float, out: Path) -> None:
    document["points"] = list(records)
    document["elapsed_s"] = time.monotonic() - started
    document["calibration"] = {dtype: {"matmul_flops_per_s": speed.flops_per_s, "copy_bytes_per_s": speed.bytes_per_s}
                               for dtype, speed in sweep.speeds.items()}
    report.write_json(document, out)


def preset_json(chosen: Preset) -> dict:
    fields = ("name", "description", "device", "warmup", "repeats", "large_seq_len", "large_warmup", "large_repeats",
              "min_repeats", "measure_budget_s", "time_budget_s", "dense_max_seq_len")
    return {name: getattr(chosen, name) for name in fields} | {"points": len(chosen.points)}


def problems(document: dict) -> list[str]:
    """Failed checks and failed Lighthouse measurements: what makes the exit status 1."""
    found = []
    for record in document["points"]:
        label = f"N={record['point']['seq_len']} {record['series']}"
        check = record.get("check")
        if check and check["status"] in ("failed", "error"):
            found.append(f"{label}: check {check['status']}: {check['reason']}")
        fidelity = record.get("fidelity")
        if fidelity and fidelity["status"] == "failed":
            found.append(f"{label}: fidelity vs fp32: {fidelity['reason']}")
        results = list(record["methods"].get("lighthouse", {}).items()) + list(record["stages"].items())
        found += [f"{label}: {name}: {result['reason']}" for name, result in results if result["status"] == "failed"]
    return found


def finish(document: dict, out: Path) -> int:
    written = report.write_outputs(document, out)
    print(main_table(document))
    print(f"\nwrote {written['json']}, {written['markdown']}" + "".join(f", {p}" for p in written["plots"]))
    if written["plot_note"]:
        print(written["plot_note"])
    found = problems(document)
    for line in found:
        print(f"PROBLEM: {line}", file=sys.stderr)
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.from_json:
        document = report.load_json(args.from_json)
        return finish(document, args.out or args.from_json.parent)
    return run(args, argv)
