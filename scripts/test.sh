#!/usr/bin/env bash
# The test suite: C++ (GoogleTest and CLI checks through ctest) and Python
# (pytest, in the project's virtual environment), everything that runs
# without a GPU. GPU suites are labelled `gpu` (ctest) and marked `gpu`
# (pytest); scripts/gpu_check.sh runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
ctest --test-dir build -LE gpu --output-on-failure -j"$(nproc)"
.venv/bin/python -m pytest tests/python -m "not gpu" -q
