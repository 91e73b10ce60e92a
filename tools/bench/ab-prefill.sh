#!/usr/bin/env bash
# Alternates slimllm binaries (and llama-bench, when GGUF is set) on one-prompt prefills, round after round,
# so that programs are compared over the same minutes on a host whose speed drifts; prints each round and
# then tokens/s pooled over all rounds' prefills (90th percentile of speed, 75th, median).
#
#   tools/bench/ab-prefill.sh LEN WEIGHTS ROUNDS REPEATS BINARY...
#   e.g. GGUF=smol-f16.gguf tools/bench/ab-prefill.sh 128 f16 10 20 old/slimllm target/release/slimllm
#
# MODEL (default data/models/smollm2-135m), THREADS (default 2), LLAMA_BENCH (default the build of
# `cargo xtask llamacpp build`); PAUSE / RESUME: commands run before and after (e.g. to SIGSTOP other jobs).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 5 ] || { sed -n 2,11p "$0"; exit 2; }
len=$1 w=$2 rounds=$3 reps=$4
shift 4
model=${MODEL:-data/models/smollm2-135m} threads=${THREADS:-2}
llama=${LLAMA_BENCH:-data/tools/llamacpp/build/bin/llama-bench}
pool=$(mktemp -d)
trap '${RESUME:-true}; rm -rf "$pool"' EXIT
${PAUSE:-true}
for r in $(seq 1 "$rounds"); do
  for b in "$@"; do
    tag=$(echo "$b" | tr / _)
    RAYON_NUM_THREADS=$threads "$b" --quiet bench --model "$model" --batch 1 --seq-len "$len" --no-decode \
      --logits last --repeats "$reps" --weights "$w" --out "$pool/run.json" > /dev/null 2> "$pool/err" \
      || { cat "$pool/err" >&2; exit 1; }
    python3 - "$len" "$pool/run.json" "$b" "$pool/$tag" <<'PY'
import json, sys
n, d = int(sys.argv[1]), json.load(open(sys.argv[2]))["results"][0]
speeds = sorted(n / s for s in d["seconds"])
print(f"{sys.argv[3]:40s} median {speeds[len(speeds) // 2]:7.1f} tokens/s")
open(sys.argv[4], "a").write("".join(f"{v}\n" for v in speeds))
PY
  done
  if [ -n "${GGUF:-}" ]; then
    "$llama" -m "$GGUF" -p "$len" -n 0 -t "$threads" -r "$reps" -o json 2> /dev/null | python3 -c "
import json, sys
v = sorted(json.load(sys.stdin)[0]['samples_ts'])
print(f\"{'llama.cpp':40s} median {v[len(v) // 2]:7.1f} tokens/s\")
open('$pool/llama.cpp', 'a').write(''.join(f'{x}\n' for x in v))"
  fi
done
echo "pooled over $rounds rounds (tokens/s: p90 of speed / p75 / median):"
for f in "$pool"/*; do
  case "$(basename "$f")" in run.json | err) continue ;; esac
  python3 - "$f" <<'PY'
import os, sys
v = sorted(float(x) for x in open(sys.argv[1]).read().split())
q = lambda p: v[min(len(v) - 1, int(len(v) * p))]
print(f"{os.path.basename(sys.argv[1]):40s} {q(0.9):7.1f} / {q(0.75):7.1f} / {q(0.5):7.1f}  (n = {len(v)})")
PY
done
