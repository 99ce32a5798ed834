#!/usr/bin/env bash
# scripts/paper-scale.sh as a dry run (XBAR=echo: every xbar command is printed, nothing runs):
# the steps it takes and where their results go (a FORMS network priced at each fragment size it is
# polarised at), that a finished step is skipped, how ISLPED_SET
# names its run and seeds it from the base run's allocation, and a one-line error (exit 2) for
# every bad argument.
#   paper_scale_test.sh PROJECT_SOURCE_DIR
set -u
SRC=${1:?usage: paper_scale_test.sh PROJECT_SOURCE_DIR}
. "$(dirname "$0")/harness.sh"
cd "$SRC" || exit 1
unset PARTS XBAR PROCS THREADS MASTER_PORT IMAGES FRAGMENTS SET ISLPED_SET  # only what each case sets
dry() { XBAR=echo bash scripts/paper-scale.sh "$@"; }

# Bad arguments: exit 2, one line naming the variable and the value.
check_bad() {
  local what=$1 expect=$2
  shift 2
  local err
  err=$(env "$@" XBAR=echo bash scripts/paper-scale.sh resnet18 "$T/bad" 2>&1 >/dev/null)
  local rc=$?
  if [ $rc -eq 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] && [[ "$err" == *"$expect"* ]]; then
    ok "$what: exit 2, '$err'"
  else
    bad "$what: rc $rc, '$err'"
  fi
}
err=$(XBAR=echo bash scripts/paper-scale.sh lenet5 "$T/bad" 2>&1 >/dev/null)
rc=$?
[ $rc -eq 2 ] && [ "$err" = "paper-scale.sh: expected vgg16 or resnet18, got 'lenet5'" ] && ok "an unknown network: exit 2" ||
  bad "an unknown network: rc $rc, '$err'"
check_bad "FRAGMENTS" "FRAGMENTS: expected 4, 8 and/or 16, got '5'" FRAGMENTS="4 5"
check_bad "PARTS" "PARTS: expected islped19 and/or forms, got 'isaac'" PARTS="isaac"
check_bad "SET" "SET: expected KEY=VALUE, got 'threads'" SET="threads"
check_bad "ISLPED_SET outside compress" "ISLPED_SET: expected compress.KEY=VALUE, got 'mapping.weight_bits=4'" \
  ISLPED_SET="mapping.weight_bits=4"
check_bad "ISLPED_SET without a value" "ISLPED_SET: expected compress.KEY=VALUE, got 'compress.target_ratio='" \
  ISLPED_SET="compress.target_ratio="
[ ! -e "$T/bad" ] && ok "nothing written on bad arguments" || bad "$T/bad was created"

# FORMS at m = 4 and 8: the m = 8 run keeps its old name, m = 4 gets its own; estimates on forms
# with the run's fragments, on isaac without; the variation runs with both ADC ranges.
out=$T/f
log=$(PARTS=forms FRAGMENTS="8 4" dry vgg16 "$out" 2>&1)
rc=$?
[ $rc -eq 0 ] && ok "forms dry run exit 0" || bad "forms dry run rc $rc: $log"
has() { grep -qF -- "$2" <<<"$log" && ok "$1" || bad "$1: no '$2' in the dry run"; }
hasnt() { grep -qF -- "$2" <<<"$log" && bad "$1: '$2' in the dry run" || ok "$1"; }
grep -qxF "train -c configs/examples/vgg16-proxy.yaml --resume -o $out/vgg16-proxy" "$out/vgg16-proxy/rank0.log" &&
  ok "training resumable, logged in rank0.log" || bad "training: '$(cat "$out/vgg16-proxy/rank0.log")'"
