#!/usr/bin/env python3
"""The llama.cpp checks of `slimllm export` (issue 13), one command:

  data/tools/llamacpp/venv/bin/python tools/llamacpp/check.py \\
      --model dense=data/models/smollm2-135m --model p20=data/runs/export-20/model \\
      --types f32,f16,bf16,q8_0 --windows 64 --out data/evals/llamacpp-check.json

For every model directory and type: `slimllm export` to data/exports/<name>-<type>.gguf, then
- perplexity on the first --windows PTB-valid windows (seq 128) in llama.cpp (tools/llamacpp/ppl.py: the
  same windows and tokens as `slimllm eval ppl`, llama.cpp's tokenizer checked token for token) beside
  `slimllm eval ppl`, with the issue's tolerances: 0.1 % (f32), 0.5 % (f16, bf16), 2 % (q8_0);
- for f32, greedy generation of --gen-tokens tokens for 3 prompts in llama.cpp (argmax of its logits)
  against `slimllm generate`;
- with --bench, llama-bench (prefill -p 128, decode -n 64, --threads) for f16 and q8_0 beside
  `slimllm bench --decode 64` on the directory.
A type whose widths are not whole blocks (q8_0 on an unaligned model) is recorded as refused, with
slimllm's message. Prints a Markdown table; --out gets the JSON. Exit status 1 when a check fails.
--drop-exports removes each GGUF once it is checked (CI's disk).
Needs tools/llamacpp/build.sh (cargo xtask llamacpp) and `cargo build --release -p slim-cli`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLAMACPP = os.path.join(ROOT, "data", "tools", "llamacpp")
os.environ.setdefault("LLAMA_CPP_LIB_PATH", os.path.join(LLAMACPP, "build", "bin"))
sys.path.insert(0, os.path.join(LLAMACPP, "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
SLIMLLM = os.path.join(ROOT, "target", "release", "slimllm")
TOLERANCE = {"f32": 1e-3, "f16": 5e-3, "bf16": 5e-3, "q8_0": 2e-2}
PROMPTS = ["The capital of France is", "In 1990, the company reported", "def fibonacci(n):"]


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p


def gguf_py_read(path):
    """The file read back by the `gguf` package (gguf-py 0.19.0, llama.cpp's own reader in Python)."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    field = r.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    return {"architecture": arch, "tensors": len(r.tensors)}


def slimllm_ppl(model, windows, threads):
    out = os.path.join(ROOT, "data", "exports", f".ppl-{os.getpid()}.json")
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    run([SLIMLLM, "--quiet", "eval", "ppl", "--model", model, "--data", "ptb-valid", "--windows", str(windows),
         "--out", out], env=env)
    with open(out) as f:
        r = json.load(f)
    os.remove(out)
    return r["ppl"]


def llamacpp_ppl(gguf, windows, threads, ids):
    p = run([sys.executable, os.path.join(ROOT, "tools", "llamacpp", "ppl.py"), "--gguf", gguf, "--text",
             os.path.join(ROOT, "data", "datasets", "ptb", "valid.txt"), "--windows", str(windows),
             "--threads", str(threads), "--ids", ids])
    return json.loads(p.stdout.strip().splitlines()[-1])


def slimllm_generate(model, n):
    out = os.path.join(ROOT, "data", "exports", f".gen-{os.getpid()}.json")
    ids = []
    for prompt in PROMPTS:
        run([SLIMLLM, "--quiet", "generate", "--model", model, "--prompt", prompt, "--max-new", str(n), "--out", out])
        with open(out) as f:
            ids.append(json.load(f)["generations"][0]["ids"])
    os.remove(out)
    return ids


def llamacpp_generate(gguf, n, threads):
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=256, n_batch=256, logits_all=True, n_threads=threads, verbose=False)
    outs = []
    for prompt in PROMPTS:
        llm.reset()
        toks = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        llm.eval(toks)
        gen = []
        for _ in range(n):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if nxt == llm.token_eos():  # `slimllm generate` stops at EOS without printing it
                break
            gen.append(nxt)
            llm.eval([nxt])
        outs.append(gen)
    del llm
    return outs


def llama_bench(gguf, threads):
    p = run([os.path.join(LLAMACPP, "build", "bin", "llama-bench"), "-m", gguf, "-p", "128", "-n", "64", "-t",
             str(threads), "-r", "3", "-o", "json"])
    rows = json.loads(p.stdout)
    pick = lambda key: next(r["avg_ts"] for r in rows if r[key] > 0)
    return {"prefill_tok_s": pick("n_prompt"), "decode_tok_s": pick("n_gen")}


