//! Unit tests: the closed-form fits against least squares done directly on raw random
//! activations, the reconstruction error against the raw mean squared error, and the
//! guarantee that the fit never increases that error.

#![allow(clippy::needless_range_loop)] // Index loops mirror the formulas.

mod attn_lstsq;
mod ridge;
mod variants;

use super::*;
use slim_artifact::schema::{AttnStats, MlpStats};

/// Seeded generator with `unit()` (0, 1) and `normal()` draws.
use slim_checkpoint::synthetic::SplitMix as Rng;

/// `(a, b)` minimizing `Σ (y − a x − b)²`, by the uncentered 2×2 normal equations
/// (what `np.polyfit(x, y, 1)` solves).
fn polyfit1(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let (sx, sy) = (x.iter().sum::<f64>(), y.iter().sum::<f64>());
    let sxx = x.iter().map(|v| v * v).sum::<f64>();
    let sxy = x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let det = sxx * n - sx * sx;
    ((sxy * n - sx * sy) / det, (sxx * sy - sx * sxy) / det)
}

/// Tolerance of MLP fits from statistics against the same fits on raw tokens: the capture stores
/// the MLP covariance as the f32 it computes (relative rounding up to 6e-8 an entry), so results
/// from it match the raw-token f64 ones to about 1e-7, not to f64 rounding.
pub(crate) const MLP_TOL: f64 = 1e-6;

fn assert_rel(a: f64, b: f64, tol: f64, what: &str) {
    let scale = a.abs().max(b.abs()).max(1e-300);
    assert!((a - b).abs() / scale <= tol, "{what}: {a} vs {b} (rel {:e})", (a - b).abs() / scale);
}

/// Per-head contributions `y[h][t][k]` and their statistics.
fn attn_case(n: usize, h: usize, d: usize, seed: u64) -> (Vec<Vec<Vec<f64>>>, AttnStats) {
    let mut rng = Rng(seed);
    let shared: Vec<Vec<f64>> = (0..n).map(|_| (0..d).map(|_| rng.normal()).collect()).collect();
    let y: Vec<Vec<Vec<f64>>> = (0..h)
        .map(|hh| {
            let mix = rng.normal();
            (0..n)
                .map(|t| {
                    (0..d)
                        .map(|k| (0.5 + hh as f64) * rng.normal() + mix * shared[t][k] + 0.3 * k as f64 - hh as f64)
                        .collect()
                })
                .collect()
        })
        .collect();
    let nf = n as f64;
    let mut head_mean = vec![0.0; h * d];
    for hh in 0..h {
        for k in 0..d {
            head_mean[hh * d + k] = (0..n).map(|t| y[hh][t][k]).sum::<f64>() / nf;
        }
    }
    let mut head_cov = vec![0.0; d * h * h];
    for k in 0..d {
        for a in 0..h {
            for b in 0..h {
                head_cov[k * h * h + a * h + b] = (0..n)
                    .map(|t| (y[a][t][k] - head_mean[a * d + k]) * (y[b][t][k] - head_mean[b * d + k]))
                    .sum::<f64>()
                    / nf;
            }
        }
    }
    let stats = AttnStats {
        layer: 3,
        n_tokens: n,
        num_heads: h,
        head_dim: 2,
        hidden: d,
        head_mean,
        head_cov,
        z_mean: vec![0.0; 2 * h],
        z_sq_mean: vec![0.0; 2 * h],
        z_cov: vec![0.0; 4 * h * h],
    };
    (y, stats)
}

/// Raw `G` (`n × m`), `W_d` and the statistics.
fn mlp_case(n: usize, d: usize, m: usize, seed: u64) -> (Vec<Vec<f64>>, HostTensor, MlpStats) {
    let mut rng = Rng(seed);
    let latent: Vec<Vec<f64>> = (0..n).map(|_| (0..3).map(|_| rng.normal()).collect()).collect();
    let mix: Vec<Vec<f64>> = (0..m).map(|_| (0..3).map(|_| rng.normal()).collect()).collect();
    let g: Vec<Vec<f64>> = (0..n)
        .map(|t| {
            (0..m)
                .map(|j| 0.5 * rng.normal() + (0..3).map(|l| mix[j][l] * latent[t][l]).sum::<f64>() + 0.1 * j as f64)
                .collect()
        })
        .collect();
    let down = HostTensor::new(vec![d, m], (0..d * m).map(|_| rng.normal() as f32).collect()).unwrap();
    let nf = n as f64;
    let g_mean: Vec<f64> = (0..m).map(|j| g.iter().map(|r| r[j]).sum::<f64>() / nf).collect();
    let mut g_cov = vec![0.0; m * m];
    for a in 0..m {
        for b in 0..m {
            g_cov[a * m + b] = g.iter().map(|r| (r[a] - g_mean[a]) * (r[b] - g_mean[b])).sum::<f64>() / nf;
        }
    }
    // Rounded to f32, as the capture stores it.
    let g_cov = g_cov.iter().map(|&x| x as f32).collect();
    let stats = MlpStats { layer: 3, n_tokens: n, hidden: d, intermediate: m, u_sq_mean: vec![1.0; d], g_mean, g_cov };
    (g, down, stats)
}

