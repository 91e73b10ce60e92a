//! Dequantization of ggml block formats to f32, bit-for-bit as ggml's reference `dequantize_row_*`.
//!
//! The project's models ship quantized (Q4_1, Q8_0, Q5_0, Q4_K, Q6_K), and its dense baseline is
//! defined as the dequantized weights, so these decoders must agree exactly with ggml (and with the
//! `gguf` Python package, which the tests use as an independent oracle).
//! Every product is evaluated in f32 in the same order as ggml's C code, without fused multiply-add.
//! Blocks are independent, so large tensors are split over threads with rayon.

use anyhow::{bail, Result};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::types::GgmlType;

/// Blocks handed to one rayon task: about 32-64 KiB of output per task.
const BLOCKS_PER_TASK: usize = 64;

/// Decodes `n_elements` values of type `ggml_type` from `bytes`.
///
/// `bytes` must hold exactly the whole blocks for `n_elements`; supported types are F32, F16, BF16,
/// Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K, anything else is an error naming the type.
pub fn dequantize(ggml_type: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    let Some(expected) = ggml_type.n_bytes(n_elements as u64) else {
        bail!("{n_elements} elements are not a whole number of {ggml_type} blocks");
    };
    if bytes.len() as u64 != expected {
        bail!("{n_elements} elements of {ggml_type} take {expected} bytes, got {}", bytes.len());
    }
    let block: fn(&[u8], &mut [f32]) = match ggml_type {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::BF16 => |b, y| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q4_0 => block_q4_0,
        GgmlType::Q4_1 => block_q4_1,
        GgmlType::Q5_0 => block_q5_0,
        GgmlType::Q8_0 => block_q8_0,
        GgmlType::Q4_K => block_q4_k,
        GgmlType::Q6_K => block_q6_k,
        t => bail!(
            "cannot dequantize ggml type {t}: unsupported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, \
             Q6_K)"
        ),
    };
    let bs = ggml_type.block_size();
    let ts = ggml_type.type_size();
    let mut out = vec![0f32; n_elements];
    // Group several blocks per task so that one-element "blocks" of float types stay cheap.
    let group = if bs == 1 { 16 * 1024 } else { BLOCKS_PER_TASK };
    out.par_chunks_mut(bs * group).zip(bytes.par_chunks(ts * group)).for_each(|(y, b)| {
        for (yb, bb) in y.chunks_exact_mut(bs).zip(b.chunks_exact(ts)) {
            block(bb, yb);
        }
    });
    Ok(out)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `block_q4_0`: f16 d, 16 bytes of nibbles; low nibbles are elements 0..16, high nibbles 16..32.
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        let x0 = (qs[j] & 0x0F) as i32 - 8;
        let x1 = (qs[j] >> 4) as i32 - 8;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

/// `block_q4_1`: f16 d, f16 m, 16 bytes of nibbles; value = q·d + m.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        let x0 = (qs[j] & 0x0F) as f32;
        let x1 = (qs[j] >> 4) as f32;
        y[j] = x0 * d + m;
        y[j + 16] = x1 * d + m;
    }
}

/// `block_q5_0`: f16 d, u32 qh (the fifth bits), 16 bytes of nibbles; value = (q − 16)·d.
fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        let x0 = ((qs[j] & 0x0F) | xh0) as i32 - 16;
        let x1 = ((qs[j] >> 4) | xh1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

/// `block_q8_0`: f16 d, 32 signed bytes; value = q·d.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// ggml's `get_scale_min_k4`: the j-th 6-bit scale and min packed in the 12 `scales` bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `block_q4_K`: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles; 8 sub-blocks
/// of 32, value = d·sc·q − dmin·m.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (n, chunk) in (0..4).zip(y.chunks_exact_mut(64)) {
        let q = &qs[32 * n..32 * n + 32];
        let (sc1, m1) = scale_min_k4(2 * n, scales);
        let (sc2, m2) = scale_min_k4(2 * n + 1, scales);
        let d1 = d * sc1 as f32;
        let m1 = min * m1 as f32;
        let d2 = d * sc2 as f32;
        let m2 = min * m2 as f32;
        for l in 0..32 {
            chunk[l] = d1 * (q[l] & 0x0F) as f32 - m1;
            chunk[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// `block_q6_K`: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 i8 scales, f16 d;
/// 16 sub-blocks of 16, value = d·sc·(q − 32).
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for (n, chunk) in (0..2).zip(y.chunks_exact_mut(128)) {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            chunk[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            chunk[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            chunk[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            chunk[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
