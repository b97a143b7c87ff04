"""``compare``: a markdown table and PNG plots for one or more run folders.

The first run is the baseline for the speedup column (its wall-clock over each run's). Stage
throughput is total tokens over total step time within the stage, leaving out each stage's first
step (allocator warm-up, kernel autotuning, compilation).
"""

import json
import math
import pathlib


def load_run(run_dir) -> dict:
    run = pathlib.Path(run_dir)
    summary_path = run / "summary.json"
    if not summary_path.exists():
        raise ValueError(f"{run} has no summary.json (the run has not stopped or finished yet)")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"dir": run, "label": run.name, "summary": json.loads(summary_path.read_text()), "records": records}


def stage_throughput(records: list, stage: str):
    steps = [r for r in records if r["stage"] == stage][1:]
    seconds = sum(r["step_s"] for r in steps)
    if not steps or seconds <= 0:
        return None
    return sum(r["tokens_per_s"] * r["step_s"] for r in steps) / seconds


def switch_point(run: dict):
    """(step, wall seconds) at the end of the Lighthouse stage, or None for a single-stage run."""
    s = run["summary"]
    if not (0 < s["lighthouse_steps"] < s["lighthouse_steps"] + s["dense_steps"]):
        return None
    for r in run["records"]:
        if r["step"] == s["lighthouse_steps"]:
            return r["step"], r["wall_s"]
    return None


def _fmt(value, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def table(runs: list) -> str:
    base_wall = runs[0]["summary"]["wall_s"]
    rows = ["| run | status | steps (Lighthouse + dense) | tokens | Lighthouse tok/s | dense tok/s | wall-clock | "
            "val bits/byte | passkey acc. | speedup |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        s = run["summary"]
        ev = s.get("eval", {})
        passkey = ev.get("passkey", {}).get("accuracy")
        rows.append("| " + " | ".join([
            run["label"], s["status"], f"{s['step']} ({s['lighthouse_steps']} + {s['dense_steps']})",
            f"{s['tokens']:,}",
            _fmt(stage_throughput(run["records"], "lighthouse"), "{:,.0f}"),
            _fmt(stage_throughput(run["records"], "dense"), "{:,.0f}"),
            f"{s['wall_s'] / 60:.2f} min",
            _fmt(ev.get("val_bpb"), "{:.4f}"),
            _fmt(passkey, "{:.1%}"),
            f"{base_wall / s['wall_s']:.2f}x" if s["wall_s"] > 0 else "–",
        ]) + " |")
    return "\n".join(rows)


def _smooth(values: list, span: int) -> list:
    alpha = 2.0 / (span + 1)
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def plot_losses(runs: list, out: pathlib.Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    for axis, key, scale, label in (("step", "step", 1.0, "optimizer step"),
                                    ("wall", "wall_s", 1 / 60, "wall-clock (minutes)")):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, run in enumerate(runs):
            color = f"C{i}"
            xs = [r[key] * scale for r in run["records"]]
            losses = [r["loss"] for r in run["records"]]
            ax.plot(xs, losses, color=color, alpha=0.2, linewidth=0.8)
            ax.plot(xs, _smooth(losses, max(1, len(losses) // 50)), color=color, label=run["label"])
            switch = switch_point(run)
            if switch:
                ax.axvline(switch[0] if key == "step" else switch[1] * scale, color=color, linestyle="--",
                           linewidth=1, label=f"{run['label']}: switch to dense")
        ax.set_xlabel(label)
        ax.set_ylabel("training loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"loss_vs_{axis}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def plot_passkey(runs: list, out: pathlib.Path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    scored = [r for r in runs if r["summary"].get("eval", {}).get("passkey")]
    if not scored:
        return None
    fig, axes = plt.subplots(1, len(scored), figsize=(4.5 * len(scored) + 1, 4), squeeze=False, layout="constrained")
    for ax, run in zip(axes[0], scored):
        cells = run["summary"]["eval"]["passkey"]["cells"]
        lengths = sorted({c["length"] for c in cells})
        depths = sorted({c["depth"] for c in cells})
        grid = [[math.nan] * len(lengths) for _ in depths]
        for c in cells:
            grid[depths.index(c["depth"])][lengths.index(c["length"])] = c["accuracy"]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        for di, row in enumerate(grid):
            for li, value in enumerate(row):
                ax.text(li, di, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("passkey depth")
        ax.set_title(run["label"])
    fig.colorbar(image, ax=axes[0].tolist(), label="digit accuracy (chance 0.10)")
    path = out / "passkey.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compare(run_dirs, out_dir) -> pathlib.Path:
    """Write ``report.md``, ``loss_vs_step.png``, ``loss_vs_wall.png`` and ``passkey.png``."""
    runs = [load_run(d) for d in run_dirs]
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = plot_losses(runs, out)
    heatmap = plot_passkey(runs, out)
    if heatmap:
        images.append(heatmap)
    lines = ["# Lighthouse run comparison", "",
             f"Baseline for the speedup column: `{runs[0]['label']}`. Throughput leaves out each stage's first step; "
             "validation and passkey use dense attention in every layer.", "",
             table(runs), ""]
    lines += [f"![{p.stem}]({p.name})" for p in images]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
