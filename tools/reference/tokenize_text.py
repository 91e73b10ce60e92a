#!/usr/bin/env python3
"""Token ids of a text file with the AutoTokenizer of a Hugging Face model directory, dumped as JSON.

Same tokenization as ppl.py (the tokenizer's own special-token behaviour unless --no-special-tokens).
Output: {"model", "text", "joined", "count", "ids"}; the count is also printed.
"""

import argparse
import json

from common import join_for_ppl, read_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--text", required=True, help="UTF-8 text file")
    ap.add_argument("--out", required=True, help="output JSON file")
    ap.add_argument("--join", action="store_true", help="apply join_for_ppl to the text first")
    ap.add_argument("--no-special-tokens", action="store_true", help="never add special tokens")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    text = read_text(args.text)
    if args.join:
        text = join_for_ppl(text)
    ids = tokenizer(text, add_special_tokens=not args.no_special_tokens)["input_ids"]
    with open(args.out, "w") as f:
        json.dump({"model": args.model, "text": args.text, "joined": args.join, "count": len(ids), "ids": ids}, f)
    print(json.dumps({"count": len(ids), "out": args.out}))


if __name__ == "__main__":
    main()
