#!/usr/bin/env bash
# Installs every build and run dependency of xbar from Debian 12 packages.
# Idempotent: packages already present are skipped, so a second run costs seconds.
# Uses sudo only when not run as root.
set -euo pipefail

PACKAGES=(
  build-essential make cmake ccache pkg-config
  libtorch-dev            # LibTorch 1.13.1 (CPU)
  libgloo-dev             # headers of the Gloo backend LibTorch's c10d ships: multi-process training
  libopenblas0-openmp     # fast BLAS for LibTorch's GEMMs (reference BLAS is ~30x slower)
  dataset-fashion-mnist   # default data: /usr/share/datasets/fashion-mnist
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin  # mpirun -np N xbar faults: a campaign across processes or machines
  libonnx-dev libprotobuf-dev  # ONNX import and export (model.onnx)
  libdnnl-dev             # oneDNN headers (LibTorch already runs on its library): exact int8 convolutions
  pybind11-dev python3-dev     # the Python module (import xbar)
  python3-torch           # the Python module's tensors; tests: PyTorch loads our state dicts and we load its
  python3-onnx python3-torchvision python3-pytest  # tests only: real ONNX exports, the pytest suite
  chromium fonts-dejavu-core  # tests only: renders report.html headless (no network, no console errors)
  clang-14 libclang-rt-14-dev libomp-14-dev  # tests only: libFuzzer harnesses with ASan/UBSan (scripts/fuzz.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# LibTorch links against the generic libblas.so.3; make sure the alternative points at OpenBLAS.
blas_alt=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/{print $2}')
case "$blas_alt" in
  *openblas*) ;;
  *)
    cand=$(update-alternatives --list libblas.so.3-x86_64-linux-gnu 2>/dev/null | grep openblas | head -n1 || true)
    if [ -n "$cand" ]; then
      SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
      $SUDO update-alternatives --set libblas.so.3-x86_64-linux-gnu "$cand"
      echo "install-deps: libblas.so.3 -> $cand"
    fi
    ;;
esac
