#!/usr/bin/env python3
"""Zero-shot multiple-choice scoring of a Hugging Face model with lm-eval-harness 0.3.0 semantics.

Documents come from <data>/<task>.jsonl ({"doc_id", "doc"} per line). Every choice becomes one log-likelihood
request (context, continuation); context and continuation are tokenized SEPARATELY (no special tokens; an empty
context becomes [eos]), the sequence is context_ids + continuation_ids (left-truncated to max_length + 1 as lm-eval
does) and ll = sum over the continuation tokens of log_softmax(logits) at the previous position, in float32;
greedy = every continuation token is the argmax. acc = argmax(ll) == gold (first max wins);
acc_norm = argmax(ll / len(choice text in characters)) == gold; stderr = sample std (ddof=1) / sqrt(n).
lambada: acc = greedy, ppl = exp(-mean ll). The requests of one document run as one right-padded batch and the
LM head + log_softmax are applied only at the continuation positions. float32 on CPU; --threads (default: one per
usable core).
The last line printed is JSON: {"results": {task: {...}}, "config": {...}, "timing": {...}}.
--self-check compares, on the first 3 documents of each task, the batched lls with one naive unbatched forward.
--shared-context: when a document's requests share one context (after truncation), the context runs once into
transformers' DynamicCache, which is repeated over the choices whose continuations then run as one right-padded
batch (half the tokens on HellaSwag and BoolQ; the same numbers up to float32 rounding: --self-check checks both).
"""

import argparse
import json
import math
import os
import sys
import time

from common import cores, load

NORM_TASKS = {"piqa", "hellaswag", "arc_easy", "arc_challenge", "openbookqa"}  # acc + acc_norm
ALL_TASKS = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "lambada"]


def build_requests(task: str, doc: dict):
    """(list of (context, continuation) strings, gold index, choice lengths for acc_norm or None)."""
    if task == "winogrande":  # lm-eval partial scoring: the option goes in the context, the rest is scored
        s = doc["sentence"]
        i = s.index("_")
        cont = " " + s[i + 1:].strip()
        return [(s[:i] + opt, cont) for opt in (doc["option1"], doc["option2"])], int(doc["answer"]) - 1, None
    if task == "piqa":
        ctx, choices, gold = f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], doc["label"]
    elif task == "openbookqa":  # lm-eval 0.3 scores the bare question stem
        q, pre, suf = doc["query"], "Question: ", "\nAnswer:"
        if not (q.startswith(pre) and q.endswith(suf)):
            raise ValueError(f"openbookqa query without the Question/Answer wrapper: {q!r}")
        ctx, choices, gold = q[len(pre):-len(suf)], doc["choices"], doc["gold"]
    elif task == "lambada":
        ctx, choices, gold = doc["query"], doc["choices"], 0
    elif task in ("boolq", "hellaswag", "arc_easy", "arc_challenge"):
        ctx, choices, gold = doc["query"], doc["choices"], doc["gold"]
    else:
        raise ValueError(f"unknown task {task}")
    norm = [float(len(c)) for c in choices] if task in NORM_TASKS else None
    return [(ctx, " " + c) for c in choices], gold, norm


def encode(tokenizer, text: str):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_requests(tokenizer, reqs, max_len: int):
    """(input ids = (ctx + cont)[-(max_len+1):][:-1], number of continuation tokens) per request, as lm-eval."""
    out, ctx_cache = [], {}
    for ctx, cont in reqs:
        if ctx not in ctx_cache:  # the choices of a document share their context: tokenize it once
            ctx_cache[ctx] = encode(tokenizer, ctx) if ctx else [tokenizer.eos_token_id]
        cont_ids = encode(tokenizer, cont)
        full = (ctx_cache[ctx] + cont_ids)[-(max_len + 1):]
        out.append((full, len(cont_ids)))
    return out


