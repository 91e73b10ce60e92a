#!/usr/bin/env python3
"""Reference LoRA fine-tuning with PyTorch + PEFT: per-step losses, gradient norms and learning rates to compare
with slimllm's LoRA training.

  lora_reference.py --model DIR --adapter-init DIR --batches FILE.safetensors --out DIR
                    [--steps 20] [--micro-batch 4] [--batch 16] [--lr 1e-4] [--warmup 100] [--total-steps N]
                    [--max-grad-norm 1.0] [--weight-decay 0.0] [--threads N] [--dump-grads FILE.safetensors]

--model: Hugging Face directory, loaded with AutoModelForCausalLM in float32 on the CPU, attention_dropout 0,
eval mode (no dropout anywhere; gradients are still computed).
--adapter-init: PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors with keys
`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in] and `...lora_B.weight` [out, r]).
Loaded with PeftModel.from_pretrained(is_trainable=True) and lora_dropout forced to 0; every loaded A and B is
checked to equal the file's bit for bit (B need not be zero).
--batches: safetensors with `input_ids` and `labels` (int64 or int32, [n_seqs, seq_len], label -100 = not
scored; padding, if any, on the right with label -100; no attention mask is used). Rows are consumed in file order
(wrapping around to the first row when the file has fewer than steps * batch), --micro-batch rows per forward,
grad_accum = batch / micro_batch forwards per optimizer step. The total batch is --batch when given, else the
file's metadata "batch", else metadata "grad_accum" * micro_batch, else 16.
Loss of a step: position t predicts token t+1; the sum of the token NLLs over every scored (shifted label != -100)
position of all the step's micro-batches, divided by the number of such positions in the whole step. Each
micro-batch backpropagates its NLL sum / that step count, so the gradient is the gradient of the step's loss.
The reported loss is computed before the update.
Optimizer: torch.optim.AdamW(lr, betas (0.9, 0.999), eps 1e-8, weight_decay) over the LoRA parameters only;
clip_grad_norm_(max_grad_norm) before each step (skipped when <= 0); transformers' get_linear_schedule_with_warmup
(warmup, total_steps, default --steps), stepped after each optimizer step (so step 0 runs at lr 0 when warmup > 0;
AdamW's moments are still updated). Reported per step: loss, gradient norm before clipping, lr used.
--dump-grads: after the first step's backward (before clipping and the update) every LoRA gradient, under the
adapter file's key names (PEFT's ".default" stripped).
Writes --out/steps.json {"steps": [{"step", "loss", "grad_norm", "lr", "scored"}], "config", "timing": {"seconds",
"tokens_per_second"} (input tokens over the training loop, model load and gradient dump excluded), "torch",
"peft"} and --out/adapter/ (model.save_pretrained, PEFT format); the last line printed is that same JSON.
"""

import argparse
import json
import math
import os
import sys
import time

from common import cores

LORA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def adapter_key(param_name: str) -> str:
    """PEFT parameter name -> adapter_model.safetensors key (drop the adapter name)."""
    return param_name.replace(".default.", ".")


def load_batches(path: str, micro_batch: int, batch_arg):
    import torch
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        ids, labels = f.get_tensor("input_ids"), f.get_tensor("labels")
    if ids.shape != labels.shape or ids.dim() != 2:
        sys.exit(f"input_ids {tuple(ids.shape)} and labels {tuple(labels.shape)} must be one [n_seqs, seq_len] shape")
    if batch_arg is not None:
        batch, source = batch_arg, "--batch"
    elif "batch" in meta:
        batch, source = int(meta["batch"]), "metadata batch"
    elif "grad_accum" in meta:
        batch, source = int(meta["grad_accum"]) * micro_batch, "metadata grad_accum"
    else:
        batch, source = 16, "default"
    if batch % micro_batch != 0:
        sys.exit(f"batch {batch} ({source}) is not a multiple of micro-batch {micro_batch}")
    return ids.to(torch.long), labels.to(torch.long), batch, source


