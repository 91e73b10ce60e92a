#!/usr/bin/env python3
"""Dense prefill throughput of PyTorch on CPU: one full forward (logits included) of a [batch, seq_len] batch.

float32, torch.inference_mode, torch.set_num_threads(number of usable cores); random token ids (seed 0);
one warm-up forward excluded; tokens/s = batch * seq_len / seconds, median over --repeats.
The last line is JSON with tokens_per_s (read by `cargo xtask bench forward --torch-venv DIR`).
"""

import argparse
import json
import statistics
import time

from common import cores, load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()

    import torch

    _, model = load(args.model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len), generator=gen)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            start = time.perf_counter()
            logits = model(input_ids=x).logits
            assert logits.shape == (args.batch, args.seq_len, model.config.vocab_size)
            elapsed = time.perf_counter() - start
            if i >= args.warmup:
                times.append(elapsed)
    tokens = args.batch * args.seq_len
    print(json.dumps({
        "tokens_per_s": tokens / statistics.median(times),
        "median_s": statistics.median(times),
        "times_s": [round(t, 4) for t in times],
        "batch": args.batch,
        "seq_len": args.seq_len,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cores": cores(),
    }))


if __name__ == "__main__":
    main()
