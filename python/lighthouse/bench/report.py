"""Outputs of a run, all in one --out folder:

* results.json: {"schema", "complete", "elapsed_s", "environment" (host, GPU,
  versions, commit, command line, date), "preset", "settings", "calibration",
  "anchors" (the authors' numbers), "points": [record, ...]}. A record holds
  "point" (shapes, dtype, config), "series", "kept" (S), "kept_ratio" (S/N),
  "pyramid_len", "check", "fidelity" (16-bit points: relative L2 distance of the
  output from the same layer in fp32, fidelity.py), "methods" {method:
  {"fwd"|"fwd_bwd": measurement}},
  "stages" {stage: measurement}, "speedup" {dense method: {mode: x}},
  "attention" (TFLOP/s), "rest" (GB/s) and "anchor". A measurement has
  "status" (ok, skipped, failed), "reason", and when ok "ms" (median, min, max,
  p25, p75, iqr, repeats, samples), "peak_memory_bytes", "flops", "tflops",
  "bytes", "gbps". The file is rewritten after every point, so an interrupted
  run still leaves valid JSON ("complete": false).
* results.md: markdown tables (see markdown.py).
* latency.png, speedup.png, stages.png (see plots.py), when matplotlib is installed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lighthouse.bench import markdown, plots

SCHEMA = "lighthouse-bench/1"
JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"


def finite(value):
    """The value with every non-finite float replaced by None (JSON has no NaN or inf)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def write_json(document: dict, out: Path) -> Path:
    """Writes atomically (temporary file, then rename) so a reader never sees half a file."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / JSON_NAME
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(finite(document), indent=1, allow_nan=False) + "\n")
    os.replace(temporary, path)
    return path


def load_json(path: Path) -> dict:
    document = json.loads(Path(path).read_text())
    if document.get("schema") != SCHEMA:
        raise ValueError(f"{path}: expected schema {SCHEMA!r}, got {document.get('schema')!r}")
    return document


def write_outputs(document: dict, out: Path) -> dict:
    """results.json, the plots (when possible) and results.md; returns what was written."""
    written = {"json": write_json(document, out)}
    figures, plot_note = plots.write_plots(document, out)
    written["plots"] = figures
    written["plot_note"] = plot_note
    path = out / MARKDOWN_NAME
    path.write_text(markdown.render(document, [figure.name for figure in figures], plot_note))
    written["markdown"] = path
    return written
