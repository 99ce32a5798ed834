#!/usr/bin/env bash
# Fuzzes xbar's readers of outside input with libFuzzer, AddressSanitizer and UBSan (docs/ROBUSTNESS.md).
#
#   scripts/fuzz.sh [RUNS] [HARNESS...]    # default: 1000000 executions of each of the six harnesses
#
# Builds build-fuzz/ with clang-14 (-DXBAR_FUZZ=ON), then runs each harness over a scratch copy of its
# seed corpus (fuzz/corpus/<name>/) for RUNS executions. A crash, sanitizer report, leak, timeout
# (10 s per input) or out-of-memory (4 GiB) stops that harness: the input is saved as
# build-fuzz/findings/<name>-*, and the script exits 1. One summary line per harness goes to stdout
# and build-fuzz/fuzz-summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1000000}
shift || true
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(config idx cifar safetensors onnx fault_map)
B=build-fuzz
for tool in clang-14 clang++-14; do
  command -v $tool >/dev/null || { echo "fuzz.sh: $tool not found; run scripts/install-deps.sh" >&2; exit 2; }
done
CC=clang-14 CXX=clang++-14 cmake -S . -B $B -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXBAR_FUZZ=ON -DXBAR_BUILD_TESTS=OFF \
  -DXBAR_BUILD_BENCH=OFF -DXBAR_BUILD_PYTHON=OFF -DXBAR_WITH_MPI=OFF >/dev/null
targets=()
for n in "${NAMES[@]}"; do targets+=(--target "fuzz_$n"); done
cmake --build $B -j"${JOBS:-2}" "${targets[@]}" >/dev/null
mkdir -p $B/findings
: >$B/fuzz-summary.txt
status=0
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for n in "${NAMES[@]}"; do
  work=$(mktemp -d)
  log=$B/fuzz_$n.log
  start=$(date +%s.%N)
  rc=0
  OMP_NUM_THREADS=1 $B/fuzz/fuzz_$n "$work" "fuzz/corpus/$n" -runs="$RUNS" -timeout=10 -rss_limit_mb=4096 \
    -max_len=65536 -seed=1 -print_final_stats=1 -artifact_prefix="$B/findings/$n-" </dev/null >"$log" 2>&1 || rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  corpus=$(ls "$work" | wc -l)
  rm -rf "$work"
  if [ $rc -eq 0 ]; then result=clean; else result="FINDING (exit $rc, see $log)"; status=1; fi
  line=$(printf '%-12s %9s executions  %7s s  %8s exec/s  corpus %5s  %s' "$n" "$execs" "$secs" \
    "$(awk -v e="$execs" -v s="$secs" 'BEGIN { printf "%.0f", e / (s > 0 ? s : 1) }')" "$corpus" "$result")
  echo "$line" | tee -a $B/fuzz-summary.txt
done
exit $status
