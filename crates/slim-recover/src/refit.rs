//! The general form of a recovery, [`Refit`]: the new weight and bias of an output
//! projection whose inputs were pruned, and its reconstruction error from input moments.

use anyhow::{ensure, Result};
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};
use slim_artifact::schema::{Affine, AttnStats, MlpStats};
use slim_checkpoint::HostTensor;

/// How an output projection `W` (`[out, in]`) is rebuilt after keeping the input columns
/// `K`; in every case an existing bias of the projection is added to the returned bias.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refit {
    /// Slice only: `W ← W[:, K]`, no bias.
    None,
    /// `W ← diag(scale)·W[:, K]`, `bias ← bias`.
    Affine(Affine),
    /// `W ← weight`, `bias ← bias`: new values for the kept columns.
    Columns(ColumnRefit),
}

/// Refitted kept columns of an output projection and its bias.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnRefit {
    /// `[out, |K|]`: column `i` replaces input `K[i]`, in the order `K` was given.
    #[serde(with = "host_tensor")]
    pub weight: HostTensor,
    /// `[out]`.
    pub bias: Vec<f64>,
}

/// Mean squared error, over the calibration tokens and the `out` output dimensions, of the
/// refitted projection on the kept inputs against the dense `W x`:
/// `(1/out) Σ_k E[(W'_k x_K + b_k − W_k x)²]`. With `D` the `[out, in]` matrix holding `W'`
/// in the columns `K` minus `W`, this is `(tr(D Σ Dᵀ) + ‖D μ + b‖²) / out`.
///
/// # Shapes
/// `weight` `[out, in]`, `mean` `[in]`, `cov` `[in, in]` (population covariance of `x`) → scalar
pub fn refit_error(weight: &HostTensor, mean: &[f64], cov: &[f64], kept: &[usize], refit: &Refit) -> Result<f64> {
    let (out, inp) = check_linear(weight, mean, cov)?;
    check_kept(kept, inp, "input")?;
    let w = |k: usize, j: usize| weight.data[k * inp + j] as f64;
    let mut dmat = Mat::from_fn(out, inp, |k, j| -w(k, j)); // out × in
    let mut bias = vec![0.0; out];
    match refit {
        Refit::None => {
            for k in 0..out {
                for &j in kept {
                    dmat[(k, j)] += w(k, j);
                }
            }
        }
        Refit::Affine(a) => {
            ensure!(
                a.scale.len() == out && a.bias.len() == out,
                "affine refit has {} scales and {} biases for {out} outputs",
                a.scale.len(),
                a.bias.len()
            );
            for k in 0..out {
                for &j in kept {
                    dmat[(k, j)] += a.scale[k] * w(k, j);
                }
            }
            bias.copy_from_slice(&a.bias);
        }
        Refit::Columns(c) => {
            ensure!(
                c.weight.shape == [out, kept.len()] && c.bias.len() == out,
                "column refit has weight {:?} and {} biases, expected [{out}, {}] and {out}",
                c.weight.shape,
                c.bias.len(),
                kept.len()
            );
            for k in 0..out {
                for (i, &j) in kept.iter().enumerate() {
                    dmat[(k, j)] += c.weight.data[k * kept.len() + i] as f64;
                }
            }
            bias.copy_from_slice(&c.bias);
        }
    }
    let sigma = MatRef::from_row_major_slice(cov, inp, inp);
    let ds = &dmat * sigma; // out × in
    let mut total = 0.0;
    for k in 0..out {
        let centered: f64 = (0..inp).map(|j| ds[(k, j)] * dmat[(k, j)]).sum();
        let offset: f64 = (0..inp).map(|j| dmat[(k, j)] * mean[j]).sum::<f64>() + bias[k];
        total += centered.max(0.0) + offset * offset;
    }
    Ok(total / out as f64)
}

