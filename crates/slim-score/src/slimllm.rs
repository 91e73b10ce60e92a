//! The SlimLLM scorer: Pearson redundancy of attention units with a one-pass greedy swap
//! (spec §3.5, §3.6), and the PCA-weighted channel importance (spec §3.8).
//!
//! Everything is computed from the sufficient statistics of spec §13.2, in f64.
//! A correlation whose variance vanishes (a constant output dimension, e.g. a dead one)
//! is undefined; where the reference code would produce NaN, that dimension contributes 0.
//! "Vanishes" means at most `1e-12·(Σ_u σ_u)²`, with `σ_u` the standard deviations of
//! the units at that dimension: every sum of units has at most that variance, so this is
//! floating-point noise, not signal.

use crate::util::validate_heads;
use crate::{ChannelInputs, HeadInputs, Scorer, Units};
use anyhow::{ensure, Result};
use faer::{Mat, Side};
use slim_artifact::schema::AttnStats;

/// The SlimLLM scorer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlimLlm;

impl Scorer for SlimLlm {
    /// `R_u = Σ_k |ρ_k(Y − Y_u, Y)|`: high means removing unit u leaves the output most
    /// correlated with the dense output, so it is pruned first.
    fn unit_scores(&self, inputs: &HeadInputs<'_>, units: &Units) -> Result<Vec<f64>> {
        validate_heads(inputs)?;
        let uc = UnitCov::new(inputs.stats, units);
        Ok(uc.redundancy())
    }

    fn prune_highest(&self) -> bool {
        true
    }

    /// The reference code's one-pass greedy swap (spec §3.6), restricted to units of the
    /// same class.
    fn refine(&self, inputs: &HeadInputs<'_>, units: &Units, kept: Vec<usize>, pruned: &[usize]) -> Result<Vec<usize>> {
        let uc = UnitCov::new(inputs.stats, units);
        Ok(greedy_swap(&uc, &units.class, kept, pruned))
    }

    /// `I_j = I^g_j + I^u_j + I^d_j` of spec §3.8.
    fn channel_scores(&self, inputs: &ChannelInputs<'_>) -> Result<Vec<f64>> {
        channel_importance(inputs)
    }
}

/// `F(S) = Σ_k |ρ_k(Σ_{u∈S} Y_u, Y)|` for a set of units (spec §3.6).
pub fn attn_unit_objective(stats: &AttnStats, units: &Units, kept_units: &[usize]) -> f64 {
    UnitCov::new(stats, units).objective(kept_units)
}

/// Per-dimension covariances of the units' contributions: `Σ_u^(k)[a,b] = cov(Y_a[:,k], Y_b[:,k])`
/// with `Y_a` the sum of unit a's heads.
pub(crate) struct UnitCov {
    /// Units `U`.
    u: usize,
    /// Output dimensions `d`.
    d: usize,
    /// `[d, U, U]`.
    cov: Vec<f64>,
    /// `[d, U]`: row sums `e_aᵀ Σ^(k) 1`.
    row: Vec<f64>,
    /// `[d]`: `1ᵀ Σ^(k) 1`, the variance of the dense output.
    total: Vec<f64>,
    /// `[d]`: variance below which a dimension counts as constant.
    tol: Vec<f64>,
}

impl UnitCov {
    /// # Shapes
    /// `stats.head_cov` `[d, H, H]` → `cov` `[d, U, U]` by block sums over the units' heads.
    pub(crate) fn new(stats: &AttnStats, units: &Units) -> Self {
        let (h, d, u) = (stats.num_heads, stats.hidden, units.members.len());
        let mut cov = vec![0.0; d * u * u];
        for k in 0..d {
            let src = &stats.head_cov[k * h * h..(k + 1) * h * h];
            let dst = &mut cov[k * u * u..(k + 1) * u * u];
            for (a, ma) in units.members.iter().enumerate() {
                for (b, mb) in units.members.iter().enumerate() {
                    dst[a * u + b] = ma.iter().map(|&p| mb.iter().map(|&q| src[p * h + q]).sum::<f64>()).sum();
                }
            }
        }
        let mut row = vec![0.0; d * u];
        let mut total = vec![0.0; d];
        let mut tol = vec![0.0; d];
        for k in 0..d {
            let c = &cov[k * u * u..(k + 1) * u * u];
            let mut sd_sum = 0.0;
            for a in 0..u {
                row[k * u + a] = c[a * u..(a + 1) * u].iter().sum();
                sd_sum += c[a * u + a].max(0.0).sqrt();
            }
            total[k] = row[k * u..(k + 1) * u].iter().sum();
            tol[k] = 1e-12 * sd_sum * sd_sum;
        }
        Self { u, d, cov, row, total, tol }
    }

