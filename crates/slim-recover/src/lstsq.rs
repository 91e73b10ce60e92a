//! Ridge least-squares refit of the kept columns of an output projection, plus a bias.
//!
//! With `x` the projection's input (mean `μ`, population covariance `Σ` over the calibration
//! tokens), `W` the dense weight `[out, in]`, `K` the kept inputs and `P` a prior weight
//! `[out, |K|]`, the refit solves
//!
//! `min_{W', b} E‖W x − (W' x_K + b)‖² + λ‖W' − P‖²`.
//!
//! The optimal bias is `b = W μ − W' μ_K`; substituting it leaves the centred problem, whose
//! normal equations give `W' (Σ[K,K] + λ I) = W Σ[:,K] + λ P`.
//! With `P = 0` this is the plain ridge objective `λ‖W'‖²`; with `P = W[:, K]` the penalty
//! keeps `W'` near the weights it replaces (the damping of SparseGPT's and GPTQ's
//! reconstructions).
//! The system is symmetric positive definite for `λ > 0` and solved in f64 by Cholesky.
//!
//! `λ = ε · mean(diag Σ[K,K])`, so `ε` ([`LstsqConfig::ridge_rel`]) is independent of the
//! scale of the activations.
//!
//! Which prior, and why the default is `P = W[:, K]`:
//! - Any `λ`: the refit's error is at most that of slicing alone ([`crate::Refit::None`]),
//!   because `W' = W[:, K]` with `b = W μ − W[:, K] μ_K` is feasible at zero penalty.
//!   With `P = 0`, a large `λ` shrinks `W'` towards zero and can do worse than slicing.
//! - Fewer calibration tokens than kept inputs (`n ≤ |K|`, e.g. 4,096 tokens against
//!   ~9,000 kept channels of a 7B MLP): `Σ[K,K]` is singular, and along its null space the
//!   calibration data say nothing. There `P = 0` sets the weights to zero, while
//!   `P = W[:, K]` keeps the original weights, which is what unseen tokens need.
//! - Outlier channels make `mean(diag Σ)` large against a typical channel's variance, so
//!   `λ` can exceed it; shrinking towards zero then damages every ordinary channel, while
//!   shrinking towards `W[:, K]` only weakens the correction.
//!
//! Both output projections are refitted this way: down_proj on the MLP activation `G`
//! ([`mlp_lstsq`]) and o_proj on the concatenated per-head attention outputs `Z`
//! ([`attention_lstsq`]), where keeping head h keeps its `d_h` columns `h·d_h..(h+1)·d_h`.

use crate::refit::{check_attn_o_proj, check_kept, check_linear, check_mlp_down, head_columns, ColumnRefit};
use anyhow::{ensure, Context, Result};
use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};
use serde::{Deserialize, Serialize};
use slim_artifact::schema::{AttnStats, MlpStats};
use slim_checkpoint::HostTensor;

/// What the ridge penalty pulls the refitted weight towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RidgePrior {
    /// `P = 0`: the penalty `λ‖W'‖²`.
    Zero,
    /// `P = W[:, K]`: the penalty `λ‖W' − W[:, K]‖²`.
    Kept,
}

/// Settings of the least-squares refit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LstsqConfig {
    /// `ε ≥ 0` in `λ = ε · mean(diag Σ[K,K])`; `0` is plain least squares, which fails when
    /// `Σ[K,K]` is singular.
    pub ridge_rel: f64,
    /// What the penalty pulls towards.
    pub prior: RidgePrior,
}

impl LstsqConfig {
    /// `ε = 1` with prior `W[:, K]`, the prior that never does worse than slicing (module
    /// docs). `ε` was chosen by measurement: on SmolLM2-135M with 32 × 128 Brown-fiction
    /// calibration tokens, PTB perplexity after pruning fell from ε = 10⁻³ to ε = 1 at both
    /// 20 % and 50 % and rose again at ε = 10 at 50 % (docs/variants.md); the 10⁻² that
    /// SparseGPT, GPTQ and SliceGPT use for damping fits the calibration tokens too closely.
    pub fn standard() -> Self {
        Self { ridge_rel: 1.0, prior: RidgePrior::Kept }
    }
}

/// Smallest Cholesky pivot, relative to the largest, below which the system counts as
/// singular: its solution would be rounding noise.
const PIVOT_TOL: f64 = 1e-13;

