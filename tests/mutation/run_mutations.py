#!/usr/bin/env python3
"""Mutation check of the C++ suites: plants classic mistakes one at a time and
shows which ctest entries catch each. Every mutation must be caught.

    python3 tests/mutation/run_mutations.py [--jobs N] [--only NAME ...] [--keep]

The source tree is copied to a temporary folder first (build folders, virtual
environments and git data left out) and every mutation is applied to the
copy, never to the tree itself, so other builds from the tree are never
affected. The copy is configured CPU-only and built once; for each mutation
the changed file is patched, the suites rebuilt and `ctest -L cpu` run, then
the file is restored before the next mutation. A mutation whose text no
longer occurs in the source is reported as stale (the source moved on: update
the mutation). Exit status: 0 when every mutation was caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Edit:
    path: str  # relative to the repository root
    old: str   # must occur exactly once
    new: str


@dataclass(frozen=True)
class Mutation:
    name: str
    description: str
    edits: tuple[Edit, ...]


MUTATIONS = (
    Mutation(
        "tie-order",
        "select: equal scores break towards the higher index instead of the lower",
        (Edit("src/cpu/select.cpp", "return ka != kb ? ka > kb : cand[a] < cand[b];",
              "return ka != kb ? ka > kb : cand[a] > cand[b];"),),
    ),
    Mutation(
        "window-shift",
        "scatter: every entry's output window starts one position later",
        (Edit("src/cpu/scatter.cpp", "if (t < c - 1) break;", "if (t < c) break;"),
         Edit("src/cpu/scatter.cpp", "slots[g.offset(l) + (t - c + 1) / c]", "slots[g.offset(l) + (t - c) / c]")),
    ),
    Mutation(
        "gather-mean-ulp",
        "gather: each pooled mean one ulp (of the fp32 / fp64 accumulator) too large",
        (Edit("src/cpu/gather.cpp", "#include <algorithm>\n",
              "#include <algorithm>\n#include <cmath>\n#include <limits>\n"),
         Edit("src/cpu/gather.cpp", "for (int64_t d = 0; d < dim; ++d) acc[d] *= inv;",
              "for (int64_t d = 0; d < dim; ++d)\n"
              "    acc[d] = std::nextafter(acc[d] * inv, std::numeric_limits<detail::acc_t<T>>::infinity());")),
    ),
    Mutation(
        "gather-backward-division-ulp",
        "gather_backward: 1 / c_l one ulp too large, so each grad / c_l is off by about an ulp",
        (Edit("src/cpu/gather_backward.cpp", "#include <algorithm>\n", "#include <algorithm>\n#include <cmath>\n"),
         Edit("src/cpu/gather_backward.cpp",
              "const detail::acc_t<T> inv = detail::acc_t<T>(1) / static_cast<detail::acc_t<T>>(c);",
              "const detail::acc_t<T> inv =\n"
              "        std::nextafter(detail::acc_t<T>(1) / static_cast<detail::acc_t<T>>(c), detail::acc_t<T>(2));")),
    ),
    Mutation(
        "heads-rule-dropped",
        "checks: a stage accepts dims.heads < 1",
        (Edit("src/core/checks.cpp", '  if (d.heads < 1) fail("dims.heads", "at least 1", d.heads);\n', ""),),
    ),
    Mutation(
        "pooled-rule-dropped",
        "checks: one or two of pooled_q, pooled_k, pooled_v are accepted",
        (Edit("src/core/checks.cpp",
              'if (set != 0 && set != 3) fail("pooled_q, pooled_k, pooled_v", "all three set or none", '
              'std::to_string(set) + " set");',
              "(void)set;"),),
    ),
)

# Top-level entries of the tree the copy leaves out.
SKIPPED = re.compile(r"^(build.*|\.venv|\.git|runs|data|dist|\.pytest_cache)$")


def log(message: str) -> None:
    print(message, flush=True)


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def copy_tree(destination: Path) -> None:
    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder).resolve() != ROOT:
            return [n for n in names if n == "__pycache__"]
        return [n for n in names if SKIPPED.match(n) or n == "__pycache__"]

    shutil.copytree(ROOT, destination, ignore=ignore, symlinks=True)


def build(tree: Path, jobs: int) -> subprocess.CompletedProcess:
    return run(["cmake", "--build", "build", "-j", str(jobs)], tree)


def failed_tests(tree: Path, jobs: int) -> tuple[list[str], str]:
    """Names of the ctest entries (label cpu) that did not pass, and ctest's output."""
    result = run(["ctest", "--test-dir", "build", "-L", "cpu", "-j", str(jobs), "--timeout", "600"], tree)
    output = result.stdout + result.stderr
    # Lines like "\t 42 - Suite.Case (Failed)"; parameterised cases append "  # GetParam() = ...".
    names = re.findall(r"^\s*\d+ - (\S+)", output.split("The following tests FAILED:")[-1], re.M) \
        if "The following tests FAILED:" in output else []
    if result.returncode != 0 and not names:
        names = ["<ctest failed without a test list>"]
    return names, output