    /// `|cov| / sqrt(var_a · var_b)`, or 0 when either variance vanishes.
    fn abs_corr(&self, k: usize, cov: f64, var_a: f64, var_b: f64) -> f64 {
        if var_a <= self.tol[k] || var_b <= self.tol[k] {
            0.0
        } else {
            cov.abs() / (var_a * var_b).sqrt()
        }
    }

    /// `R_a = Σ_k |ρ_k(Y − Y_a, Y)|` for every unit.
    pub(crate) fn redundancy(&self) -> Vec<f64> {
        let u = self.u;
        (0..u)
            .map(|a| {
                (0..self.d)
                    .map(|k| {
                        let t = self.total[k];
                        let r = self.row[k * u + a];
                        let var_rest = t - 2.0 * r + self.cov[k * u * u + a * u + a];
                        self.abs_corr(k, t - r, var_rest, t)
                    })
                    .sum()
            })
            .collect()
    }

    /// `F(S) = Σ_k |1_Sᵀ Σ^(k) 1| / sqrt(1_Sᵀ Σ^(k) 1_S · 1ᵀ Σ^(k) 1)`.
    pub(crate) fn objective(&self, set: &[usize]) -> f64 {
        let u = self.u;
        (0..self.d)
            .map(|k| {
                let c = &self.cov[k * u * u..(k + 1) * u * u];
                let cross: f64 = set.iter().map(|&a| self.row[k * u + a]).sum();
                let var: f64 = set.iter().map(|&a| set.iter().map(|&b| c[a * u + b]).sum::<f64>()).sum();
                self.abs_corr(k, cross, var, self.total[k])
            })
            .sum()
    }
}

/// The one-pass greedy swap of spec §3.6: for each initially pruned unit in order, try it
/// in every position of the current kept list (same class only) and commit the best swap
/// that beats the running best objective.
fn greedy_swap(uc: &UnitCov, class: &[usize], mut kept: Vec<usize>, pruned: &[usize]) -> Vec<usize> {
    let mut best = uc.objective(&kept);
    let mut best_set = kept.clone();
    for &p in pruned {
        for j in 0..kept.len() {
            if class[kept[j]] != class[p] {
                continue;
            }
            let mut cand = kept.clone();
            cand[j] = p;
            let f = uc.objective(&cand);
            if f > best {
                best = f;
                best_set = cand;
            }
        }
        kept = best_set.clone();
    }
    kept
}

/// Rows or columns widened to f64 at a time by [`channel_importance`]: of the MLP covariance
/// (`m × 1,024`, 90 MB for a LLaMA-7B layer's m = 11,008) and of `W_d` (`1,024 × m` or
/// `d × 1,024`).
const BAND: usize = 1024;

