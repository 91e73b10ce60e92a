#!/usr/bin/env python3
"""Greedy generation from a raw prompt (no chat template) with a Hugging Face model directory, float32 on CPU.

Prints the continuation, then a JSON line {"prompt_ids", "new_ids", "text"}.
"""

import argparse
import json

from common import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-new", type=int, default=16, help="number of new tokens")
    args = ap.parse_args()

    import torch

    tokenizer, model = load(args.model)
    prompt_ids = tokenizer(args.prompt)["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=args.max_new,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    new_ids = out[0, len(prompt_ids):].tolist()
    text = tokenizer.decode(new_ids)
    print(text)
    print(json.dumps({"prompt_ids": prompt_ids, "new_ids": new_ids, "text": text}))


if __name__ == "__main__":
    main()