def score_batch(model, torch, items):
    """Batched scoring of [(full ids, n continuation tokens)]: [(ll, greedy)], right padding + attention mask."""
    inps = [full[:-1] for full, _ in items]
    width = max(len(x) for x in inps)
    ids = torch.zeros((len(inps), width), dtype=torch.long)
    mask = torch.zeros((len(inps), width), dtype=torch.long)
    rows, cols, targets = [], [], []
    for b, ((full, k), x) in enumerate(zip(items, inps)):
        ids[b, :len(x)] = torch.tensor(x)
        mask[b, :len(x)] = 1
        n = len(full)  # continuation tokens full[n-k:] are predicted at input positions n-k-1 .. n-2
        rows += [b] * k
        cols += range(n - k - 1, n - 1)
        targets += full[n - k:]
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, H]
    h = hidden[torch.tensor(rows), torch.tensor(cols)]  # [N, H]: only the continuation positions
    logp = torch.log_softmax(model.lm_head(h).float(), dim=-1)  # [N, V]
    tgt = torch.tensor(targets)
    tok_lp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    hit = logp.argmax(dim=-1) == tgt
    res, o = [], 0
    for _, k in items:
        res.append((float(tok_lp[o:o + k].sum()), bool(hit[o:o + k].all())))  # float32 sum, as lm-eval
        o += k
    return res


def score_shared(model, torch, items):
    """score_batch's result for requests that share their context: the context once, its cache repeated over the
    choices, the continuations (all but their last token) as one right-padded batch on top of it."""
    ks = [k for _, k in items]
    ctx = items[0][0][: len(items[0][0]) - ks[0]]
    out = model.model(input_ids=torch.tensor([ctx]), use_cache=True)
    h_ctx = out.last_hidden_state[0, -1]  # predicts every continuation's first token
    conts = [full[len(ctx):] for full, _ in items]
    hs = [[h_ctx] for _ in items]
    width = max(len(c) for c in conts) - 1
    if width > 0:
        past = out.cache
        past.batch_repeat_interleave(len(items))
        ids = torch.zeros((len(items), width), dtype=torch.long)
        mask = torch.zeros((len(items), len(ctx) + width), dtype=torch.long)
        mask[:, : len(ctx)] = 1
        for b, c in enumerate(conts):
            ids[b, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            mask[b, len(ctx): len(ctx) + len(c) - 1] = 1
        hidden = model.model(input_ids=ids, attention_mask=mask, cache=past, use_cache=True).last_hidden_state
        for b, c in enumerate(conts):
            hs[b] += list(hidden[b, : len(c) - 1])
    h = torch.stack([x for row in hs for x in row])
    logp = torch.log_softmax(model.lm_head(h).float(), dim=-1)
    tgt = torch.tensor([t for c in conts for t in c])
    tok_lp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    hit = logp.argmax(dim=-1) == tgt
    res, o = [], 0
    for k in ks:
        res.append((float(tok_lp[o:o + k].sum()), bool(hit[o:o + k].all())))
        o += k
    return res


def shares_context(items):
    ctx = items[0][0][: len(items[0][0]) - items[0][1]]
    return len(ctx) > 0 and all(full[: len(full) - k] == ctx for full, k in items)


def score_naive(model, torch, full, k):
    """One unbatched forward of the whole sequence, full-vocabulary log_softmax everywhere, no slicing."""
    logits = model(input_ids=torch.tensor([full])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)[:-1]  # position t predicts token t+1
    tgt = torch.tensor(full[1:])
    tok_lp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)[-k:]
    return float(tok_lp.sum()), bool((logp.argmax(-1) == tgt)[-k:].all())


