"""Named sweeps. A preset lists its points and how hard to time them; every
field can be overridden from the command line (see cli.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from lighthouse.bench.points import LayerConfig, Point

K = 1024


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    device: str                   # "cuda", "cpu", or "auto" (cuda when available)
    points: tuple[Point, ...]
    warmup: int                   # warm-up calls before timing (the first also sizes the repeats)
    repeats: int                  # timed calls per measurement
    large_seq_len: int            # from this N on, the large_* counts apply
    large_warmup: int
    large_repeats: int
    min_repeats: int              # fewest repeats worth reporting; below that the measurement is skipped
    measure_budget_s: float       # most seconds one measurement (warm-up + repeats) may take
    time_budget_s: float          # most seconds the whole run may take
    dense_max_seq_len: int        # dense SDPA is skipped past this N

    def counts(self, seq_len: int) -> tuple[int, int]:
        """(warmup, repeats) for a sequence length."""
        if seq_len >= self.large_seq_len:
            return self.large_warmup, self.large_repeats
        return self.warmup, self.repeats


def grid(seq_lens, configs, dtypes, batches, heads, kv_heads, head_dims) -> tuple[Point, ...]:
    """Cartesian product, ordered by N first so the cheap points finish first."""
    points = []
    for n in sorted(seq_lens):
        for config in configs:
            for dtype in dtypes:
                for b in batches:
                    for h in heads:
                        for hkv in kv_heads:
                            for d in head_dims:
                                points.append(Point(n, b, h, hkv, d, dtype, config))
    return tuple(points)


def _paper() -> Preset:
    base = LayerConfig(levels=3, pooling=4, topk=2048)
    shape = {"batch": 1, "heads": 8, "kv_heads": 8, "head_dim": 128, "dtype": "bfloat16"}
    points = [Point(seq_len=n * K, config=base, **shape) for n in (32, 64, 128, 256, 512)]
    # The paper's 1:64 point (S = 98,304), beyond the authors' kernel grid limit.
    points.append(Point(seq_len=512 * K, config=replace(base, topk=8192), **shape))
    # 1M with four levels: k = 2048 is the configuration of the authors' 1M
    # numbers (S = 40,960); k = 4096 (S = 65,536) is past their grid limit.
    for topk in (2048, 4096):
        points.append(Point(seq_len=1024 * K, config=replace(base, levels=4, topk=topk), **shape))
    return Preset(
        name="paper",
        description="H200 layer benchmark of the paper: bf16, B=1, H=8, D=128, p=4, L=3, k=2048 for N=32K..512K, "
        "plus 512K with k=8192 and 1M with L=4; dense SDPA up to 512K",
        device="cuda",
        points=tuple(points),
        warmup=3,
        repeats=20,
        large_seq_len=256 * K,
        large_warmup=1,
        large_repeats=5,
        min_repeats=3,
        measure_budget_s=60.0,
        time_budget_s=540.0,
        dense_max_seq_len=512 * K,
    )


def _quick() -> Preset:
    config = LayerConfig(levels=3, pooling=4, topk=128, tile_budget=32)
    points = grid((2 * K, 4 * K), [config], ["float32"], [1], [2], [1], [32])
    return Preset(
        name="quick",
        description="CPU smoke run for CI: fp32, N=2K and 4K, k=128, m=32, p=4, L=3, H=2 (GQA, Hkv=1), D=32",
        device="cpu",
        points=points,
        warmup=1,
        repeats=3,
        large_seq_len=4 * K,
        large_warmup=1,
        large_repeats=3,
        min_repeats=2,
        measure_budget_s=6.0,
        time_budget_s=30.0,
        dense_max_seq_len=4 * K,
    )


def _default() -> Preset:
    config = LayerConfig(levels=3, pooling=4, topk=2048)
    points = grid([2**e for e in range(13, 21)], [config], ["bfloat16"], [1], [8], [8], [128])
    return Preset(
        name="default",
        description="N = 8K..1M (powers of two), bf16, B=1, H=8, D=128, p=4, L=3, k=2048",
        device="auto",
        points=points,
        warmup=3,
        repeats=20,
        large_seq_len=256 * K,
        large_warmup=1,
        large_repeats=5,
        min_repeats=3,
        measure_budget_s=60.0,
        time_budget_s=1800.0,
        dense_max_seq_len=1024 * K,
    )


PRESETS = {"paper": _paper, "quick": _quick, "default": _default}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()
