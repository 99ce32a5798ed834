#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer (docs/ROBUSTNESS.md).
#
#   scripts/sanitize.sh [CTEST_ARGS...]     # e.g. -R crossbar
#
# Builds build-asan/ (gcc, -DXBAR_SANITIZE=ON, RelWithDebInfo) and runs ctest there. Any ASan or
# UBSan report fails the test that triggered it (halt_on_error); leaks are reported for xbar's own
# programs. Tests that run Python (pytest, PyTorch interop) load the instrumented module or call
# the instrumented executable from an uninstrumented interpreter: they run with libasan preloaded
# and without leak checking (CPython's own allocations are not leaks of ours).
set -euo pipefail
cd "$(dirname "$0")/.."
B=build-asan
cmake -S . -B $B -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXBAR_SANITIZE=ON -DXBAR_BUILD_BENCH=OFF >/dev/null
cmake --build $B -j"${JOBS:-2}"
SUPP=$PWD/scripts/lsan.supp
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_odr_violation=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$SUPP:print_suppressions=0
cd $B
status=0
ctest -j"${JOBS:-2}" --output-on-failure -E "python|interop|robustness" "$@" || status=1
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:detect_odr_violation=0 LD_PRELOAD=$(gcc -print-file-name=libasan.so) \
  ctest -j"${JOBS:-2}" --output-on-failure -R "python|interop|robustness" "$@" || status=1
echo "sanitize.sh: $( [ $status -eq 0 ] && echo clean || echo FAILED ) ($(date -u +%F))"
exit $status
