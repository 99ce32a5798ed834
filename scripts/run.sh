#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install dependencies, build, run the main job on the
# default data (Fashion-MNIST). Extra arguments go to make, e.g. CONFIG=configs/examples/vgg8-fmnist.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make run "$@"
