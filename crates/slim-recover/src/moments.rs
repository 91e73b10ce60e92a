//! Per-output-dimension first and second moments of the dense output `Y` and the pruned
//! output `Ŷ`, from the captured statistics; the fit and its error are functions of these.

use anyhow::{ensure, Result};
use faer::Mat;
use slim_artifact::schema::{Affine, AttnStats, MlpStats};
use slim_checkpoint::HostTensor;

/// Moments of `(Ŷ_k, Y_k)` for every output dimension k (all `[d]`).
pub(crate) struct Moments {
    /// `cov(Ŷ_k, Y_k)`.
    cross: Vec<f64>,
    /// `var(Ŷ_k)`.
    var_hat: Vec<f64>,
    /// `var(Y_k)`; empty when not needed.
    var_y: Vec<f64>,
    /// `mean(Ŷ_k)`.
    mean_hat: Vec<f64>,
    /// `mean(Y_k)`.
    mean_y: Vec<f64>,
    /// Variance of `Ŷ_k` below which it counts as constant.
    tol: Vec<f64>,
}

fn check_kept(kept: &[usize], n: usize, what: &str, layer: usize) -> Result<()> {
    crate::refit::check_kept(kept, n, what).map_err(|e| anyhow::format_err!("layer {layer}: {e}"))
}

/// Columns of the MLP covariance widened to f64 at a time by [`Moments::mlp`].
const COV_BAND: usize = 1024;

impl Moments {
    /// # Shapes
    /// `head_mean` `[H, d]`, `head_cov` `[d, H, H]` → moments `[d]`
    pub(crate) fn attention(stats: &AttnStats, kept: &[usize]) -> Result<Self> {
        let (h, d) = (stats.num_heads, stats.hidden);
        stats.validate().map_err(anyhow::Error::msg)?;
        check_kept(kept, h, "head", stats.layer)?;
        let mut m = Self {
            cross: vec![0.0; d],
            var_hat: vec![0.0; d],
            var_y: vec![0.0; d],
            mean_hat: vec![0.0; d],
            mean_y: vec![0.0; d],
            tol: vec![0.0; d],
        };
        for k in 0..d {
            let c = &stats.head_cov[k * h * h..(k + 1) * h * h];
            let row = |a: usize| -> f64 { c[a * h..(a + 1) * h].iter().sum() };
            m.cross[k] = kept.iter().map(|&a| row(a)).sum();
            m.var_hat[k] = kept.iter().map(|&a| kept.iter().map(|&b| c[a * h + b]).sum::<f64>()).sum();
            m.var_y[k] = (0..h).map(row).sum();
            m.mean_hat[k] = kept.iter().map(|&a| stats.head_mean[a * d + k]).sum();
            m.mean_y[k] = (0..h).map(|a| stats.head_mean[a * d + k]).sum();
            let sd: f64 = kept.iter().map(|&a| c[a * h + a].max(0.0).sqrt()).sum();
            m.tol[k] = 1e-12 * sd * sd;
        }
        Ok(m)
    }

    /// `var_y` is computed only when `with_var_y` (it costs a full `d·m²` product).
    ///
    /// # Shapes
    /// `down` `[d, m]`, `g_mean` `[m]`, `g_cov` `[m, m]` → moments `[d]`
    pub(crate) fn mlp(stats: &MlpStats, down: &HostTensor, kept: &[usize], with_var_y: bool) -> Result<Self> {
        let (d, m) = crate::refit::check_mlp_down(stats, down)?;
        check_kept(kept, m, "channel", stats.layer)?;
        let nk = kept.len();
        let w = |k: usize, j: usize| down.data[k * m + j] as f64;
        let wk = Mat::from_fn(d, nk, |k, j| w(k, kept[j])); // d × |K|

        // d × m: row k = w_{k,K}ᵀ Cov_G[K,:], Cov_G[K,:] widened to f64 a band of columns at a time
        // (all of it is |K|·m f64 values: 846 MB for a LLaMA-7B layer keeping 9,606 of 11,008).
        let mut a = Mat::<f64>::zeros(d, m);
        for j0 in (0..m).step_by(COV_BAND) {
            let b = COV_BAND.min(m - j0);
            let band = Mat::from_fn(nk, b, |i, j| f64::from(stats.g_cov[kept[i] * m + j0 + j])); // |K| × b
            a.as_mut().subcols_mut(j0, b).copy_from(&wk * &band);
        }
        let mut out = Self {
            cross: vec![0.0; d],
            var_hat: vec![0.0; d],
            var_y: Vec::new(),
            mean_hat: vec![0.0; d],
            mean_y: vec![0.0; d],
            tol: vec![0.0; d],
        };
        let sd: Vec<f64> = kept.iter().map(|&j| f64::from(stats.g_cov[j * m + j]).max(0.0).sqrt()).collect();
        for k in 0..d {
            out.cross[k] = (0..m).map(|j| a[(k, j)] * w(k, j)).sum();
            out.var_hat[k] = (0..nk).map(|i| a[(k, kept[i])] * wk[(k, i)]).sum();
            out.mean_hat[k] = (0..nk).map(|i| wk[(k, i)] * stats.g_mean[kept[i]]).sum();
            out.mean_y[k] = (0..m).map(|j| w(k, j) * stats.g_mean[j]).sum();
            let s: f64 = (0..nk).map(|i| wk[(k, i)].abs() * sd[i]).sum();
            out.tol[k] = 1e-12 * s * s;
        }
        if with_var_y {
            let wd = Mat::from_fn(d, m, w); // d × m
            let cov = Mat::from_fn(m, m, |i, j| f64::from(stats.g_cov[i * m + j])); // m × m
            let full = &wd * &cov; // d × m
            out.var_y = (0..d).map(|k| (0..m).map(|j| full[(k, j)] * w(k, j)).sum()).collect();
        }
        Ok(out)
    }

    /// The least-squares scale and bias of every dimension.
    pub(crate) fn fit(&self) -> Affine {
        let d = self.cross.len();
        let mut scale = vec![1.0; d];
        let mut bias = vec![0.0; d];
        for k in 0..d {
            if self.var_hat[k] > self.tol[k] {
                scale[k] = self.cross[k] / self.var_hat[k];
            }
            bias[k] = self.mean_y[k] - scale[k] * self.mean_hat[k];
        }
        Affine { scale, bias }
    }

    /// Mean over dimensions of `E[(a_k Ŷ_k + b_k − Y_k)²]`.
    pub(crate) fn mse(&self, affine: &Affine) -> Result<f64> {
        let d = self.cross.len();
        ensure!(
            affine.scale.len() == d && affine.bias.len() == d,
            "affine has {} scales and {} biases for {d} dimensions",
            affine.scale.len(),
            affine.bias.len()
        );
        ensure!(self.var_y.len() == d, "internal: var_y was not computed");
        let total: f64 = (0..d)
            .map(|k| {
                let (a, b) = (affine.scale[k], affine.bias[k]);
                let centered = a * a * self.var_hat[k] - 2.0 * a * self.cross[k] + self.var_y[k];
                let offset = a * self.mean_hat[k] + b - self.mean_y[k];
                centered.max(0.0) + offset * offset
            })
            .sum();
        Ok(total / d as f64)
    }
}
