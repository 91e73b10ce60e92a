//! FLAP's bias compensation (An et al., AAAI 2024; `compress` in `lib/prune.py`, spec §9):
//! every pruned input is replaced by its calibration mean, so the removed columns
//! contribute the constant `b = W[:, pruned] · E[x_pruned]`, which becomes the projection's
//! bias; the kept columns are unchanged.
//!
//! As an [`Affine`] this is scale 1 and bias `b`: SlimLLM's fit with `a ≡ 1`, i.e.
//! `b_k = mean(Y_k) − mean(Ŷ_k)`. It removes the mean error, so its reconstruction error
//! is the unrecovered error minus the squared mean offset, never more.
//! As with [`crate::attention_affine`], an existing bias of the projection is added to `b`
//! by the caller (surgery).

use anyhow::{ensure, Result};
use slim_artifact::schema::{Affine, AttnStats, MlpStats};
use slim_checkpoint::HostTensor;

use crate::refit::{check_kept, check_mlp_down};

/// The o_proj bias for kept query heads `kept`: `b_k = Σ_{h∉K} μ_{h,k}`, where
/// `μ_h = mean(Y_h) = W_O^(h) E[Z_h]` is head h's mean contribution, the same as
/// `W_O[:, pruned] · E[z_pruned]`.
///
/// # Shapes
/// `head_mean` `[H, d]` → scale (all 1), bias `[d]`
pub fn attention_flap_bias(stats: &AttnStats, kept: &[usize]) -> Result<Affine> {
    stats.validate().map_err(anyhow::Error::msg)?;
    let (h, d) = (stats.num_heads, stats.hidden);
    check_kept(kept, h, "head").map_err(|e| anyhow::format_err!("layer {}: {e}", stats.layer))?;
    ensure_finite(stats.layer, "head_mean", &stats.head_mean)?;
    let mut pruned = vec![true; h];
    kept.iter().for_each(|&a| pruned[a] = false);
    let bias = (0..d).map(|k| (0..h).filter(|&a| pruned[a]).map(|a| stats.head_mean[a * d + k]).sum()).collect();
    Ok(Affine { scale: vec![1.0; d], bias })
}

/// The down_proj bias for kept channels `kept`: `b_k = Σ_{j∉K} W_d[k,j] μ_{G,j}`.
///
/// # Shapes
/// `down` `[d, m]`, `g_mean` `[m]` → scale (all 1), bias `[d]`
pub fn mlp_flap_bias(stats: &MlpStats, down: &HostTensor, kept: &[usize]) -> Result<Affine> {
    let (d, m) = check_mlp_down(stats, down)?;
    check_kept(kept, m, "channel").map_err(|e| anyhow::format_err!("layer {}: {e}", stats.layer))?;
    ensure_finite(stats.layer, "g_mean", &stats.g_mean)?;
    let mut pruned = vec![true; m];
    kept.iter().for_each(|&j| pruned[j] = false);
    let bias: Vec<f64> = (0..d)
        .map(|k| {
            let row = &down.data[k * m..(k + 1) * m];
            (0..m).filter(|&j| pruned[j]).map(|j| row[j] as f64 * stats.g_mean[j]).sum()
        })
        .collect();
    ensure!(
        bias.iter().all(|b| b.is_finite()),
        "layer {}: FLAP bias is not finite (down_proj has a non-finite weight)",
        stats.layer
    );
    Ok(Affine { scale: vec![1.0; d], bias })
}

fn ensure_finite(layer: usize, name: &str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(anyhow::format_err!(
            "layer {layer}: statistic {name} has a non-finite value ({}) at index {i}",
            values[i]
        )),
    }
}
