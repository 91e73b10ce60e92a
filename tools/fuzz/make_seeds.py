#!/usr/bin/env python3
"""Builds the fuzz seed corpora in fuzz/seeds/<target>/ from real files (standard library only).

Usage: tools/fuzz/make_seeds.py SYNTHETIC_CACHE
  SYNTHETIC_CACHE: a cache made by `slimllm pipeline run` on the synthetic model of
  `cargo run -p slim-cli --example synthetic_model` (small payloads of every artifact kind).
Reads data/models/smollm2-135m (config.json, tokenizer.json, model.safetensors),
data/models/qwen2.5-coder-0.5b/config.json, a pruned run's config.json under data/runs, and
the SmolLM2 GGUF under data/downloads. Seeds are kept small (at most 64 KiB) so that one
execution stays fast (artifacts: 160 KiB, so that attention statistics are in).
"""
import glob, json, os, struct, sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(root, "fuzz", "seeds")
cache = sys.argv[1]


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- safetensors: a tiny valid file of each dtype, and the real header with its data cut short.
def safetensors(tensors, meta=None):
    header, blob = {}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


put("safetensors", "tiny", safetensors({
    "model.embed_tokens.weight": ("F32", [3, 2], struct.pack("<6f", 1, 2, 3, 4, 5, 6)),
    "h": ("F16", [2], struct.pack("<2e", 0.5, -1.0)),
    "b": ("BF16", [1, 2], b"\x80\x3f\x00\xc0"),
}, {"format": "pt"}))
real = os.path.join(root, "data/models/smollm2-135m/model.safetensors")
with open(real, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    f.seek(0)
    head = f.read(8 + n)
keep = json.loads(head[8:])
first = {k: v for k, v in list(keep.items())[:6]}
put("safetensors", "smollm2-header-6", safetensors({
    k: (v["dtype"], v["shape"], b"\0" * (v["data_offsets"][1] - v["data_offsets"][0])) for k, v in first.items()
    if k != "__metadata__" and v["data_offsets"][1] - v["data_offsets"][0] <= 4096
} or {"x": ("F32", [1], b"\0\0\0\0")}))
put("safetensors", "smollm2-header-truncated", head[:65536])

# --- GGUF: a tiny llama file written by hand (v3), and the real file's first 64 KiB.
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, ty, payload):
    return gstr(key) + struct.pack("<I", ty) + payload


tokens = ["<|endoftext|>", "a", "b", "ab", "Ġ", "Ġa"]
kvs = [
    kv("general.architecture", 8, gstr("llama")),
    kv("general.alignment", 4, struct.pack("<I", 32)),
    kv("llama.block_count", 4, struct.pack("<I", 1)),
    kv("llama.context_length", 4, struct.pack("<I", 64)),
    kv("llama.embedding_length", 4, struct.pack("<I", 32)),
    kv("llama.feed_forward_length", 4, struct.pack("<I", 64)),
    kv("llama.attention.head_count", 4, struct.pack("<I", 2)),
    kv("llama.attention.head_count_kv", 4, struct.pack("<I", 1)),
    kv("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
    kv("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
    kv("tokenizer.ggml.model", 8, gstr("gpt2")),
    kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(gstr(t) for t in tokens)),
    kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(tokens)) + struct.pack(f"<{len(tokens)}i", 3, 1, 1, 1, 1, 1)),
    kv("tokenizer.ggml.merges", 9, struct.pack("<IQ", 8, 2) + gstr("a b") + gstr("Ġ a")),
    kv("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 0)),
    kv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 0)),
]
# (name, dims, ggml type, bytes): F32, F16 and one Q8_0 block (f16 scale + 32 int8).
tensors = [
    ("token_embd.weight", [32, 6], 0, struct.pack("<192f", *[i / 100 for i in range(192)])),
    ("output_norm.weight", [32], 1, struct.pack("<32e", *[1.0] * 32)),
    ("blk.0.attn_q.weight", [32, 1], 8, struct.pack("<e", 0.01) + bytes(range(32))),
]
infos, data = b"", b""
for name, dims, ty, blob in tensors:
    data += b"\0" * (-len(data) % 32)
    infos += gstr(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ty, len(data))
    data += blob
head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + infos
head += b"\0" * (-len(head) % 32)
put("gguf", "tiny-llama", head + data)
gguf = glob.glob(os.path.join(root, "data/downloads/smollm2-135m/*.gguf"))[0]
with open(gguf, "rb") as f:
    put("gguf", "smollm2-first-64k", f.read(65536))

# --- config.json: the real models, and a pruned one with per-layer shapes.
for name, path in [("smollm2", "data/models/smollm2-135m/config.json"), ("qwen", "data/models/qwen2.5-coder-0.5b/config.json")]:
    with open(os.path.join(root, path), "rb") as f:
        put("config_json", name, f.read())
pruned = sorted(glob.glob(os.path.join(root, "data/runs/*/model/config.json")))
if pruned:
    with open(pruned[0], "rb") as f:
        put("config_json", "pruned", f.read())

# --- tokenizer.json: SmolLM2's, its vocabulary cut to the first 300 tokens and the merges among them.
with open(os.path.join(root, "data/models/smollm2-135m/tokenizer.json"), encoding="utf-8") as f:
    tok = json.load(f)
vocab = {t: i for t, i in tok["model"]["vocab"].items() if i < 300}
merges = []
for m in tok["model"]["merges"]:
    a, b = m if isinstance(m, list) else m.split(" ", 1)
    if a in vocab and b in vocab and a + b in vocab:
        merges.append(m)
tok["model"]["vocab"], tok["model"]["merges"] = vocab, merges
tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] < 300]
put("tokenizer_json", "smollm2-300", json.dumps(tok, ensure_ascii=False).encode())

# --- artifacts: kind byte + the file, for every kind of the synthetic cache. Attention
# statistics hold two covariances (~125 KiB on the synthetic model), so the limit is higher.
ARTIFACT_LIMIT = 160 * 1024
kinds = {"calib": 1, "importance": 2, "alloc": 3, "capture-attn": 4, "capture-mlp": 5, "score-attn": 6, "score-mlp": 6, "capture-taylor": 7, "recover-attn": 8, "recover-mlp": 8, "global-scores": 9}
for stage, kind in kinds.items():
    entries = sorted(glob.glob(os.path.join(cache, stage, "*")))
    for e in entries[:2]:
        for fname, k in [("value", kind), ("manifest.json", 0)]:
            p = os.path.join(e, fname)
            if os.path.getsize(p) <= ARTIFACT_LIMIT:
                with open(p, "rb") as f:
                    put("artifacts", f"{stage}-{os.path.basename(e)[:8]}-{fname}", bytes([k]) + f.read())
for t in sorted(os.listdir(out)):
    files = os.listdir(os.path.join(out, t))
    print(t, len(files), "seeds,", sum(os.path.getsize(os.path.join(out, t, x)) for x in files), "bytes")
