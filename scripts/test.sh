#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install dependencies, build, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make test "$@"
