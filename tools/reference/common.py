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


def load(model_dir: str):
    """Tokenizer and float32 CPU model in eval mode from a Hugging Face directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cores())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return tokenizer, model
