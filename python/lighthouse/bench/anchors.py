"""The paper authors' own H200 numbers, shown beside ours as "authors
(measured separately)": a different machine, run and kernel, so they are a
reference scale, never a check.

Configuration of every row: bf16, B=1, H=8, D=128, norm scorer, p=4, L=3,
k=2048; times are medians in ms. The 1M row used L=4; its S of 40,960 is the
kept count of k=2048 (k=4096 would keep 65,536, past the authors' grid limit).
"""

from __future__ import annotations

from lighthouse.bench.points import Point

K = 1024
LABEL = "authors (measured separately)"

# Shape and dtype every anchor row was measured at.
SHAPE = {"batch": 1, "heads": 8, "kv_heads": 8, "head_dim": 128, "dtype": "bfloat16", "scorer": "norm", "pooling": 4}

# seq_len, levels, kept S, then ms: lighthouse fwd, fwd+bwd, cuDNN SDPA fwd,
# fwd+bwd, flash SDPA fwd, fwd+bwd (None: not measured).
ROWS = (
    (32 * K, 3, 18432, 2.58, 8.45, 3.46, 12.9, 7.26, 24.4),
    (64 * K, 3, 20480, 2.93, 12.1, 13.6, 55.8, 26.5, 94.2),
    (128 * K, 3, 24576, 4.59, 18.8, 63.2, 227.0, 108.0, 381.0),
    (256 * K, 3, 32768, 8.10, 34.4, 281.0, 938.0, 451.0, 1535.0),
    (512 * K, 3, 49152, 16.4, 72.4, 1171.0, 3821.0, 1842.0, 6160.0),
    (1024 * K, 4, 40960, 23.5, 129.0, None, None, None, None),
)

# Forward breakdown of the authors' layer at 512K, ms.
BREAKDOWN_512K = {"pool_score": 6.9, "select": 0.36, "gather": 0.51, "attention": 7.6, "rest": 1.0}

NOTES = (
    "The authors' layer crashes at 512K with k=8192 (S=98,304) and at 1M with L=4, k=4096 (S=65,536): "
    "a CUDA grid limit at S > 65,535.",
    "Authors' peak extra memory, forward+backward: 2.5 GiB at 128K, 22 GiB at 1M; cuDNN SDPA at 512K: 7.0 GiB.",
)

METHOD_COLUMNS = {
    ("lighthouse", "fwd"): 3,
    ("lighthouse", "fwd_bwd"): 4,
    ("sdpa_cudnn", "fwd"): 5,
    ("sdpa_cudnn", "fwd_bwd"): 6,
    ("sdpa_flash", "fwd"): 7,
    ("sdpa_flash", "fwd_bwd"): 8,
}


def rows_as_dicts() -> list[dict]:
    keys = ("seq_len", "levels", "kept", "lighthouse_fwd", "lighthouse_fwd_bwd", "sdpa_cudnn_fwd",
            "sdpa_cudnn_fwd_bwd", "sdpa_flash_fwd", "sdpa_flash_fwd_bwd")
    return [dict(zip(keys, row)) for row in ROWS]


def matching_row(point: Point, kept: int) -> tuple | None:
    """The anchor row measured at this point's configuration, if any."""
    c = point.config
    same_shape = (point.batch, point.heads, point.kv_heads, point.head_dim, point.dtype, c.scorer, c.pooling) == (
        SHAPE["batch"], SHAPE["heads"], SHAPE["kv_heads"], SHAPE["head_dim"], SHAPE["dtype"], SHAPE["scorer"],
        SHAPE["pooling"])
    if not same_shape:
        return None
    for row in ROWS:
        if row[0] == point.seq_len and row[1] == c.levels and row[2] == kept:
            return row
    return None


def anchor_ms(point: Point, kept: int, method: str, mode: str) -> float | None:
    row = matching_row(point, kept)
    column = METHOD_COLUMNS.get((method, mode))
    if row is None or column is None:
        return None
    return row[column]


def to_json() -> dict:
    return {"label": LABEL, "shape": SHAPE, "rows": rows_as_dicts(), "breakdown_512k_fwd_ms": BREAKDOWN_512K,
            "notes": list(NOTES)}
