//! Affine recovery of the output projections (spec §3.7, §3.10): for every output dimension
//! k, the least-squares fit `Y_k ≈ a_k·Ŷ_k + b_k` of the dense output `Y` by the pruned
//! output `Ŷ`, as `np.polyfit(Ŷ_k, Y_k, 1)` does in the reference code, but in closed form
//! from the captured statistics (spec §13.2), in f64.
//!
//! The fit is on the projections' *contributions*: the attention output `Σ_h Y_h` and the
//! MLP output `G W_dᵀ`, without any bias the projection already has.
//! A pre-existing bias `β` is just part of the target mean: the dense output is `Y + β`, and
//! `a ⊙ Ŷ + (b + β)` fits it exactly as well as `a ⊙ Ŷ + b` fits `Y`, so a caller whose
//! projection has a bias stores `b + β` (SlimLLM's LLaMA projections have none).
//!
//! A pruned output that is constant over the calibration tokens (variance at most
//! `1e-12·(Σ_j |w_kj| σ_j)²`, i.e. rounding noise of its own quadratic form) has no slope:
//! there `a_k = 1` and `b_k = mean(Y_k) − mean(Ŷ_k)`, which only restores the mean.
//!
//! Variants from spec §9 and §13.3, chosen by [`RecoveryKind`]: none (Wanda-sp,
//! LLM-Pruner), FLAP's bias compensation (`a ≡ 1`, module `flap`), and a ridge least-squares
//! refit of the kept columns (module `lstsq`), which changes weight values and so is a
//! [`Refit::Columns`], not an [`Affine`]. [`refit_attention`] and [`refit_mlp`] return any
//! of them as a [`Refit`]; [`recover_attention`] and [`recover_mlp`] return those that
//! are affine.

mod flap;
mod lstsq;
mod moments;
mod refit;

#[cfg(test)]
mod tests;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use slim_artifact::schema::{Affine, AttnStats, MlpStats};
use slim_checkpoint::HostTensor;

use moments::Moments;
use refit::{check_attn_o_proj, head_columns};

pub use flap::{attention_flap_bias, mlp_flap_bias};
pub use lstsq::{attention_lstsq, lstsq_refit, mlp_lstsq, LstsqConfig, RidgePrior};
pub use refit::{refit_error, ColumnRefit, Refit};

/// Which recovery to apply after pruning a projection's inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryKind {
    /// Slice only: no scale, no bias.
    None,
    /// SlimLLM's per-output-dimension scale and bias, fitted by least squares.
    Affine,
    /// FLAP's bias compensation: pruned inputs replaced by their calibration mean, scale 1.
    FlapBias,
    /// Ridge least-squares refit of the kept columns plus a bias ([`LstsqConfig`]), for
    /// down_proj ([`mlp_lstsq`]) and o_proj ([`attention_lstsq`]).
    Lstsq,
}

slim_artifact::kinds!(RecoveryKind, "recovery" {
    Affine => "per-output-dimension affine fit of o_proj and down_proj (the paper)",
    None => "no correction",
    FlapBias => "FLAP's bias compensation: pruned inputs replaced by their calibration mean",
    Lstsq => "ridge least-squares refit of the kept columns plus a bias, from the input covariance (beyond the paper)",
});

/// The correction that changes nothing: scale 1, bias 0.
pub fn identity_affine(d: usize) -> Affine {
    Affine { scale: vec![1.0; d], bias: vec![0.0; d] }
}

/// The o_proj correction for kept query heads `kept` (spec §3.7):
/// `a_k = 1_Sᵀ Σ^(k) 1 / 1_Sᵀ Σ^(k) 1_S`, `b_k = Σ_h μ_{h,k} − a_k Σ_{h∈S} μ_{h,k}`.
///
/// # Shapes
/// `head_mean` `[H, d]`, `head_cov` `[d, H, H]` → scale, bias `[d]`
pub fn attention_affine(stats: &AttnStats, kept: &[usize]) -> Result<Affine> {
    Ok(Moments::attention(stats, kept)?.fit())
}

/// The down_proj correction for kept channels `kept` (spec §3.10): with `w_k = W_d[k,:]`,
/// `a_k = w_{k,K}ᵀ Cov_G[K,:] w_k / w_{k,K}ᵀ Cov_G[K,K] w_{k,K}`,
/// `b_k = w_kᵀ μ_G − a_k w_{k,K}ᵀ μ_{G,K}`.
///
/// # Shapes
/// `down` `[d, m]`, `g_mean` `[m]`, `g_cov` `[m, m]` → scale, bias `[d]`
pub fn mlp_affine(stats: &MlpStats, down: &HostTensor, kept: &[usize]) -> Result<Affine> {
    Ok(Moments::mlp(stats, down, kept, false)?.fit())
}

/// The o_proj correction of an affine recovery kind: `None` for [`RecoveryKind::None`].
///
/// [`RecoveryKind::Lstsq`] changes the weights themselves and has no affine form: it is an
/// error here; use [`refit_attention`].
pub fn recover_attention(kind: RecoveryKind, stats: &AttnStats, kept: &[usize]) -> Result<Option<Affine>> {
    match kind {
        RecoveryKind::None => Ok(None),
        RecoveryKind::Affine => attention_affine(stats, kept).map(Some),
        RecoveryKind::FlapBias => attention_flap_bias(stats, kept).map(Some),
        RecoveryKind::Lstsq => bail!(
            "layer {}: lstsq refits the kept o_proj columns and has no affine form; call refit_attention",
            stats.layer
        ),
    }
}

