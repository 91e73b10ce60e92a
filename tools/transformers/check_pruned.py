#!/usr/bin/env python3
"""Perplexity of a model directory written by slimllm (pruned: model_type "slimllm", with the modeling code beside
the weights) as transformers computes it with trust_remote_code=True, by the protocol of tools/reference/ppl.py
(the same code: tools/reference/common.py), to compare with `slimllm eval ppl` on the same model.

  python tools/transformers/check_pruned.py --model data/runs/default/model --text data/datasets/ptb/valid.txt \\
      --join --windows 16 [--slimllm-ppl 177.41]

--join prepares the text as slimllm does (lines stripped, non-empty ones joined with a blank line), which
`slimllm eval ppl --data ptb-valid` always does. float32 on CPU. The last line printed is JSON: ppl.py's fields,
plus the class transformers built, its parameter count and, with --slimllm-ppl, the relative difference; with
--tol, the exit status is 1 when that difference is larger.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))

from common import join_for_ppl, load, perplexity, read_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory written by slimllm")
    ap.add_argument("--text", required=True, help="UTF-8 text file")
    ap.add_argument("--join", action="store_true", help="apply join_for_ppl to the text first")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--windows", type=int, default=None, help="evaluate only the first N windows")
    ap.add_argument("--slimllm-ppl", type=float, default=None, help="slimllm eval ppl's value, to compare")
    ap.add_argument("--tol", type=float, default=None, help="largest relative difference accepted")
    args = ap.parse_args()

    import transformers

    tokenizer, model = load(args.model, trust_remote_code=True)
    text = read_text(args.text)
    if args.join:
        text = join_for_ppl(text)
    result = perplexity(tokenizer, model, text, args.seq_len, args.batch, args.windows)
    result["class"] = type(model).__name__
    result["params"] = sum(p.numel() for p in model.parameters())
    result["transformers"] = transformers.__version__
    ok = True
    if args.slimllm_ppl is not None:
        result["slimllm_ppl"] = args.slimllm_ppl
        result["rel_diff"] = abs(result["ppl"] - args.slimllm_ppl) / args.slimllm_ppl
        ok = args.tol is None or result["rel_diff"] <= args.tol
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