has "m = 8 compressed in vgg16-forms" "-o $out/vgg16-forms --resume --set compress.polarize_fragment=8 --set mapping.fragment_rows=8"
has "m = 4 compressed in vgg16-forms-m4" "-o $out/vgg16-forms-m4 --resume --set compress.polarize_fragment=4 --set mapping.fragment_rows=4"
has "m = 4 priced on forms with fragments of 4" "--weights $out/vgg16-forms-m4/model.safetensors --preset forms --set mapping.fragment_rows=4 -o $out/vgg16-forms-m4-estimate-forms "
has "m = 4 priced on isaac" "--weights $out/vgg16-forms-m4/model.safetensors --preset isaac -o $out/vgg16-forms-m4-estimate-isaac "
has "calibrated variation run" "--set mapping.adc_range=calibrated --set device.variation_sigma=0.1 --set dataset.test_subset=500 -o $out/vgg16-forms-m4-variation-forms-0.1-calibrated"
has "dense on isaac under variation" "--set arch.preset=isaac --set device.variation_sigma=0.1"
hasnt "no ISLPED'19 step with PARTS=forms" "islped19"
has "m = 8 also priced with fragments of 4" \
  "--weights $out/vgg16-forms/model.safetensors --preset forms --set mapping.fragment_rows=4 -o $out/vgg16-forms-estimate-forms-m4 "
has "m = 8 with fragments of 4, replicated" \
  "--set mapping.fragment_rows=4 --set arch.replicate=true -o $out/vgg16-forms-estimate-forms-m4-replicated "
hasnt "m = 4 priced at no smaller size" "vgg16-forms-m4-estimate-forms-m"
hasnt "m = 8 not priced at its own size twice" "vgg16-forms-estimate-forms-m8"
log16=$(PARTS=forms FRAGMENTS=16 dry resnet18 "$T/f16" 2>&1)
for s in 4 8; do
  grep -qF -- "--weights $T/f16/resnet18-forms-m16/model.safetensors --preset forms --set mapping.fragment_rows=$s -o $T/f16/resnet18-forms-m16-estimate-forms-m$s " <<<"$log16" &&
    ok "m = 16 also priced with fragments of $s" || bad "m = 16 not priced with fragments of $s"
done

# A finished step is skipped.
mkdir -p "$out/vgg16-forms-m4" && echo '{}' >"$out/vgg16-forms-m4/compress.json"
log=$(PARTS=forms FRAGMENTS="4" dry vgg16 "$out" 2>&1)
has "finished compression skipped" "done before: $out/vgg16-forms-m4/compress.json"
hasnt "finished compression not run again" "-o $out/vgg16-forms-m4 --resume"
[ "$(grep -c . "$out/vgg16-proxy/rank0.log")" -eq 2 ] && ok "a resumed training appends to rank0.log" ||
  bad "rank0.log after two invocations: '$(cat "$out/vgg16-proxy/rank0.log")'"

# ISLPED_SET: its own run directory, seeded from the base run's allocation; the dense estimates stay
# the base run's (the chip is the config's).
out=$T/i
mkdir -p "$out/resnet18-islped19" && echo '{"allocation": 1}' >"$out/resnet18-islped19/allocation.json"
log=$(PARTS=islped19 ISLPED_SET="compress.target_ratio=60 compress.retrain_epochs=18" dry resnet18 "$out" 2>&1)
rc=$?
[ $rc -eq 0 ] && ok "ISLPED_SET dry run exit 0" || bad "ISLPED_SET dry run rc $rc: $log"
run=$out/resnet18-islped19-target_ratio60-retrain_epochs18
has "ISLPED_SET run named by its settings" "-o $run --resume --set compress.target_ratio=60 --set compress.retrain_epochs=18 --set threads=2"
has "dense estimate in the base run's place" "-o $out/resnet18-islped19-estimate-dense --set threads=2"
has "compressed estimate of the ISLPED_SET run" "--weights $run/model.safetensors -o $run-estimate"
cmp -s "$out/resnet18-islped19/allocation.json" "$run/allocation.json" && ok "allocation seeded from the base run" ||
  bad "allocation not seeded"
echo '{"allocation": 2}' >"$run/allocation.json"
log=$(PARTS=islped19 ISLPED_SET="compress.target_ratio=60 compress.retrain_epochs=18" dry resnet18 "$out" 2>&1)
grep -q '"allocation": 2' "$run/allocation.json" && ok "an allocation already there is kept" || bad "allocation overwritten"
hasnt "no seeding when the run has an allocation" "seeded"

echo "paper_scale_test: $PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
