#!/usr/bin/env bash
# The llama.cpp checks CI runs (cargo xtask ci): stock llama.cpp built from its registry package
# (build.sh), then `slimllm export` of seeded fixtures (a pruned llama model with uneven GQA groups,
# a dropped KV head and recovery biases; the same as qwen2; a dense llama one) and of the real
# SmolLM2-135M, each loaded by llama.cpp and checked against slimllm: perplexity on PTB-valid windows
# (tokens compared one by one), greedy tokens (f32), and the file read back by the gguf package.
# Writes data/exports/ci-check-*.json (the GGUFs are removed once checked: 1.1 GB of CI's disk);
# fails when a check fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
bash tools/llamacpp/build.sh
cargo build --release -p slim-cli --bin slimllm --example export_fixture
fx="$root/data/exports/fixtures"
rm -rf "$fx"
target/release/examples/export_fixture "$fx" >/dev/null
py="$root/data/tools/llamacpp/venv/bin/python"
# The fixtures' random weights give logits in the hundreds (perplexities in the millions), which bf16's
# 8-bit mantissa moves by up to 0.67 % (measured): f32 and f16 there, bf16 on the real model.
"$py" tools/llamacpp/check.py \
    --model "llama-pruned=$fx/llama-pruned" --model "qwen2-pruned=$fx/qwen2-pruned" \
    --model "llama-dense=$fx/llama-dense" \
    --types f32,f16 --windows 8 --gen-tokens 16 --out data/exports/ci-check-fixtures.json --drop-exports
"$py" tools/llamacpp/check.py --model "smollm2=data/models/smollm2-135m" \
    --types f32,f16,bf16 --windows 8 --gen-tokens 16 --out data/exports/ci-check-smollm2.json --drop-exports
