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
# and simulation (2), MASTER_PORT (29500), IMAGES test images for the variation runs (500).
#
# Steps, each logged with its time and exit status:
#   1. train <net>-proxy (configs/examples/<net>-proxy.yaml), bfloat16 autocast, in PROCS processes
#   2. ISLPED'19: compress <net>-islped19, estimate the dense (8- and 16-bit) and the compressed model on islped19
#   3. FORMS: compress <net>-forms, estimate it on forms and on isaac, each layer once and replicated
#   4. FORMS' variation claim: simulate the dense model on isaac and the FORMS model on forms with
#      device.variation_sigma 0 and 0.1
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

train_dir=$out/$net-proxy
train() {
  local pids=() r
  mkdir -p "$train_dir"
  if ((procs == 1)); then
    "$xbar" train -c "$cfg/$net-proxy.yaml" --resume -o "$train_dir" > "$train_dir/rank0.log" 2>&1
    return
  fi
  for ((r = procs - 1; r >= 0; r--)); do
    RANK=$r WORLD_SIZE=$procs MASTER_PORT=$port "$xbar" train -c "$cfg/$net-proxy.yaml" --resume -o "$train_dir" \
      --set threads=1 \
      > "$train_dir/rank$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done  # set -e: a failing rank stops the script
}
step "$train_dir/train.json" train
dense=$train_dir/model.safetensors

isl=$out/$net-islped19
if [[ "$parts" == *" islped19 "* ]]; then
step "$isl/compress.json" "$xbar" compress -c "$cfg/$net-islped19.yaml" --weights "$dense" -o "$isl" --resume \
  --set threads="$threads"
step "$isl-estimate-dense/estimate.json" "$xbar" estimate -c "$cfg/$net-islped19.yaml" --weights "$dense" \
  -o "$isl-estimate-dense" --set threads="$threads"
# The original stored at 16 bits (what the paper's reductions imply, docs/RESULTS.md).
step "$isl-estimate-dense16/estimate.json" "$xbar" estimate -c "$cfg/$net-islped19.yaml" --weights "$dense" \
  -o "$isl-estimate-dense16" --set mapping.weight_bits=16 --set threads="$threads"
step "$isl-estimate/estimate.json" "$xbar" estimate -c "$cfg/$net-islped19.yaml" --weights "$isl/model.safetensors" \
  -o "$isl-estimate" --set threads="$threads"
fi

forms=$out/$net-forms
if [[ "$parts" != *" forms "* ]]; then
  log "$net: done (PARTS=$parts)"
  exit 0
fi
step "$forms/compress.json" "$xbar" compress -c "$cfg/$net-forms.yaml" --weights "$dense" -o "$forms" --resume \
  --set threads="$threads"
for preset in forms isaac; do
  step "$forms-estimate-$preset/estimate.json" "$xbar" estimate -c "$cfg/$net-forms.yaml" \
    --weights "$forms/model.safetensors" --preset "$preset" -o "$forms-estimate-$preset" --set threads="$threads"
  step "$forms-estimate-$preset-replicated/estimate.json" "$xbar" estimate -c "$cfg/$net-forms.yaml" \
    --weights "$forms/model.safetensors" --preset "$preset" --set arch.replicate=true \
    -o "$forms-estimate-$preset-replicated" --set threads="$threads"
done
for sigma in 0 0.1; do
  step "$forms-variation-dense-$sigma/simulate.json" "$xbar" simulate -c "$cfg/$net-forms.yaml" --weights "$dense" \
    --set arch.preset=isaac --set device.variation_sigma="$sigma" --set dataset.test_subset="$images" \
    -o "$forms-variation-dense-$sigma" --set threads="$threads"
  step "$forms-variation-forms-$sigma/simulate.json" "$xbar" simulate -c "$cfg/$net-forms.yaml" \
    --weights "$forms/model.safetensors" --set device.variation_sigma="$sigma" --set dataset.test_subset="$images" \
    -o "$forms-variation-forms-$sigma" --set threads="$threads"
done
log "all steps of $net done"
