//! Shared helpers: Python-compatible rounding, stable prune orders, input validation and
//! conversion of host tensors to faer matrices, per-column weight sums and per-unit channel
//! sums shared by the activation-weighted scorers.

use crate::{ChannelInputs, HeadInputs, Units};
use anyhow::{ensure, Result};
use slim_checkpoint::HostTensor;

/// Indices sorted so that the most prunable come first: by descending score when
/// `highest_first`, else ascending; ties keep index order.
pub(crate) fn prune_order(scores: &[f64], highest_first: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    if highest_first {
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    } else {
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    }
    order
}

/// Checks the attention inputs against each other; returns `(H, n_kv)`.
pub(crate) fn validate_heads(inputs: &HeadInputs<'_>) -> Result<(usize, usize)> {
    let s = inputs.stats;
    let (h, d, dh, n_kv) = (s.num_heads, s.hidden, s.head_dim, inputs.num_kv_heads);
    s.validate().map_err(anyhow::Error::msg)?;
    ensure!(
        inputs.o_proj.shape == [d, h * dh],
        "layer {}: o_proj has shape {:?}, expected [{d}, {}]",
        s.layer,
        inputs.o_proj.shape,
        h * dh
    );
    ensure!(
        inputs.kv_head_of.len() == h,
        "layer {}: kv_head_of has {} entries for {h} heads",
        s.layer,
        inputs.kv_head_of.len()
    );
    ensure!(n_kv > 0 && h % n_kv == 0, "layer {}: {h} query heads do not split into {n_kv} KV groups", s.layer);
    let g = h / n_kv;
    ensure!(
        inputs.kv_head_of.iter().enumerate().all(|(q, &k)| k == q / g),
        "layer {}: kv_head_of must map query head q to KV head q / {g} (contiguous groups)",
        s.layer
    );
    Ok((h, n_kv))
}

/// Checks the MLP inputs against each other; returns `m`.
pub(crate) fn validate_channels(inputs: &ChannelInputs<'_>) -> Result<usize> {
    let s = inputs.stats;
    let (d, m) = (s.hidden, s.intermediate);
    s.validate().map_err(anyhow::Error::msg)?;
    ensure!(
        inputs.gate.shape == [m, d],
        "layer {}: gate_proj has shape {:?}, expected [{m}, {d}]",
        s.layer,
        inputs.gate.shape
    );
    ensure!(
        inputs.up.shape == [m, d],
        "layer {}: up_proj has shape {:?}, expected [{m}, {d}]",
        s.layer,
        inputs.up.shape
    );
    ensure!(
        inputs.down.shape == [d, m],
        "layer {}: down_proj has shape {:?}, expected [{d}, {m}]",
        s.layer,
        inputs.down.shape
    );
    Ok(m)
}

/// Per input column `j` of a 2-D weight: `Σ_i |W_ij|` and `Σ_i W_ij²`, in f64.
///
/// # Shapes
/// `[r, c]` → (`[c]`, `[c]`)
pub(crate) fn column_sums(t: &HostTensor) -> (Vec<f64>, Vec<f64>) {
    let c = t.shape[1];
    let mut abs = vec![0.0; c];
    let mut sq = vec![0.0; c];
    for row in t.data.chunks_exact(c) {
        for ((a, s), &w) in abs.iter_mut().zip(sq.iter_mut()).zip(row) {
            let w = w as f64;
            *a += w.abs();
            *s += w * w;
        }
    }
    (abs, sq)
}

/// The score of each unit: the sum of `per_channel` over the `d_h` o_proj input channels
/// of every head of the unit (head h owns channels `h·d_h..(h+1)·d_h`).
///
/// # Shapes
/// `per_channel` `[H·d_h]` → `[U]`
pub(crate) fn unit_channel_sums(per_channel: &[f64], units: &Units, dh: usize) -> Vec<f64> {
    units
        .members
        .iter()
        .map(|m| m.iter().map(|&h| per_channel[h * dh..(h + 1) * dh].iter().sum::<f64>()).sum())
        .collect()
}

/// Fails, naming the statistic and the first bad index, unless every value is finite.
pub(crate) fn ensure_finite(layer: usize, name: &str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(anyhow::format_err!(
            "layer {layer}: statistic {name} has a non-finite value ({}) at index {i}",
            values[i]
        )),
    }
}
