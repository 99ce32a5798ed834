#!/usr/bin/env bash
# xbar run end to end on a small version of configs/default.yaml: every stage's files, results.json,
# skipping finished stages, a changed key redoing its stage and the later ones, --only/--until/
# --force, resuming after SIGKILL and SIGTERM with the results of an uninterrupted run, imported
# weights, errors; then the report in headless Chromium (tests/report/check_report.py; screenshot
# kept in ARTIFACT_DIR). Usage: run_test.sh PATH/TO/xbar PROJECT_ROOT ARTIFACT_DIR
set -u
XBAR=$1
ROOT=$2
ART=$3
source "$(dirname "$0")/harness.sh"

CFG="$ROOT/configs/default.yaml"
SMALL=(--set threads=2 --set dataset.train_subset=1500 --set dataset.test_subset=300 --set train.epochs=1
       --set compress.admm_rounds=2 --set compress.epochs_per_round=1 --set compress.retrain_epochs=2
       --set mapping.calibration_images=200 --set faults.samples=2 --set faults.test_images=150
       --set "faults.rates=[1e-3, 1e-2, 5e-2]" --set faults.refine_steps=1 --set estimate.images=20)

run() { "$XBAR" run -c "$CFG" "${SMALL[@]}" "$@" >"$T/out" 2>"$T/err"; }
# status DIR STAGE: the stage's status in DIR/results.json
status() { json "$1/results.json" "d['stages'].get('$2', {}).get('status', 'absent')"; }
expect_status() {
  local got
  got=$(status "$1" "$2")
  if [ "$got" = "$3" ]; then ok "$4: $2 $3"; else bad "$4: $2 is '$got', expected '$3'"; fi
}
# Results without the bookkeeping (stage status and times, provenance): what must not change.
# Paths name the run directory: compared as RUN; wall times ("seconds") are left out.
results_core() {
  "$PY" - "$1" <<'PYEOF'
import json, sys
def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in ("seconds", "stages", "provenance")}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x
d = json.load(open(sys.argv[1] + "/results.json"))
print(json.dumps(strip(d), sort_keys=True).replace(sys.argv[1], "RUN"))
PYEOF
}

# ---- the whole pipeline -----------------------------------------------------------------------
if run -o "$T/a"; then ok "xbar run"; else bad "xbar run: exit $?: $(tail -3 "$T/err")"; fi
for f in train/model.safetensors train/train.json compress/model.safetensors compress/compress.json \
         simulate/complementary/simulate.json simulate/polarized/simulate.json faults/faults.json faults/faults.csv \
         estimate/own/estimate.json estimate/isaac/estimate.json estimate/forms/estimate.json results.json report.html \
         run.log report/faults.svg report/faults.csv report/layer_latency.csv config.resolved.yaml; do
  if [ -s "$T/a/$f" ]; then ok "writes $f"; else bad "missing $f"; fi
done
[ "$(json "$T/a/results.json" "len(d['simulate_schemes'])")" = 5 ] && ok "five schemes simulated" || bad "simulate_schemes"
[ "$(json "$T/a/results.json" "sorted(d['estimate_presets'])")" = "['forms', 'isaac']" ] && ok "ISAAC and FORMS estimates" \
  || bad "estimate_presets: $(json "$T/a/results.json" "list(d['estimate_presets'])")"
[ "$(json "$T/a/results.json" "len(d['faults']['curves'])")" = 4 ] && ok "faults: 2 models x 2 schemes" || bad "faults curves"
[ "$(json "$T/a/results.json" "d['schema_version'] == 1 and d['train']['test_accuracy'] > 0.3 and d['compress']['compression_ratio'] > 5")" = True ] \
  && ok "results.json sections" || bad "results.json content"
expect_status "$T/a" train ran "first run"
grep -q "^== faults: running" "$T/a/run.log" && ok "run.log has the stage headers" || bad "run.log: $(head -3 "$T/a/run.log")"
[ "$(grep -c '' "$T/out")" -eq 5 ] && grep -q "^report: $T/a/report.html" "$T/out" && ok "five-line summary on stdout" \
  || bad "summary: $(cat "$T/out")"

# ---- the report in a real browser -------------------------------------------------------------
if "$PY" "$ROOT/tests/report/check_report.py" "$T/a/report.html" "$ART" faults layer_sparsity layer_crossbars \
     energy_breakdown area_breakdown layer_latency >"$T/browser" 2>&1; then
  ok "report renders in headless Chromium ($(grep -c '^ok' "$T/browser") checks; screenshot $ART/report.png)"
else
  bad "report in Chromium: $(grep FAIL "$T/browser" | head -5)"
fi

# ---- skipping, changed keys, --only / --until / --force -------------------------------------
before=$(results_core "$T/a")
if run -o "$T/a"; then ok "second run"; else bad "second run: $(tail -2 "$T/err")"; fi
for s in train compress simulate faults estimate report; do expect_status "$T/a" $s "up to date" "second run"; done
[ "$(results_core "$T/a")" = "$before" ] && ok "second run: the same results" || bad "second run changed the results"

