//! FLAP's fluctuation metric WIFV (An et al., AAAI 2024; `lib/prune.py`, spec §9):
//! an output projection's input channel j scores `S_j = Var(x_j) · ‖W_{:,j}‖²`, the sample
//! variance of the input over the calibration tokens times the squared norm of the weight
//! column it feeds.
//!
//! - MLP channel j: `S_j` with `x = G` and `W = W_d`.
//! - Query head h: `Σ_{c∈h} S_c²` with `x = Z` and `W = W_O` (the reference code squares the
//!   o_proj metric before aggregating a head); a KV group sums its heads.
//! - The lowest are pruned; there is no search.
//!
//! The variance is the unbiased sample variance `n/(n−1) · (E[x²] − E[x]²)` from the
//! captured means. FLAP accumulates it online per calibration sequence, with a scale that
//! is constant within a projection, so the ranking inside a layer is the same.
//!
//! FLAP's default structure (AL-AM) standardizes each layer's metrics across its channels,
//! `z = (S − mean)/std`, takes a head's mean `z`, and ranks heads and channels of all
//! layers against one global threshold. That standardization serves the cross-layer
//! allocation, not the ranking inside a layer: a head's mean `z` is an increasing function
//! of `Σ_{c∈h} S_c²`, so this scorer ranks a layer's units exactly as AL-AM does, and the
//! standardization belongs to an allocation variant (slim-alloc), not here.

use crate::util::{column_sums, ensure_finite, unit_channel_sums, validate_channels, validate_heads};
use crate::{ChannelInputs, HeadInputs, Scorer, Units};
use anyhow::{ensure, Result};
use slim_checkpoint::HostTensor;

/// The FLAP (WIFV) scorer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flap;

impl Scorer for Flap {
    /// `Σ_{h∈u} Σ_{c∈h} (Var(z_c) · ‖W_O[:,c]‖²)²`.
    ///
    /// # Shapes
    /// `o_proj` `[d, H·d_h]`, `z_mean`, `z_sq_mean` `[H·d_h]` → `[U]`
    fn unit_scores(&self, inputs: &HeadInputs<'_>, units: &Units) -> Result<Vec<f64>> {
        validate_heads(inputs)?;
        let s = inputs.stats;
        ensure_finite(s.layer, "z_mean", &s.z_mean)?;
        ensure_finite(s.layer, "z_sq_mean", &s.z_sq_mean)?;
        let scale = bessel(s.layer, s.n_tokens)?;
        let var: Vec<f64> =
            s.z_mean.iter().zip(&s.z_sq_mean).map(|(&mu, &sq)| scale * (sq - mu * mu).max(0.0)).collect(); // [H·d_h]
        let per_channel: Vec<f64> = wifv(inputs.o_proj, &var).into_iter().map(|x| x * x).collect();
        let scores = unit_channel_sums(&per_channel, units, s.head_dim);
        ensure!(
            scores.iter().all(|x| x.is_finite()),
            "layer {}: non-finite FLAP head score (o_proj has a non-finite weight)",
            s.layer
        );
        Ok(scores)
    }

    fn prune_highest(&self) -> bool {
        false
    }

    /// `Var(g_j) · ‖W_d[:,j]‖²` with `Var(g_j) = n/(n−1) · Cov_G[j,j]`.
    ///
    /// # Shapes
    /// `down` `[d, m]`, `g_cov` `[m, m]` → `[m]`
    fn channel_scores(&self, inputs: &ChannelInputs<'_>) -> Result<Vec<f64>> {
        let m = validate_channels(inputs)?;
        let s = inputs.stats;
        let scale = bessel(s.layer, s.n_tokens)?;
        let var: Vec<f64> = (0..m).map(|j| scale * f64::from(s.g_cov[j * m + j]).max(0.0)).collect(); // [m]
        ensure_finite(s.layer, "diagonal of g_cov", &var)?;
        let scores = wifv(inputs.down, &var);
        ensure!(
            scores.iter().all(|x| x.is_finite()),
            "layer {}: non-finite FLAP channel score (down_proj has a non-finite weight)",
            s.layer
        );
        Ok(scores)
    }
}

/// `n/(n−1)`, turning a population variance into the sample variance.
fn bessel(layer: usize, n: usize) -> Result<f64> {
    ensure!(
        n >= 2,
        "layer {layer}: the FLAP metric needs a sample variance over at least 2 calibration tokens, got {n}"
    );
    Ok(n as f64 / (n - 1) as f64)
}

/// `S_j = var_j · Σ_i W_ij²`.
///
/// # Shapes
/// `w` `[r, c]`, `var` `[c]` → `[c]`
fn wifv(w: &HostTensor, var: &[f64]) -> Vec<f64> {
    let (_, sq) = column_sums(w);
    sq.iter().zip(var).map(|(&n2, &v)| v * n2).collect()
}
