#!/usr/bin/env bash
# The issue-3 table: SmolLM2-135M at 20 % and 50 % of total parameters, three methods, both
# GQA modes, full PTB-valid and PTB-test perplexity. One run after the other (the stage
# timings are wall times), on a cache of its own so that every entry comes from this code.
# Usage: tools/grid-pipeline.sh [SLIMLLM_BINARY]   (results: data/runs/grid-*/summary.json)
set -euo pipefail
bin=${1:-target/release/slimllm}
cache=${GRID_CACHE:-data/cache-grid}
for target in 0.2 0.5; do
  for method in "slimllm affine" "slimllm none" "magnitude affine"; do
    set -- $method
    for gqa in per-group whole-group; do
      run="grid-${target#0.}0-$1-$2-$gqa"
      if [ -f "data/runs/$run/summary.json" ]; then echo "== $run: done"; continue; fi
      echo "== $run"
      "$bin" --quiet pipeline run --model data/models/smollm2-135m --target "$target" --scorer "$1" \
        --recovery "$2" --gqa "$gqa" --eval ptb-valid,ptb-test --run "$run" --cache "$cache" > /dev/null
    done
  done
done
