"""Context-parallel layer benchmark: `python -m lighthouse.bench.cp`, under torchrun (W ranks, one GPU each,
NCCL) or alone (W = 1).

For each point (N, H, Hkv) every rank holds its N/W positions of q, k, v and times, with CUDA events (CPU:
perf_counter), median of --repeats after --warmup:
* the layer, context_parallel_attention (check=False, as training calls it): forward under no_grad, and
  forward+backward (inputs requiring gradients, a fixed random output gradient);
* the exchanges alone, on the same tensors: sequence_to_heads of q, k, v and heads_to_sequence of a head-shard
  output (forward), the same with their backward (forward+backward), plus the score all-reduce where KV heads
  are copied (Hkv < W). The layer runs these exchanges one after another with its compute, so their time is
  the part of the layer's time a single GPU would not spend;
* the peak memory of one forward+backward above what was allocated before it (inputs included in neither).
Rank 0 gathers every rank's numbers and writes OUT/cp-w<W>.json and .md: per point the slowest rank's median
(what a step waits for), each rank's medians, and the exchange's share of the layer. cp_scaling.py turns the
files of several launches into weak- and strong-scaling tables (`--summarize OUT`).

    torchrun --nproc-per-node 2 -m lighthouse.bench.cp --seq-lens 1M,2M,4M --kv-heads 8,2 --out bench/results/cp
    python -m lighthouse.bench.cp --seq-lens 1M,2M,4M --kv-heads 8,2 --out bench/results/cp          # W = 1
    python -m lighthouse.bench.cp --summarize bench/results/cp
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from lighthouse import _geometry
from lighthouse.bench import cp_scaling, environment, timing
from lighthouse.bench.cli import listed, size
from lighthouse.distributed import context_parallel_attention
from lighthouse.distributed._exchange import copy_heads, heads_to_sequence, sequence_to_heads
from lighthouse.distributed._layout import head_layout
from lighthouse.distributed._scores import max_over_copies

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Point:
    seq_len: int
    heads: int
    kv_heads: int
    head_dim: int
    batch: int = 1


def unsupported(point: Point, world: int) -> str | None:
    """Why W ranks cannot run the point (context parallelism's divisibility rules), or None."""
    if point.seq_len % world:
        return f"seq_len {point.seq_len} is not a multiple of W = {world}"
    if point.heads % world:
        return f"heads {point.heads} are not a multiple of W = {world}"
    if point.heads % point.kv_heads:
        return f"heads {point.heads} are not a multiple of kv_heads {point.kv_heads}"
    if point.kv_heads % world and world % point.kv_heads:
        return f"kv_heads {point.kv_heads} neither divides nor is a multiple of W = {world}"
    return None


def _inputs(point: Point, world: int, rank: int, device, dtype, seed: int):
    """This rank's shards: q [B, N/W, H, D], k and v [B, N/W, Hkv, D], and an output gradient like q."""
    generator = torch.Generator().manual_seed(seed * 1000 + rank)
    length = point.seq_len // world

    def tensor(heads):
        return torch.randn(point.batch, length, heads, point.head_dim, generator=generator).to(device, dtype)

    return tensor(point.heads), tensor(point.kv_heads), tensor(point.kv_heads), tensor(point.heads)


def _timed(run, device, warmup: int, repeats: int, prepare=lambda index: None) -> dict:
    return timing.summarize(timing.measure(run, device=device, warmup=warmup, repeats=repeats, prepare=prepare))


def measure_rank(point: Point, *, group, device, dtype, layer_options: dict, warmup: int, repeats: int,
                 seed: int = 0) -> dict:
    """This rank's timings and peak memory for one point (every rank of group must call it alike)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    q, k, v, grad_out = _inputs(point, world, rank, device, dtype, seed)
    leaves = [q.requires_grad_(), k.requires_grad_(), v.requires_grad_()]
    layout = head_layout(point.heads, point.kv_heads, world, rank)

    def clear_grads(index):
        for t in leaves:
            t.grad = None

    def layer_forward(_):
        with torch.no_grad():
            context_parallel_attention(*leaves, group=group, check=False, **layer_options)

    def layer_forward_backward(_):
        out = context_parallel_attention(*leaves, group=group, check=False, **layer_options)
        out.backward(grad_out)

    geometry = _geometry.geometry(point.seq_len, layer_options["levels"], layer_options["pooling"],
                                  layer_options["topk"], layer_options.get("tile_budget", 128))
    scores = torch.zeros(point.batch, 1, geometry.pyramid_len, device=device)

    def exchange():
        heads = sequence_to_heads([q, copy_heads(k, layout.kv_copies), copy_heads(v, layout.kv_copies)], group, world)
        if layout.kv_copies > 1:
            max_over_copies(scores, scores, kv_head=layout.kv_head, kv_heads=point.kv_heads, group=group)
        return heads, heads_to_sequence(heads[0], group, world)

    def exchange_forward(_):
        with torch.no_grad():
            return exchange()

    # Gradients of the exchanged k and v heads, made once outside the timed runs.
    kv_head_grads = [torch.ones_like(h) for h in exchange_forward(None)[0][1:]]

    def exchange_forward_backward(_):
        heads, back = exchange()
        torch.autograd.backward([back, *heads[1:]], [grad_out, *kv_head_grads])

    record = {
        "rank": rank,
        "layer_fwd": _timed(layer_forward, device, warmup, repeats),
        "layer_fwd_bwd": _timed(layer_forward_backward, device, warmup, repeats, clear_grads),
        "exchange_fwd": _timed(exchange_forward, device, warmup, repeats),
        "exchange_fwd_bwd": _timed(exchange_forward_backward, device, warmup, repeats, clear_grads),
        "peak_extra_bytes": None,
    }
    if device.type == "cuda":
        clear_grads(0)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        layer_forward_backward(None)
        torch.cuda.synchronize(device)
        record["peak_extra_bytes"] = torch.cuda.max_memory_allocated(device) - before
    return record


def combine(point: Point, world: int, ranks: list[dict]) -> dict:
    """One point's result from every rank's record: the slowest rank's median per measurement (what a step
    waits for), each rank's medians, the exchange's share of the layer and the largest peak memory."""
    result = {"point": asdict(point), "world": world, "status": "ok"}
    for name in ("layer_fwd", "layer_fwd_bwd", "exchange_fwd", "exchange_fwd_bwd"):
        medians = [r[name]["median"] for r in ranks]
        result[name + "_ms"] = max(medians)
        result[name + "_ms_per_rank"] = medians
    for mode in ("fwd", "fwd_bwd"):
        result[f"exchange_share_{mode}"] = result[f"exchange_{mode}_ms"] / result[f"layer_{mode}_ms"]
    peaks = [r["peak_extra_bytes"] for r in ranks]
    result["peak_extra_bytes"] = None if None in peaks else max(peaks)
    result["samples"] = ranks
    return result


def _measure_or_oom(point: Point, **kwargs) -> dict:
    """measure_rank's record, or {"rank", "oom": the allocator's message} when the device ran out of memory.

    The ranks hold equal shapes, so they run out of memory alike; the point is then recorded as skipped and
    the benchmark goes on with the next one instead of losing every result of the launch."""
    try:
        return measure_rank(point, **kwargs)
    except torch.OutOfMemoryError as error:
        message = str(error).split("\n")[0]
    gc.collect()  # the failed call's frames held its tensors
    torch.cuda.empty_cache()
    return {"rank": dist.get_rank(kwargs["group"]), "oom": message}


def run(points: list[Point], *, group, device, dtype, layer_options, warmup, repeats) -> list[dict]:
    """Every point on every rank; rank 0 gets the combined results, the other ranks an empty list."""
    world = dist.get_world_size(group)
    results = []
    for point in points:
        reason = unsupported(point, world)
        if reason is not None:
            results.append({"point": asdict(point), "world": world, "status": "skipped", "reason": reason})
            continue
        if device.type == "cuda":
            # Hand the previous point's cached blocks back: a larger point may not reuse their sizes (4M tokens
            # at W = 1 on an H200 ran out of memory with 42 GiB reserved by the allocator but unallocated).
            torch.cuda.empty_cache()
        mine = _measure_or_oom(point, group=group, device=device, dtype=dtype, layer_options=layer_options,
                               warmup=warmup, repeats=repeats)
        gathered = [None] * world
        dist.all_gather_object(gathered, mine, group=group)
        failed = [r for r in gathered if "oom" in r]
        if failed:
            ranks = ", ".join(str(r["rank"]) for r in failed)
            results.append({"point": asdict(point), "world": world, "status": "skipped",
                            "reason": f"out of memory on rank {ranks}: {failed[0]['oom']}"})
        else:
            results.append(combine(point, world, gathered))
    return results if dist.get_rank(group) == 0 else []


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lighthouse.bench.cp", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summarize", type=Path, metavar="DIR", help="write DIR/scaling.md from DIR/cp-w*.json, then exit")
    ap.add_argument("--out", type=Path, default=Path("bench/results/cp"))
    ap.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    ap.add_argument("--seq-lens", type=listed(size), default=[2**20, 2**21, 2**22])
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=listed(int), default=[8, 2])
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--pooling", type=int, default=4)
    ap.add_argument("--topk", type=size, default=2048)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    return ap


def _start(device_name: str | None):
    """(device, group, started here): the torchrun group when launched by torchrun, else a group of one."""
    use_cuda = device_name == "cuda" or (device_name is None and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("lighthouse.bench.cp: --device cuda: no CUDA device is available")
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if dist.is_initialized():
        return device, dist.group.WORLD, False
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend, device_id=device if use_cuda else None)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return device, dist.group.WORLD, True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.summarize is not None:
        path = cp_scaling.write(args.summarize)
        print(f"written: {path}")
        return 0
    for name in ("heads", "head_dim", "batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"lighthouse.bench.cp: --{name.replace('_', '-')}: expected a positive integer, "
                             f"got {getattr(args, name)}")
    if args.warmup < 0:
        raise SystemExit(f"lighthouse.bench.cp: --warmup: expected a non-negative integer, got {args.warmup}")
    if args.repeats < 1:
        raise SystemExit(f"lighthouse.bench.cp: --repeats: expected at least 1, got {args.repeats}")
    _geometry.validate_config(args.levels, args.pooling, args.topk, 128)
    device, group, started = _start(args.device)
    try:
        points = [Point(n, args.heads, kv, args.head_dim, args.batch) for n in args.seq_lens for kv in args.kv_heads]
        options = {"levels": args.levels, "pooling": args.pooling, "topk": args.topk}
        results = run(points, group=group, device=device, dtype=DTYPES[args.dtype], layer_options=options,
                      warmup=args.warmup, repeats=args.repeats)
        world = dist.get_world_size(group)
        if dist.get_rank(group) == 0:
            info = environment.describe(device, argv)
            launcher = f"torchrun --nproc-per-node {world} -m" if "WORLD_SIZE" in os.environ else "python -m"
            info["command"] = f"{launcher} lighthouse.bench.cp {shlex.join(argv)}".strip()
            info["gpus"] = world if device.type == "cuda" else 0
            document = {"environment": info, "world": world, "dtype": args.dtype, "layer_options": options,
                        "warmup": args.warmup, "repeats": args.repeats, "results": results}
            args.out.mkdir(parents=True, exist_ok=True)
            stem = args.out / f"cp-w{world}"
            stem.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
            text = cp_scaling.launch_markdown(document)
            stem.with_suffix(".md").write_text(text)
            print(text)
    finally:
        if started:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
