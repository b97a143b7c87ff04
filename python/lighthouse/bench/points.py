"""One benchmark point (shapes, dtype, Lighthouse configuration) and the
pyramid arithmetic the sweep needs before any kernel runs: the number of kept
entries S and whether the configuration is valid for a sequence length.

The rules mirror the library's geometry: level l pools c_l = p^(l-1) tokens,
n_l = floor(N / c_l); S = n_L + (L-1)*p*k + tail; selection needs
N >= k * p^(L-1) so that every tile has at least m coarsest entries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class LayerConfig:
    levels: int = 3
    pooling: int = 4
    topk: int = 2048
    tile_budget: int = 128
    scorer: str = "norm"
    dilation: int = 4
    rope: bool = False  # the layer gets rotary tables (methods.rope_tables) and rotates the kept q and k

    def kwargs(self) -> dict:
        """Keyword arguments of ``lighthouse.lighthouse_attention`` but the rotary tables (methods.layer_kwargs)."""
        return {name: value for name, value in asdict(self).items() if name != "rope"}

    def stage_kwargs(self) -> dict:
        """Keyword arguments shared by the ``lighthouse.ops`` stage functions."""
        return {"levels": self.levels, "pooling": self.pooling, "topk": self.topk, "tile_budget": self.tile_budget}

    def label(self) -> str:
        text = f"k={self.topk} p={self.pooling} L={self.levels} m={self.tile_budget} {self.scorer}"
        return text + (f"/{self.dilation}" if self.scorer == "dilated" else "") + (" rope" if self.rope else "")


@dataclass(frozen=True)
class Point:
    seq_len: int
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    config: LayerConfig

    @property
    def elem_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def dense_key(self) -> tuple:
        """Dense SDPA does not depend on the Lighthouse configuration: points
        sharing this key share one dense measurement."""
        return (self.seq_len, self.batch, self.heads, self.kv_heads, self.head_dim, self.dtype)

    def series(self) -> str:
        """Everything but N: the points of one curve in the plots."""
        return f"{self.dtype} B={self.batch} H={self.heads}/{self.kv_heads} D={self.head_dim} {self.config.label()}"

    def to_json(self) -> dict:
        return {
            "seq_len": self.seq_len,
            "batch": self.batch,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "dtype": self.dtype,
            "config": asdict(self.config),
        }


def coarsest_block(config: LayerConfig) -> int:
    return config.pooling ** (config.levels - 1)


def min_seq_len(config: LayerConfig) -> int:
    """Shortest sequence whose every selection tile gets tile_budget coarsest entries."""
    return config.topk * coarsest_block(config)


def kept_entries(config: LayerConfig, seq_len: int) -> int:
    """S, the number of entries the selection keeps per (batch, KV head)."""
    coarsest = seq_len // coarsest_block(config)
    tail = seq_len - coarsest * coarsest_block(config)
    return coarsest + (config.levels - 1) * config.pooling * config.topk + tail


def pyramid_len(config: LayerConfig, seq_len: int) -> int:
    return sum(seq_len // config.pooling**level for level in range(config.levels))


def config_problem(config: LayerConfig, seq_len: int) -> str | None:
    """Why Lighthouse cannot run this configuration at seq_len, or None."""
    p = config.pooling
    if config.levels < 2:
        return f"levels must be >= 2, got {config.levels}"
    if p < 2 or p & (p - 1):
        return f"pooling must be a power of two >= 2, got {p}"
    if config.tile_budget < 2 or config.tile_budget % 2:
        return f"tile_budget must be even and >= 2, got {config.tile_budget}"
    if config.topk <= 0 or config.topk % config.tile_budget:
        return f"topk {config.topk} is not a positive multiple of tile_budget {config.tile_budget}"
    if config.scorer not in ("norm", "dilated"):
        return f"unknown scorer {config.scorer!r}"
    if seq_len < min_seq_len(config):
        return f"N={seq_len} < topk*pooling^(levels-1) = {min_seq_len(config)}"
    if kept_entries(config, seq_len) >= seq_len:
        return f"S={kept_entries(config, seq_len)} >= N={seq_len}: Lighthouse would not shrink the attention"
    return None
