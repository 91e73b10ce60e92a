//! f32 values to the ggml encodings an export writes: F32, F16, BF16 and Q8_0, each bit-exact with
//! ggml's reference conversions (`ggml_fp32_to_fp16`, `ggml_compute_fp32_to_bf16`,
//! `quantize_row_q8_0_ref`), so that a GGUF written here holds the bytes llama.cpp's own converter
//! would write for the same values.

use anyhow::{bail, ensure, Result};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::types::GgmlType;

/// The types [`encode`] writes, with the name the command line uses.
pub const EXPORT_TYPES: [(&str, GgmlType); 4] =
    [("f32", GgmlType::F32), ("f16", GgmlType::F16), ("bf16", GgmlType::BF16), ("q8_0", GgmlType::Q8_0)];

/// The export type a command-line name names, or an error listing the names.
pub fn export_type(name: &str) -> Result<GgmlType> {
    match EXPORT_TYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some((_, t)) => Ok(*t),
        None => {
            let names: Vec<&str> = EXPORT_TYPES.iter().map(|(n, _)| *n).collect();
            bail!("unsupported GGUF type `{name}` (supported: {})", names.join(", "))
        }
    }
}

/// Encodes `values` (whole rows of `row_len`) as `ty`.
pub fn encode(values: &[f32], row_len: usize, ty: GgmlType) -> Result<Vec<u8>> {
    ensure!(row_len > 0 && values.len().is_multiple_of(row_len), "internal invariant: encode needs whole rows");
    Ok(match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        GgmlType::BF16 => values.iter().flat_map(|&v| bf16_bits(v).to_le_bytes()).collect(),
        GgmlType::Q8_0 => {
            ensure!(row_len.is_multiple_of(32), "internal invariant: q8_0 rows are whole 32-value blocks");
            let mut out = vec![0u8; values.len() / 32 * 34];
            out.par_chunks_mut(34).zip(values.par_chunks(32)).for_each(|(o, x)| q8_0_block(x, o));
            out
        }
        other => bail!("encoding to ggml type {other} is not supported"),
    })
}

/// ggml's `ggml_compute_fp32_to_bf16`: NaN kept quiet, otherwise round to nearest even.
fn bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    let b = ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16;
    debug_assert_eq!(b, bf16::from_f32(v).to_bits());
    b
}

/// ggml's `quantize_row_q8_0_ref` for one block: `d = max|x| / 127` stored as f16, `q = round(x / d)`
/// (half away from zero, as C's `roundf`), with the reciprocal of the f32 `d`.
fn q8_0_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = ((v * id).round() as i8) as u8;
    }
}
