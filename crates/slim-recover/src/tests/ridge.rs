//! Direct f64 references for the least-squares refit: the ridge regression solved from the
//! normal equations of the raw tokens, and the raw mean squared error of any refit.

use super::*;

pub(super) type Rows = Vec<Vec<f64>>;

/// `A x = b` by Gaussian elimination with partial pivoting (small dense systems).
fn gauss_solve(mut a: Rows, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        x[r] = (b[r] - (r + 1..n).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
    }
    x
}

/// Per output row k, `(w_k, b_k)` minimizing `Σ_t (y_tk − w·x_{t,K} − b)² + nλ‖w − p_k‖²` from
/// the normal equations of the augmented design `[X_K, 1]`, with `λ = ε·mean_{j∈K} var(x_j)`.
/// Returns (`[out][|K|]` weights, `[out]` biases).
pub(super) fn direct_ridge(
    g: &Rows,
    down: &HostTensor,
    kept: &[usize],
    eps: f64,
    prior: RidgePrior,
) -> (Rows, Vec<f64>) {
    let (n, m, out, nk) = (g.len(), down.shape[1], down.shape[0], kept.len());
    let nf = n as f64;
    let var = |j: usize| {
        let mu = g.iter().map(|r| r[j]).sum::<f64>() / nf;
        g.iter().map(|r| (r[j] - mu).powi(2)).sum::<f64>() / nf
    };
    let lambda = eps * kept.iter().map(|&j| var(j)).sum::<f64>() / nk as f64;
    let mut a = vec![vec![0.0; nk + 1]; nk + 1];
    for t in 0..n {
        let xa: Vec<f64> = kept.iter().map(|&j| g[t][j]).chain([1.0]).collect();
        for p in 0..=nk {
            for q in 0..=nk {
                a[p][q] += xa[p] * xa[q];
            }
        }
    }
    for p in 0..nk {
        a[p][p] += nf * lambda;
    }
    let (mut ws, mut bs) = (Vec::new(), Vec::new());
    for k in 0..out {
        let w = |j: usize| down.data[k * m + j] as f64;
        let mut rhs = vec![0.0; nk + 1];
        for t in 0..n {
            let y: f64 = (0..m).map(|j| w(j) * g[t][j]).sum();
            for p in 0..nk {
                rhs[p] += g[t][kept[p]] * y;
            }
            rhs[nk] += y;
        }
        if prior == RidgePrior::Kept {
            for p in 0..nk {
                rhs[p] += nf * lambda * w(kept[p]);
            }
        }
        let sol = gauss_solve(a.clone(), rhs);
        ws.push(sol[..nk].to_vec());
        bs.push(sol[nk]);
    }
    (ws, bs)
}

/// Raw mean squared error of a refit of down_proj on the tokens of `g`.
pub(super) fn raw_refit_mse(g: &Rows, down: &HostTensor, kept: &[usize], refit: &Refit) -> f64 {
    let (m, out) = (down.shape[1], down.shape[0]);
    let w = |k: usize, j: usize| down.data[k * m + j] as f64;
    let mut total = 0.0;
    for r in g {
        for k in 0..out {
            let y: f64 = (0..m).map(|j| w(k, j) * r[j]).sum();
            let pred = match refit {
                Refit::None => kept.iter().map(|&j| w(k, j) * r[j]).sum(),
                Refit::Affine(a) => a.scale[k] * kept.iter().map(|&j| w(k, j) * r[j]).sum::<f64>() + a.bias[k],
                Refit::Columns(c) => {
                    (0..kept.len()).map(|i| c.weight.data[k * kept.len() + i] as f64 * r[kept[i]]).sum::<f64>()
                        + c.bias[k]
                }
            };
            total += (pred - y).powi(2);
        }
    }
    total / (g.len() * out) as f64
}

/// Relative error of f32-stored values: at most a few units of f32 rounding of the row's scale.
pub(super) fn assert_f32_close(got: f32, want: f64, scale: f64, what: &str) {
    assert_close(got, want, scale, 1e-6, what);
}

/// `got` within `tol` of the row's scale of `want`.
pub(super) fn assert_close(got: f32, want: f64, scale: f64, tol: f64, what: &str) {
    assert!((got as f64 - want).abs() <= tol * scale.max(1e-30), "{what}: {got} vs {want} (scale {scale})");
}