if run -o "$T/a" --set faults.samples=3; then ok "changed faults.samples"; else bad "changed key: $(tail -2 "$T/err")"; fi
for s in train compress simulate estimate; do expect_status "$T/a" $s "up to date" "faults.samples changed"; done
for s in faults report; do expect_status "$T/a" $s ran "faults.samples changed"; done
[ "$(json "$T/a/results.json" "d['faults']['samples']")" = 3 ] && ok "results.json has the new campaign" || bad "faults.samples not 3"

if run -o "$T/a" --set faults.samples=3 --set train.lr=0.002 --until compress; then ok "--until compress"; else bad "--until: $(tail -2 "$T/err")"; fi
expect_status "$T/a" train ran "changed train.lr"
expect_status "$T/a" compress ran "changed train.lr (a later stage)"
expect_status "$T/a" simulate absent "--until compress"
[ "$(json "$T/a/results.json" "d.get('simulate')")" = None ] && ok "no stale simulate results in results.json" || bad "stale simulate"
run -o "$T/a" --set faults.samples=3 --set train.lr=0.002 --only report
[ $? -eq 2 ] && grep -q "input stage simulate is not finished" "$T/err" && ok "--only report before its inputs: exit 2" \
  || bad "--only report: $(cat "$T/err")"
if run -o "$T/a" --set faults.samples=3 --set train.lr=0.002 --only faults; then ok "--only faults"; else bad "--only faults: $(tail -2 "$T/err")"; fi
expect_status "$T/a" faults ran "--only faults"
expect_status "$T/a" simulate absent "--only faults"
if run -o "$T/a" --set faults.samples=3 --set train.lr=0.002 --only faults --force; then ok "--only faults --force"; else bad "--force"; fi
expect_status "$T/a" faults ran "--force"
expect_status "$T/a" compress "up to date" "--only faults --force"

# ---- SIGKILL and SIGTERM, then resume: the uninterrupted run's results --------------------------
# (xbar itself in the background, not a shell function: the signal must reach xbar)
"$XBAR" run -c "$CFG" "${SMALL[@]}" -o "$T/k" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 3000); do [ -e "$T/k/compress/admm/checkpoint.safetensors" ] && break; sleep 0.1; done
kill -KILL $pid 2>/dev/null
wait $pid 2>/dev/null
if [ -e "$T/k/compress/stage.started" ] && [ ! -e "$T/k/compress/stage.json" ]; then ok "killed in compress"; else bad "not killed in compress"; fi
if run -o "$T/k"; then ok "run after SIGKILL"; else bad "run after SIGKILL: $(tail -2 "$T/err")"; fi
expect_status "$T/k" train "up to date" "after SIGKILL"
expect_status "$T/k" compress resumed "after SIGKILL"
[ "$(results_core "$T/k")" = "$before" ] && ok "killed + resumed run = uninterrupted run" || bad "resumed results differ"

"$XBAR" run -c "$CFG" "${SMALL[@]}" -o "$T/s" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 3000); do [ -e "$T/s/faults/faults.partial.json" ] && break; sleep 0.1; done
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
[ $rc -eq 4 ] && ok "SIGTERM in faults: exit 4" || bad "SIGTERM: exit $rc"
if run -o "$T/s"; then ok "run after SIGTERM"; else bad "run after SIGTERM: $(tail -2 "$T/err")"; fi
expect_status "$T/s" faults resumed "after SIGTERM"
[ "$(results_core "$T/s")" = "$before" ] && ok "interrupted + resumed run = uninterrupted run" || bad "resumed results differ (SIGTERM)"

# ---- imported weights, errors -----------------------------------------------------------------
TRAIN="$ROOT/configs/examples/lenet5-train.yaml"
NOCOMP=()  # SMALL without its compress keys: this experiment has no compress section
for s in "${SMALL[@]}"; do case "$s" in compress.*) unset 'NOCOMP[-1]' ;; *) NOCOMP+=("$s") ;; esac; done
if "$XBAR" run -c "$TRAIN" "${NOCOMP[@]}" --weights "$T/a/train/model.safetensors" -o "$T/w" --until simulate >"$T/out" 2>"$T/err"; then
  ok "xbar run --weights"
else
  bad "--weights: $(tail -2 "$T/err")"
fi
expect_status "$T/w" compress "passed through" "no compress section"
[ "$(json "$T/w/results.json" "d['train']['imported_from'].endswith('a/train/model.safetensors')")" = True ] && ok "train.json names the import" \
  || bad "imported_from"
err_case() {
  local code=$1 what=$2
  shift 2
  "$XBAR" run "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ $rc -eq "$code" ] && [ "$(grep -c '^xbar: ' "$T/err")" -eq 1 ]; then ok "$what: exit $code"; else bad "$what: exit $rc: $(cat "$T/err")"; fi
}
err_case 2 "unknown stage" -c "$CFG" -o "$T/x" --only nosuch
err_case 2 "--only with --until" -c "$CFG" -o "$T/x" --only faults --until report
err_case 3 "missing --weights file" -c "$CFG" -o "$T/x" --weights "$T/none.safetensors"
err_case 2 "faults of compressed weights without compress" -c "$TRAIN" -o "$T/x" --set "run.faults_models=[compressed]"
err_case 2 "unknown preset" -c "$CFG" -o "$T/x" --set "run.estimate_presets=[tpu]"

echo "run_test: $PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
