#!/usr/bin/env python3
"""Generate dequantization fixtures for slim-gguf from the independent `gguf` Python package.

For every block type this writes `<TYPE>.q.bin` (raw quantized blocks, exactly as they would lie in a
GGUF data section) and `<TYPE>.f32.bin` (the values `gguf.quants.dequantize` returns for them, as
little-endian f32). Run from anywhere with a Python that has `gguf` and `numpy`:

    python gen_dequant_fixtures.py            # writes next to this script

If the project's downloaded models are present (`cargo xtask fetch smollm2-135m qwen2.5-coder-0.5b`),
it also writes `<TYPE>.real.*` fixtures: a few blocks sliced out of real tensors (Q4_1 and Q8_0 from
SmolLM2-135M, Q5_0, Q4_K and Q6_K from Qwen2.5-Coder-0.5B), each from the middle of the tensor.

Types `gguf.quants` can quantize (Q4_0, Q4_1, Q5_0, Q8_0, F16, BF16) are quantized from seeded
random data; for Q4_K and Q6_K, which it can only dequantize, the blocks are random bytes whose fp16
scale fields are overwritten with sane finite values. F16/BF16/F32 also cover every special value.
"""
import pathlib
import sys

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

OUT = pathlib.Path(__file__).resolve().parent
rng = np.random.default_rng(20240607)


def write(name: str, raw: np.ndarray, qtype: T, n_elements: int) -> None:
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    block, size = GGML_QUANT_SIZES[qtype]
    assert raw.size == n_elements // block * size, (name, raw.size)
    shaped = raw.reshape(1, -1)
    expected = gguf.quants.dequantize(shaped, qtype).astype(np.float32).reshape(-1)
    assert expected.size == n_elements
    (OUT / f"{name}.q.bin").write_bytes(raw.tobytes())
    (OUT / f"{name}.f32.bin").write_bytes(expected.astype("<f4").tobytes())
    print(f"{name}: {n_elements} elements, {raw.size} bytes")


def quantized(qtype: T, n_blocks: int) -> None:
    block, _ = GGML_QUANT_SIZES[qtype]
    n = n_blocks * block
    # Mix of scales per block, including an all-zero block and a constant block.
    x = rng.standard_normal(n).astype(np.float32) * np.repeat(rng.uniform(0.01, 4.0, n_blocks), block).astype(np.float32)
    x[:block] = 0.0
    x[block:2 * block] = 1.5
    q = gguf.quants.quantize(x.reshape(1, -1), qtype)
    write(qtype.name, q, qtype, n)


def random_k(qtype: T, n_blocks: int, f16_fields: list[int]) -> None:
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in f16_fields:
        scales = (rng.uniform(-0.05, 0.05, n_blocks)).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    write(qtype.name, raw, qtype, n_blocks * block)


for t in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q8_0):
    quantized(t, 8)

# block_q4_K: d at 0, dmin at 2; block_q6_K: d at 208.
random_k(T.Q4_K, 4, [0, 2])
random_k(T.Q6_K, 4, [208])

# A sample of f16 bit patterns covering zero, subnormals, normals, inf and nan (both signs).
HIGH = set(range(0, 256, 17)) | {0x03, 0x7B, 0x7C, 0x7E, 0x83, 0xFC, 0xFF}
f16_bits = np.array([b for b in range(65536) if (b >> 8) in HIGH and b % 3 == 0], dtype=np.uint16)
write("F16", f16_bits.view(np.float16), T.F16, f16_bits.size)
bf16_bits = np.array([b for b in range(65536) if (b >> 8) in HIGH and b % 5 == 0], dtype=np.uint16)
write("BF16", bf16_bits, T.BF16, bf16_bits.size)
f32 = np.concatenate([rng.standard_normal(250).astype(np.float32),
                      np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, 3.4e38], dtype=np.float32)])
write("F32", f32, T.F32, f32.size)


REPO = OUT.parents[3]
REAL = [
    ("data/downloads/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf", "blk.3.attn_q.weight", T.Q4_1),
    ("data/downloads/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf", "token_embd.weight", T.Q8_0),
    ("data/downloads/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct.gguf", "blk.0.ffn_gate.weight", T.Q5_0),
    ("data/downloads/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct.gguf", "blk.11.ffn_down.weight", T.Q4_K),
    ("data/downloads/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct.gguf", "blk.0.ffn_down.weight", T.Q6_K),
]
readers = {}
for rel, tensor, qtype in REAL:
    path = REPO / rel
    if not path.is_file():
        print(f"skipping real {qtype.name} blocks: {path} missing", file=sys.stderr)
        continue
    reader = readers.setdefault(path, gguf.GGUFReader(path))
    t = next(t for t in reader.tensors if t.name == tensor)
    assert t.tensor_type == qtype, (tensor, t.tensor_type)
    block, size = GGML_QUANT_SIZES[qtype]
    n_blocks = 8 if block == 32 else 4
    raw = np.asarray(t.data).view(np.uint8).reshape(-1)
    mid = (raw.size // size // 2) * size
    write(f"{qtype.name}.real", raw[mid:mid + n_blocks * size], qtype, n_blocks * block)
