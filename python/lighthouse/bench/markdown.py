"""Markdown rendering of a results document (the JSON of report.py): a
header with the environment, the main table (one row per point), the stage
breakdown (one row per point, with what the stages leave out of the layer's
time), the check results, every skipped or failed measurement with its
reason, and the authors' own numbers."""

from __future__ import annotations

from lighthouse.bench import anchors

FORWARD_STAGE_NAMES = ("pool_score", "select", "gather", "attention", "scatter")
STAGE_NAMES = FORWARD_STAGE_NAMES + ("scatter_backward", "attention_backward", "gather_backward")
METHOD_TITLES = {"lighthouse": "Lighthouse", "sdpa_cudnn": "cuDNN SDPA", "sdpa_flash": "flash SDPA",
                 "sdpa_math": "math SDPA"}
MODE_TITLES = {"fwd": "fwd", "fwd_bwd": "fwd+bwd"}
MISSING = "—"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def number(value, digits: int = 3) -> str:
    if value is None:
        return MISSING
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def kilo(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}M"
    if n % 1024 == 0:
        return f"{n // 1024}K"
    return str(n)


def timing_cell(measurement: dict | None) -> str:
    if measurement is None:
        return MISSING
    if measurement["status"] != "ok":
        return measurement["status"]
    ms = measurement["ms"]
    return f"{number(ms['median'])} ({number(ms['min'])}–{number(ms['max'])})"


def fidelity_cell(fidelity: dict | None) -> str:
    """The relative L2 distance from fp32, "—" where not measured (fp32 points), or the failure."""
    if not fidelity or fidelity["status"] == "skipped":
        return MISSING
    if fidelity["status"] != "ok":
        return fidelity["status"]
    return f"{fidelity['relative_l2']:.2e}"


def gib(value) -> str:
    return MISSING if value is None else f"{value / 2**30:.2f}"


def methods_of(document: dict) -> list[str]:
    names = []
    for record in document["points"]:
        for name in record["methods"]:
            if name not in names:
                names.append(name)
    return names


def point_label(record: dict) -> tuple[str, str, str]:
    p = record["point"]
    c = p["config"]
    shape = f"{p['batch']}×{p['heads']}/{p['kv_heads']}×{p['head_dim']}"
    config = f"k={c['topk']} p={c['pooling']} L={c['levels']} m={c['tile_budget']} {c['scorer']}"
    config += " rope" if c.get("rope") else ""  # results written before --rope existed have no such key
    return kilo(p["seq_len"]), shape, config


def main_table(document: dict) -> str:
    methods = methods_of(document)
    dense = [m for m in methods if m != "lighthouse"]
    header = ["N", "dtype", "B×H/Hkv×D", "config", "S", "S/N", "check", "fidelity vs fp32"]
    header += [f"{METHOD_TITLES.get(m, m)} {MODE_TITLES[mode]}" for m in methods for mode in MODE_TITLES]
    header += [f"speedup vs {METHOD_TITLES.get(m, m)} {MODE_TITLES[mode]}" for m in dense for mode in MODE_TITLES]
    header += ["Lighthouse peak GiB fwd+bwd", "attention TFLOP/s fwd", "rest GB/s fwd",
               f"{anchors.LABEL} fwd", f"{anchors.LABEL} fwd+bwd"]
    rows = []
    for record in document["points"]:
        n, shape, config = point_label(record)
        check = record.get("check")
        row = [n, record["point"]["dtype"], shape, config, number(record["kept"]) if record["kept"] else MISSING,
               number(record["kept_ratio"]), check["status"] if check else MISSING,
               fidelity_cell(record.get("fidelity"))]
        for method in methods:
            for mode in MODE_TITLES:
                row.append(timing_cell(record["methods"].get(method, {}).get(mode)))
        for method in dense:
            for mode in MODE_TITLES:
                speedup = record["speedup"].get(method, {}).get(mode)
                row.append(f"{number(speedup)}×" if speedup is not None else MISSING)
        fwd_bwd = record["methods"].get("lighthouse", {}).get("fwd_bwd") or {}
        row += [gib(fwd_bwd.get("peak_memory_bytes")), number(record["attention"]["tflops_fwd"]),
                number(record["rest"]["gbps_fwd"])]
        anchor = record.get("anchor") or {}
        row += [number(anchor.get("lighthouse_fwd")), number(anchor.get("lighthouse_fwd_bwd"))]
        rows.append(row)
    return table(header, rows)


