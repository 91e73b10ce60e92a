#!/usr/bin/env python3
"""Independent GGUF -> Hugging Face directory conversion with transformers' own GGUF loader (it dequantizes with the
`gguf` package and undoes llama.cpp's Q/K row permutation), for checking `slimllm import` against it.

Writes config.json, tokenizer files and model.safetensors (float32; tied lm_head left out, as in the original).
Example: gguf_to_hf.py --gguf data/downloads/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/smollm2-ref
"""

import argparse
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="GGUF file")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(args.gguf))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    os.makedirs(args.out, exist_ok=True)
    tokenizer.save_pretrained(args.out)
    tied = getattr(model.config, "tie_word_embeddings", False)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain float32
    config.save_pretrained(args.out)
    print(f"wrote {args.out}: {len(state)} tensors")


if __name__ == "__main__":
    main()