/// Raw `(Ŷ, Y)` columns of the MLP for output dimension k.
fn mlp_columns(g: &[Vec<f64>], down: &HostTensor, kept: &[usize], k: usize) -> (Vec<f64>, Vec<f64>) {
    let m = down.shape[1];
    let w = |j: usize| down.data[k * m + j] as f64;
    let yhat = g.iter().map(|r| kept.iter().map(|&j| r[j] * w(j)).sum()).collect();
    let y = g.iter().map(|r| (0..m).map(|j| r[j] * w(j)).sum()).collect();
    (yhat, y)
}

fn raw_mse(cols: &[(Vec<f64>, Vec<f64>)], affine: &Affine) -> f64 {
    let d = cols.len();
    cols.iter()
        .enumerate()
        .map(|(k, (x, y))| {
            x.iter().zip(y).map(|(a, b)| (affine.scale[k] * a + affine.bias[k] - b).powi(2)).sum::<f64>()
                / x.len() as f64
        })
        .sum::<f64>()
        / d as f64
}

#[test]
fn attention_fit_matches_polyfit() {
    for (h, kept, seed) in [(6, vec![0, 2, 5], 1u64), (5, vec![1, 2, 3, 4], 2), (4, vec![3], 3)] {
        let (n, d) = (40, 7);
        let (y, stats) = attn_case(n, h, d, seed);
        let affine = attention_affine(&stats, &kept).unwrap();
        let mut cols = Vec::new();
        for k in 0..d {
            let x: Vec<f64> = (0..n).map(|t| kept.iter().map(|&a| y[a][t][k]).sum()).collect();
            let yy: Vec<f64> = (0..n).map(|t| (0..h).map(|a| y[a][t][k]).sum()).collect();
            let (a, b) = polyfit1(&x, &yy);
            assert_rel(affine.scale[k], a, 1e-9, &format!("a_{k}, kept {kept:?}"));
            assert_rel(affine.bias[k], b, 1e-9, &format!("b_{k}, kept {kept:?}"));
            cols.push((x, yy));
        }
        let err = attention_reconstruction_error(&stats, &kept, &affine).unwrap();
        let none = attention_reconstruction_error(&stats, &kept, &identity_affine(d)).unwrap();
        assert_rel(err, raw_mse(&cols, &affine), 1e-9, "affine error");
        assert_rel(none, raw_mse(&cols, &identity_affine(d)), 1e-9, "unrecovered error");
        assert!(err <= none, "affine {err} > none {none}");
    }
}

#[test]
fn mlp_fit_matches_polyfit() {
    for (m, kept, seed) in [(13, vec![0, 1, 4, 7, 8, 12], 4u64), (11, vec![10], 5), (13, (0..12).collect(), 6)] {
        let (n, d) = (40, 7);
        let (g, down, stats) = mlp_case(n, d, m, seed);
        let affine = mlp_affine(&stats, &down, &kept).unwrap();
        let mut cols = Vec::new();
        for k in 0..d {
            let (x, y) = mlp_columns(&g, &down, &kept, k);
            let (a, b) = polyfit1(&x, &y);
            assert_rel(affine.scale[k], a, MLP_TOL, &format!("a_{k}, kept {kept:?}"));
            assert_rel(affine.bias[k], b, MLP_TOL, &format!("b_{k}, kept {kept:?}"));
            cols.push((x, y));
        }
        let err = mlp_reconstruction_error(&stats, &down, &kept, &affine).unwrap();
        let none = mlp_reconstruction_error(&stats, &down, &kept, &identity_affine(d)).unwrap();
        assert_rel(err, raw_mse(&cols, &affine), MLP_TOL, "affine error");
        assert_rel(none, raw_mse(&cols, &identity_affine(d)), MLP_TOL, "unrecovered error");
        assert!(err <= none, "affine {err} > none {none}");
    }
}