STAGE_NOTE = (
    "Each stage is timed on its own, under `torch.no_grad()`, on inputs made once by the stages before it; the "
    "layer (the main table's Lighthouse columns) is timed as one call on inputs that require grad. **other** is "
    "the layer's median minus the sum of its stages' medians (fwd: the five forward stages; fwd+bwd: all eight), "
    "with its share of the layer's time: what the stages alone leave out. That is the layer's Python wrapper "
    "(argument checks, the geometry, dispatching each op), autograd's bookkeeping (a graph node per op and the "
    "tensors it saves for the backward; on the backward, the engine running the nodes), the log-sum-exp that "
    "some SDPA kernels write only when the backward will need it, and on a GPU the idle time between kernels "
    "when the host issues them more slowly than the device runs them (short sequences). It can be negative: "
    "inside the layer a stage may find its inputs still in cache, and a sum of medians is not the median of a sum. "
    "With few repeats on a busy CPU (the quick preset) the noise of the single medians can outweigh all of this; "
    "the (min–max) ranges of the main table show how large it is."
)


def median_ms(result: dict | None):
    """The median of a measurement that ran, else None."""
    return result["ms"]["median"] if result and result["status"] == "ok" else None


def other_cell(layer: dict | None, stages: list) -> str:
    """The layer's median minus the sum of the stages' medians, with its share of the layer's; "—" if any is missing."""
    total, parts = median_ms(layer), [median_ms(result) for result in stages]
    if total is None or any(part is None for part in parts):
        return MISSING
    other = total - sum(parts)
    return f"{number(other)} ({other / total:.0%})"


def stage_table(document: dict) -> str:
    header = ["N", "config", *STAGE_NAMES, "other fwd", "other fwd+bwd", "attention TFLOP/s fwd",
              "attention TFLOP/s bwd", "rest GB/s fwd", "rest GB/s bwd"]
    rows = []
    for record in document["points"]:
        n, _, config = point_label(record)
        cells = []
        for stage in STAGE_NAMES:
            result = record["stages"].get(stage)
            if result is None:
                cells.append(MISSING)
            elif result["status"] != "ok":
                cells.append(result["status"])
            else:
                cells.append(number(result["ms"]["median"]))
        layer = record["methods"].get("lighthouse", {})
        stages = record["stages"]
        cells += [other_cell(layer.get("fwd"), [stages.get(name) for name in FORWARD_STAGE_NAMES]),
                  other_cell(layer.get("fwd_bwd"), [stages.get(name) for name in STAGE_NAMES])]
        rows.append([n, config, *cells, number(record["attention"]["tflops_fwd"]),
                     number(record["attention"]["tflops_bwd"]), number(record["rest"]["gbps_fwd"]),
                     number(record["rest"]["gbps_bwd"])])
    return table(header, rows)


def check_lines(document: dict) -> list[str]:
    lines = []
    for record in document["points"]:
        check = record.get("check")
        if not check:
            continue
        n, shape, config = point_label(record)
        if check["status"] == "passed":
            errors = ", ".join(f"{k} {number(v)}" for k, v in check["relative_errors"].items())
            match = check["selection_match"]
            selection = MISSING if match is None else f"{match:.4%}"
            lines.append(f"- N={n} {config}: passed (relative errors {errors}; tolerance {check['tolerance']:g}; "
                         f"selection equal to the CPU operators' {selection})")
        elif check["status"] == "skipped":
            lines.append(f"- N={n} {config}: {check['reason']}")
        else:
            lines.append(f"- N={n} {config}: **check {check['status']}**: {check['reason']}")
    return lines


