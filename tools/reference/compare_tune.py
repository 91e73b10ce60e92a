#!/usr/bin/env python3
"""`slimllm tune` against PyTorch + PEFT (lora_reference.py) on the same model, batches and
initial adapter, dropout 0: per-step loss, gradient norm and learning rate, and the adapter
after the last step.

    compare_tune.py --slimllm target/release/slimllm --model DIR --work DIR
                    [--steps 20] [--batch 4] [--micro-batch 2] [--seq-len 64] [--rank 8]
                    [--lr 1e-4] [--warmup 2] [--threads N]

Runs `slimllm tune` first (it writes its initial adapter with --dump-init and the batches of
every step with --dump-batches), then lora_reference.py on those, then compares. The last line
of stdout is JSON: the largest relative loss difference, the largest gradient-norm difference,
the adapter's largest difference relative to the largest change from the initial adapter, and
both runs' training tokens/s. Exit status 1 when a loss differs by more than --loss-tol.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slimllm", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--loss-tol", type=float, default=1e-3)
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ours, init, batches = work / "slimllm", work / "init", work / "batches.safetensors"
    common = ["--steps", str(a.steps), "--warmup", str(a.warmup), "--lr", str(a.lr)]
    subprocess.run(
        [a.slimllm, "--quiet", "tune", "--model", a.model, "--out", str(ours), "--force",
         "--batch", str(a.batch), "--micro-batch", str(a.micro_batch), "--seq-len", str(a.seq_len),
         "--rank", str(a.rank), "--alpha", str(2 * a.rank), "--lora-dropout", "0",
         "--val-size", "8", "--val-every", "0", "--checkpoint-every", "0",
         "--dump-init", str(init), "--dump-batches", str(batches), *common],
        check=True,
    )
    here = Path(__file__).resolve().parent
    ref = work / "torch"
    subprocess.run(
        [sys.executable, str(here / "lora_reference.py"), "--model", a.model, "--adapter-init", str(init),
         "--batches", str(batches), "--out", str(ref), "--batch", str(a.batch),
         "--micro-batch", str(a.micro_batch), "--total-steps", str(a.steps), "--threads", str(a.threads), *common],
        check=True, stdout=subprocess.DEVNULL,
    )
    mine = json.loads((ours / "tune.json").read_text())
    theirs = json.loads((ref / "steps.json").read_text())
    rows, worst_loss, worst_norm = [], 0.0, 0.0
    for m, t in zip(mine["steps"], theirs["steps"]):
        dl = abs(m["loss"] - t["loss"]) / abs(t["loss"])
        dn = abs(m["grad_norm"] - t["grad_norm"]) / max(abs(t["grad_norm"]), 1e-12)
        worst_loss, worst_norm = max(worst_loss, dl), max(worst_norm, dn)
        rows.append((m["step"], m["loss"], t["loss"], dl, m["grad_norm"], t["grad_norm"], m["lr"], t["lr"]))
        print(f"step {m['step']:3d}: loss {m['loss']:.6f} vs {t['loss']:.6f} ({dl:.1e}), "
              f"grad norm {m['grad_norm']:.5f} vs {t['grad_norm']:.5f}, lr {m['lr']:.2e} vs {t['lr']:.2e}")
    a0 = load_file(str(init / "adapter_model.safetensors"))
    a1 = load_file(str(ours / "adapter" / "adapter_model.safetensors"))
    b1 = load_file(str(ref / "adapter" / "adapter_model.safetensors"))
    change = max(float(np.abs(a1[k] - a0[k]).max()) for k in a0)
    diff = max(float(np.abs(a1[k] - b1[k]).max()) for k in a0)
    ours_tps = sum(s["tokens"] for s in mine["steps"]) / sum(s["seconds"] for s in mine["steps"])
    result = {
        "steps": len(rows), "max_loss_rel_diff": worst_loss, "max_grad_norm_rel_diff": worst_norm,
        "adapter_max_diff": diff, "adapter_max_change": change, "adapter_diff_over_change": diff / change,
        "tokens_per_second": {"slimllm": ours_tps, "torch": theirs["timing"]["tokens_per_second"]},
        "versions": {"torch": theirs.get("torch"), "peft": theirs.get("peft")},
    }
    print(json.dumps(result))
    sys.exit(0 if worst_loss <= a.loss_tol and len(rows) == a.steps else 1)


if __name__ == "__main__":
    main()
