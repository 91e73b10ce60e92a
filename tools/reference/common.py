"""Shared helpers of the reference scripts: text preparation and model loading.

The join rule must stay identical to `slim_data::join_for_ppl` (crates/slim-data/src/join.rs):
split on "\n", strip each line with Python's str.strip(), drop empty lines, join with "\n\n".
"""

import os


def join_for_ppl(text: str) -> str:
    lines = (line.strip() for line in text.split("\n"))
    return "\n\n".join(line for line in lines if line)


def read_text(path: str) -> str:
    # newline="" keeps "\r\n" as is, as Rust's read_to_string does.
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load(model_dir: str, trust_remote_code: bool = False):
    """Tokenizer and float32 CPU model in eval mode from a Hugging Face directory (with trust_remote_code, also a
    pruned model with the modeling code slimllm writes beside it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cores())
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=trust_remote_code)
    model.eval()
    return tokenizer, model


def perplexity(tokenizer, model, text: str, seq_len: int = 128, batch: int = 8, windows=None) -> dict:
    """The LLM-Pruner / SlimLLM perplexity protocol on a prepared text: tokenized once (the tokenizer's own
    special-token behaviour), cut into non-overlapping windows of seq_len tokens (remainder dropped; only the first
    `windows` when given), PPL = exp(mean NLL over the seq_len - 1 shifted predictions of every window)."""
    import math
    import sys
    import time

    import torch

    ids = tokenizer(text)["input_ids"]
    n = len(ids) // seq_len
    if windows is not None:
        n = min(n, windows)
    if n == 0:
        sys.exit(f"the text has {len(ids)} tokens: not one window of {seq_len}")
    w = torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)

    nll_sum = 0.0
    scored = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, n, batch):
            x = w[b : b + batch]
            logits = model(input_ids=x).logits.float()  # [B, T, V]
            logp = torch.log_softmax(logits[:, :-1], dim=-1)  # [B, T-1, V]
            nll = -logp.gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, T-1]
            nll_sum += nll.double().sum().item()
            scored += nll.numel()
            print(f"  windows {min(b + batch, n)}/{n}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    mean_nll = nll_sum / scored
    return {
        "ppl": math.exp(mean_nll),
        "mean_nll": mean_nll,
        "windows": n,
        "tokens_scored": scored,
        "tokens_total": len(ids),
        "seq_len": seq_len,
        "seconds": round(time.perf_counter() - start, 3),
    }