/// The down_proj correction of an affine recovery kind: `None` for [`RecoveryKind::None`].
///
/// [`RecoveryKind::Lstsq`] changes the weights themselves and has no affine form: it is an
/// error here; use [`refit_mlp`].
pub fn recover_mlp(kind: RecoveryKind, stats: &MlpStats, down: &HostTensor, kept: &[usize]) -> Result<Option<Affine>> {
    match kind {
        RecoveryKind::None => Ok(None),
        RecoveryKind::Affine => mlp_affine(stats, down, kept).map(Some),
        RecoveryKind::FlapBias => mlp_flap_bias(stats, down, kept).map(Some),
        RecoveryKind::Lstsq => bail!(
            "layer {}: lstsq refits the kept down_proj columns and has no affine form; call refit_mlp",
            stats.layer
        ),
    }
}

/// The o_proj refit of any recovery kind for kept query heads `kept`; `o_proj` and
/// `lstsq` are read by [`RecoveryKind::Lstsq`] ([`attention_lstsq`]) only, whose
/// [`Refit::Columns`] holds the kept heads' columns in the order of `kept`.
///
/// # Shapes
/// `o_proj` `[d, H·d_h]` → [`Refit::Columns`] weight `[d, |S|·d_h]`, bias `[d]`
pub fn refit_attention(
    kind: RecoveryKind,
    stats: &AttnStats,
    o_proj: &HostTensor,
    kept: &[usize],
    lstsq: &LstsqConfig,
) -> Result<Refit> {
    Ok(match kind {
        RecoveryKind::Lstsq => Refit::Columns(attention_lstsq(stats, o_proj, kept, lstsq)?),
        _ => match recover_attention(kind, stats, kept)? {
            None => Refit::None,
            Some(a) => Refit::Affine(a),
        },
    })
}

/// The down_proj refit of any recovery kind; `lstsq` configures [`RecoveryKind::Lstsq`]
/// and is ignored by the others.
pub fn refit_mlp(
    kind: RecoveryKind,
    stats: &MlpStats,
    down: &HostTensor,
    kept: &[usize],
    lstsq: &LstsqConfig,
) -> Result<Refit> {
    Ok(match kind {
        RecoveryKind::Lstsq => Refit::Columns(mlp_lstsq(stats, down, kept, lstsq)?),
        _ => match recover_mlp(kind, stats, down, kept)? {
            None => Refit::None,
            Some(a) => Refit::Affine(a),
        },
    })
}

/// [`refit_error`] of the MLP output `G W_dᵀ` with kept channels `kept`.
///
/// # Shapes
/// `down` `[d, m]`, `g_mean` `[m]`, `g_cov` `[m, m]` → scalar
pub fn mlp_refit_error(stats: &MlpStats, down: &HostTensor, kept: &[usize], refit: &Refit) -> Result<f64> {
    stats.validate().map_err(anyhow::Error::msg)?;
    let cov: Vec<f64> = stats.g_cov.iter().map(|&x| f64::from(x)).collect();
    refit_error(down, &stats.g_mean, &cov, kept, refit)
        .map_err(|e| anyhow::format_err!("layer {}: down_proj refit error: {e}", stats.layer))
}

/// [`refit_error`] of the attention output `Z W_Oᵀ` with kept query heads `kept`, from the
/// moments of `Z` (`z_mean`, `z_cov`); for an affine refit it equals
/// [`attention_reconstruction_error`].
///
/// # Shapes
/// `o_proj` `[d, H·d_h]`, `z_mean` `[H·d_h]`, `z_cov` `[H·d_h, H·d_h]` → scalar
pub fn attention_refit_error(stats: &AttnStats, o_proj: &HostTensor, kept: &[usize], refit: &Refit) -> Result<f64> {
    check_attn_o_proj(stats, o_proj)?;
    refit::check_kept(kept, stats.num_heads, "head").map_err(|e| anyhow::format_err!("layer {}: {e}", stats.layer))?;
    let columns = head_columns(kept, stats.head_dim);
    refit_error(o_proj, &stats.z_mean, &stats.z_cov, &columns, refit)
        .map_err(|e| anyhow::format_err!("layer {}: o_proj refit error: {e}", stats.layer))
}

/// Mean squared error, over the calibration tokens and the `d` output dimensions, of the
/// corrected pruned attention output `a ⊙ Ŷ + b` against the dense output `Y`
/// (use [`identity_affine`] for no recovery).
///
/// # Shapes
/// `affine.scale`, `affine.bias` `[d]` → scalar
pub fn attention_reconstruction_error(stats: &AttnStats, kept: &[usize], affine: &Affine) -> Result<f64> {
    Moments::attention(stats, kept)?.mse(affine)
}

/// [`attention_reconstruction_error`] for the MLP output `G W_dᵀ` with kept channels `kept`.
///
/// # Shapes
/// `down` `[d, m]`, `affine` `[d]` → scalar
pub fn mlp_reconstruction_error(stats: &MlpStats, down: &HostTensor, kept: &[usize], affine: &Affine) -> Result<f64> {
    Moments::mlp(stats, down, kept, true)?.mse(affine)
}
