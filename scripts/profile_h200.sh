#!/usr/bin/env bash
# Training-step profiles on one CUDA GPU: per preset, eager and compiled (torch.compile, fullgraph), each
# step in dense and Lighthouse mode cut into attention, projections, MLP, norms, RoPE, embedding, head + loss,
# optimizer, data and other, with the tokens/s of both modes (lighthouse/train/profile.py).
#
#   scripts/profile_h200.sh RESULTS_DIR [PRESET...] [-- further lighthouse-train profile options]
#   scripts/profile_h200.sh bench/results/step-profile h200-lighthouse study-paper
#
# Presets default to h200-lighthouse (the 64K model) and study-paper (the 32K study model). RESULTS_DIR
# receives <preset>.md/.json (eager) and <preset>-compiled.md/.json. Needs the prose corpus at
# data/prose.jsonl.xz (or DATA=...) and the lighthouse package importable with its CUDA kernels.
set -euo pipefail

results=${1:?usage: scripts/profile_h200.sh RESULTS_DIR [PRESET...] [-- options]}
shift
presets=()
while [[ $# -gt 0 && $1 != "--" ]]; do
  presets+=("$1")
  shift
done
[[ ${1:-} == "--" ]] && shift
[[ ${#presets[@]} -gt 0 ]] || presets=(h200-lighthouse study-paper)
data=${DATA:-data/prose.jsonl.xz}
[[ -f $data ]] || { echo "missing corpus $data (copy prose.jsonl.xz there or set DATA)" >&2; exit 2; }
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

for preset in "${presets[@]}"; do
  for compile in --no-compile --compile; do
    "$python" -m lighthouse.train profile --preset "$preset" --data "$data" "$compile" --out "$results" "$@"
  done
done
