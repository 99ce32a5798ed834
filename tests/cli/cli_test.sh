#!/usr/bin/env bash
# End-to-end tests of the xbar command line: files, exit codes, one-line errors, SIGINT and
# SIGKILL + --resume. Usage: cli_test.sh PATH/TO/xbar PROJECT_ROOT
set -u
XBAR=$1
ROOT=$2
source "$(dirname "$0")/harness.sh"

# expect CODE "description" command... : exit code and a single-line stderr for errors.
expect() {
  local code=$1 what=$2
  shift 2
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ "$rc" -ne "$code" ]; then
    bad "$what: exit $rc, expected $code; stderr: $(cat "$T/err")"
    return
  fi
  if [ "$code" -ne 0 ]; then
    local lines
    lines=$(grep -c '^xbar: ' "$T/err")
    if [ "$lines" -ne 1 ] || grep -q -e 'terminate called' -e 'Exception raised from' "$T/err"; then
      bad "$what: error is not one 'xbar:' line: $(cat "$T/err")"
      return
    fi
  fi
  ok "$what"
}
# contains FILE TEXT "description"
contains() { if grep -qF -- "$2" "$1"; then ok "$3"; else bad "$3: '$2' not in $(cat "$1")"; fi; }

SMALL=(--set threads=1 --set dataset.train_subset=2000 --set dataset.test_subset=1000 --set train.epochs=2)
CFG="$ROOT/configs/examples/lenet5-train.yaml"

# ---- usage and config errors: exit 2 -------------------------------------------------------
expect 0 "--version" "$XBAR" --version
contains "$T/out" "xbar " "--version prints the version"
expect 2 "no subcommand" "$XBAR"
expect 2 "train without -c" "$XBAR" train
expect 2 "missing config file" "$XBAR" train -c "$T/nope.yaml"
contains "$T/err" "nope.yaml: file not found" "missing config names the file"
printf 'model:\n  name: lenet5\ntrain:\n  epoch: 3\n' >"$T/typo.yaml"
expect 2 "unknown key" "$XBAR" train -c "$T/typo.yaml" -o "$T/typo"
contains "$T/err" "typo.yaml:4: unknown key 'train.epoch' (did you mean 'train.epochs'?)" "unknown key names file:line"
printf 'train:\n  lr: fast\n' >"$T/type.yaml"
expect 2 "wrong type" "$XBAR" train -c "$T/type.yaml" -o "$T/type"
contains "$T/err" "type.yaml:2: train.lr: expected a number in (0.0, 10.0], got 'fast'" "wrong type names the range"
expect 2 "bad --set" "$XBAR" train -c "$CFG" -o "$T/set" --set train.batch_size=0
contains "$T/err" "--set train.batch_size=0: train.batch_size: expected an integer in [1, 65536]" "--set error"
expect 2 "bad torch_device" "$XBAR" train -c "$CFG" -o "$T/dev" --set torch_device=tpu
expect 2 "dataset.path required" "$XBAR" train -c "$CFG" -o "$T/p" --set dataset.name=cifar10

# ---- docs/USER_GUIDE.md embeds `xbar keys` verbatim ------------------------------------------
expect 0 "keys" "$XBAR" keys
sed -n '/<!-- keys:begin -->/,/<!-- keys:end -->/p' "$ROOT/docs/USER_GUIDE.md" | sed '1d;$d' >"$T/guide_keys"
if cmp -s "$T/out" "$T/guide_keys"; then ok "USER_GUIDE key table matches the schema"; else
  bad "docs/USER_GUIDE.md key table is stale; regenerate it from 'xbar keys'"; fi