def mean_stderr(xs):
    n = len(xs)
    if n < 2:
        return None  # undefined (lm-eval would divide by zero); null in the JSON
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def argmax(xs):
    """numpy semantics: the first maximum wins. (lm-eval 0.3's BoolQ predicts "yes" iff ll_yes > ll_no, i.e. "no" on
    an exact tie where this picks "yes": an exact float32 tie of two different sums does not happen in practice.)"""
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def doc_metrics(task, lls, greedy, gold, norm):
    if task == "lambada":
        return {"acc": float(greedy[0]), "ll": lls[0]}
    m = {"acc": float(argmax(lls) == gold)}
    if norm is not None:
        m["acc_norm"] = float(argmax([ll / n for ll, n in zip(lls, norm)]) == gold)
    return m


def aggregate(task, per_doc):
    r = {}
    for key in ("acc", "acc_norm"):
        if key in per_doc[0]:
            xs = [m[key] for m in per_doc]
            r[key], r[key + "_stderr"] = sum(xs) / len(xs), mean_stderr(xs)
    if task == "lambada":
        r["ppl"] = math.exp(-sum(m["ll"] for m in per_doc) / len(per_doc))
    r["n"] = len(per_doc)
    return r


def read_prior(path):
    """(task, doc_id) -> (lls, greedy) of the complete lines of a samples file; a torn last line
    (the process was killed while writing it) is cut off so that appending starts on a fresh line."""
    prior = {}
    if not os.path.exists(path):
        return prior
    with open(path, "rb") as f:
        data = f.read()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        with open(path, "wb") as f:
            f.write(keep)
    for line in keep.decode("utf-8").splitlines():
        rec = json.loads(line)
        prior[(rec["task"], rec["doc_id"])] = (rec["lls"], rec["greedy"])
    return prior


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--tasks", default=",".join(ALL_TASKS), help=f"comma-separated, default {','.join(ALL_TASKS)}")
    ap.add_argument("--limit", type=int, default=None, help="only the first N documents of each task (file order)")
    ap.add_argument("--data", default=os.path.join(root, "data", "datasets", "zeroshot"), help="folder of <task>.jsonl")
    ap.add_argument("--out", default=None, help="also write the result JSON to this file")
    ap.add_argument("--samples", default=None, help="write one JSON line per document (lls, greedy, gold) here")
    ap.add_argument("--resume", action="store_true",
                    help="keep the documents already in --samples (a killed run's), score only the rest, append")
    ap.add_argument("--threads", type=int, default=cores(),
                    help="torch threads (default: usable cores; fewer helps when other jobs share the CPU)")
    ap.add_argument("--self-check", action="store_true",
                    help="compare batched and naive lls on the first 3 documents of each task, then exit")
    ap.add_argument("--reverse", action="store_true",
                    help="score each task's documents last to first: a second process with its own --samples file "
                         "then splits a long run; concatenate the two files and --resume over them for the result")
    ap.add_argument("--shared-context", action="store_true",
                    help="run a document's shared context once and reuse its KV cache for the choices")
    args = ap.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in ALL_TASKS:
            sys.exit(f"unknown task {t!r}; known: {', '.join(ALL_TASKS)}")

    import torch
    import transformers

    tokenizer, model = load(args.model)
    torch.set_num_threads(args.threads)
    cfg = model.config
    max_len = getattr(cfg, "n_ctx", None) or cfg.max_position_embeddings  # lm-eval 0.3 gpt2.py max_length
    limit = 3 if args.self_check else args.limit

    # Read and tokenize everything first: gives the token total for the ETA and fails early on bad data.
    work = {}  # task -> list of (doc_id, tokenized requests, gold, norm)
    for t in tasks:
        docs = []
        with open(os.path.join(args.data, t + ".jsonl"), encoding="utf-8") as f:
            for line in f:
                if limit is not None and len(docs) >= limit:
                    break
                rec = json.loads(line)
                reqs, gold, norm = build_requests(t, rec["doc"])
                docs.append((rec["doc_id"], tokenize_requests(tokenizer, reqs, max_len), gold, norm))
        work[t] = docs
    total_tok = sum(len(full) - 1 for docs in work.values() for d in docs for full, _ in d[1])
    print(f"{sum(len(d) for d in work.values())} documents, {total_tok} input tokens, {args.threads} threads",
          file=sys.stderr)

    with torch.inference_mode():
        if args.self_check:
            worst, shared = 0.0, 0
            for t, docs in work.items():
                for doc_id, items, _, _ in docs:
                    batched = score_batch(model, torch, items)
                    if args.shared_context and shares_context(items):
                        shared += 1
                        for (ll_s, g_s), (ll_b, g_b) in zip(score_shared(model, torch, items), batched):
                            worst = max(worst, abs(ll_s - ll_b))
                            if abs(ll_s - ll_b) > 1e-4 or g_s != g_b:
                                sys.exit(f"self-check FAILED {t} doc {doc_id}: shared {ll_s} {g_s}, batched {ll_b} {g_b}")
                    for (ll_b, g_b), (full, k) in zip(batched, items):
                        ll_n, g_n = score_naive(model, torch, full, k)
                        worst = max(worst, abs(ll_b - ll_n))
                        if abs(ll_b - ll_n) > 1e-4 or g_b != g_n:
                            sys.exit(f"self-check FAILED {t} doc {doc_id}: batched {ll_b} {g_b}, naive {ll_n} {g_n}")
            print(json.dumps({"self_check": "ok", "tasks": tasks, "max_abs_diff": worst,
                              "shared_context_documents": shared}))
            return

        results, done_tok, start = {}, 0, time.perf_counter()
        if args.resume and not args.samples:
            sys.exit("--resume needs --samples")
        prior = read_prior(args.samples) if args.resume else {}
        if prior:
            print(f"resuming: {len(prior)} documents already scored in {args.samples}", file=sys.stderr)
        samples = open(args.samples, "a" if args.resume else "w", encoding="utf-8", buffering=1) if args.samples else None
        for t, docs in work.items():
            per_doc = []
            for i, (doc_id, items, gold, norm) in enumerate(docs[::-1] if args.reverse else docs, 1):
                if (t, doc_id) in prior:
                    lls, greedy = prior[(t, doc_id)]
                    per_doc.append(doc_metrics(t, lls, greedy, gold, norm))
                    total_tok -= sum(len(f) - 1 for f, _ in items)
                    continue
                if args.shared_context and shares_context(items):
                    scores = score_shared(model, torch, items)
                else:
                    scores = score_batch(model, torch, items)  # the requests of one document: one padded batch
                lls, greedy = [s[0] for s in scores], [s[1] for s in scores]
                per_doc.append(doc_metrics(t, lls, greedy, gold, norm))
                done_tok += sum(len(f) - 1 for f, _ in items)
                if samples:
                    samples.write(json.dumps({"task": t, "doc_id": doc_id, "lls": lls, "greedy": greedy,
                                              "gold": gold}) + "\n")
                if i % 100 == 0 or i == len(docs):
                    el = time.perf_counter() - start
                    rate = done_tok / el
                    print(f"  {t} {i}/{len(docs)}  {rate:.0f} tok/s  elapsed {el:.0f}s  "
                          f"ETA {(total_tok - done_tok) / rate:.0f}s", file=sys.stderr)
            results[t] = aggregate(t, per_doc)
            print(f"{t}: {json.dumps(results[t])}", file=sys.stderr)
        if samples:
            samples.close()

    seconds = time.perf_counter() - start
    out = {
        "results": results,
        "config": {"model": args.model, "data": args.data, "limit": args.limit, "tasks": tasks, "max_length": max_len,
                   "shared_context": args.shared_context, "reverse": args.reverse,
                   "torch": torch.__version__, "transformers": transformers.__version__},
        "timing": {"seconds": round(seconds, 3), "input_tokens": total_tok,
                   "tokens_per_s": round(total_tok / seconds, 1), "threads": args.threads},
    }
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