/// The ridge least-squares refit of the columns `kept` of `weight` (module docs):
/// `W' = (W Σ[:,K] + λ P)(Σ[K,K] + λ I)⁻¹`, `b = W μ − W' μ_K`.
///
/// `W'` is solved in f64 and rounded to f32, the weights' type; `b` is then computed from
/// the rounded `W'`, so it is the optimal bias for the weight actually stored.
///
/// Errors name what is wrong: shapes, kept indices, non-finite inputs, a negative or
/// non-finite `ε`, a singular system (raise `ε`) and a non-finite result.
///
/// # Shapes
/// `weight` `[out, in]`, `mean` `[in]`, `cov` `[in, in]` (population covariance of the
/// input) → weight `[out, |K|]` (columns in the order of `kept`), bias `[out]`
pub fn lstsq_refit(
    weight: &HostTensor,
    mean: &[f64],
    cov: &[f64],
    kept: &[usize],
    cfg: &LstsqConfig,
) -> Result<ColumnRefit> {
    let (out, inp) = check_linear(weight, mean, cov)?;
    check_kept(kept, inp, "input")?;
    let eps = cfg.ridge_rel;
    ensure!(eps.is_finite() && eps >= 0.0, "ridge_rel must be finite and non-negative, got {eps}");
    let nk = kept.len();
    let sigma = MatRef::from_row_major_slice(cov, inp, inp); // in × in
    let mean_diag = kept.iter().map(|&j| sigma[(j, j)]).sum::<f64>() / nk as f64;
    let lambda = eps * mean_diag.max(0.0);

    // A = Σ[K,K] + λ I, symmetrized against rounding in the captured covariance.
    let a = Mat::from_fn(nk, nk, |p, q| {
        let (i, j) = (kept[p], kept[q]);
        0.5 * (sigma[(i, j)] + sigma[(j, i)]) + if p == q { lambda } else { 0.0 }
    }); // |K| × |K|
    let wmat = Mat::from_fn(out, inp, |k, j| weight.data[k * inp + j] as f64); // out × in
    let ws = &wmat * sigma; // out × in: W Σ
                            // Bᵀ = (W Σ[:,K] + λ P)ᵀ, the right-hand side of A W'ᵀ = Bᵀ.
    let bt = Mat::from_fn(nk, out, |p, k| {
        let j = kept[p];
        let prior = match cfg.prior {
            RidgePrior::Zero => 0.0,
            RidgePrior::Kept => lambda * wmat[(k, j)],
        };
        ws[(k, j)] + prior
    }); // |K| × out
    drop(ws); // Each temporary goes when it is used up: a LLaMA-7B down_proj's `W Σ` is 360 MB in f64, `A` 620 MB.

    let llt = a.llt(Side::Lower).map_err(|e| {
        anyhow::format_err!(
            "Σ[K,K] + λI is not positive definite ({e:?}): the input covariance is singular on the {nk} kept inputs \
            with λ = {lambda:e}; raise ridge_rel (now {eps:e})"
        )
    })?;
    drop(a);
    let l = llt.L();
    let pivots: Vec<f64> = (0..nk).map(|p| l[(p, p)] * l[(p, p)]).collect();
    let (lo, hi) = pivots.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    ensure!(
        lo > PIVOT_TOL * hi,
        "Σ[K,K] + λI is numerically singular (Cholesky pivots {lo:e} to {hi:e}) on the {nk} kept inputs with λ = \
        {lambda:e}; raise ridge_rel (now {eps:e})"
    );
    let wt = llt.solve(&bt); // |K| × out: W'ᵀ

    // The weight is stored in f32; the bias is the optimal one for the stored weight.
    let mut data = Vec::with_capacity(out * nk);
    let mut bias = Vec::with_capacity(out);
    for k in 0..out {
        let row: Vec<f32> = (0..nk).map(|p| wt[(p, k)] as f32).collect();
        let dense_mean: f64 = (0..inp).map(|j| wmat[(k, j)] * mean[j]).sum();
        let kept_mean: f64 = (0..nk).map(|p| row[p] as f64 * mean[kept[p]]).sum();
        bias.push(dense_mean - kept_mean);
        data.extend(row);
    }
    ensure!(
        data.iter().all(|v| v.is_finite()) && bias.iter().all(|v| v.is_finite()),
        "least-squares refit is not finite (λ = {lambda:e}, ε = {eps:e})"
    );
    Ok(ColumnRefit { weight: HostTensor::new(vec![out, nk], data)?, bias })
}

/// [`lstsq_refit`] of down_proj on the MLP activation `G` (mean `g_mean`, population
/// covariance `g_cov`) for the kept channels `kept`.
///
/// # Shapes
/// `down` `[d, m]`, `g_mean` `[m]`, `g_cov` `[m, m]` → weight `[d, |K|]`, bias `[d]`
pub fn mlp_lstsq(stats: &MlpStats, down: &HostTensor, kept: &[usize], cfg: &LstsqConfig) -> Result<ColumnRefit> {
    check_mlp_down(stats, down)?;
    // Widened for the solver: an m² f64 copy, on this non-default path only.
    let cov: Vec<f64> = stats.g_cov.iter().map(|&x| f64::from(x)).collect();
    lstsq_refit(down, &stats.g_mean, &cov, kept, cfg)
        .with_context(|| format!("layer {}: least-squares refit of down_proj", stats.layer))
}

/// [`lstsq_refit`] of o_proj on the attention output `Z` (mean `z_mean`, population
/// covariance `z_cov`) for the kept query heads `kept_heads`: head h's columns
/// `h·d_h..(h+1)·d_h` are refitted, heads in the order given.
///
/// # Shapes
/// `o_proj` `[d, H·d_h]`, `z_mean` `[H·d_h]`, `z_cov` `[H·d_h, H·d_h]` →
/// weight `[d, |S|·d_h]`, bias `[d]`
pub fn attention_lstsq(
    stats: &AttnStats,
    o_proj: &HostTensor,
    kept_heads: &[usize],
    cfg: &LstsqConfig,
) -> Result<ColumnRefit> {
    check_attn_o_proj(stats, o_proj)?;
    check_kept(kept_heads, stats.num_heads, "head").map_err(|e| anyhow::format_err!("layer {}: {e}", stats.layer))?;
    let kept = head_columns(kept_heads, stats.head_dim);
    lstsq_refit(o_proj, &stats.z_mean, &stats.z_cov, &kept, cfg)
        .with_context(|| format!("layer {}: least-squares refit of o_proj", stats.layer))
}
