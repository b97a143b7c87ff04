#!/usr/bin/env bash
# Context parallelism on one host of several GPUs: the layer benchmark (lighthouse.bench.cp) for W = 1, 2,
# 4, ... up to the GPUs present, one torchrun launch each (W = 1 is the single-GPU path over NCCL), the
# scaling tables, then a few minutes of training at a context one GPU cannot hold, the study model in
# Lighthouse and in dense mode, both on all GPUs with --context-parallel equal to their number.
#
#   scripts/cp_h200.sh RESULTS_DIR [SEQ_LEN (default 1048576)] [MINUTES per training run (default 3)]
#
# RESULTS_DIR/layer/ receives cp-w<W>.json/.md and scaling.md; RESULTS_DIR/train-<preset>/ each run's
# config.json, metrics.jsonl and summary.json. GPUS (default: all) limits the GPUs used, LAYER_ARGS adds
# options to every layer benchmark. Needs the prose corpus at data/prose.jsonl.xz (or DATA=...) and the
# lighthouse package importable with its CUDA kernels.
set -euo pipefail

results=${1:?usage: scripts/cp_h200.sh RESULTS_DIR [SEQ_LEN] [MINUTES]}
seq_len=${2:-1048576}
minutes=${3:-3}
data=${DATA:-data/prose.jsonl.xz}
python=${PYTHON:-python3}
gpus=${GPUS:-$(nvidia-smi -L | wc -l)}
[[ -f $data ]] || { echo "missing corpus $data (copy prose.jsonl.xz there or set DATA)" >&2; exit 2; }
export PYTHONUNBUFFERED=1
# Expandable segments keep the allocator from stranding memory between the benchmark's differently sized points.
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

for ((w = 1; w <= gpus; w *= 2)); do
  # shellcheck disable=SC2086
  "$python" -m torch.distributed.run --standalone --nproc-per-node "$w" -m lighthouse.bench.cp \
    --out "$results/layer" ${LAYER_ARGS:-}
done
"$python" -m lighthouse.bench.cp --summarize "$results/layer"

for preset in study-paper study-dense; do
  run=runs/cp/$preset
  "$python" -m torch.distributed.run --standalone --nproc-per-node "$gpus" -m lighthouse.train --preset "$preset" \
    --seq-len "$seq_len" --batch-size 1 --context-parallel "$gpus" --max-minutes "$minutes" --data "$data" \
    --out "$run" --no-report
  mkdir -p "$results/train-$preset"
  cp "$run/config.json" "$run/metrics.jsonl" "$run/summary.json" "$results/train-$preset/"
done