def slimllm_bench(model, threads):
    out = os.path.join(ROOT, "data", "exports", f".bench-{os.getpid()}.json")
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    run([SLIMLLM, "--quiet", "bench", "--model", model, "--batch", "1", "--seq-len", "128", "--decode", "64",
         "--out", out], env=env)
    with open(out) as f:
        rows = json.load(f)["results"]
    os.remove(out)
    pick = lambda kind: next(r["tokens_per_s"] for r in rows if r["kind"] == kind)
    return {"prefill_tok_s": pick("prefill"), "decode_tok_s": pick("decode")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--types", default="f32,f16,bf16,q8_0")
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--drop-exports", action="store_true",
                    help="remove each GGUF once checked (CI: 1.1 GB less on disk; --out keeps the results)")
    args = ap.parse_args()
    os.makedirs(os.path.join(ROOT, "data", "exports"), exist_ok=True)
    results = []
    failed = False
    for spec in args.model:
        name, model = spec.split("=", 1)
        ids = os.path.join(ROOT, "data", "exports", f"{name}-ptb-valid-ids.json")
        run([SLIMLLM, "--quiet", "tokenize", "--model", model, "--text-file",
             os.path.join(ROOT, "data", "datasets", "ptb", "valid.txt"), "--join", "--out", ids])
        ours = slimllm_ppl(model, args.windows, args.threads)
        row = {"model": name, "dir": model, "windows": args.windows, "slimllm_ppl": ours, "types": {}}
        print(f"{name}: slimllm ppl {ours:.4f} on {args.windows} windows", file=sys.stderr)
        for ty in args.types.split(","):
            gguf = os.path.join(ROOT, "data", "exports", f"{name}-{ty}.gguf")
            t0 = time.perf_counter()
            p = subprocess.run([SLIMLLM, "--quiet", "export", "--model", model, "--out", gguf, "--type", ty,
                                "--force"], capture_output=True, text=True)
            if p.returncode != 0:
                row["types"][ty] = {"refused": p.stderr.strip().splitlines()[0]}
                print(f"  {ty}: export refused: {row['types'][ty]['refused']}", file=sys.stderr)
                continue
            r = {"export_s": round(time.perf_counter() - t0, 2), "bytes": os.path.getsize(gguf)}
            r["gguf_py"] = gguf_py_read(gguf)
            lc = llamacpp_ppl(gguf, args.windows, args.threads, ids)
            r["llamacpp_ppl"] = lc["ppl"]
            r["same_tokens"] = lc["same_tokens_as_slimllm"]
            r["rel_diff"] = abs(lc["ppl"] - ours) / ours
            r["ppl_ok"] = r["rel_diff"] <= TOLERANCE[ty] and bool(lc["same_tokens_as_slimllm"])
            if ty == "f32":
                a = slimllm_generate(model, args.gen_tokens)
                b = llamacpp_generate(gguf, args.gen_tokens, args.threads)
                r["greedy_same"] = [x == y for x, y in zip(a, b)]
                r["greedy_tokens"] = [len(x) for x in a]
                r["greedy_ok"] = all(r["greedy_same"])
            if args.bench and ty in ("f16", "q8_0"):
                r["llama_bench"] = llama_bench(gguf, args.threads)
            failed |= not r["ppl_ok"] or not r.get("greedy_ok", True)
            if args.drop_exports:
                os.remove(gguf)
            row["types"][ty] = r
            print(f"  {ty}: {json.dumps(r)}", file=sys.stderr)
        if args.bench:
            row["slimllm_bench"] = slimllm_bench(model, args.threads)
        results.append(row)
    print("| model | type | size MB | slimllm ppl | llama.cpp ppl | rel. diff | tol. | same tokens | greedy 3×%d |"
          % args.gen_tokens)
    print("|---|---|---|---|---|---|---|---|---|")
    for row in results:
        for ty, r in row["types"].items():
            if "refused" in r:
                print(f"| {row['model']} | {ty} | refused: {r['refused']} |||||||")
                continue
            greedy = {True: "same", False: "differ"}[r["greedy_ok"]] if "greedy_ok" in r else ""
            print(f"| {row['model']} | {ty} | {r['bytes'] / 1e6:.1f} | {row['slimllm_ppl']:.4f} | "
                  f"{r['llamacpp_ppl']:.4f} | {100 * r['rel_diff']:.4f} % | {100 * TOLERANCE[ty]:.1f} % | "
                  f"{r['same_tokens']} | {greedy} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "results": results}, f, indent=1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
