#!/usr/bin/env bash
# Same-run A/B timing of the CUDA stages on one GPU: the stage benchmark built from BASE (a git revision) and
# from the working tree, run alternately ROUNDS times each, then compared by bench/ab_compare.py (OUTDIR/ab.md,
# OUTDIR/ab.json). Timing two builds in one run is what tells a kernel change from the drift between machine
# starts, which is as large as the changes being tuned. It times only; run scripts/gpu_check.sh for the bits.
#
#   scripts/bench_ab.sh BASE OUTDIR [ROUNDS]
#   scripts/bench_ab.sh HEAD out/ab 3          # the uncommitted change against the last commit
#   scripts/bench_ab.sh base-src out/ab 3      # against a source tree (a checkout copied without git history)
#
# BASE is a git revision of this checkout or a folder holding the base's source tree. The results name the
# builds by AB_BASE_LABEL and AB_NEW_LABEL, by default the revision's short hash (the folder's name) and HEAD's
# short hash, "+uncommitted" when src, include, bench or the CMake files differ from it ("working-tree" without git).
# Environment: SIZES (default 131072,524288), REPS (default 30), CUDA_ARCHS (default 90), JOBS (default nproc),
# LIGHTHOUSE_JSON_INCLUDE_DIR (a folder holding nlohmann/json.hpp when nlohmann-json is not installed),
# AB_BUILD_DIR (default build-ab: its base/ and new/ build trees), PYTHON (default python3).
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 BASE OUTDIR [ROUNDS]" >&2
  exit 2
fi
base=$1
rounds=${3:-3}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: ROUNDS: expected a positive integer, got '$rounds'" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -d $base ]]; then
  base_dir=$(cd "$base" && pwd)
  base_label=${AB_BASE_LABEL:-$(basename "$base_dir")}
elif base_commit=$(git -C "$ROOT" rev-parse --verify -q --short "$base^{commit}" 2>/dev/null); then
  base_label=${AB_BASE_LABEL:-$base_commit}
else
  echo "$0: BASE: expected a git revision of $ROOT or a source folder, got '$base'" >&2
  exit 2
fi
mkdir -p "$2"
OUTDIR=$(cd "$2" && pwd)
BUILD=${AB_BUILD_DIR:-$ROOT/build-ab}
JOBS=${JOBS:-$(nproc)}
if [[ -n ${AB_NEW_LABEL:-} ]]; then
  new_label=$AB_NEW_LABEL
elif new_label=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  if ! git -C "$ROOT" diff --quiet HEAD -- src include bench CMakeLists.txt cmake; then
    new_label="$new_label+uncommitted"
  fi
else
  new_label=working-tree
fi

if [[ -z ${base_dir:-} ]]; then
  base_src=$(mktemp -d)
  trap 'rm -rf "$base_src"' EXIT
  git -C "$ROOT" archive "$base_commit" | tar -x -C "$base_src"
  base_dir=$base_src
fi

# build SOURCE_DIR BUILD_DIR: the stage benchmark alone, Release, for the GPU's architecture.
build() {
  local args=(-S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIGHTHOUSE_CUDA=ON
    "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-90}" -DLIGHTHOUSE_BUILD_BENCH=ON -DLIGHTHOUSE_BUILD_TESTS=OFF
    -DLIGHTHOUSE_BUILD_TORCH=OFF -DLIGHTHOUSE_BUILD_CLI=OFF)
  if [[ -n ${LIGHTHOUSE_JSON_INCLUDE_DIR:-} ]]; then
    args+=("-DLIGHTHOUSE_JSON_INCLUDE_DIR=$LIGHTHOUSE_JSON_INCLUDE_DIR")
  fi
  cmake "${args[@]}" >"$OUTDIR/build-$3.log" 2>&1 &&
    cmake --build "$2" -j "$JOBS" --target lighthouse_stage_bench >>"$OUTDIR/build-$3.log" 2>&1 ||
    { echo "$0: building the $3 benchmark failed, see $OUTDIR/build-$3.log" >&2; exit 1; }
}
build "$base_dir" "$BUILD/base" base
build "$ROOT" "$BUILD/new" new

rm -f "$OUTDIR"/base-*.json "$OUTDIR"/new-*.json
for ((r = 1; r <= rounds; r++)); do
  for which in base new; do
    label=$base_label
    [[ $which == new ]] && label=$new_label
    echo "== round $r: $which ($label)"
    "$BUILD/$which/bench/lighthouse_stage_bench" --sizes "${SIZES:-131072,524288}" --reps "${REPS:-30}" \
      --json "$OUTDIR/$which-$r.json" --commit "$label" >/dev/null
  done
done
"${PYTHON:-python3}" "$ROOT/bench/ab_compare.py" "$OUTDIR"
