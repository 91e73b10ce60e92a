#!/usr/bin/env bash
# Runs on the lent GPU machine (the `device` tool), from the repository root, with the files of
# tools/device/build-cuda.sh carried: carry ["gpu/slimllm-cuda.xz", "gpu/nvrtc-12.6.85.tar.xz"], command
# `bash tools/device/run-cuda.sh "$OUT"`. Unpacks the binary and NVRTC, then tools/device/check-backend.sh for
# cuda: check-backend against the CPU, synthetic SmolLM2-135M and Qwen2.5-1.5B, bench on cuda and the CPU, a timed
# 20 % pipeline. SHAPES overrides the shapes.
set -euo pipefail
out=${1:-${OUT:?pass the output folder}}
mkdir -p "$out"
d=$(mktemp -d)
xz -dc gpu/slimllm-cuda.xz >"$d/slimllm"
chmod +x "$d/slimllm"
tar -xJf gpu/nvrtc-12.6.85.tar.xz -C "$d"
export LD_LIBRARY_PATH="$d/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUST_BACKTRACE=1
# Everything goes into OUT/results.tar.gz (packed after every step) plus OUT/steps.txt: the device tool
# returns at most 8 files.
res="$d/results"
PACK="$out/results.tar.gz" DEADLINE=${DEADLINE:-420} \
  bash tools/device/check-backend.sh "$d/slimllm" cuda "$res" "${SHAPES:-smollm2-135m qwen2.5-1.5b}"
cp "$res/steps.txt" "$out/steps.txt"
cp "$res/check-backend.json" "$out/" 2>/dev/null || true
