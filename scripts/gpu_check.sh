#!/usr/bin/env bash
# GPU check of the CUDA stages, run on a machine with an NVIDIA GPU:
# configure and build (Release, Ninja, sm_90), the GPU test suite through
# ctest, compute-sanitizer (memcheck, racecheck, initcheck, synccheck) on the
# small all-stages test, the Python GPU tests (pytest -m gpu, against the op
# library of the same build), then the stage benchmark. Every log, the test XML and
# the benchmark's JSON and markdown go to OUTDIR; a summary table is printed
# last. A failing step is recorded and the script carries on (the benchmark
# runs even if a test fails); the exit status is non-zero if any step failed.
#
#   scripts/gpu_check.sh OUTDIR
#
# Environment: LIGHTHOUSE_BUILD_DIR (default build-gpu), JOBS (default nproc),
# LIGHTHOUSE_GTEST_SOURCE_DIR (a GoogleTest source tree when the package is
# not installed), LIGHTHOUSE_JSON_INCLUDE_DIR (a folder holding
# nlohmann/json.hpp when nlohmann-json is not installed), LIGHTHOUSE_COMMIT
# (else git rev-parse HEAD),
# CUDA_ARCHS (default 90), BENCH_ARGS (extra benchmark arguments).
set -uo pipefail
# Without a usable GPU the GPU suite would skip itself and pass: here that is a failure.
export LIGHTHOUSE_REQUIRE_GPU=1

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
mkdir -p "$1"
OUTDIR=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${LIGHTHOUSE_BUILD_DIR:-$ROOT/build-gpu}
JOBS=${JOBS:-$(nproc)}
ARCHS=${CUDA_ARCHS:-90}

names=()
declare -A status seconds

# step NAME COMMAND...: runs the command with its output in OUTDIR/NAME.log.
step() {
  local name=$1
  shift
  local log="$OUTDIR/$name.log" start rc
  names+=("$name")
  echo "== $name: $*" >"$log"
  echo "== $name"
  start=$(date +%s)
  "$@" >>"$log" 2>&1
  rc=$?
  seconds[$name]=$(($(date +%s) - start))
  if [[ $rc -eq 0 ]]; then
    status[$name]=pass
  else
    status[$name]="FAIL (exit $rc)"
    tail -n 20 "$log" | sed 's/^/   | /'
  fi
  return $rc
}

skip() {
  names+=("$1")
  status[$1]="skipped ($2)"
  seconds[$1]=0
}

commit=${LIGHTHOUSE_COMMIT:-$(git -C "$ROOT" rev-parse --verify -q HEAD 2>/dev/null || echo unknown)}
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
{
  echo "commit: $commit"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv 2>&1
  nvcc --version 2>&1 | tail -n 2
  cmake --version 2>&1 | head -n 1
} >"$OUTDIR/environment.log"

cmake_args=(-S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIGHTHOUSE_CUDA=ON
  "-DCMAKE_CUDA_ARCHITECTURES=$ARCHS" -DLIGHTHOUSE_BUILD_CLI=OFF -DLIGHTHOUSE_BUILD_BENCH=ON
  -DLIGHTHOUSE_BUILD_TORCH=ON)
if [[ -n ${LIGHTHOUSE_GTEST_SOURCE_DIR:-} ]]; then
  cmake_args+=("-DLIGHTHOUSE_GTEST_SOURCE_DIR=$LIGHTHOUSE_GTEST_SOURCE_DIR")
fi
if [[ -n ${LIGHTHOUSE_JSON_INCLUDE_DIR:-} ]]; then
  cmake_args+=("-DLIGHTHOUSE_JSON_INCLUDE_DIR=$LIGHTHOUSE_JSON_INCLUDE_DIR")
fi

tests_bin="$BUILD/tests/cpp/lighthouse_gpu_tests"
bench_bin="$BUILD/bench/lighthouse_stage_bench"

if step configure cmake "${cmake_args[@]}" -DLIGHTHOUSE_BUILD_TESTS=ON; then
  step build_bench cmake --build "$BUILD" -j "$JOBS" --target lighthouse_stage_bench
  step build_tests cmake --build "$BUILD" -j "$JOBS" --target lighthouse_gpu_tests
  step build_torch cmake --build "$BUILD" -j "$JOBS" --target lighthouse_torch
elif step configure_bench_only cmake "${cmake_args[@]}" -DLIGHTHOUSE_BUILD_TESTS=OFF; then
  # Typically GoogleTest is missing: set LIGHTHOUSE_GTEST_SOURCE_DIR. The benchmark still runs.
  step build_bench cmake --build "$BUILD" -j "$JOBS" --target lighthouse_stage_bench
  skip build_tests "configure with tests failed"
  skip build_torch "configure with tests failed"
else
  skip build_bench "configure failed"
  skip build_tests "configure failed"
  skip build_torch "configure failed"
fi

if [[ ${status[build_tests]} == pass ]]; then
  step gpu_tests env "GTEST_OUTPUT=xml:$OUTDIR/gpu_tests.xml" \
    ctest --test-dir "$BUILD" -L gpu --output-on-failure --no-tests=error --timeout 900
  for tool in memcheck racecheck initcheck synccheck; do
    step "sanitizer_$tool" "$sanitizer" --tool "$tool" --error-exitcode 1 "$tests_bin" --gtest_filter='GpuSmall.*'
  done
else
  skip gpu_tests "tests not built"
  for tool in memcheck racecheck initcheck synccheck; do skip "sanitizer_$tool" "tests not built"; done
fi

if [[ ${status[build_torch]} == pass ]]; then
  step pytest_gpu env "LIGHTHOUSE_OPS_LIBRARY=$BUILD/src/torch/_lighthouse_ops.so" "PYTHONPATH=$ROOT/python" \
    python3 -m pytest "$ROOT/tests/python" -m gpu -q -p no:cacheprovider "--junitxml=$OUTDIR/pytest_gpu.xml"
else
  skip pytest_gpu "op library not built"
fi

if [[ ${status[build_bench]} == pass ]]; then
  # shellcheck disable=SC2086
  step bench "$bench_bin" --json "$OUTDIR/bench.json" --markdown "$OUTDIR/bench.md" --commit "$commit" ${BENCH_ARGS:-}
else
  skip bench "benchmark not built"
fi

{
  echo
  echo "| step | status | seconds | log |"
  echo "|---|---|---:|---|"
  for name in "${names[@]}"; do
    echo "| $name | ${status[$name]} | ${seconds[$name]} | $name.log |"
  done
  if [[ -f "$OUTDIR/bench.md" ]]; then
    echo
    grep -E "^\| (N|---|[0-9])" "$OUTDIR/bench.md" | grep -E "N \||---|524288|forward|backward" | head -n 40
  fi
} | tee "$OUTDIR/summary.md"
if grep -q "| FAIL" "$OUTDIR/summary.md"; then exit 1; fi
exit 0
