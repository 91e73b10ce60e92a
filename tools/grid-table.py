#!/usr/bin/env python3
"""Markdown table of pipeline runs from their summary.json files (stdlib only).

Usage: tools/grid-table.py data/runs/grid-*   (one row per run folder, in the order given)
Columns: target, scorer, recovery, GQA, exact parameters after, removed %, full-set PTB-valid
and PTB-test perplexity, and the seconds of each pipeline stage as the run report recorded them.
"""
import json
import sys
from pathlib import Path

STAGES = ["calib", "capture", "alloc", "score", "recover", "surgery", "load"]


def main() -> None:
    rows = []
    dense = {}
    for d in sys.argv[1:]:
        s = json.loads((Path(d) / "summary.json").read_text())
        c = s["config"]
        secs = {st["name"]: st["seconds"] for st in s["stages"]}
        ppl = s.get("ppl", {})
        for k, v in ppl.items():
            dense[k] = v["before"]["ppl"]
        rows.append(
            [
                f"{c['target'] * 100:.0f} %",
                c["scorer"],
                c["recovery"],
                c["gqa"],
                f"{s['params_after']:,}",
                f"{100 * s['removed_fraction']:.3f}",
                f"{ppl['ptb-valid']['after']['ppl']:.2f}" if "ptb-valid" in ppl else "-",
                f"{ppl['ptb-test']['after']['ppl']:.2f}" if "ptb-test" in ppl else "-",
            ]
            + [f"{secs.get(st, 0.0):.1f}" for st in STAGES]
            + [f"{s['pruning_seconds']:.1f}", Path(d).name]
        )
    head = ["target", "scorer", "recovery", "GQA", "params after", "removed %", "PTB-valid", "PTB-test"]
    head += [f"{st} s" for st in STAGES] + ["pipeline s", "run"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if dense:
        print()
        print("Dense model: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(dense.items())))


if __name__ == "__main__":
    main()
