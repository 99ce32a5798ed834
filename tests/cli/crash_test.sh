#!/usr/bin/env bash
# Determinism and crash safety (docs/ROBUSTNESS.md): the same config and seed give byte-identical
# model.safetensors (training at a fixed thread count), estimate.json/.csv (two runs, 1 and 2
# threads); SIGKILL at random points of compress and faults, each resumed until it finishes, gives
# byte-identical results to an uninterrupted run (compress.json but its wall time), and after every
# kill each result file present is complete (parses). Usage: crash_test.sh PATH/TO/xbar PROJECT_ROOT
set -u
XBAR=$1
ROOT=$2
source "$(dirname "$0")/harness.sh"
CFG="$ROOT/configs/examples/lenet5-train.yaml"
SEED=${CRASH_TEST_SEED:-$(date +%s)}
RANDOM=$SEED
echo "random kill points from CRASH_TEST_SEED=$SEED"

# ---- training is deterministic at a fixed thread count --------------------------------------------
TR=(--set threads=2 --set dataset.train_subset=2000 --set dataset.test_subset=500 --set train.epochs=2)
"$XBAR" train -c "$CFG" -o "$T/t1" "${TR[@]}" >/dev/null 2>"$T/err" || bad "train: $(tail -1 "$T/err")"
"$XBAR" train -c "$CFG" -o "$T/t2" "${TR[@]}" >/dev/null 2>"$T/err" || bad "train again: $(tail -1 "$T/err")"
cmp -s "$T/t1/model.safetensors" "$T/t2/model.safetensors" && cmp -s "$T/t1/config.resolved.yaml" "$T/t2/config.resolved.yaml" &&
  ok "training twice at 2 threads: byte-identical weights" || bad "two trainings differ"
W="$T/t1/model.safetensors"

# ---- estimate: two runs, 1 and 2 threads ----------------------------------------------------------
for n in 1 2; do
  "$XBAR" estimate -c "$CFG" --weights "$W" -o "$T/e$n" --set threads=$n --set estimate.images=20 >/dev/null 2>"$T/err" ||
    bad "estimate threads=$n: $(tail -1 "$T/err")"
done
"$XBAR" estimate -c "$CFG" --weights "$W" -o "$T/e3" --set threads=1 --set estimate.images=20 >/dev/null 2>&1
cmp -s "$T/e1/estimate.json" "$T/e2/estimate.json" && cmp -s "$T/e1/estimate.csv" "$T/e2/estimate.csv" &&
  cmp -s "$T/e1/estimate.json" "$T/e3/estimate.json" && ok "estimate.json and .csv byte-identical across runs and 1 vs 2 threads" ||
  bad "estimate differs: $(diff "$T/e1/estimate.json" "$T/e2/estimate.json" | head -4)"

# complete DIR: every JSON parses and every safetensors file has its full header and data.
complete() {
  "$PY" - "$1" <<'PYEOF'
import json, os, struct, sys
bad = []
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        p = os.path.join(root, f)
        try:
            if f.endswith(".json"):
                json.load(open(p))
            elif f.endswith(".safetensors"):
                b = open(p, "rb").read()
                n, = struct.unpack("<Q", b[:8])
                h = json.loads(b[8:8 + n])
                end = max([v["data_offsets"][1] for k, v in h.items() if k != "__metadata__"] or [0])
                assert len(b) == 8 + n + end, "size"
        except Exception as e:
            bad.append(f"{p}: {e}")
print("\n".join(bad))
PYEOF
}