# ---- every shipped experiment passes `xbar keys -c` (keys, values and the checks across keys) -----
for f in "$ROOT"/configs/*.yaml "$ROOT"/configs/examples/*.yaml; do
  expect 0 "keys -c ${f#"$ROOT"/}" "$XBAR" keys -c "$f"
done
expect 0 "keys -c with --set" "$XBAR" keys -c "$CFG" --set train.precision=bf16
contains "$T/out" 'precision: "bf16"  # --set train.precision=bf16' "keys -c prints the resolved value and where it came from"
expect 0 "keys -c with train.precision auto" "$XBAR" keys -c "$CFG" --set train.precision=auto
contains "$T/out" '# auto (--set train.precision=auto): this CPU has' "keys -c resolves train.precision auto and says why"
contains "$T/out" 'nesterov: false  # default' "keys -c prints defaults as such"
expect 2 "keys -c: a check across keys" "$XBAR" keys -c "$CFG" --set train.warmup_epochs=50
contains "$T/err" "train.warmup_epochs: expected fewer than train.epochs" "keys -c names the key at fault"
expect 2 "keys --set without -c" "$XBAR" keys --set train.lr=1

# ---- data errors: exit 3 --------------------------------------------------------------------
expect 3 "missing data files" "$XBAR" train -c "$CFG" -o "$T/nodata" --set dataset.name=mnist --set dataset.path="$T"
contains "$T/err" "train-images-idx3-ubyte[.gz]: file not found" "missing data names the file"

# ---- train, eval, inspect -------------------------------------------------------------------
expect 0 "train" "$XBAR" train -c "$CFG" -o "$T/a" "${SMALL[@]}"
for f in model.safetensors train.json config.resolved.yaml checkpoint.safetensors; do
  if [ -f "$T/a/$f" ]; then ok "train wrote $f"; else bad "train did not write $f"; fi
done
if ls "$T/a" | grep -q '\.tmp\.'; then bad "temporary files left behind"; else ok "no temporary files left"; fi
ACC=$(json "$T/a/train.json" "d['test_accuracy']")
if [ "$(json "$T/a/train.json" "int(d['schema_version']==1 and d['model']=='lenet5' and d['epochs']==2 and d['test_accuracy']>0.6)")" = 1 ]; then
  ok "train.json fields (accuracy $ACC)"
else
  bad "train.json: $(cat "$T/a/train.json")"
fi
contains "$T/a/config.resolved.yaml" "  train_subset: 2000" "resolved config records overrides"
contains "$T/a/config.resolved.yaml" "threads: 1" "resolved config records threads"

expect 0 "eval" "$XBAR" eval -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/e" --set dataset.test_subset=1000
if [ "$(json "$T/e/eval.json" "d['test_accuracy']")" = "$ACC" ]; then ok "eval reproduces train's test accuracy"; else
  bad "eval accuracy $(json "$T/e/eval.json" "d['test_accuracy']") != train $ACC"; fi

expect 0 "inspect --json" "$XBAR" inspect "$T/a/model.safetensors" --json
cp "$T/out" "$T/inspect.json"
if [ "$(json "$T/inspect.json" "(len(d['layers']), d['crossbars'], d['weights'], d['metadata']['architecture'])")" = "(5, 9, 61470, 'lenet5')" ]; then
  ok "inspect counts 5 layers, 9 tiles of 128x128, 61470 weights"
else
  bad "inspect: $(json "$T/inspect.json" "(len(d['layers']), d['crossbars'], d['weights'])")"
fi
expect 0 "inspect 32x32" "$XBAR" inspect "$T/a/model.safetensors" --crossbar 32x32 --json
if [ "$(json "$T/out" "[l['crossbars'] for l in d['layers']]")" = "[1, 5, 52, 12, 3]" ]; then ok "inspect 32x32 tiles per layer"; else
  bad "inspect 32x32: $(json "$T/out" "[l['crossbars'] for l in d['layers']]")"; fi
expect 0 "inspect text" "$XBAR" inspect "$T/a/model.safetensors"
contains "$T/out" "fc1" "inspect table lists fc1"
expect 2 "inspect bad --crossbar" "$XBAR" inspect "$T/a/model.safetensors" --crossbar 0x128

# ---- model-file errors: exit 3 --------------------------------------------------------------
expect 3 "missing weights" "$XBAR" eval -c "$CFG" --weights "$T/none.safetensors"
head -c 1000 "$T/a/model.safetensors" >"$T/trunc.safetensors"
expect 3 "truncated weights" "$XBAR" eval -c "$CFG" --weights "$T/trunc.safetensors"
contains "$T/err" "trunc.safetensors: not a valid safetensors file" "truncated weights named"
expect 3 "inspect truncated" "$XBAR" inspect "$T/trunc.safetensors"
printf 'model:\n  name: vgg8\n' >"$T/vgg.yaml"
expect 3 "architecture mismatch" "$XBAR" eval -c "$T/vgg.yaml" --weights "$T/a/model.safetensors"
contains "$T/err" "holds a 'lenet5' model but" "architecture mismatch explained"

# ---- SIGINT: exit 4, resumable ---------------------------------------------------------------
LONG=(--set threads=1 --set dataset.train_subset=12000 --set dataset.test_subset=500 --set train.epochs=4)
wait_for_checkpoint() {  # DIR PID: until the first epoch's checkpoint exists (or the process ends)
  for _ in $(seq 1 3000); do
    [ -f "$1/checkpoint.safetensors" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.01
  done
  return 1
}
"$XBAR" train -c "$CFG" -o "$T/int" "${LONG[@]}" >"$T/int.out" 2>"$T/int.err" &
PID=$!
wait_for_checkpoint "$T/int" $PID
kill -INT $PID
wait $PID
RC=$?
if [ $RC -eq 4 ] && grep -q "continue with --resume" "$T/int.err"; then ok "SIGINT exits 4 with a resume hint"; else
  bad "SIGINT: exit $RC, $(tail -2 "$T/int.err")"; fi
expect 0 "resume after SIGINT" "$XBAR" train -c "$CFG" -o "$T/int" "${LONG[@]}" --resume
expect 2 "resume with another config is refused" "$XBAR" train -c "$CFG" -o "$T/int" "${LONG[@]}" --set train.lr=0.01 --resume

# ---- SIGKILL + --resume gives the same weights as an uninterrupted run -----------------------
expect 0 "uninterrupted reference run" "$XBAR" train -c "$CFG" -o "$T/ref" "${LONG[@]}"
"$XBAR" train -c "$CFG" -o "$T/kill" "${LONG[@]}" >/dev/null 2>&1 &
PID=$!
wait_for_checkpoint "$T/kill" $PID
kill -KILL $PID
wait $PID 2>/dev/null
expect 0 "resume after SIGKILL" "$XBAR" train -c "$CFG" -o "$T/kill" "${LONG[@]}" --resume
FROM=$(json "$T/kill/train.json" "d['resumed_from_epoch']")
if [ "$FROM" -ge 1 ] && [ "$FROM" -lt 4 ]; then ok "resumed from epoch $FROM of 4"; else bad "kill landed outside the run (resumed_from_epoch=$FROM)"; fi
if cmp -s "$T/ref/model.safetensors" "$T/kill/model.safetensors"; then ok "killed + resumed weights are byte-identical"; else
  bad "killed + resumed weights differ from the uninterrupted run"; fi

# ---- compress --------------------------------------------------------------------------------
COMP=(--set threads=1 --set dataset.train_subset=3000 --set dataset.test_subset=1000 --set compress.sparsity=0.8
      --set compress.quantize_bits=4 --set compress.polarize_fragment=8 --set compress.admm_rounds=3
      --set compress.epochs_per_round=1 --set compress.retrain_epochs=2 --set compress.rho=0.05)
expect 2 "compress: 1-bit quantisation refused" "$XBAR" compress -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/cq" --set compress.quantize_bits=1
contains "$T/err" "compress.quantize_bits: expected 0 (float) or 2..16 bits" "1-bit error names the key"
expect 2 "compress: fragment larger than the tile" "$XBAR" compress -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/cq" --set compress.polarize_fragment=200
expect 2 "compress: unknown layer" "$XBAR" compress -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/cq" --set compress.layers.conv7.sparsity=0.5
contains "$T/err" "model lenet5 has no layer 'conv7'" "unknown layer listed"
expect 2 "compress: sparsity 1 refused" "$XBAR" compress -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/cq" --set compress.sparsity=1
if [ -e "$T/cq/admm" ]; then bad "config errors must stop compress before training"; else ok "no training before config errors"; fi

expect 0 "compress" "$XBAR" compress -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/c" "${COMP[@]}"
if [ "$(json "$T/c/compress.json" "int(d['schema_version']==1 and d['constraint_violations']==0 and all(l['constraint_violations']==0 for l in d['layers']) and d['weights_nonzero'] <= 0.21*d['weights_total'] and d['crossbars_compressed'] <= d['crossbars_dense'] and d['accuracy_compressed'] > 0.5)")" = 1 ]; then
  ok "compress.json: constraints hold, 80% pruned ($(json "$T/c/compress.json" "d['accuracy_compressed']"))"
else
  bad "compress.json: $(json "$T/c/compress.json" "{k: v for k, v in d.items() if k != 'layers'}")"
fi
"$XBAR" inspect "$T/c/model.safetensors" --json >"$T/ci.json"
if [ "$(json "$T/ci.json" "d['weights_nonzero']")" = "$(json "$T/c/compress.json" "d['weights_nonzero']")" ]; then
  ok "inspect agrees with compress.json on non-zeros"; else bad "inspect and compress.json disagree"; fi
expect 0 "eval compressed" "$XBAR" eval -c "$CFG" --weights "$T/c/model.safetensors" -o "$T/ce" --set dataset.test_subset=1000
if [ "$(json "$T/ce/eval.json" "d['test_accuracy']")" = "$(json "$T/c/compress.json" "d['accuracy_compressed']")" ]; then
  ok "eval reproduces the compressed accuracy"; else bad "eval of compressed model differs from compress.json"; fi
cp "$T/c/model.safetensors" "$T/c_first.safetensors"
expect 0 "compress --resume of a finished run" "$XBAR" compress -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/c" "${COMP[@]}" --resume
if cmp -s "$T/c/model.safetensors" "$T/c_first.safetensors"; then ok "resumed finished compress gives the same weights"; else bad "resumed compress differs"; fi
"$XBAR" compress -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/ck" "${COMP[@]}" >/dev/null 2>&1 &
PID=$!
for _ in $(seq 1 3000); do
  [ -f "$T/ck/admm/checkpoint.safetensors" ] && break
  kill -0 $PID 2>/dev/null || break
  sleep 0.01
done
kill -KILL $PID
wait $PID 2>/dev/null
expect 0 "compress resume after SIGKILL" "$XBAR" compress -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/ck" "${COMP[@]}" --resume
if cmp -s "$T/ck/model.safetensors" "$T/c_first.safetensors"; then ok "killed + resumed compress gives byte-identical weights"; else
  bad "killed + resumed compress differs from the uninterrupted run"; fi
expect 2 "compress resume with other settings refused" "$XBAR" compress -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/ck" "${COMP[@]}" --set compress.retrain_epochs=3 --resume

# ---- simulate --------------------------------------------------------------------------------
SIM=(--set threads=1 --set dataset.train_subset=400 --set dataset.test_subset=200 --set simulate.batch_size=100)
expect 0 "simulate lossless" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/s" "${SIM[@]}"
if [ "$(json "$T/s/simulate.json" "int(d['schema_version']==1 and d['accuracy']==d['accuracy_quantized'] and all(l['lossless'] and l['tiles']>0 and l['adc_conversions']>0 for l in d['layers']))")" = 1 ]; then
  ok "lossless simulation: every layer lossless ($(json "$T/s/simulate.json" "d['accuracy']"))"; else bad "simulate.json: $(cat "$T/s/simulate.json" | head -c 600)"; fi
# Statistics on the first 50 images only: the other 150 run on the fast path (exact float32 GEMMs)
# instead of the statistics path (the float64 reference GEMM); both exact, so the accuracy must match.
expect 0 "simulate with statistics on 50 images" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/s50" "${SIM[@]}" \
  --set simulate.stats_images=50
if [ "$(json "$T/s50/simulate.json" "d['accuracy']")" = "$(json "$T/s/simulate.json" "d['accuracy']")" ] &&
   [ "$(json "$T/s50/simulate.json" "(d['stats_images'], d['test_images'], d['adc_conversions'] * 4 == $(json "$T/s/simulate.json" "d['adc_conversions']"))")" = "(50, 200, True)" ]; then
  ok "statistics from the first 50 images: same accuracy, a quarter of the conversions"; else bad "stats_images=50: $(head -c 400 "$T/s50/simulate.json")"; fi
expect 0 "simulate with read noise" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sn1" "${SIM[@]}" \
  --set device.read_noise_sigma=0.05 --set mapping.adc_bits=6 --set mapping.adc_range=calibrated
expect 0 "the same at another batch size and thread count" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" \
  -o "$T/sn2" "${SIM[@]}" --set device.read_noise_sigma=0.05 --set mapping.adc_bits=6 --set mapping.adc_range=calibrated \
  --set simulate.batch_size=30 --set threads=2
cmp -s "$T/sn1/simulate.json" "$T/sn2/simulate.json" && ok "simulate.json byte-identical across batch size and threads" ||
  bad "simulate.json differs with batch size / threads: $(diff "$T/sn1/simulate.json" "$T/sn2/simulate.json" | head -4)"
expect 0 "simulate polarized on the polarised model" "$XBAR" simulate -c "$CFG" --weights "$T/c/model.safetensors" -o "$T/sp" "${SIM[@]}" --set mapping.scheme=polarized
if [ "$(json "$T/sp/simulate.json" "int(d['scheme']=='polarized' and d['accuracy']==d['accuracy_quantized'])")" = 1 ]; then
  ok "polarized scheme exact on a polarised model"; else bad "polarized simulate: $(json "$T/sp/simulate.json" "(d['accuracy'], d['accuracy_quantized'])")"; fi
expect 3 "polarized scheme on a dense model" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" "${SIM[@]}" --set mapping.scheme=polarized
contains "$T/err" "is not polarised" "non-polarised layer explained"
expect 2 "unknown scheme" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" --set mapping.scheme=three-column
contains "$T/err" "expected one of two-column, two-crossbar, offset, polarized, complementary" "valid schemes listed"
expect 2 "ADC bits out of range" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" --set mapping.adc_bits=33
expect 2 "fault rate out of range" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" --set faults.rate=1.5
expect 2 "exact IR drop on arrays too large for it" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" \
  --set device.wire_resistance_ohm=1 --set device.ir_drop_model=exact --set mapping.crossbar_rows=256 --set mapping.crossbar_cols=256
contains "$T/err" "device.ir_drop_model: exact solves arrays of at most 16384 cells, not 256x256; use fast" "IR-drop model error names the key"
expect 0 "simulate with IR drop" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sir" "${SIM[@]}" \
  --set device.r_on_ohm=1e4 --set device.wire_resistance_ohm=1
if [ "$(json "$T/sir/simulate.json" "int(all(0.3 < l['read_current_ratio'] < 1 and not l['lossless'] for l in d['layers']))")" = 1 ]; then
  ok "IR drop lowers every layer's read current ($(json "$T/sir/simulate.json" "[round(l['read_current_ratio'], 3) for l in d['layers']]"))"
else bad "IR drop: $(json "$T/sir/simulate.json" "[(l['read_current_ratio'], l['lossless']) for l in d['layers']]")"; fi
expect 2 "tile of zero rows" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" --set mapping.crossbar_rows=0
expect 2 "absurd tile" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" --set mapping.crossbar_cols=100000000
printf 'crossbar,row,col,type\n0,1,2,SA3\n' >"$T/fm.csv"
expect 3 "bad fault map" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" "${SIM[@]}" --set faults.map="$T/fm.csv"
contains "$T/err" "fm.csv:2: unknown fault type 'SA3'" "fault map line named"
expect 0 "simulate with faults" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sf" "${SIM[@]}" --set faults.rate=0.01
if [ "$(json "$T/sf/simulate.json" "int(d['stuck_on_cells'] > 4*d['stuck_off_cells'] > 0 and d['accuracy'] < d['accuracy_quantized'])")" = 1 ]; then
  ok "1% stuck-at faults at 1:5.2 degrade two-column"; else bad "faults: $(json "$T/sf/simulate.json" "(d['stuck_off_cells'], d['stuck_on_cells'], d['accuracy'])")"; fi
expect 0 "simulate with faults, placed on them" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sp" "${SIM[@]}" \
  --set faults.rate=0.01 --set faults.placement=on
if [ "$(json "$T/sp/placement.json" "int(d['harm_after'] < 0.5 * d['harm_before'] and all(sorted(t['word_lines']) == sorted(set(t['word_lines'])) and min(t['word_lines']) >= 0 and min(t['column_groups']) >= 0 for l in d['layers'] for t in l['tiles']) and sum(len(l['tiles']) for l in d['layers']) > 0)")" = 1 ] &&
   [ "$(json "$T/sp/simulate.json" "int(d['placement'] and d['stuck_on_cells'] == $(json "$T/sf/simulate.json" "d['stuck_on_cells']"))")" = 1 ]; then
  ok "placement.json: permutations per crossbar, harm more than halved on the same chip"; else bad "placement: $(head -c 400 "$T/sp/placement.json")"; fi
expect 2 "simulate: placement both" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" --set faults.rate=0.01 \
  --set faults.placement=both
contains "$T/err" "faults.placement: 'both' (placed and unplaced curves) is for xbar faults" "placement both refused by simulate"
expect 2 "simulate: placement with IR drop" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/sx" \
  --set faults.rate=0.01 --set faults.placement=on --set device.wire_resistance_ohm=1

# A long simulation shows progress and stops on SIGINT with exit 4, writing no results.
"$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/si" --set threads=1 --set dataset.train_subset=400 \
  --set simulate.batch_size=20 --set faults.rate=0.01 --set train.log_interval=0 >/dev/null 2>"$T/si.err" &
PID=$!
for _ in $(seq 1 3000); do grep -q "simulate [0-9]" "$T/si.err" 2>/dev/null && break; sleep 0.01; done
kill -INT $PID
wait $PID
RC=$?
if [ "$RC" -eq 4 ] && [ ! -e "$T/si/simulate.json" ] && grep -q "interrupted after" "$T/si.err"; then
  ok "simulate: progress, SIGINT -> exit 4, no simulate.json"; else bad "simulate SIGINT: exit $RC, $(tail -2 "$T/si.err")"; fi

# ---- faults: Monte Carlo campaigns (issue 11) ---------------------------------------------------
FLT=(--set threads=1 --set dataset.train_subset=400 --set dataset.test_subset=100 --set faults.samples=3
     --set "faults.rates=[1e-3, 1e-2, 5e-2]" --set "faults.schemes=[two-column, complementary]" --set faults.refine_steps=2)
expect 0 "faults campaign" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/f1" "${FLT[@]}"
if [ "$(json "$T/f1/faults.json" "int(d['schema_version']==1 and d['samples']==3 and len(d['curves'])==2 and all(len(p['accuracies'])==3 and p['ci95'][0]<=p['accuracy_mean']<=p['ci95'][1] for c in d['curves'] for p in c['points']) and d['curves'][1]['scheme']=='complementary' and all(c['points'][0]['accuracy_mean']>=c['points'][-1]['accuracy_mean'] for c in d['curves']))")" = 1 ]; then
  ok "faults.json: curves, points with samples and confidence intervals"; else bad "faults.json: $(head -c 800 "$T/f1/faults.json")"; fi
[ "$(wc -l < "$T/f1/faults.csv")" -ge 7 ] && [ ! -e "$T/f1/faults.partial.json" ] && ok "faults.csv written, checkpoint removed" ||
  bad "faults.csv: $(cat "$T/f1/faults.csv")"
[ "$(grep -c '<polyline' "$T/f1/faults.svg")" -eq 2 ] && ! grep -q '<script' "$T/f1/faults.svg" && ok "faults.svg: one curve per scheme" ||
  bad "faults.svg: $(head -c 300 "$T/f1/faults.svg")"
expect 0 "faults, placed and unplaced" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fp" "${FLT[@]}" \
  --set faults.placement=both
if [ "$(json "$T/fp/faults.json" "int([c['placement'] for c in d['curves']] == [False, True, False, True] and [c['points'] for c in d['curves'][0::2]] == $(json "$T/f1/faults.json" "[c['points'] for c in d['curves']]") and all('vs_unplaced' in r for r in d['tolerable_ratios'][1::2]))")" = 1 ] &&
   [ "$(json "$T/fp/faults.timing.json" "int(all(c['placed_chips'] > 0 and c['placement_seconds_per_chip'] > 0 for c in d['curves'][1::2]))")" = 1 ]; then
  ok "faults.placement both: a placed curve after each unplaced one (which equals the plain campaign)"; else
  bad "placed faults.json: $(head -c 600 "$T/fp/faults.json")"; fi
expect 0 "faults again, two threads" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/f2" "${FLT[@]}" --set threads=2
cmp -s "$T/f1/faults.json" "$T/f2/faults.json" && ok "faults.json byte-identical across runs and thread counts" ||
  bad "faults.json differs: $(diff "$T/f1/faults.json" "$T/f2/faults.json" | head -4)"
# SIGINT after the first points: exit 4, a checkpoint; --resume finishes with the same file.
"$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/f3" "${FLT[@]}" --set train.log_interval=0 >/dev/null 2>"$T/f3.err" &
PID=$!
for _ in $(seq 1 3000); do [ -e "$T/f3/faults.partial.json" ] && break; sleep 0.01; done
kill -INT $PID
wait $PID
RC=$?
if [ "$RC" -eq 4 ] && [ -e "$T/f3/faults.partial.json" ] && [ ! -e "$T/f3/faults.json" ] && grep -q "xbar faults --resume continues" "$T/f3.err"; then
  ok "faults: SIGINT -> exit 4, checkpoint kept"; else
  bad "faults SIGINT: exit $RC, $(tail -2 "$T/f3.err")"; fi
expect 2 "faults: resume with other settings" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/f3" "${FLT[@]}" \
  --set faults.samples=4 --resume
contains "$T/err" "written with other settings" "changed settings refused on resume"
expect 0 "faults --resume" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/f3" "${FLT[@]}" --resume
cmp -s "$T/f1/faults.json" "$T/f3/faults.json" && contains "$T/err" "points resumed" "resumed campaign equals the uninterrupted one" ||
  bad "resumed faults.json differs: $(diff "$T/f1/faults.json" "$T/f3/faults.json" | head -4)"
# Another axis of the hardware description: variation sigma at a fixed fault rate.
expect 0 "faults along device.variation_sigma" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fv" \
  --set threads=1 --set dataset.train_subset=400 --set dataset.test_subset=100 --set faults.samples=2 --set faults.rate=1e-3 \
  --set faults.axis=device.variation_sigma --set "faults.axis_values=[0.05, 0.3]" --set faults.refine_steps=1
if [ "$(json "$T/fv/faults.json" "int(d['axis']=='device.variation_sigma' and [p['value'] for p in d['curves'][0]['points'] if not p['refined']]==[0.05, 0.3] and all(p['fault_rate']==1e-3 for p in d['curves'][0]['points']) and 'tolerable_value' in d['curves'][0] and d['curves'][0]['points'][0]['accuracy_mean'] > d['curves'][0]['points'][-1]['accuracy_mean'])")" = 1 ]; then
  ok "faults.json along a device axis"; else bad "axis faults.json: $(head -c 600 "$T/fv/faults.json")"; fi
expect 2 "faults: axis not a numeric hardware key" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fx" \
  --set faults.axis=mapping.scheme --set "faults.axis_values=[1]"
contains "$T/err" "faults.axis: expected faults.rate or a numeric" "non-numeric axis named"
expect 2 "faults: axis value out of range" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fx" \
  --set faults.axis=device.variation_sigma --set "faults.axis_values=[0.1, 20]"
expect 2 "faults: decreasing rates" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fx" --set "faults.rates=[1e-2, 1e-3]"
contains "$T/err" "faults.rates: expected increasing rates" "decreasing grid named"
expect 2 "faults: empty grid" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fx" --set "faults.rates=[]"
expect 2 "faults: rate above 1" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fx" --set "faults.rates=[0.1, 2]"
expect 2 "faults: samples < 1" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fx" --set faults.samples=0
expect 2 "faults: unknown scheme" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fx" --set "faults.schemes=[two-colum]"
contains "$T/err" "faults.schemes" "unknown scheme's key named"
expect 2 "faults: faults.rate set" "$XBAR" faults -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/fx" --set faults.rate=0.01

# ---- estimate --------------------------------------------------------------------------------
expect 0 "estimate isaac peak" "$XBAR" estimate -c "$CFG" -o "$T/e0" --preset isaac
if [ "$(json "$T/e0/estimate.json" "int(d['schema_version']==1 and d['preset']=='isaac' and abs(d['power_w']/65.8-1)<0.03 and abs(d['area_mm2']/85.4-1)<0.03)")" = 1 ]; then
  ok "estimate without weights: ISAAC chip totals"; else bad "estimate.json: $(head -c 400 "$T/e0/estimate.json")"; fi
expect 0 "estimate dense on isaac" "$XBAR" estimate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/e1" "${SIM[@]}" --set estimate.images=20 --preset isaac
expect 0 "estimate compressed on isaac" "$XBAR" estimate -c "$CFG" --weights "$T/c/model.safetensors" -o "$T/e2" "${SIM[@]}" --set estimate.images=20 --preset isaac
if [ "$("$PY" -c "
import json; a=json.load(open('$T/e1/estimate.json')); b=json.load(open('$T/e2/estimate.json'))
print(int(len(a['layers'])==5 and all(l['cycles']>0 and l['energy_nj']>0 for l in a['layers'])
          and b['model']['crossbars'] < a['model']['crossbars'] and b['model']['energy_per_inference_uj'] < a['model']['energy_per_inference_uj']))")" = 1 ]; then
  ok "compressed model needs fewer crossbars and less energy"; else bad "estimate: $(json "$T/e1/estimate.json" "d['model']") vs $(json "$T/e2/estimate.json" "d['model']")"; fi
[ "$(wc -l < "$T/e1/estimate.csv")" -eq 6 ] && ok "estimate.csv has one row per layer" || bad "estimate.csv: $(cat "$T/e1/estimate.csv")"
expect 0 "estimate forms on the polarised model" "$XBAR" estimate -c "$CFG" --weights "$T/c/model.safetensors" -o "$T/e3" "${SIM[@]}" --set estimate.images=20 --preset forms
expect 3 "forms on a dense model" "$XBAR" estimate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/ex" "${SIM[@]}" --preset forms
expect 3 "forms without zero-skipping (the planner) on a dense model" "$XBAR" estimate -c "$CFG" \
  --weights "$T/a/model.safetensors" -o "$T/ex" --preset forms --set arch.zero_skipping=false
# Without zero-skipping the estimate reads no data: a dataset path with nothing in it is not an error.
expect 0 "estimate without zero-skipping reads no data" "$XBAR" estimate -c "$CFG" --weights "$T/a/model.safetensors" \
  -o "$T/e4" --set dataset.path="$T/nowhere" --preset isaac
if [ "$(python3 -c "
import json; a=json.load(open('$T/e1/estimate.json')); b=json.load(open('$T/e4/estimate.json'))
print(int(a['model']==b['model'] and a['layers']==b['layers']))")" = 1 ]; then
  ok "the same estimate either way"; else bad "estimate with and without data differ"; fi
expect 0 "estimate with IR drop" "$XBAR" estimate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/eir" "${SIM[@]}" \
  --preset isaac --set device.r_on_ohm=1e4 --set device.wire_resistance_ohm=1
if [ "$("$PY" -c "
import json; a=json.load(open('$T/e1/estimate.json')); b=json.load(open('$T/eir/estimate.json')); s=json.load(open('$T/sir/simulate.json'))
x=lambda d: sum(l['energy_breakdown_nj']['crossbar'] for l in d['layers'])
print(int(x(b) < x(a) and all(l['read_current_ratio'] < 1 for l in b['layers']) and b['model']['crossbars'] == a['model']['crossbars']))")" = 1 ]; then
  ok "IR drop lowers the crossbars' read energy in the estimate"; else bad "estimate with IR drop: $(json "$T/eir/estimate.json" "[l['read_current_ratio'] for l in d['layers']]")"; fi
expect 0 "estimate with IR drop on simulate's chip" "$XBAR" estimate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/eir2" \
  "${SIM[@]}" --set device.r_on_ohm=1e4 --set device.wire_resistance_ohm=1
if [ "$("$PY" -c "
import json; e=json.load(open('$T/eir2/estimate.json')); s=json.load(open('$T/sir/simulate.json'))
print(int([round(l['read_current_ratio'], 12) for l in e['layers']] == [round(l['read_current_ratio'], 12) for l in s['layers']]))")" = 1 ]; then
  ok "simulate and estimate see the same IR drop"; else bad "IR drop differs: $(json "$T/eir2/estimate.json" "[l['read_current_ratio'] for l in d['layers']]")"; fi
expect 2 "unknown preset" "$XBAR" estimate -c "$CFG" -o "$T/ex" --preset tpu
contains "$T/err" "expected one of generic, isaac, forms, islped19" "valid presets listed"
expect 2 "an old duplicate key names its replacement" "$XBAR" estimate -c "$CFG" -o "$T/ex" --set arch.adc_bits=6
contains "$T/err" "arch.adc_bits: replaced by mapping.adc_bits" "replacement named"
expect 2 "calibration_batches is replaced" "$XBAR" simulate -c "$CFG" --weights "$T/a/model.safetensors" -o "$T/ex" --set mapping.calibration_batches=2
contains "$T/err" "replaced by mapping.calibration_images" "calibration key replacement named"

# ---- one hardware description: simulate, estimate and compress describe the same crossbars ----
# For every preset and every scheme, per layer: crossbars, cells, ADC bits and ADC conversions per
# image agree between simulate.json and estimate.json, and compress.json counts the same crossbars.
# The polarised, 4-bit compressed model maps under every scheme (forms' 16-bit inputs included).
HW=(--set threads=1 --set dataset.train_subset=200 --set dataset.test_subset=20 --set simulate.batch_size=20
    --set mapping.calibration_images=100 --set estimate.images=20)
HW_OK=0
for preset in generic isaac forms islped19; do
  for scheme in two-column two-crossbar offset polarized complementary; do
    d="$T/hw-$preset-$scheme"
    "$XBAR" simulate -c "$CFG" --weights "$T/c/model.safetensors" -o "$d/s" "${HW[@]}" --set arch.preset=$preset \
      --set mapping.scheme=$scheme >/dev/null 2>"$d.err" &&
    "$XBAR" estimate -c "$CFG" --weights "$T/c/model.safetensors" -o "$d/e" "${HW[@]}" --set arch.preset=$preset \
      --set mapping.scheme=$scheme >/dev/null 2>>"$d.err" &&
    "$XBAR" compress -c "$CFG" --weights "$T/c/model.safetensors" -o "$d/c" "${HW[@]}" --set arch.preset=$preset \
      --set mapping.scheme=$scheme --set compress.admm_rounds=0 --set compress.retrain_epochs=0 >/dev/null 2>>"$d.err"
    if [ $? -ne 0 ]; then bad "hardware description $preset/$scheme: $(tail -1 "$d.err")"; continue; fi
    verdict=$("$PY" -c "
import json
s = json.load(open('$d/s/simulate.json')); e = json.load(open('$d/e/estimate.json')); c = json.load(open('$d/c/compress.json'))
bad = []
for a, b, k in zip(s['layers'], e['layers'], c['layers']):
    if a['name'] != b['name'] or a['name'] != k['name']: bad.append('layer order')
    for key in ('crossbars', 'cells', 'adc_bits'):
        if a[key] != b[key]: bad.append('%s %s: simulate %s, estimate %s' % (a['name'], key, a[key], b[key]))
    if abs(a['adc_conversions_per_image'] - b['adc_conversions_all_planes']) > 1e-9 * max(1, a['adc_conversions_per_image']):
        bad.append('%s adc_conversions: simulate %s, estimate %s' % (a['name'], a['adc_conversions_per_image'], b['adc_conversions_all_planes']))
    if a['input_cycles'] != b['input_cycles']: bad.append('%s input_cycles' % a['name'])
    if k['crossbars'] != a['crossbars']: bad.append('%s compress crossbars %s vs %s' % (a['name'], k['crossbars'], a['crossbars']))
if len(s['layers']) != len(e['layers']) or len(s['layers']) != 5: bad.append('layer count')
if c['crossbars_compressed'] != s['crossbars'] or e['model']['crossbars'] != s['crossbars']: bad.append('totals')
print('; '.join(bad) if bad else 'same')
")
    if [ "$verdict" = same ]; then HW_OK=$((HW_OK + 1)); else bad "hardware description $preset/$scheme differs: $verdict"; fi
  done
done
[ "$HW_OK" -eq 20 ] && ok "simulate, estimate and compress describe the same chip for 4 presets x 5 schemes"
grep -q "weight_bits: 16  # preset isaac" "$T/hw-isaac-offset/s/config.resolved.yaml" && grep -q 'scheme: "offset"  # --set' "$T/hw-isaac-offset/s/config.resolved.yaml" &&
  ok "config.resolved.yaml marks preset and user values" || bad "resolved config: $(grep -A4 '^mapping' "$T/hw-isaac-offset/s/config.resolved.yaml")"
printf 'components:\n  flux-capacitor: {power_mw: 1, area_mm2: 1, source: x}\n' > "$T/tech.yaml"
expect 2 "unknown component" "$XBAR" estimate -c "$CFG" -o "$T/ex" --set arch.tech="$T/tech.yaml"
contains "$T/err" "unknown component 'flux-capacitor'" "component named"

echo "$PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
