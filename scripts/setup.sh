#!/usr/bin/env bash
# Installs what Lighthouse needs on a fresh Debian machine, then builds and
# installs the Python package (which compiles the op library against the
# installed torch). Safe to run again: each step is skipped or fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v g++ >/dev/null || missing+=(g++)
[ -f /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev libgmock-dev)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${missing[@]}"
fi

python3 -m pip install -q -r requirements-ci.txt
python3 -m pip install -q --no-build-isolation .
