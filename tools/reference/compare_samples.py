#!/usr/bin/env python3
"""Document-by-document comparison of two zero-shot samples files (`slimllm eval zeroshot --samples A` and
`tools/reference/zeroshot.py --samples B`, one JSON line per document: task, doc_id, lls, greedy, gold).

Per task: the documents in both files, those in only one, the largest relative log-likelihood difference
|a - b| / max(1, |b|), the documents whose argmax over the choices differs (first maximum wins, as both scorers
pick), the documents whose greedy flags differ, and acc (argmax == gold) of each side over the common documents.
Exits 1 when a task has no common document or the files disagree on a document's gold or number of choices.
Standard library only.
"""

import argparse
import json
import sys


def read(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON ({e}); a torn last line is cut by --resume")
            out[(r["task"], r["doc_id"])] = r
    return out


def argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="samples file (e.g. slimllm's)")
    ap.add_argument("b", help="samples file (e.g. the reference's)")
    args = ap.parse_args()
    a, b = read(args.a), read(args.b)
    tasks = sorted({t for t, _ in a} | {t for t, _ in b})
    bad = False
    for t in tasks:
        ka = {k for k in a if k[0] == t}
        kb = {k for k in b if k[0] == t}
        common = sorted(ka & kb, key=lambda k: str(k[1]))
        worst, arg_diff, greedy_diff, acc_a, acc_b = 0.0, 0, 0, 0, 0
        for k in common:
            ra, rb = a[k], b[k]
            if ra["gold"] != rb["gold"] or len(ra["lls"]) != len(rb["lls"]):
                print(f"{t} doc {k[1]}: gold {ra['gold']} vs {rb['gold']}, {len(ra['lls'])} vs {len(rb['lls'])} choices")
                bad = True
                continue
            for x, y in zip(ra["lls"], rb["lls"]):
                worst = max(worst, abs(x - y) / max(1.0, abs(y)))
            ia, ib = argmax(ra["lls"]), argmax(rb["lls"])
            arg_diff += ia != ib
            greedy_diff += ra["greedy"] != rb["greedy"]
            acc_a += ia == ra["gold"]
            acc_b += ib == rb["gold"]
        n = len(common)
        if n == 0:
            print(f"{t}: no common document ({len(ka)} only in A, {len(kb)} only in B)")
            bad = True
            continue
        print(f"{t}: {n} common documents ({len(ka) - n} only in A, {len(kb) - n} only in B); "
              f"max relative ll difference {worst:.1e}; argmax differs on {arg_diff}, greedy on {greedy_diff}; "
              f"acc {100 * acc_a / n:.2f} (A) vs {100 * acc_b / n:.2f} (B)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
