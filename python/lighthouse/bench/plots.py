"""PNG plots of a results document, drawn with matplotlib's Agg backend:

* latency.png: latency vs N, log-log, one line per method and series, forward
  and forward+backward side by side, the authors' numbers dashed;
* speedup.png: dense median / Lighthouse median vs N, per dense backend;
* stages.png: stacked stage times per point, forward and backward.

matplotlib is optional: without it the plots are skipped with a note (the JSON
can be re-plotted later with --from-json).
"""

from __future__ import annotations

from pathlib import Path

from lighthouse.bench import anchors

MODES = (("fwd", "forward"), ("fwd_bwd", "forward + backward"))
FORWARD_STAGES = ("pool_score", "select", "gather", "attention", "scatter")
BACKWARD_STAGES = ("scatter_backward", "attention_backward", "gather_backward")
ANCHOR_METHODS = (("lighthouse", "Lighthouse"), ("sdpa_cudnn", "cuDNN SDPA"), ("sdpa_flash", "flash SDPA"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _median(measurement: dict | None) -> float | None:
    if not measurement or measurement.get("status") != "ok":
        return None
    return measurement["ms"]["median"]


def _dense_series(record: dict) -> str:
    p = record["point"]
    return f"{p['dtype']} B={p['batch']} H={p['heads']}/{p['kv_heads']} D={p['head_dim']}"


def latency_lines(document: dict, mode: str) -> dict[str, list[tuple[int, float]]]:
    """Label -> [(N, median ms)] for every method; dense lines are shared by configurations."""
    lines: dict[str, dict[int, float]] = {}
    for record in document["points"]:
        n = record["point"]["seq_len"]
        for method, modes in record["methods"].items():
            value = _median(modes.get(mode))
            if value is None:
                continue
            series = record["series"] if method == "lighthouse" else _dense_series(record)
            lines.setdefault(f"{method}: {series}", {})[n] = value
    return {label: sorted(points.items()) for label, points in lines.items()}


def speedup_lines(document: dict, mode: str) -> dict[str, list[tuple[int, float]]]:
    lines: dict[str, list[tuple[int, float]]] = {}
    for record in document["points"]:
        for method, modes in record.get("speedup", {}).items():
            value = modes.get(mode)
            if value is not None:
                lines.setdefault(f"vs {method}: {record['series']}", []).append((record["point"]["seq_len"], value))
    return {label: sorted(points) for label, points in lines.items()}


def anchor_lines(mode: str) -> dict[str, list[tuple[int, float]]]:
    lines = {}
    for method, title in ANCHOR_METHODS:
        column = anchors.METHOD_COLUMNS[(method, mode)]
        points = [(row[0], row[column]) for row in anchors.ROWS if row[column] is not None]
        lines[f"{anchors.LABEL}: {title}"] = points
    return lines


def anchor_speedups(mode: str) -> dict[str, list[tuple[int, float]]]:
    ours = anchors.METHOD_COLUMNS[("lighthouse", mode)]
    lines = {}
    for method, title in ANCHOR_METHODS[1:]:
        column = anchors.METHOD_COLUMNS[(method, mode)]
        lines[f"{anchors.LABEL}: vs {title}"] = [
            (row[0], row[column] / row[ours]) for row in anchors.ROWS if row[column] is not None]
    return lines


def _draw_lines(axis, lines, dashed: bool) -> None:
    for label, points in lines.items():
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, "--" if dashed else "-", marker="x" if dashed else "o", label=label,
                      alpha=0.6 if dashed else 1.0, linewidth=1.0 if dashed else 1.6, markersize=4)


def _finish(axis, title: str, ylabel: str, logy: bool) -> None:
    axis.set_xscale("log", base=2)
    if logy:
        axis.set_yscale("log")
    axis.set_xlabel("sequence length N")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=6)
    else:
        axis.text(0.5, 0.5, "no measurements", transform=axis.transAxes, ha="center", color="gray")


def _latency(plt, document: dict, path: Path, show_anchors: bool) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for axis, (mode, title) in zip(axes, MODES):
        _draw_lines(axis, latency_lines(document, mode), dashed=False)
        if show_anchors:
            _draw_lines(axis, anchor_lines(mode), dashed=True)
        _finish(axis, f"latency, {title}", "median ms", logy=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _speedup(plt, document: dict, path: Path, show_anchors: bool) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for axis, (mode, title) in zip(axes, MODES):
        _draw_lines(axis, speedup_lines(document, mode), dashed=False)
        if show_anchors:
            _draw_lines(axis, anchor_speedups(mode), dashed=True)
        axis.axhline(1.0, color="gray", linewidth=0.8)
        _finish(axis, f"speedup over dense SDPA, {title}", "dense ms / Lighthouse ms", logy=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _stages(plt, document: dict, path: Path) -> None:
    records = document["points"]
    labels = [f"{record['point']['seq_len'] // 1024}K\nk={record['point']['config']['topk']} "
              f"L={record['point']['config']['levels']}" for record in records]
    figure, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(records) + 4), 5.5))
    for axis, (stages, title) in zip(axes, ((FORWARD_STAGES, "forward"), (BACKWARD_STAGES, "backward"))):
        bottoms = [0.0] * len(records)
        for stage in stages:
            heights = [_median(record["stages"].get(stage)) or 0.0 for record in records]
            axis.bar(range(len(records)), heights, bottom=bottoms, label=stage)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        axis.set_xticks(range(len(records)), labels, fontsize=7)
        axis.set_ylabel("median ms")
        axis.set_title(f"Lighthouse stage breakdown, {title}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_plots(document: dict, out: Path) -> tuple[list[Path], str | None]:
    """Writes the three PNGs; returns their paths and a note when they could not be drawn."""
    try:
        plt = _pyplot()
    except ImportError as error:
        return [], f"Plots skipped: matplotlib is not installed ({error}); re-plot with --from-json."
    show_anchors = document["environment"].get("device") == "cuda"
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "latency.png", out / "speedup.png", out / "stages.png"]
    _latency(plt, document, paths[0], show_anchors)
    _speedup(plt, document, paths[1], show_anchors)
    _stages(plt, document, paths[2])
    return paths, None