/// Checks a linear layer and the moments of its input; returns `(out, in)`.
pub(crate) fn check_linear(weight: &HostTensor, mean: &[f64], cov: &[f64]) -> Result<(usize, usize)> {
    ensure!(weight.shape.len() == 2, "weight must be 2-D [out, in], got shape {:?}", weight.shape);
    let (out, inp) = (weight.shape[0], weight.shape[1]);
    ensure!(out > 0 && inp > 0, "weight has an empty shape {:?}", weight.shape);
    ensure!(
        mean.len() == inp && cov.len() == inp * inp,
        "input moments have {} means and {} covariances for {inp} inputs (expected {inp} and {})",
        mean.len(),
        cov.len(),
        inp * inp
    );
    if let Some(i) = weight.data.iter().position(|v| !v.is_finite()) {
        anyhow::bail!("weight has a non-finite value at [{}, {}]", i / inp, i % inp);
    }
    if let Some(i) = mean.iter().position(|v| !v.is_finite()) {
        anyhow::bail!("input mean has a non-finite value at {i}");
    }
    if let Some(i) = cov.iter().position(|v| !v.is_finite()) {
        anyhow::bail!("input covariance has a non-finite value at [{}, {}]", i / inp, i % inp);
    }
    Ok((out, inp))
}

/// Checks that `kept` is a non-empty list of distinct `what`s (inputs, heads, channels)
/// below `n`.
pub(crate) fn check_kept(kept: &[usize], n: usize, what: &str) -> Result<()> {
    ensure!(!kept.is_empty(), "no {what} kept");
    let mut seen = vec![false; n];
    for &i in kept {
        ensure!(i < n, "kept {what} {i} out of range for {n}");
        ensure!(!seen[i], "kept {what} {i} listed twice");
        seen[i] = true;
    }
    Ok(())
}

/// Validates MLP statistics and that `down` is `[hidden, intermediate]`; returns `(d, m)`.
pub(crate) fn check_mlp_down(stats: &MlpStats, down: &HostTensor) -> Result<(usize, usize)> {
    stats.validate().map_err(anyhow::Error::msg)?;
    let (d, m) = (stats.hidden, stats.intermediate);
    ensure!(down.shape == [d, m], "layer {}: down_proj has shape {:?}, expected [{d}, {m}]", stats.layer, down.shape);
    Ok((d, m))
}

/// Validates attention statistics and that `o_proj` is `[hidden, H·d_h]`; returns `(d, H·d_h)`.
pub(crate) fn check_attn_o_proj(stats: &AttnStats, o_proj: &HostTensor) -> Result<(usize, usize)> {
    stats.validate().map_err(anyhow::Error::msg)?;
    let (d, hd) = (stats.hidden, stats.num_heads * stats.head_dim);
    ensure!(
        o_proj.shape == [d, hd],
        "layer {}: o_proj has shape {:?}, expected [{d}, {hd}]",
        stats.layer,
        o_proj.shape
    );
    Ok((d, hd))
}

/// The o_proj input columns of heads `heads`, in their order: head h owns `h·d_h..(h+1)·d_h`.
pub(crate) fn head_columns(heads: &[usize], head_dim: usize) -> Vec<usize> {
    heads.iter().flat_map(|&h| h * head_dim..(h + 1) * head_dim).collect()
}

/// Serde for [`HostTensor`] (shape and row-major data), checking the length on the way in.
mod host_tensor {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use slim_checkpoint::HostTensor;

    #[derive(Serialize)]
    struct Out<'a> {
        shape: &'a [usize],
        data: &'a [f32],
    }

    #[derive(Deserialize)]
    struct In {
        shape: Vec<usize>,
        data: Vec<f32>,
    }

    pub(super) fn serialize<S: Serializer>(t: &HostTensor, s: S) -> Result<S::Ok, S::Error> {
        Out { shape: &t.shape, data: &t.data }.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HostTensor, D::Error> {
        let t = In::deserialize(d)?;
        HostTensor::new(t.shape, t.data).map_err(D::Error::custom)
    }
}