def skip_lines(document: dict) -> list[str]:
    """One line per point and reason, naming every measurement it stopped."""
    lines = []
    for record in document["points"]:
        n, _, config = point_label(record)
        by_reason: dict[str, list[str]] = {}
        for method, modes in record["methods"].items():
            for mode, result in modes.items():
                if result["status"] != "ok":
                    name = f"{METHOD_TITLES.get(method, method)} {MODE_TITLES[mode]}"
                    by_reason.setdefault(result["reason"], []).append(name)
        for stage, result in record["stages"].items():
            if result["status"] != "ok":
                by_reason.setdefault(result["reason"], []).append(f"stage {stage}")
        lines += [f"- N={n} {config}, {', '.join(names)}: {reason}" for reason, names in by_reason.items()]
    return lines


def anchor_section() -> str:
    header = ["N", "L", "S kept", "Lighthouse fwd", "Lighthouse fwd+bwd", "cuDNN SDPA fwd", "cuDNN fwd+bwd",
              "flash SDPA fwd", "flash fwd+bwd"]
    rows = [[kilo(row[0]), str(row[1]), f"{row[2]:,}", *(number(v) for v in row[3:])] for row in anchors.ROWS]
    breakdown = ", ".join(f"{k} {v}" for k, v in anchors.BREAKDOWN_512K.items())
    shape = anchors.SHAPE
    return "\n".join([
        f"## {anchors.LABEL[0].upper()}{anchors.LABEL[1:]}",
        "",
        f"The paper authors' H200 medians in ms ({shape['dtype']}, B={shape['batch']}, H={shape['heads']}, "
        f"D={shape['head_dim']}, {shape['scorer']} scorer, p={shape['pooling']}, k=2048): another machine and run, "
        "shown for scale only.",
        "",
        table(header, rows),
        "",
        f"Authors' 512K forward breakdown (ms): {breakdown}.",
        "",
        *(f"- {note}" for note in anchors.NOTES),
        "- The 1M row (L = 4) keeps S = 40,960, the count of k = 2048; k = 4096 would keep 65,536.",
    ])


def render(document: dict, figures: list[str], plot_note: str | None) -> str:
    env = document["environment"]
    preset = document["preset"]
    device = env["gpu"] or f"CPU ({env['machine']}, {env['cpu_count']} cores)"
    parts = [
        f"# Lighthouse benchmark: preset `{preset['name']}`",
        "",
        f"{device}; torch {env['torch']}, CUDA {env['cuda'] or MISSING}, cuDNN {env['cudnn'] or MISSING}; "
        f"commit `{env['commit']}`; {env['date']}; host {env['host']}.",
        "",
        f"Command: `{env['command']}`" + ("" if document.get("complete") else " (**incomplete run**)"),
        "",
        "Times are medians in ms with (min–max) over the repeats, CUDA-event timed on GPU and wall-clock on CPU; "
        "forward is timed with inputs that require grad, as in training. Speedup = dense median / Lighthouse "
        "median. Peak memory is the allocation above the inputs during one call. attention TFLOP/s counts "
        "causal FLOPs 2·S²·D·H (backward 2.5×); rest GB/s is the bytes of every tensor the other stages read "
        "or write over their summed times. fidelity vs fp32 (bf16 and fp16 points) is the relative L2 distance of "
        "the layer's output from the same layer run in fp32 on the same inputs, each making its own selection "
        "(batch 0, KV head 0 and its query heads, full N).",
        "",
        "## Results",
        "",
        main_table(document),
        "",
        "## Stage breakdown (median ms)",
        "",
        STAGE_NOTE,
        "",
        stage_table(document),
        "",
        "## Checks before timing",
        "",
        *(check_lines(document) or ["- no checks ran"]),
        "",
        "## Skipped and failed",
        "",
        *(skip_lines(document) or ["- none"]),
        "",
        anchor_section(),
        "",
        "## Plots",
        "",
    ]
    parts += [f"![{name}]({name})" for name in figures]
    if plot_note:
        parts.append(plot_note)
    return "\n".join(parts) + "\n"
