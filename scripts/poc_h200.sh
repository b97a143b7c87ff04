#!/usr/bin/env bash
# Proof of concept on one H200: dense baseline vs Lighthouse + dense resumption at 64K context.
#
#   scripts/poc_h200.sh dense        # the baseline arm (about 4-5 minutes with start-up and evaluation)
#   scripts/poc_h200.sh lighthouse   # the two-stage arm (same model, data, seed and token budget)
#   scripts/poc_h200.sh compare      # report.md + plots from both run folders
#
# Further arguments go to lighthouse-train (e.g. --lighthouse-steps 539 --dense-steps 231).
#
# Each arm is a separate call so that each fits a 10-minute command limit. Needs the lighthouse
# package installed with its CUDA kernels and the prose corpus at data/prose.jsonl.xz (or DATA=...).
# Run folders go to runs/h200-<arm> (checkpoints included); the small artefacts (metrics,
# summary, config, report) are copied to $RESULTS_DIR when it is set. MAX_MINUTES bounds each arm's
# training loop (default 5); a stopped arm keeps a checkpoint, so calling it again resumes.
set -euo pipefail

arm=${1:?usage: scripts/poc_h200.sh dense|lighthouse|compare}
data=${DATA:-data/prose.jsonl.xz}
max_minutes=${MAX_MINUTES:-5}
python=${PYTHON:-python3}

export PYTHONUNBUFFERED=1

copy_out() {
  [ -n "${RESULTS_DIR:-}" ] || return 0
  local run=$1 dest="$RESULTS_DIR/$(basename "$1")"
  mkdir -p "$dest"
  for f in config.json metrics.jsonl summary.json; do
    [ -f "$run/$f" ] && cp "$run/$f" "$dest/"
  done
  [ -d "$run/report" ] && cp -r "$run/report" "$dest/"
  return 0
}

case "$arm" in
  dense|lighthouse)
    [ -f "$data" ] || { echo "missing corpus $data (copy prose.jsonl.xz there or set DATA)" >&2; exit 2; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$python" -c "import torch, lighthouse; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    run=runs/h200-$arm
    "$python" -m lighthouse.train --preset "h200-$arm" --out "$run" --data "$data" \
      --max-minutes "$max_minutes" --no-report "${@:2}"
    copy_out "$run"
    ;;
  compare)
    "$python" -m lighthouse.train compare runs/h200-dense runs/h200-lighthouse --out runs/h200-compare
    cat runs/h200-compare/report.md
    if [ -n "${RESULTS_DIR:-}" ]; then mkdir -p "$RESULTS_DIR" && cp -r runs/h200-compare "$RESULTS_DIR/"; fi
    ;;
  *)
    echo "unknown arm $arm (expected dense, lighthouse or compare)" >&2
    exit 2
    ;;
esac
