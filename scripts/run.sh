#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install dependencies, build, run the main job -- the
# default experiment end to end on Fashion-MNIST (`xbar run -c configs/default.yaml`: train,
# compress, simulate, faults, estimate, report.html). Extra arguments go to make, e.g.
# CONFIG=configs/examples/fault-tolerance.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make run "$@"
