#!/usr/bin/env bash
# Issue 14, items 2, 5 and 6: the paper-scale runs on the CIFAR-shaped Fashion-MNIST proxy, one
# network at a time, resumable. Every step is skipped once its result file exists, and an
# interrupted training or compression continues from its checkpoints (--resume), so the script can
# be killed and started again at any point. Hours to days on 2 cores (docs/RESULTS.md).
#
#   scripts/paper-scale.sh vgg16|resnet18 [OUT]        OUT: where the run directories go (runs)
#
# Environment: PARTS which of ISLPED'19 and FORMS to run after training (default "islped19 forms";
# e.g. PARTS=forms to give a session's time to FORMS), XBAR (default build/xbar), PROCS training processes (1: one process of the config's
# threads; N > 1: N data-parallel processes of one thread each), THREADS for compression, estimates
# and simulation (2), MASTER_PORT (29500), IMAGES test images for the variation runs (500),
# FRAGMENTS the FORMS fragment sizes m to compress and price (default "8"; FORMS used "4 8 16"),
# SET extra settings for every command, KEY=VALUE separated by spaces (e.g. SET=train.precision=fp32
# to train in fp32 where the configs' train.precision auto would pick bf16; a run resumed with
# --resume must keep the SET it started with: the checkpoint's fingerprint checks it),
# ISLPED_SET compress.* settings for the ISLPED'19 compression alone (e.g. "compress.target_ratio=60
# compress.retrain_epochs=18"; the chip, and so the dense estimates, stay the config's): the run then
# goes to <net>-islped19-<key><value>... (keys without "compress."), and starts from a copy of
# <net>-islped19/allocation.json when that exists and it has none (the one-shot sensitivities
# measured there are reused; compress checks that every setting they depend on is the same).
#
# Steps, each logged with its time and exit status:
#   1. train <net>-proxy (configs/examples/<net>-proxy.yaml; bfloat16 autocast on CPUs with AVX512-BF16,
#      else fp32), in PROCS processes
#   2. ISLPED'19: compress <net>-islped19 (or <net>-islped19-<ISLPED_SET>), estimate the dense (8- and
#      16-bit) and the compressed model on islped19
#   3. FORMS, for each m in FRAGMENTS: compress <net>-forms (m = 8) or <net>-forms-m<m> polarised at m,
#      estimate it on forms (fragments of m) and on isaac, each layer once and replicated, and on forms
#      with each smaller fragment size s (4, 8) it is also polarised at (<...>-estimate-forms-m<s>)
#   4. FORMS' variation claim: simulate the dense model on isaac with device.variation_sigma 0 and 0.1,
#      and each FORMS model on forms with 0 and 0.1, with the preset's worst-case ADC range and with
#      mapping.adc_range calibrated
set -euo pipefail
net=${1:?usage: scripts/paper-scale.sh vgg16|resnet18 [OUT]}
out=${2:-runs}
case "$net" in vgg16 | resnet18) ;; *) echo "paper-scale.sh: expected vgg16 or resnet18, got '$net'" >&2; exit 2 ;; esac
parts=" ${PARTS:-islped19 forms} "
for p in $parts; do
  case "$p" in islped19 | forms) ;; *) echo "paper-scale.sh: PARTS: expected islped19 and/or forms, got '$p'" >&2; exit 2 ;; esac
done

xbar=${XBAR:-build/xbar}
procs=${PROCS:-1}
threads=${THREADS:-2}
port=${MASTER_PORT:-29500}
images=${IMAGES:-500}
fragments=${FRAGMENTS:-8}
sets=()
for kv in ${SET:-}; do
  case "$kv" in *=*) sets+=(--set "$kv") ;; *) echo "paper-scale.sh: SET: expected KEY=VALUE, got '$kv'" >&2; exit 2 ;; esac
done
isl_sets=()
isl_suffix=
for kv in ${ISLPED_SET:-}; do
  case "$kv" in
    compress.?*=?*) isl_sets+=(--set "$kv") ;;
    *) echo "paper-scale.sh: ISLPED_SET: expected compress.KEY=VALUE, got '$kv'" >&2; exit 2 ;;
  esac
  k=${kv%%=*}
  v=${kv#*=}
  isl_suffix+=-${k##*.}${v//[^A-Za-z0-9.]/_}
done
for m in $fragments; do
  case "$m" in 4 | 8 | 16) ;; *) echo "paper-scale.sh: FRAGMENTS: expected 4, 8 and/or 16, got '$m'" >&2; exit 2 ;; esac
done
cfg=configs/examples
mkdir -p "$out"

log() { echo "[$(date '+%F %T')] $*"; }
# step MARKER COMMAND...: run COMMAND unless MARKER exists; log its time.
step() {
  local marker=$1
  shift
  if [ -f "$marker" ]; then
    log "done before: $marker"
    return
  fi
  local t0
  t0=$(date +%s)
  log "start: $*"
  "$@"
  log "exit 0 after $(($(date +%s) - t0)) s: $marker"
}

