//! Wanda-sp, the structured Wanda of the FLAP repository (`prune_wanda_sp`, spec §9):
//! an output projection's input channel j scores
//! `S_j = (1/d_out) Σ_i |W_ij| · sqrt(E[x_j²])`, with `W` the o_proj (input `Z`) or down_proj
//! (input `G`) weight and the mean over the calibration tokens.
//!
//! A query head scores the sum over its `d_h` channels and a KV group the sum over its
//! heads; an MLP channel scores `S_j` itself. The lowest are pruned; there is no search.
//!
//! The reference code's factor is `sqrt(Σ_n x_{n,j}² / n_seq)`, which is `sqrt(E[x_j²])` times
//! the constant `sqrt(seq_len)`, and it averages over the output rows; both are constant
//! within a projection, so the ranking of units and channels is the reference code's.

use crate::util::{column_sums, ensure_finite, unit_channel_sums, validate_channels, validate_heads};
use crate::{ChannelInputs, HeadInputs, Scorer, Units};
use anyhow::{ensure, Result};
use slim_checkpoint::HostTensor;

/// The Wanda-sp scorer.
#[derive(Clone, Copy, Debug, Default)]
pub struct WandaSp;

impl Scorer for WandaSp {
    /// `Σ_{h∈u} Σ_{c∈h} S_c` with `E[z_c²]` = `z_sq_mean[c]`.
    ///
    /// # Shapes
    /// `o_proj` `[d, H·d_h]`, `z_sq_mean` `[H·d_h]` → `[U]`
    fn unit_scores(&self, inputs: &HeadInputs<'_>, units: &Units) -> Result<Vec<f64>> {
        validate_heads(inputs)?;
        let s = inputs.stats;
        ensure_finite(s.layer, "z_sq_mean", &s.z_sq_mean)?;
        let per_channel = wanda_channels(inputs.o_proj, &s.z_sq_mean);
        let scores = unit_channel_sums(&per_channel, units, s.head_dim);
        ensure!(
            scores.iter().all(|x| x.is_finite()),
            "layer {}: non-finite Wanda-sp head score (o_proj has a non-finite weight)",
            s.layer
        );
        Ok(scores)
    }

    fn prune_highest(&self) -> bool {
        false
    }

    /// `S_j` with `E[g_j²] = Cov_G[j,j] + μ_{G,j}²`.
    ///
    /// # Shapes
    /// `down` `[d, m]`, `g_mean` `[m]`, `g_cov` `[m, m]` → `[m]`
    fn channel_scores(&self, inputs: &ChannelInputs<'_>) -> Result<Vec<f64>> {
        let m = validate_channels(inputs)?;
        let s = inputs.stats;
        ensure_finite(s.layer, "g_mean", &s.g_mean)?;
        // [m]
        let sq_mean: Vec<f64> = (0..m).map(|j| f64::from(s.g_cov[j * m + j]) + s.g_mean[j] * s.g_mean[j]).collect();
        ensure_finite(s.layer, "diagonal of g_cov", &sq_mean)?;
        let scores = wanda_channels(inputs.down, &sq_mean);
        ensure!(
            scores.iter().all(|x| x.is_finite()),
            "layer {}: non-finite Wanda-sp channel score (down_proj has a non-finite weight)",
            s.layer
        );
        Ok(scores)
    }
}

/// `S_j = (1/r) Σ_i |W_ij| · sqrt(sq_mean_j)`; a negative mean square (rounding of a
/// difference) counts as 0.
///
/// # Shapes
/// `w` `[r, c]`, `sq_mean` `[c]` → `[c]`
fn wanda_channels(w: &HostTensor, sq_mean: &[f64]) -> Vec<f64> {
    let rows = w.shape[0] as f64;
    let (abs, _) = column_sums(w);
    abs.iter().zip(sq_mean).map(|(&a, &q)| a / rows * q.max(0.0).sqrt()).collect()
}
