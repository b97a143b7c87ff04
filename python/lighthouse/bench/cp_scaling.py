"""Tables of the context-parallel layer benchmark (cp.py): one launch's results, and weak and strong scaling
over the launches of several world sizes W.

Efficiencies, per mode (forward; forward+backward), from the slowest rank's median layer time t(W, N):
* strong scaling (fixed N): t(1, N) / (W * t(W, N)), 1 when W ranks take 1/W of one GPU's time;
* weak scaling (fixed tokens per GPU, N = W * n): t(1, n) / t(W, W * n). Each rank then runs H/W heads over W * n
  positions, the work one GPU does for all H heads over n positions, so 1 means no cost from the exchange.
Both again against the W = 1 layer time minus its exchange time, t0(1, .): with a group of one the exchanges are
still copies and an all-to-all (45–65% of the layer on an H200), work that one GPU without context
parallelism does not do, so t(1, .) flatters W > 1 and t0(1, .) is the baseline a user compares with.
A cell is empty when a time it needs was not measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from lighthouse.bench.markdown import MISSING, MODE_TITLES, gib, kilo, table


def launch_markdown(document: dict) -> str:
    """One launch (one W): a row per point with the layer and exchange times, share and peak memory."""
    info = document["environment"]
    lines = [
        f"# Context-parallel layer, W = {document['world']}",
        "",
        f"- command: `{info['command']}`",
        f"- commit: {info['commit']}; date: {info['date']}",
        f"- device: {info['gpu'] or info['device']} x {document['world']}; torch {info['torch']}, CUDA {info['cuda']}",
        f"- {document['dtype']}, layer options {document['layer_options']}; medians of {document['repeats']} "
        f"after {document['warmup']} warm-up runs, the slowest rank's",
        "",
    ]
    rows = []
    for r in document["results"]:
        p = r["point"]
        label = [kilo(p["seq_len"]), str(p["heads"]), str(p["kv_heads"])]
        if r["status"] != "ok":
            rows.append(label + [f"skipped: {r['reason']}"] + [""] * 6)
            continue
        rows.append(label + [
            f"{r['layer_fwd_ms']:.3f}", f"{r['layer_fwd_bwd_ms']:.3f}",
            f"{r['exchange_fwd_ms']:.3f} ({100 * r['exchange_share_fwd']:.0f}%)",
            f"{r['exchange_fwd_bwd_ms']:.3f} ({100 * r['exchange_share_fwd_bwd']:.0f}%)",
            gib(r["peak_extra_bytes"]), " / ".join(f"{t:.3f}" for t in r["layer_fwd_bwd_ms_per_rank"]),
        ])
    lines.append(table(["N", "H", "Hkv", "layer fwd (ms)", "layer fwd+bwd (ms)", "exchange fwd (ms, share)",
                        "exchange fwd+bwd (ms, share)", "peak extra (GiB)", "fwd+bwd per rank (ms)"], rows))
    return "\n".join(lines) + "\n"


def layer_times(documents: list[dict]) -> dict:
    """{(W, N, H, Hkv, mode): (slowest rank's median layer ms, its exchange ms)} over the measured points."""
    times = {}
    for document in documents:
        for r in document["results"]:
            if r["status"] == "ok":
                p = r["point"]
                for mode in MODE_TITLES:
                    times[(r["world"], p["seq_len"], p["heads"], p["kv_heads"], mode)] = (
                        r[f"layer_{mode}_ms"], r[f"exchange_{mode}_ms"])
    return times


def efficiencies(times: dict) -> list[dict]:
    """Strong- and weak-scaling efficiency of every measured (W > 1, N, H, Hkv, mode), against the W = 1 layer and
    against the W = 1 layer without its exchange (module docstring)."""
    rows = []
    for (world, n, heads, kv_heads, mode), (t, _) in sorted(times.items()):
        if world == 1:
            continue
        one = times.get((1, n, heads, kv_heads, mode))
        base = times.get((1, n // world, heads, kv_heads, mode)) if n % world == 0 else None
        rows.append({
            "world": world, "seq_len": n, "heads": heads, "kv_heads": kv_heads, "mode": mode, "ms": t,
            "strong": None if one is None else one[0] / (world * t),
            "weak": None if base is None else base[0] / t,
            "strong_no_exchange": None if one is None else (one[0] - one[1]) / (world * t),
            "weak_no_exchange": None if base is None else (base[0] - base[1]) / t,
        })
    return rows


def write(folder: Path) -> Path:
    """folder/scaling.md from folder/cp-w*.json."""
    documents = [json.loads(path.read_text()) for path in sorted(folder.glob("cp-w*.json"))]
    if not documents:
        raise SystemExit(f"lighthouse.bench.cp: --summarize: no cp-w*.json in {folder}")
    cell = lambda value: MISSING if value is None else f"{100 * value:.0f}%"  # noqa: E731
    rows = [[str(e["world"]), kilo(e["seq_len"]), str(e["heads"]), str(e["kv_heads"]), MODE_TITLES[e["mode"]],
             f"{e['ms']:.3f}", cell(e["strong"]), cell(e["weak"]), cell(e["strong_no_exchange"]),
             cell(e["weak_no_exchange"])] for e in efficiencies(layer_times(documents))]
    text = "\n".join([
        "# Context-parallel scaling of the Lighthouse layer",
        "",
        "From " + ", ".join(f"`{d['environment']['command']}` (commit {d['environment']['commit']}, "
                            f"{d['environment']['date']})" for d in documents) + ".",
        "Strong: t(1, N) / (W t(W, N)); weak: t(1, N/W) / t(W, N) (equal tokens per GPU); slowest rank's medians.",
        "The last two columns take t0(1, .), the W = 1 layer minus its exchange (copies and an all-to-all over a",
        "group of one, which one GPU without context parallelism does not run), as the baseline.",
        "",
        table(["W", "N", "H", "Hkv", "mode", "layer (ms)", "strong scaling", "weak scaling",
               "strong vs t0", "weak vs t0"], rows),
    ])
    path = folder / "scaling.md"
    path.write_text(text + "\n")
    return path
