#!/usr/bin/env python3
"""Perplexity of a Hugging Face model directory on a text file, with the LLM-Pruner / SlimLLM protocol.

The text is tokenized once (the tokenizer's own special-token behaviour: SmolLM2 adds none), cut into
non-overlapping windows of --seq-len tokens (remainder dropped), and PPL = exp(mean NLL over the seq_len-1 shifted
predictions of every window). With --join the text is first prepared like `slim_data::join_for_ppl`
(lines stripped, non-empty ones joined with "\n\n"); without it the file must already be prepared.
float32 on CPU. The last line printed is JSON: {"ppl", "windows", "tokens_scored", ...}.
"""

import argparse
import json
import math
import sys
import time

from common import join_for_ppl, load, read_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--text", required=True, help="UTF-8 text file")
    ap.add_argument("--join", action="store_true", help="apply join_for_ppl to the text first")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--windows", type=int, default=None, help="evaluate only the first N windows")
    args = ap.parse_args()

    import torch

    tokenizer, model = load(args.model)
    text = read_text(args.text)
    if args.join:
        text = join_for_ppl(text)
    ids = tokenizer(text)["input_ids"]
    n = len(ids) // args.seq_len
    if args.windows is not None:
        n = min(n, args.windows)
    if n == 0:
        sys.exit(f"the text has {len(ids)} tokens: not one window of {args.seq_len}")
    windows = torch.tensor(ids[: n * args.seq_len], dtype=torch.long).view(n, args.seq_len)

    nll_sum = 0.0
    scored = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, n, args.batch):
            x = windows[b : b + args.batch]
            logits = model(input_ids=x).logits.float()  # [B, T, V]
            logp = torch.log_softmax(logits[:, :-1], dim=-1)  # [B, T-1, V]
            nll = -logp.gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, T-1]
            nll_sum += nll.double().sum().item()
            scored += nll.numel()
            print(f"  windows {min(b + args.batch, n)}/{n}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    mean_nll = nll_sum / scored
    print(json.dumps({
        "ppl": math.exp(mean_nll),
        "mean_nll": mean_nll,
        "windows": n,
        "tokens_scored": scored,
        "tokens_total": len(ids),
        "seq_len": args.seq_len,
        "seconds": round(time.perf_counter() - start, 3),
    }))


if __name__ == "__main__":
    main()
