#!/usr/bin/env python3
"""Dense throughput of PyTorch on CPU, as `slimllm bench` measures it.

Prefill (default): one full forward (logits included) of a [batch, seq_len] batch of random token ids (seed 0);
tokens/s = batch * seq_len / seconds.
--decode N: batch 1; a --seq-len-token prompt runs into transformers' DynamicCache (not timed), then N tokens are
fed one at a time through the cache, each forward computing the last position's logits (fixed random ids, not the
argmax, as `slimllm bench` does); tokens/s = N / seconds of the N steps.
float32, torch.inference_mode, --threads (default: number of usable cores); one warm-up excluded; median over
--repeats. The last line is JSON with tokens_per_s (read by `cargo xtask bench forward|decode --torch-venv DIR`).
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
    ap.add_argument("--decode", type=int, default=0, help="measure decode of N tokens instead of prefill")
    ap.add_argument("--threads", type=int, default=cores())
    args = ap.parse_args()

    import torch

    _, model = load(args.model)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    if args.decode > 0:
        decode(torch, model, gen, args)
        return
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


def decode(torch, model, gen, args) -> None:
    prompt = torch.randint(0, model.config.vocab_size, (1, args.seq_len), generator=gen)
    steps = torch.randint(0, model.config.vocab_size, (1, args.decode), generator=gen)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
            cache = out.cache
            start = time.perf_counter()
            for s in range(args.decode):
                out = model(input_ids=steps[:, s:s + 1], cache=cache, use_cache=True)
                cache = out.cache
                assert out.logits.shape == (1, 1, model.config.vocab_size)
            elapsed = time.perf_counter() - start
            if i >= args.warmup:
                times.append(elapsed)
    print(json.dumps({
        "kind": "decode",
        "tokens_per_s": args.decode / statistics.median(times),
        "median_s": statistics.median(times),
        "times_s": [round(t, 4) for t in times],
        "prompt": args.seq_len,
        "decode": args.decode,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cores": cores(),
    }))


if __name__ == "__main__":
    main()
