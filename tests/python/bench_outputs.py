"""Assertions shared by the benchmark tests: an output folder of `python -m lighthouse.bench` is
well-formed (JSON schema and numbers, markdown table, PNG files)."""

import json
import math
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOP_KEYS = {"schema", "complete", "elapsed_s", "environment", "preset", "settings", "calibration", "anchors", "points"}
ENVIRONMENT_KEYS = {"host", "machine", "platform", "cpu_count", "python", "torch", "cuda", "cudnn", "device", "gpu",
                    "gpu_memory_bytes", "commit", "command", "date"}
RECORD_KEYS = {"point", "series", "kept", "kept_ratio", "pyramid_len", "check", "fidelity", "methods", "stages",
               "anchor", "speedup", "attention", "rest"}
STATS_KEYS = {"median", "min", "max", "p25", "p75", "iqr", "repeats", "samples"}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_measurement(result: dict) -> bool:
    """Asserts one measurement is consistent; returns whether it ran."""
    assert result["status"] in ("ok", "skipped", "failed"), result
    if result["status"] != "ok":
        assert result["reason"].startswith(result["status"] + ":"), result
        return False
    ms = result["ms"]
    assert STATS_KEYS <= set(ms)
    assert len(ms["samples"]) == ms["repeats"] >= 1
    assert all(positive(s) for s in ms["samples"])
    assert ms["min"] <= ms["p25"] <= ms["median"] <= ms["p75"] <= ms["max"]
    for rate, amount in (("tflops", "flops"), ("gbps", "bytes")):
        assert (result[rate] is None) == (result[amount] is None)
        if result[rate] is not None:
            assert positive(result[rate]) and positive(result[amount])
    return True


def check_outputs(out: Path, expected_points: int) -> dict:
    """Asserts the folder holds valid results.json, results.md and three PNGs; returns the JSON document."""
    document = json.loads((out / "results.json").read_text(), parse_constant=lambda name: float("nan"))
    assert TOP_KEYS <= set(document)
    assert document["schema"] == "lighthouse-bench/1" and document["complete"] is True
    assert ENVIRONMENT_KEYS <= set(document["environment"])
    assert len(document["points"]) == expected_points
    for record in document["points"]:
        assert RECORD_KEYS <= set(record)
        for modes in record["methods"].values():
            for result in modes.values():
                check_measurement(result)
        for result in record["stages"].values():
            check_measurement(result)
        if record["kept"] is not None:
            assert 0 < record["kept_ratio"] < 1

    lines = (out / "results.md").read_text().splitlines()
    header = lines.index("## Results") + 2
    assert lines[header].startswith("| N | dtype |")
    assert set(lines[header + 1].replace("|", "")) == {"-"}
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert len(rows) == expected_points
    assert all(row.count("|") == lines[header].count("|") for row in rows)

    for name in ("latency.png", "speedup.png", "stages.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
    return document
