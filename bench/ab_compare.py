"""Same-run comparison of two builds of the stage benchmark.

scripts/bench_ab.sh runs lighthouse_stage_bench built from a base revision and from the working tree
alternately, R rounds each, on one GPU in one session, writing OUTDIR/base-<r>.json and OUTDIR/new-<r>.json.
This reads them and writes OUTDIR/ab.md and OUTDIR/ab.json: per sequence length and stage, each build's
median over its rounds of the benchmark's medians, the change, each build's range over its rounds, and a
verdict. A change is called only when the two builds' rounds do not overlap (every new round faster than
every base round, or slower); with 3 rounds each, a separation this complete happens by chance with
probability 2/20 when the builds are equally fast, 1/20 for a given direction.

Standard library only, so it runs where only the benchmark was built:

    python3 bench/ab_compare.py OUTDIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BUILDS = ("base", "new")
# The benchmark's configuration: both builds must have measured the same thing.
CONFIG_FIELDS = ("gpu", "dtype", "batch", "heads", "kv_heads", "head_dim", "pooling", "reps")
SUMS = (("forward_ms", "**forward sum**"), ("backward_ms", "**backward sum**"))


class CompareError(ValueError):
    pass


def load_rounds(outdir: Path) -> dict[str, list[dict]]:
    """{"base": [document per round], "new": [...]}, rounds in the order of their numbers."""
    rounds = {}
    for build in BUILDS:
        files = sorted(outdir.glob(f"{build}-*.json"), key=lambda p: int(p.stem.split("-", 1)[1]))
        if not files:
            raise CompareError(f"ab_compare: {outdir}: expected {build}-<round>.json files, found none")
        rounds[build] = [json.loads(p.read_text()) for p in files]
    if len(rounds["base"]) != len(rounds["new"]):
        raise CompareError(
            f"ab_compare: rounds: expected as many base as new rounds, got {len(rounds['base'])} base and "
            f"{len(rounds['new'])} new"
        )
    first = rounds["base"][0]
    for build in BUILDS:
        for i, document in enumerate(rounds[build]):
            for field in CONFIG_FIELDS:
                if document.get(field) != first.get(field):
                    raise CompareError(
                        f"ab_compare: {build}-{i + 1}.json: {field}: expected {first.get(field)!r} (as in "
                        f"base-1.json), got {document.get(field)!r}"
                    )
    return rounds


def times(document: dict) -> dict[tuple[int, str], float]:
    """{(seq_len, stage): median ms} of one benchmark run, the forward and backward sums included."""
    out = {}
    for size in document["sizes"]:
        for stage in size["stages"]:
            out[(size["seq_len"], stage["stage"])] = stage["median_ms"]
        for field, name in SUMS:
            out[(size["seq_len"], name)] = size[field]
    return out


def verdict(base: list[float], new: list[float]) -> str:
    if max(new) < min(base):
        return "faster"
    if min(new) > max(base):
        return "slower"
    return "within spread"


def compare(rounds: dict[str, list[dict]]) -> list[dict]:
    """One row per (seq_len, stage) that both builds measured, in the base build's order."""
    per_build = {build: [times(d) for d in rounds[build]] for build in BUILDS}
    keys = list(per_build["base"][0])
    rows = []
    for key in keys:
        if not all(key in t for build in BUILDS for t in per_build[build]):
            continue
        base = [t[key] for t in per_build["base"]]
        new = [t[key] for t in per_build["new"]]
        base_ms, new_ms = statistics.median(base), statistics.median(new)
        rows.append({
            "seq_len": key[0], "stage": key[1], "base_ms": base_ms, "new_ms": new_ms,
            "change": new_ms / base_ms - 1.0, "base_rounds": base, "new_rounds": new,
            "verdict": verdict(base, new),
        })
    return rows


def markdown(rounds: dict[str, list[dict]], rows: list[dict]) -> str:
    base, new = rounds["base"][0], rounds["new"][0]
    lines = [
        "# Stage benchmark, two builds in one run",
        "",
        f"- base: commit {base.get('commit')}; new: commit {new.get('commit')}",
        f"- GPU: {base.get('gpu')}; dates {base.get('date')} to {rounds['new'][-1].get('date')}",
        f"- {base.get('dtype')}, B={base.get('batch')}, H={base.get('heads')}, Hkv={base.get('kv_heads')}, "
        f"D={base.get('head_dim')}, p={base.get('pooling')}; each round the median of {base.get('reps')} runs; "
        f"{len(rounds['base'])} rounds per build, alternating base, new",
        "- ms: median over the rounds; range: the rounds' minimum–maximum; verdict: faster or slower only when "
        "the two builds' rounds do not overlap",
        "",
        "| N | stage | base ms | new ms | change | base range | new range | verdict |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seq_len']} | {r['stage']} | {r['base_ms']:.3f} | {r['new_ms']:.3f} | {100 * r['change']:+.1f}% | "
            f"{min(r['base_rounds']):.3f}–{max(r['base_rounds']):.3f} | "
            f"{min(r['new_rounds']):.3f}–{max(r['new_rounds']):.3f} | {r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="folder holding base-<r>.json and new-<r>.json")
    args = parser.parse_args(argv)
    try:
        rounds = load_rounds(args.outdir)
    except CompareError as error:
        print(error, file=sys.stderr)
        return 2
    rows = compare(rounds)
    text = markdown(rounds, rows)
    (args.outdir / "ab.md").write_text(text)
    summary = {"base_commit": rounds["base"][0].get("commit"), "new_commit": rounds["new"][0].get("commit"),
               "gpu": rounds["base"][0].get("gpu"), "rounds": len(rounds["base"]), "rows": rows}
    (args.outdir / "ab.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
