#!/usr/bin/env bash
# Paired study arms on one CUDA GPU: every preset named runs with the same seed (so the same
# initialisation and data order), one after another, then `compare` reports them together.
#
#   scripts/study_h200.sh RESULTS_DIR SEED PRESET... [-- further lighthouse-train options]
#   scripts/study_h200.sh bench/results/recipe-study 0 study-dense study-paper study-lagged study-causal
#
# Run folders (with checkpoints) go to runs/seed<SEED>/<preset>; a stopped arm resumes when called
# again. RESULTS_DIR/seed<SEED>/<preset>/ receives config.json, metrics.jsonl and summary.json, and
# RESULTS_DIR/seed<SEED>/compare/ the report. Needs the prose corpus at data/prose.jsonl.xz (or DATA=...)
# and the lighthouse package importable with its CUDA kernels.
set -euo pipefail

results=${1:?usage: scripts/study_h200.sh RESULTS_DIR SEED PRESET... [-- options]}
seed=${2:?usage: scripts/study_h200.sh RESULTS_DIR SEED PRESET... [-- options]}
shift 2
presets=()
while [[ $# -gt 0 && $1 != "--" ]]; do
  presets+=("$1")
  shift
done
[[ ${1:-} == "--" ]] && shift
[[ ${#presets[@]} -gt 0 ]] || { echo "no preset named" >&2; exit 2; }
data=${DATA:-data/prose.jsonl.xz}
[[ -f $data ]] || { echo "missing corpus $data (copy prose.jsonl.xz there or set DATA)" >&2; exit 2; }
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

runs=()
for preset in "${presets[@]}"; do
  run=runs/seed$seed/$preset
  "$python" -m lighthouse.train --preset "$preset" --seed "$seed" --out "$run" --data "$data" --no-report "$@"
  dest=$results/seed$seed/$preset
  mkdir -p "$dest"
  cp "$run/config.json" "$run/metrics.jsonl" "$run/summary.json" "$dest/"
  runs+=("$run")
done
"$python" -m lighthouse.train compare "${runs[@]}" --out "$results/seed$seed/compare"