# kill_and_resume NAME DIR REF_FILE SECONDS_MAX CMD...: starts CMD (which writes DIR), kills it with
# SIGKILL at a random point within 70 % of SECONDS_MAX, checks the files, and repeats with --resume
# (at most three kills; a run that finishes before the first kill starts over) until a run
# finishes; then compares DIR/REF_FILE's name with the uninterrupted run's REF_FILE.
kill_and_resume() {
  local name=$1 dir=$2 ref=$3 max=$4
  shift 4
  local kills=0 extra=() rc finished=0
  for _ in 1 2 3 4 5 6 7 8; do
    "$@" "${extra[@]}" >/dev/null 2>"$T/$name.err" &
    local pid=$!
    # A point within the first 70 % of the uninterrupted run's time (a loaded machine runs slower).
    # After three kills the run is left to finish.
    local ms=$((300 + RANDOM % (max * 700)))
    [ $kills -ge 3 ] || sleep "$(awk -v m=$ms 'BEGIN { printf "%.3f", m / 1000 }')"
    if [ $kills -lt 3 ] && kill -KILL $pid 2>/dev/null; then
      wait $pid 2>/dev/null
      kills=$((kills + 1))
      local broken
      broken=$(complete "$dir")
      [ -z "$broken" ] || bad "$name: half-written file after SIGKILL at ${ms} ms: $broken"
      extra=(--resume)
      continue
    fi
    wait $pid
    rc=$?
    [ $rc -eq 0 ] || { bad "$name: exit $rc: $(tail -1 "$T/$name.err")"; return; }
    if [ $kills -eq 0 ]; then  # it finished before the first kill: start over with a new point
      rm -rf "$dir"
      continue
    fi
    finished=1
    break
  done
  if [ $finished -eq 0 ]; then bad "$name: not finished after $kills kills"; return; fi
  if [ $kills -eq 0 ]; then bad "$name: every run finished before its kill point"; return; fi
  cmp -s "$dir/$(basename "$ref")" "$ref" && ok "$name: killed $kills times at random points, resumed: byte-identical $(basename "$ref")" ||
    bad "$name: resumed result differs from the uninterrupted run"
}

# ---- compress -------------------------------------------------------------------------------------
COMP=(--set threads=1 --set dataset.train_subset=3000 --set dataset.test_subset=500 --set compress.sparsity=0.8
      --set compress.quantize_bits=4 --set compress.admm_rounds=3 --set compress.epochs_per_round=1
      --set compress.retrain_epochs=2 --set compress.rho=0.05)
start=$(date +%s)
"$XBAR" compress -c "$CFG" --weights "$W" -o "$T/c" "${COMP[@]}" >/dev/null 2>"$T/err" || bad "compress: $(tail -1 "$T/err")"
secs=$(( $(date +%s) - start + 1 ))
kill_and_resume compress "$T/ck" "$T/c/model.safetensors" $secs "$XBAR" compress -c "$CFG" --weights "$W" -o "$T/ck" "${COMP[@]}"
# compress.json records the wall time of the (last) run: compared without it.
same_but_seconds() {
  "$PY" -c "
import json, sys
def strip(x):
    if isinstance(x, dict): return {k: strip(v) for k, v in x.items() if k != 'seconds'}
    if isinstance(x, list): return [strip(v) for v in x]
    return x
sys.exit(0 if strip(json.load(open('$1'))) == strip(json.load(open('$2'))) else 1)"
}
same_but_seconds "$T/c/compress.json" "$T/ck/compress.json" && ok "compress: compress.json identical too (but its wall time)" ||
  bad "compress.json differs after kills"

# ---- faults ---------------------------------------------------------------------------------------
FLT=(--set threads=1 --set dataset.test_subset=100 --set faults.samples=4 --set "faults.rates=[1e-3, 1e-2, 5e-2]"
     --set "faults.schemes=[two-column, complementary]" --set faults.refine_steps=1 --set mapping.calibration_images=100)
start=$(date +%s)
"$XBAR" faults -c "$CFG" --weights "$W" -o "$T/f" "${FLT[@]}" >/dev/null 2>"$T/err" || bad "faults: $(tail -1 "$T/err")"
secs=$(( $(date +%s) - start + 1 ))
kill_and_resume faults "$T/fk" "$T/f/faults.json" $secs "$XBAR" faults -c "$CFG" --weights "$W" -o "$T/fk" "${FLT[@]}"
cmp -s "$T/f/faults.csv" "$T/fk/faults.csv" && ok "faults: faults.csv identical too" || bad "faults.csv differs after kills"

echo "$PASSES passed, $FAILS failed"
[ $FAILS -eq 0 ]
