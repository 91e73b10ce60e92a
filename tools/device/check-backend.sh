#!/usr/bin/env bash
# One command for a lent GPU machine that has nothing but the slimllm binary (no registry, no model,
# no data): the backend checked against the binary's own CPU backend on seeded synthetic models,
# synthetic models of real shapes generated on the spot, prefill and decode throughput on both
# backends, and a timed 20 % pruning run. Everything it measures goes under OUT as JSON and text.
#
#   tools/device/check-backend.sh BIN BACKEND OUT [SHAPES]
#
# BIN: a slimllm built with the backend's feature (`cargo build --release -p slim-cli --features cuda`,
# stripped); BACKEND: cuda or wgpu (cpu rehearses the script); SHAPES: synth-model shapes to bench,
# default "smollm2-135m qwen2.5-1.5b"; BENCH_BATCH: sequences per prefill pass of `bench` (default 8; Lavapipe
# cannot allocate the 201 MB logits buffer of 8 × 128 × 49152, so rehearse wgpu there with BENCH_BATCH=2).
# Each step's exit status is logged in OUT/steps.txt and a failed
# step does not stop the others, so one run of the script gives every number it can.
# STEP_TIMEOUT (seconds, default 240) bounds each step and DEADLINE (seconds from the start, default
# none) the whole script: a step gets what is left of it, and none starts with under 15 s left.
# PACK=FILE.tar.gz packs OUT into that file after every step (the device tool returns at most 8 files,
# and what a run killed at its limit had written still comes back).
set -uo pipefail
bin=${1:?usage: check-backend.sh BIN BACKEND OUT [SHAPES]}
backend=${2:?backend (cuda, wgpu or cpu)}
out=${3:?output folder}
shapes=${4:-smollm2-135m qwen2.5-1.5b}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
steps="$out/steps.txt"
: >"$steps"

start=$SECONDS
pack() {
  [[ -n ${PACK:-} ]] || return 0
  tar -C "$out" -czf "$PACK.tmp" . && mv "$PACK.tmp" "$PACK"
}

step() {
  local name=$1
  shift
  local t0 t1 rc limit=${STEP_TIMEOUT:-240}
  if [[ -n ${DEADLINE:-} ]]; then
    local left=$((DEADLINE - (SECONDS - start)))
    if ((left < 15)); then
      echo "$name skipped: the deadline of $DEADLINE s is reached" | tee -a "$steps"
      return 0
    fi
    ((left < limit)) && limit=$left
  fi
  t0=$EPOCHREALTIME
  timeout -k 5 "$limit" "$@" >"$out/$name.txt" 2>&1
  rc=$?
  t1=$EPOCHREALTIME
  awk -v n="$name" -v rc="$rc" -v a="$t0" -v b="$t1" -v l="$limit" \
    'BEGIN { printf "%s rc=%d %.1f s%s\n", n, rc, b - a, (rc == 124 || rc == 137) ? " (killed at its " l " s limit)" : "" }' |
    tee -a "$steps"
  pack
  return 0
}

{
  uname -a
  nvidia-smi 2>&1 | head -20 || true
  ldd --version 2>&1 | head -1
  ldd "$bin" 2>&1
  nproc
  "$bin" --version
} >"$out/machine.txt" 2>&1
pack

step check-backend "$bin" --quiet --backend "$backend" check-backend --json "$out/check-backend.json"
first=${shapes%% *}
pipeline() {
  step "pipeline-$first" "$bin" --quiet --backend "$backend" --data-root "$work" pipeline run --model "$work/$first" \
    --target 0.2 --calib-source random --no-eval --gguf none --cache "$work/cache" --run device
  if [[ -f "$work/runs/device/summary.json" ]]; then
    cp "$work/runs/device/summary.json" "$out/pipeline-$first-summary.json" 2>/dev/null
    step "bench-$first-pruned-$backend" "$bin" --quiet --backend "$backend" bench --model "$work/runs/device/model" \
      --batch "${BENCH_BATCH:-8}" --repeats 3 --out "$out/bench-$first-pruned-$backend.json"
  fi
  # The same run on the CPU of the same machine, for the ratio.
  if [[ $backend != cpu ]]; then
    step "pipeline-$first-cpu" "$bin" --quiet --backend cpu --data-root "$work/cpu-run" pipeline run \
      --model "$work/$first" --target 0.2 --calib-source random --no-eval --gguf none --cache "$work/cpu-cache" --run device
    cp "$work/cpu-run/runs/device/summary.json" "$out/pipeline-$first-cpu-summary.json" 2>/dev/null
  fi
}
# The first shape, its pipeline, then the other shapes (the slowest steps last, so that a deadline
# cuts the least).
for shape in $shapes; do
  step "synth-$shape" "$bin" --quiet synth-model --shape "$shape" --out "$work/$shape"
  for b in "$backend" cpu; do
    [[ $b == cpu && $backend == cpu && -e "$out/bench-$shape-cpu.json" ]] && continue
    step "bench-$shape-$b" "$bin" --quiet --backend "$b" bench --model "$work/$shape" --repeats 3 \
      --batch "${BENCH_BATCH:-8}" --out "$out/bench-$shape-$b.json"
  done
  [[ $shape == "$first" ]] && pipeline
done
echo "results in $out"
