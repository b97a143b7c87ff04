"""Where a kernel's warps wait, per SASS instruction, from an Nsight Compute report.

Profile one launch with the source counters, export its source page as CSV, then summarise it:

    ncu --kernel-name-base demangled --kernel-name 'regex:NAME' --launch-skip K --launch-count 1 \
        --import-source no --section SourceCounters --section WarpStateStats -o REPORT PROGRAM ARGS
    ncu -i REPORT.ncu-rep --page source --csv --print-source sass > REPORT.csv
    python3 bench/ncu_stalls.py REPORT.csv [--min-share 0.5]

The summary: the kernel's warp-state samples by stall reason (share of all samples), then every instruction holding
at least --min-share percent of the samples, with its index in the kernel's SASS, its share, how often it executed,
its text and its two main stall reasons (sample counts). A load's latency shows on the first instruction that uses
its result, not on the load. Standard library only, so it runs where only the profiler is installed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"
SOURCE = "Source"
STALL_PREFIX = "stall_"
NOT_ISSUED = "(Not Issued)"


class StallsError(ValueError):
    pass


def _count(text: str) -> int:
    return int(text) if text.strip() else 0


def read(path: Path) -> tuple[list, list]:
    """(stall reason columns, rows as dicts) of a source-page CSV: a line naming the kernel, the header, one row per
    SASS instruction."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    header_at = next((i for i, row in enumerate(lines) if SOURCE in row and SAMPLES in row), None)
    if header_at is None:
        raise StallsError(f"{path}: expected an Nsight Compute source page (columns {SOURCE!r} and {SAMPLES!r}), "
                          f"found none; export it with --page source --csv --print-source sass")
    header = lines[header_at]
    reasons = [h for h in header if h.startswith(STALL_PREFIX) and NOT_ISSUED not in h]
    if not reasons:
        raise StallsError(f"{path}: expected stall_* columns (profile with --section SourceCounters), found none")
    rows = [dict(zip(header, row)) for row in lines[header_at + 1:] if len(row) == len(header)]
    return reasons, rows


def summarize(reasons: list, rows: list, min_share: float) -> dict:
    """Shares by reason and the instructions with at least min_share percent of the samples."""
    total = sum(_count(r[SAMPLES]) for r in rows)
    if total == 0:
        raise StallsError("the report holds no warp-state samples")
    by_reason = {reason[len(STALL_PREFIX):]: sum(_count(r[reason]) for r in rows) for reason in reasons}
    hot = []
    for index, r in enumerate(rows):
        samples = _count(r[SAMPLES])
        if 100.0 * samples / total < min_share:
            continue
        top = sorted(((_count(r[reason]), reason[len(STALL_PREFIX):]) for reason in reasons), reverse=True)[:2]
        hot.append({"index": index, "share": 100.0 * samples / total, "executed": _count(r.get(EXECUTED, "")),
                    "source": r[SOURCE].strip(), "reasons": [(name, n) for n, name in top if n > 0]})
    return {"samples": total, "instructions": len(rows),
            "by_reason": {k: 100.0 * v / total for k, v in sorted(by_reason.items(), key=lambda kv: -kv[1]) if v},
            "hot": hot}


def render(summary: dict) -> str:
    lines = [f"samples {summary['samples']}, SASS instructions {summary['instructions']}",
             "by reason: " + ", ".join(f"{k} {v:.1f}%" for k, v in summary["by_reason"].items()), ""]
    for h in summary["hot"]:
        reasons = " ".join(f"{name}:{n}" for name, n in h["reasons"])
        lines.append(f"{h['index']:5d} {h['share']:5.1f}% executed {h['executed']:>9} {h['source'][:70]:<70} {reasons}")
    return "\n".join(lines) + "\n"


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="source page of one kernel launch, exported as CSV")
    parser.add_argument("--min-share", type=float, default=0.5,
                        help="list instructions holding at least this percent of the samples (default 0.5)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_share <= 100.0:
        parser.error(f"--min-share: expected 0 to 100, got {args.min_share}")
    try:
        sys.stdout.write(render(summarize(*read(args.csv), args.min_share)))
    except (StallsError, OSError) as e:
        print(f"ncu_stalls: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