/// The PCA-weighted channel importance `I = I^g + I^u + I^d` (spec §3.8).
///
/// `C = n·W_d Cov_G W_dᵀ` is the scatter of the centered MLP output; its symmetric part is
/// decomposed in f64 (`eigh`, not the reference code's fragile general `eig`).
/// If every eigenvalue is 0 the weights `c_k` are all `sigmoid(0) = 0.5`.
///
/// Every product is formed a band at a time from f32 inputs widened as they are used, so that
/// no m² or `d × m` f64 copy is ever held (a LLaMA-7B layer: 969 MB and 360 MB each); each band
/// is a block of the whole product, its entries the same dot products.
///
/// # Shapes
/// `gate`, `up` `[m, d]`, `down` `[d, m]`, `u_sq_mean` `[d]`, `g_mean` `[m]`, `g_cov` `[m, m]` → `[m]`
pub(crate) fn channel_importance(inputs: &ChannelInputs<'_>) -> Result<Vec<f64>> {
    let m = crate::util::validate_channels(inputs)?;
    let s = inputs.stats;
    let (d, n) = (s.hidden, s.n_tokens as f64);
    let xn: Vec<f64> = s.u_sq_mean.iter().map(|&q| (n * q).max(0.0).sqrt()).collect(); // [d]
    let gn: Vec<f64> = // [m]
        (0..m).map(|j| (n * (f64::from(s.g_cov[j * m + j]) + s.g_mean[j] * s.g_mean[j])).max(0.0).sqrt()).collect();
    let wd = &inputs.down.data; // [d, m], f32
    let wd_rows = |r0: usize, r: usize| Mat::from_fn(r, m, |i, j| f64::from(wd[(r0 + i) * m + j])); // r × m

    // C = (W_d Cov_G) W_dᵀ, a band of its rows at a time.
    let mut c = Mat::<f64>::zeros(d, d);
    for r0 in (0..d).step_by(BAND) {
        let r = BAND.min(d - r0);
        let w_r = wd_rows(r0, r);
        let mut t = Mat::<f64>::zeros(r, m); // rows r0.. of W_d Cov_G
        for j0 in (0..m).step_by(BAND) {
            let b = BAND.min(m - j0);
            let cov = Mat::from_fn(m, b, |i, j| f64::from(s.g_cov[i * m + j0 + j])); // m × b
            t.as_mut().subcols_mut(j0, b).copy_from(&w_r * &cov);
        }
        drop(w_r);
        for k0 in (0..d).step_by(BAND) {
            let k = BAND.min(d - k0);
            c.as_mut().submatrix_mut(r0, k0, r, k).copy_from(&t * wd_rows(k0, k).transpose());
        }
    }
    // Its symmetric part, scaled by n, in place.
    for i in 0..d {
        for j in i..d {
            let v = 0.5 * n * (c[(i, j)] + c[(j, i)]);
            c[(i, j)] = v;
            c[(j, i)] = v;
        }
    }
    let eig = c.self_adjoint_eigen(Side::Lower).map_err(|e| {
        anyhow::format_err!("layer {}: eigendecomposition of the MLP output scatter failed: {e:?}", s.layer)
    })?;
    drop(c);
    let lam: Vec<f64> = (0..d).map(|k| eig.S().column_vector()[k].abs()).collect();
    let mean_lam = lam.iter().sum::<f64>() / d as f64;
    // [d]
    let weight: Vec<f64> = lam.iter().map(|&l| if mean_lam > 0.0 { sigmoid(l / mean_lam) } else { 0.5 }).collect();

    // `W_dᵀ V` (m × d), a band of channels at a time.
    let row_norm = |w: &[f32]| -> f64 { w.iter().zip(&xn).map(|(&a, &x)| (a as f64 * x).powi(2)).sum::<f64>().sqrt() };
    let mut scores = Vec::with_capacity(m);
    for j0 in (0..m).step_by(BAND) {
        let b = BAND.min(m - j0);
        let w_b = Mat::from_fn(b, d, |i, k| f64::from(wd[k * m + j0 + i])); // (columns j0.. of W_d)ᵀ
        let proj = &w_b * eig.U(); // b × d
        for (i, j) in (j0..j0 + b).enumerate() {
            let ig = row_norm(&inputs.gate.data[j * d..(j + 1) * d]);
            let iu = row_norm(&inputs.up.data[j * d..(j + 1) * d]);
            let pd: f64 = (0..d).map(|k| (proj[(i, k)].abs() * weight[k]).powi(2)).sum::<f64>().sqrt();
            scores.push(ig + iu + gn[j] * pd);
        }
    }
    ensure!(scores.iter().all(|x| x.is_finite()), "layer {}: non-finite channel score", s.layer);
    Ok(scores)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