train_dir=$out/$net-proxy  # rank<r>.log: appended to, so a resumed training keeps the earlier epochs' lines
train() {
  local pids=() r
  mkdir -p "$train_dir"
  if ((procs == 1)); then
    "$xbar" train "${sets[@]}" -c "$cfg/$net-proxy.yaml" --resume -o "$train_dir" >> "$train_dir/rank0.log" 2>&1
    return
  fi
  for ((r = procs - 1; r >= 0; r--)); do
    RANK=$r WORLD_SIZE=$procs MASTER_PORT=$port "$xbar" train "${sets[@]}" -c "$cfg/$net-proxy.yaml" --resume -o "$train_dir" \
      --set threads=1 \
      >> "$train_dir/rank$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done  # set -e: a failing rank stops the script
}
step "$train_dir/train.json" train
dense=$train_dir/model.safetensors

isl0=$out/$net-islped19  # the run of the config as it is; the dense estimates
isl=$isl0$isl_suffix
if [[ "$parts" == *" islped19 "* ]]; then
base_alloc=$isl0/allocation.json
if [ -n "$isl_suffix" ] && [ -f "$base_alloc" ] && [ ! -f "$isl/allocation.json" ]; then
  mkdir -p "$isl"
  cp "$base_alloc" "$isl/allocation.json"
  log "seeded $isl/allocation.json from $base_alloc"
fi
step "$isl/compress.json" "$xbar" compress "${sets[@]}" -c "$cfg/$net-islped19.yaml" --weights "$dense" -o "$isl" --resume \
  "${isl_sets[@]}" --set threads="$threads"
step "$isl0-estimate-dense/estimate.json" "$xbar" estimate "${sets[@]}" -c "$cfg/$net-islped19.yaml" --weights "$dense" \
  -o "$isl0-estimate-dense" --set threads="$threads"
# The original stored at 16 bits (what the paper's reductions imply, docs/RESULTS.md).
step "$isl0-estimate-dense16/estimate.json" "$xbar" estimate "${sets[@]}" -c "$cfg/$net-islped19.yaml" --weights "$dense" \
  -o "$isl0-estimate-dense16" --set mapping.weight_bits=16 --set threads="$threads"
step "$isl-estimate/estimate.json" "$xbar" estimate "${sets[@]}" -c "$cfg/$net-islped19.yaml" --weights "$isl/model.safetensors" \
  -o "$isl-estimate" --set threads="$threads"
fi

if [[ "$parts" != *" forms "* ]]; then
  log "$net: done (PARTS=$parts)"
  exit 0
fi
for sigma in 0 0.1; do
  step "$out/$net-forms-variation-dense-$sigma/simulate.json" "$xbar" simulate "${sets[@]}" -c "$cfg/$net-forms.yaml" \
    --weights "$dense" --set arch.preset=isaac --set device.variation_sigma="$sigma" --set dataset.test_subset="$images" \
    -o "$out/$net-forms-variation-dense-$sigma" --set threads="$threads"
done
for m in $fragments; do
  forms=$out/$net-forms
  [ "$m" = 8 ] || forms=$out/$net-forms-m$m
  frag=(--set mapping.fragment_rows="$m")
  step "$forms/compress.json" "$xbar" compress "${sets[@]}" -c "$cfg/$net-forms.yaml" --weights "$dense" -o "$forms" \
    --resume --set compress.polarize_fragment="$m" "${frag[@]}" --set threads="$threads"
  # Priced as NAME PRESET FRAGMENT_ROWS (- = the preset's): on forms with fragments of m, on isaac,
  # and on forms with each smaller size it is also polarised at (4 and 8 divide m, and each part of
  # a single-signed fragment is single-signed); each layer once and replicated.
  prices=("forms forms $m" "isaac isaac -")
  for s in 4 8; do
    ((s < m)) && prices+=("forms-m$s forms $s")
  done
  for p in "${prices[@]}"; do
    read -r name preset rows <<<"$p"
    pf=()
    [ "$rows" = - ] || pf=(--set mapping.fragment_rows="$rows")
    for rep in "" -replicated; do
      ra=()
      [ -n "$rep" ] && ra=(--set arch.replicate=true)
      step "$forms-estimate-$name$rep/estimate.json" "$xbar" estimate "${sets[@]}" -c "$cfg/$net-forms.yaml" \
        --weights "$forms/model.safetensors" --preset "$preset" "${pf[@]}" "${ra[@]}" -o "$forms-estimate-$name$rep" \
        --set threads="$threads"
    done
  done
  for sigma in 0 0.1; do
    for range in worst-case calibrated; do
      dir=$forms-variation-forms-$sigma
      [ "$range" = worst-case ] || dir=$dir-$range
      step "$dir/simulate.json" "$xbar" simulate "${sets[@]}" -c "$cfg/$net-forms.yaml" \
        --weights "$forms/model.safetensors" "${frag[@]}" --set mapping.adc_range="$range" \
        --set device.variation_sigma="$sigma" --set dataset.test_subset="$images" -o "$dir" --set threads="$threads"
    done
  done
done
log "all steps of $net done"
