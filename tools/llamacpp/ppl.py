#!/usr/bin/env python3
"""Perplexity of a GGUF file in llama.cpp, with slimllm's protocol (`slimllm eval ppl`).

The text is prepared like `slim_data::join_for_ppl` (lines stripped, non-empty ones joined with "\\n\\n"),
tokenized once by llama.cpp's own tokenizer (no BOS added, special tokens not parsed), cut into
non-overlapping windows of --seq-len tokens (remainder dropped); each window is evaluated from an empty
KV cache with logits for every position, and PPL = exp(mean NLL over the seq_len-1 next-token predictions
of every window). The NLLs are computed here in float64 from llama.cpp's float32 logits.
This is not llama-perplexity's protocol (which scores only the second half of each window), hence this script.

Runs on the Python binding of the llama-cpp-python sdist against the libraries tools/llamacpp/build.sh built:
  data/tools/llamacpp/venv/bin/python tools/llamacpp/ppl.py --gguf FILE --text data/datasets/ptb/valid.txt
(the script sets PYTHONPATH and LLAMA_CPP_LIB_PATH itself). With --ids FILE.json it also checks that
llama.cpp's tokens equal `slimllm tokenize`'s. The last line printed is JSON.
"""

import argparse
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLAMACPP = os.path.join(ROOT, "data", "tools", "llamacpp")
os.environ.setdefault("LLAMA_CPP_LIB_PATH", os.path.join(LLAMACPP, "build", "bin"))
sys.path.insert(0, os.path.join(LLAMACPP, "src"))


def join_for_ppl(text: str) -> str:
    return "\n\n".join(line.strip() for line in text.split("\n") if line.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--text", required=True, help="raw text file, prepared with join_for_ppl here")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--windows", type=int, default=None, help="only the first N windows")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ids", help="token ids JSON from `slimllm tokenize` (a list, or an object with `ids`)")
    args = ap.parse_args()

    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=args.gguf, n_ctx=args.seq_len, n_batch=args.seq_len, n_ubatch=args.seq_len,
                logits_all=True, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    with open(args.text, encoding="utf-8") as f:
        text = join_for_ppl(f.read())
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    same_tokens = None
    if args.ids:
        with open(args.ids) as f:
            ref = json.load(f)
        ref = ref["ids"] if isinstance(ref, dict) else ref
        same_tokens = list(ref) == list(ids)
        if not same_tokens:
            first = next((i for i, (a, b) in enumerate(zip(ref, ids)) if a != b), min(len(ref), len(ids)))
            print(f"tokens differ from --ids at position {first} (slimllm {len(ref)}, llama.cpp {len(ids)})",
                  file=sys.stderr)
    n = len(ids) // args.seq_len
    if args.windows is not None:
        n = min(n, args.windows)
    if n == 0:
        sys.exit(f"the text has {len(ids)} tokens: not one window of {args.seq_len}")
    nll_sum = 0.0
    scored = 0
    start = time.perf_counter()
    for w in range(n):
        window = ids[w * args.seq_len:(w + 1) * args.seq_len]
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[: args.seq_len - 1], dtype=np.float64)
        m = logits.max(axis=1, keepdims=True)
        logz = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        target = np.asarray(window[1:])
        nll_sum += float((logz - logits[np.arange(len(target)), target]).sum())
        scored += len(target)
        print(f"  windows {w + 1}/{n}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    mean_nll = nll_sum / scored
    print(json.dumps({
        "ppl": math.exp(mean_nll), "mean_nll": mean_nll, "windows": n, "tokens_scored": scored,
        "tokens_total": len(ids), "seq_len": args.seq_len, "same_tokens_as_slimllm": same_tokens,
        "threads": args.threads, "seconds": round(time.perf_counter() - start, 3), "gguf": args.gguf,
    }))


if __name__ == "__main__":
    main()