#[test]
fn affine_never_increases_error_on_random_layers() {
    let mut rng = Rng(77);
    for seed in 0..20u64 {
        let (_, stats) = attn_case(30, 6, 5, 100 + seed);
        let kept: Vec<usize> = (0..6).filter(|_| rng.unit() < 0.6).collect();
        if !kept.is_empty() {
            let a = attention_affine(&stats, &kept).unwrap();
            assert!(
                attention_reconstruction_error(&stats, &kept, &a).unwrap()
                    <= attention_reconstruction_error(&stats, &kept, &identity_affine(5)).unwrap()
            );
        }
        let (_, down, stats) = mlp_case(30, 5, 9, 200 + seed);
        let kept: Vec<usize> = (0..9).filter(|_| rng.unit() < 0.5).collect();
        if !kept.is_empty() {
            let a = mlp_affine(&stats, &down, &kept).unwrap();
            assert!(
                mlp_reconstruction_error(&stats, &down, &kept, &a).unwrap()
                    <= mlp_reconstruction_error(&stats, &down, &kept, &identity_affine(5)).unwrap()
            );
        }
    }
}

#[test]
fn keeping_everything_is_the_identity() {
    let (_, stats) = attn_case(30, 4, 5, 9);
    let a = attention_affine(&stats, &[0, 1, 2, 3]).unwrap();
    for k in 0..5 {
        assert_rel(a.scale[k], 1.0, 1e-12, "scale");
        assert!(a.bias[k].abs() < 1e-9, "bias {}", a.bias[k]);
    }
    assert!(attention_reconstruction_error(&stats, &[0, 1, 2, 3], &a).unwrap() < 1e-18);
}

#[test]
fn constant_pruned_output_restores_the_mean() {
    let (_, down, mut stats) = mlp_case(30, 5, 9, 10);
    let m = 9;
    // Channel 4 constant: zero row and column of Cov_G.
    for j in 0..m {
        stats.g_cov[4 * m + j] = 0.0;
        stats.g_cov[j * m + 4] = 0.0;
    }
    let a = mlp_affine(&stats, &down, &[4]).unwrap();
    for k in 0..5 {
        let w = |j: usize| down.data[k * m + j] as f64;
        let mean_y: f64 = (0..m).map(|j| w(j) * stats.g_mean[j]).sum();
        assert_eq!(a.scale[k], 1.0);
        assert_rel(a.bias[k], mean_y - w(4) * stats.g_mean[4], 1e-12, "bias");
    }
}

#[test]
fn recovery_kind_and_errors() {
    assert_eq!(serde_json::to_string(&RecoveryKind::Affine).unwrap(), "\"affine\"");
    assert_eq!(serde_json::from_str::<RecoveryKind>("\"none\"").unwrap(), RecoveryKind::None);
    let (_, stats) = attn_case(10, 4, 3, 1);
    assert!(recover_attention(RecoveryKind::None, &stats, &[0]).unwrap().is_none());
    assert!(recover_attention(RecoveryKind::Affine, &stats, &[0]).unwrap().is_some());
    assert!(attention_affine(&stats, &[]).unwrap_err().to_string().contains("no head kept"));
    assert!(attention_affine(&stats, &[4]).unwrap_err().to_string().contains("out of range"));
    assert!(attention_affine(&stats, &[1, 1]).unwrap_err().to_string().contains("twice"));
}

#[test]
fn mlp_fit_at_smollm2_size_is_finite_and_reduces_error() {
    // m = 1536, d = 576, 80 % of channels kept; the covariance is a smooth banded matrix.
    let (d, m) = (576, 1536);
    let mut rng = Rng(5);
    let g_cov: Vec<f32> = (0..m * m).map(|i| (-((i / m) as f32 - (i % m) as f32).abs() / 8.0).exp()).collect();
    let stats = MlpStats {
        layer: 0,
        n_tokens: 4096,
        hidden: d,
        intermediate: m,
        u_sq_mean: vec![1.0; d],
        g_mean: (0..m).map(|_| rng.normal()).collect(),
        g_cov,
    };
    let down = HostTensor::new(vec![d, m], (0..d * m).map(|_| rng.normal() as f32).collect()).unwrap();
    let kept: Vec<usize> = (0..m).filter(|j| j % 5 != 0).collect();
    let a = mlp_affine(&stats, &down, &kept).unwrap();
    assert!(a.scale.iter().chain(&a.bias).all(|x| x.is_finite()));
    let fitted = mlp_reconstruction_error(&stats, &down, &kept, &a).unwrap();
    let plain = mlp_reconstruction_error(&stats, &down, &kept, &identity_affine(d)).unwrap();
    assert!(fitted <= plain * (1.0 + 1e-12), "affine error {fitted} above uncorrected {plain}");
}