def summarise(names: list[str]) -> str:
    """Test names grouped by GoogleTest suite: 'Suite: a, b; Other: c'."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        suite, _, case = name.partition(".")
        groups.setdefault(suite if case else "ctest", []).append(case or name)
    return "; ".join(f"{suite} ({len(cases)}): {', '.join(cases)}" for suite, cases in groups.items())


def apply(tree: Path, mutation: Mutation) -> dict[Path, str] | str:
    """Applies the edits; returns the original texts, or why the mutation is stale."""
    originals: dict[Path, str] = {}
    for edit in mutation.edits:
        path = tree / edit.path
        if path not in originals:
            originals[path] = path.read_text()
        current = path.read_text()
        if current.count(edit.old) != 1:
            restore(originals)
            return f"stale: {edit.path} holds {current.count(edit.old)} copies of {edit.old!r} (expected 1)"
        path.write_text(current.replace(edit.old, edit.new))
    return originals


def restore(originals: dict[Path, str]) -> None:
    for path, text in originals.items():
        path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", nargs="*", choices=[m.name for m in MUTATIONS], help="run these mutations only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]

    workdir = Path(tempfile.mkdtemp(prefix="lighthouse-mutation-"))
    tree = workdir / "src"
    started = time.monotonic()
    try:
        log(f"copying {ROOT.name} to {tree}")
        copy_tree(tree)
        configure = run(["cmake", "-S", ".", "-B", "build", "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                         "-DLIGHTHOUSE_CUDA=OFF", "-DLIGHTHOUSE_INSTALL=OFF"], tree)
        if configure.returncode != 0:
            log(configure.stdout + configure.stderr)
            log("configure failed")
            return 1
        built = build(tree, args.jobs)
        if built.returncode != 0:
            log(built.stdout[-5000:] + built.stderr)
            log("the unmutated tree does not build")
            return 1
        baseline, output = failed_tests(tree, args.jobs)
        if baseline:
            log(output[-5000:])
            log(f"the unmutated tree fails {len(baseline)} tests: {summarise(baseline)}")
            return 1
        log(f"baseline: every cpu test passes ({time.monotonic() - started:.0f} s)\n")

        survived = []
        for mutation in chosen:
            begin = time.monotonic()
            originals = apply(tree, mutation)
            if isinstance(originals, str):
                log(f"[{mutation.name}] {mutation.description}\n  {originals}\n")
                survived.append(mutation.name)
                continue
            try:
                built = build(tree, args.jobs)
                if built.returncode != 0:
                    log(f"[{mutation.name}] does not compile:\n{built.stdout[-3000:]}{built.stderr}")
                    survived.append(mutation.name)
                    continue
                caught, _ = failed_tests(tree, args.jobs)
            finally:
                restore(originals)
            verdict = f"caught by {len(caught)} tests" if caught else "NOT CAUGHT"
            log(f"[{mutation.name}] {mutation.description}\n  {verdict} ({time.monotonic() - begin:.0f} s)")
            if caught:
                log(f"  {summarise(caught)}")
            else:
                survived.append(mutation.name)
            log("")
        log(f"{len(chosen) - len(survived)} of {len(chosen)} mutations caught"
            + (f"; not caught: {', '.join(survived)}" if survived else "")
            + f" ({time.monotonic() - started:.0f} s in all)")
        return 1 if survived else 0
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
