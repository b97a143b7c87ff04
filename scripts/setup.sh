#!/usr/bin/env bash
# Installs what Lighthouse needs on a fresh Debian machine, then builds and
# installs the Python package (which compiles the op library against the
# installed torch) into the project's virtual environment .venv, never into
# the system's or a shared interpreter. Safe to run again: each step is
# skipped or fast when done. The other scripts run .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v g++ >/dev/null || missing+=(g++)
[ -f /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev libgmock-dev)
[ -f /usr/include/nlohmann/json.hpp ] || missing+=(nlohmann-json3-dev)
# A venv needs ensurepip, which Debian ships separately (python3-venv).
if [ ! -x .venv/bin/python ] && ! python3 -c "import ensurepip, venv" 2>/dev/null; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -r requirements-ci.txt
.venv/bin/python -m pip install -q --no-build-isolation .
