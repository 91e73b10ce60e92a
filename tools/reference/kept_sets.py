#!/usr/bin/env python3
"""The heads, KV heads and MLP channels two pruned models kept, compared layer by layer.

Each pruned model is matched against its own dense model: a pruned q_proj / k_proj head block or gate_proj row is
found by its bytes among the dense model's (surgery copies those rows as they are; recovery only refits o_proj and
down_proj). So a pruning run on bf16 weights and one on f32 weights of the same model can be compared without their
caches. Standard library only.

    kept_sets.py DENSE_A PRUNED_A DENSE_B PRUNED_B

Prints one line per layer (counts, whether the kept heads are the same, channels common to both and only in one)
and a last line of JSON with the totals.
"""
import json
import os
import struct
import sys


class Safetensors:
    """The tensors of a model directory (one file or an index of shards), read on demand."""

    def __init__(self, directory):
        index = os.path.join(directory, "model.safetensors.index.json")
        if os.path.exists(index):
            files = sorted(set(json.load(open(index))["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        self.tensors = {}
        for name in files:
            fh = open(os.path.join(directory, name), "rb")
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
            for key, v in header.items():
                if key != "__metadata__":
                    start, end = v["data_offsets"]
                    self.tensors[key] = (fh, 8 + n + start, end - start, v["shape"])
        self.config = json.load(open(os.path.join(directory, "config.json")))

    def rows(self, name, block=1):
        """The first row of every `block` rows of a 2-D tensor, as bytes."""
        fh, offset, length, shape = self.tensors[name]
        fh.seek(offset)
        data = fh.read(length)
        width = length // shape[0]
        return [data[i * width:(i + 1) * width] for i in range(0, shape[0], block)]


def kept(dense, pruned, name, block):
    """Indices (in `block`s of rows) of the dense tensor's rows that the pruned tensor holds, in its order."""
    where = {row: i for i, row in enumerate(dense.rows(name, block))}
    out = []
    for k, row in enumerate(pruned.rows(name, block)):
        if row not in where:
            sys.exit(f"{name}: block {k} of the pruned tensor matches no block of the dense one (another model?)")
        out.append(where[row])
    return out


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    dense_a, pruned_a, dense_b, pruned_b = (Safetensors(d) for d in sys.argv[1:5])
    cfg = dense_a.config
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    totals = {"layers": 0, "same_heads": 0, "same_kv_heads": 0, "channels_common": 0, "channels_union": 0,
              "channels_a": 0, "channels_b": 0}
    for layer in range(cfg["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        sets = []
        for dense, pruned in ((dense_a, pruned_a), (dense_b, pruned_b)):
            sets.append([kept(dense, pruned, prefix + t, b) for t, b in (
                ("self_attn.q_proj.weight", head_dim), ("self_attn.k_proj.weight", head_dim),
                ("mlp.gate_proj.weight", 1))])
        (qa, ka, ca), (qb, kb, cb) = sets
        sa, sb = set(ca), set(cb)
        print(f"layer {layer}: heads {len(qa)}/{len(qb)} same {qa == qb}, KV heads {len(ka)}/{len(kb)} same {ka == kb}, "
              f"channels {len(ca)}/{len(cb)}: common {len(sa & sb)}, only A {len(sa - sb)}, only B {len(sb - sa)}")
        totals["layers"] += 1
        totals["same_heads"] += qa == qb
        totals["same_kv_heads"] += ka == kb
        totals["channels_common"] += len(sa & sb)
        totals["channels_union"] += len(sa | sb)
        totals["channels_a"] += len(sa)
        totals["channels_b"] += len(sb)
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
