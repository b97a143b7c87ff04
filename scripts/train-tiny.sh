#!/usr/bin/env bash
# The main job on the embedded default: the two-stage recipe (Lighthouse,
# then dense resumption), export, evaluation and report, on the CPU with the
# bundled Jane Austen corpus. Extra arguments go to lighthouse-train.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m lighthouse.train --preset tiny --out runs/tiny "$@"