def load_model(args):
    import torch
    from peft import LoraConfig, PeftModel
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    # A pruned model's config names its own class (trust_remote_code), which takes no keyword overrides.
    model_config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    if hasattr(model_config, "attention_dropout"):
        model_config.attention_dropout = 0.0
    base = AutoModelForCausalLM.from_pretrained(
        args.model, config=model_config, dtype=torch.float32, trust_remote_code=True
    )
    config = LoraConfig.from_pretrained(args.adapter_init)
    if config.bias != "none" or not set(config.target_modules) <= LORA_TARGETS:
        sys.exit(f"unsupported adapter: bias {config.bias!r}, target_modules {sorted(config.target_modules)}")
    config.lora_dropout = 0.0
    model = PeftModel.from_pretrained(base, args.adapter_init, is_trainable=True, config=config)
    model.eval()  # no dropout; autograd is unaffected

    # The loaded A and B must be the file's, bit for bit (PEFT initializes, then loads: catch a silent skip).
    init = load_file(os.path.join(args.adapter_init, "adapter_model.safetensors"))
    params = dict(model.named_parameters())
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    if not trainable or any("lora_" not in n for n in trainable):
        sys.exit(f"trainable parameters must all be LoRA ones: {sorted(trainable)[:5]}")
    loaded = {adapter_key(n): p for n, p in trainable.items()}
    if set(loaded) != set(init):
        sys.exit(f"adapter keys differ: only in model {sorted(set(loaded) - set(init))[:4]}, "
                 f"only in file {sorted(set(init) - set(loaded))[:4]}")
    for k, t in init.items():
        if not torch.equal(loaded[k].detach(), t.to(torch.float32)):
            sys.exit(f"{k}: loaded value differs from the adapter file")
    for name, mod in model.named_modules():
        drop = getattr(mod, "lora_dropout", None)
        if drop is not None and not all(isinstance(d, torch.nn.Identity) for d in drop.values()):
            sys.exit(f"{name}: LoRA dropout is not the identity")
    return model, config, trainable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--adapter-init", required=True, help="PEFT LoRA adapter directory (the initial A and B)")
    ap.add_argument("--batches", required=True, help="safetensors with input_ids and labels [n_seqs, seq_len]")
    ap.add_argument("--out", required=True, help="output directory (steps.json, adapter/)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--batch", type=int, default=None,
                    help="sequences per optimizer step (default: the file's metadata, else 16)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--total-steps", type=int, default=None, help="schedule length (default: --steps)")
    ap.add_argument("--max-grad-norm", type=float, default=1.0, help="<= 0: no clipping")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=cores())
    ap.add_argument("--dump-grads", default=None, help="write the first step's LoRA gradients to this safetensors")
    args = ap.parse_args()

    import peft
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file
    from transformers import get_linear_schedule_with_warmup

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    total_steps = args.total_steps if args.total_steps is not None else args.steps
    ids, labels, batch, batch_source = load_batches(args.batches, args.micro_batch, args.batch)
    grad_accum = batch // args.micro_batch
    if ids.shape[0] < args.steps * batch:
        print(f"  {ids.shape[0]} sequences for {args.steps} steps of {batch}: wrapping around", file=sys.stderr)
    model, lora_config, trainable = load_model(args)
    params = list(trainable.values())
    vocab = model.config.vocab_size
    if int(ids.max()) >= vocab or int(ids.min()) < 0:
        sys.exit(f"input_ids outside [0, {vocab})")

    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=args.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, args.warmup, total_steps)
    steps = []
    seconds = 0.0
    for step in range(args.steps):
        start = time.perf_counter()
        rows = torch.arange(step * batch, (step + 1) * batch) % ids.shape[0]
        step_ids, step_labels = ids[rows], labels[rows]
        scored = int((step_labels[:, 1:] != -100).sum())
        if scored == 0:
            sys.exit(f"step {step}: no scored position")
        opt.zero_grad(set_to_none=True)
        nll_sum = 0.0
        for m in range(grad_accum):
            mb = slice(m * args.micro_batch, (m + 1) * args.micro_batch)
            logits = model(input_ids=step_ids[mb], attention_mask=None).logits  # [B, T, V] float32
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), step_labels[mb, 1:].reshape(-1),
                                  ignore_index=-100, reduction="sum")
            (nll / scored).backward()
            nll_sum += nll.item()
        seconds += time.perf_counter() - start
        if step == 0 and args.dump_grads:
            grads = {adapter_key(n): p.grad.detach().contiguous() for n, p in trainable.items()}
            save_file(grads, args.dump_grads)
        start = time.perf_counter()
        if args.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm))
        else:
            grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        seconds += time.perf_counter() - start
        loss = nll_sum / scored
        if not math.isfinite(loss):
            sys.exit(f"step {step}: loss {loss}")
        steps.append({"step": step, "loss": loss, "grad_norm": grad_norm, "lr": lr, "scored": scored})
        print(f"  step {step}: loss {loss:.6f} grad_norm {grad_norm:.6f} lr {lr:.3e}", file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(os.path.join(args.out, "adapter"))
    tokens = args.steps * batch * ids.shape[1]
    result = {
        "steps": steps,
        "config": {
            "model": args.model, "adapter_init": args.adapter_init, "batches": args.batches,
            "steps": args.steps, "micro_batch": args.micro_batch, "batch": batch, "batch_source": batch_source,
            "grad_accum": grad_accum, "seq_len": ids.shape[1], "n_seqs": ids.shape[0], "lr": args.lr,
            "warmup": args.warmup, "total_steps": total_steps, "max_grad_norm": args.max_grad_norm,
            "weight_decay": args.weight_decay, "betas": [0.9, 0.999], "eps": 1e-8, "threads": args.threads,
            "r": lora_config.r, "lora_alpha": lora_config.lora_alpha, "use_rslora": lora_config.use_rslora,
            "target_modules": sorted(lora_config.target_modules), "lora_dropout": 0.0,
            "lora_params": sum(p.numel() for p in params), "dump_grads": args.dump_grads,
        },
        "timing": {"seconds": round(seconds, 3), "tokens_per_second": round(tokens / seconds, 1)},
        "torch": torch.__version__,
        "peft": peft.__version__,
    }
    with open(os.path.join(args.out, "steps.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
