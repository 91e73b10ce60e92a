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

from common import join_for_ppl, load, perplexity, read_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--text", required=True, help="UTF-8 text file")
    ap.add_argument("--join", action="store_true", help="apply join_for_ppl to the text first")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--windows", type=int, default=None, help="evaluate only the first N windows")
    args = ap.parse_args()

    tokenizer, model = load(args.model)
    text = read_text(args.text)
    if args.join:
        text = join_for_ppl(text)
    print(json.dumps(perplexity(tokenizer, model, text, args.seq_len, args.batch, args.windows)))


if __name__ == "__main__":
    main()
