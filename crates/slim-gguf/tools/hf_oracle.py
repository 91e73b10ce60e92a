#!/usr/bin/env python3
"""Manual cross-check of slim-gguf against the Hugging Face stack (not part of `cargo test`).

    python hf_oracle.py GGUF IMPORTED_DIR PTB_VALID [--weights]

IMPORTED_DIR is the output of `cargo run --release -p slim-gguf --example import -- GGUF IMPORTED_DIR`.
Loads the GGUF's tokenizer with transformers (`AutoTokenizer.from_pretrained(dir, gguf_file=name)`,
which converts the GGUF metadata itself) and our tokenizer.json with the `tokenizers` package,
and compares ids on the PTB validation text (protocol of sources.md: stripped non-empty lines joined
with "\\n\\n") and a few strings. With --weights, also loads the model from the GGUF with
transformers (which dequantizes and un-permutes Q/K itself) and compares every tensor with our
model.safetensors.
"""
import pathlib
import sys

import numpy as np
from tokenizers import Tokenizer
from transformers import AutoTokenizer

gguf, ours_dir, ptb = map(pathlib.Path, sys.argv[1:4])
hf = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
ours = Tokenizer.from_file(str(ours_dir / "tokenizer.json"))

lines = [l.strip() for l in ptb.read_text().splitlines()]
texts = {
    "ptb-valid": "\n\n".join(l for l in lines if l),
    "hello": "Hello world 2024",
    "digits": "3.14159 and 1,000,000 items in 2025!",
    "unicode": "Äpfel, нещо на Български, 我想在apple工作1314151天～ 🦙.cpp",
    "whitespace": "  leading\tand\n\n trailing   \r\n",
    "code": "def f(x):\n    return x**2  # it's y'all's",
    "special": "<|im_start|>user\nhi<|im_end|>",
}
ok = True
for name, text in texts.items():
    a = hf(text, add_special_tokens=False)["input_ids"]
    b = ours.encode(text, add_special_tokens=False).ids
    same = a == b
    ok &= same
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    print(f"{name}: hf {len(a)} tokens, ours {len(b)} tokens, {'identical' if same else f'DIFFER at {first}'}")
    if not same:
        print("   hf  ", a[max(0, first - 3):first + 5])
        print("   ours", b[max(0, first - 3):first + 5])

if "--weights" in sys.argv:
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    st = load_file(ours_dir / "model.safetensors")
    worst = 0.0
    for k, v in st.items():
        ref = sd[k]
        assert ref.shape == v.shape, (k, ref.shape, v.shape)
        worst = max(worst, float(np.max(np.abs(ref - v))))
    extra = sorted(set(sd) - set(st) - {"lm_head.weight"})
    print(f"weights: {len(st)} tensors compared, max |hf - ours| = {worst}, hf-only tensors: {extra}")
    ok &= worst == 0.0 and not extra
print("ALL IDENTICAL" if ok else "DIFFERENCES FOUND")
