#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install dependencies, build, run the whole test suite
# (ctest), then a short smoke of each fuzzing harness.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make test "$@"
# A short smoke of every fuzzing harness (clang, ASan, UBSan; the full runs: docs/ROBUSTNESS.md).
bash scripts/fuzz.sh "${FUZZ_RUNS:-3000}"
