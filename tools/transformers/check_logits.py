#!/usr/bin/env python3
"""Loads a model directory written by slimllm with transformers (trust_remote_code=True) and checks it
against the logits slimllm's runtime computed on the same token ids.

--expected is a JSON file {"ids": [[...], ...], "logits": [[[...]]]} (batch x len token ids, and the
batch x len x vocab logits of slimllm). Besides the logits of the whole batch it checks, on the same
model, what a user of transformers relies on:
  - without trust_remote_code a pruned model is refused with transformers' trust_remote_code message;
  - the KV cache: a prefix and then one token at a time gives the logits of the whole sequence;
  - padding: a left-padded row (attention_mask, position_ids from the mask) gives its unpadded logits;
  - greedy `generate` with the cache gives the tokens of `generate` without it;
  - tied embeddings share one tensor when tie_word_embeddings, and not otherwise.
float32 on CPU. Prints one JSON line; exits 1 when a check fails (tolerance --tol, relative to the
largest logit magnitude).
Used by crates/slim-model/tests/it/transformers.rs; run by hand as
  python tools/transformers/check_logits.py --model DIR --expected logits.json
"""

import argparse
import json
import sys


def rel_err(a, b):
    """max |a - b| / max |b|"""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    with open(args.expected) as f:
        expected = json.load(f)
    ids = torch.tensor(expected["ids"], dtype=torch.long)
    want = torch.tensor(expected["logits"], dtype=torch.float32)
    result = {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    failures = []

    with open(f"{args.model}/config.json") as f:
        raw = json.load(f)
    if raw.get("model_type") == "slimllm":
        try:
            AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, trust_remote_code=False)
            failures.append("loaded without trust_remote_code")
        except ValueError as e:
            result["refused_without_trust_remote_code"] = "trust_remote_code" in str(e)
            if "trust_remote_code" not in str(e):
                failures.append(f"refusal without trust_remote_code does not say so: {e}")

    config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, trust_remote_code=True)
    model.eval()
    result["class"] = type(model).__name__
    tol = args.tol

    def check(name, err):
        result[name] = err
        if not err <= tol:
            failures.append(f"{name}: {err:.3g} > {tol:g}")

    with torch.inference_mode():
        got = model(input_ids=ids).logits
        check("logits_rel_err", rel_err(got, want))

        # KV cache: prefix, then one token at a time.
        n = ids.shape[1]
        split = max(1, n // 2)
        out = model(input_ids=ids[:, :split], use_cache=True)
        steps = [out.logits]
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        for t in range(split, n):
            out = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            steps.append(out.logits)
        check("cached_rel_err", rel_err(torch.cat(steps, dim=1), got))

        # Left padding: row 0 shifted right by `pad` positions behind padding.
        pad = 3
        pad_id = config.pad_token_id if config.pad_token_id is not None else 0
        padded = torch.cat([torch.full((1, pad), pad_id, dtype=torch.long), ids[:1]], dim=1)
        mask = torch.cat([torch.zeros(1, pad, dtype=torch.long), torch.ones(1, n, dtype=torch.long)], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        padded_logits = model(input_ids=padded, attention_mask=mask, position_ids=positions).logits[:, pad:]
        check("padded_rel_err", rel_err(padded_logits, got[:1]))

        # Greedy generation with and without the cache.
        prompt = ids[:, : min(4, n)]
        kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=pad_id, attention_mask=torch.ones_like(prompt))
        with_cache = model.generate(prompt, use_cache=True, **kw)
        without = model.generate(prompt, use_cache=False, **kw)
        result["generate_same_tokens"] = bool(torch.equal(with_cache, without))
        if not result["generate_same_tokens"]:
            failures.append(f"generate differs with the cache: {with_cache.tolist()} vs {without.tolist()}")

    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    result["tied"] = tied
    if tied != bool(config.tie_word_embeddings):
        failures.append(f"lm_head tied: {tied}, tie_word_embeddings: {config.tie_word_embeddings}")

    result["failures"] = failures
    print(json.dumps(result))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
