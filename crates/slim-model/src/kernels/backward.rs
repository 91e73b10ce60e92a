//! Host kernels for a decoder layer's backward pass (LoRA training on burn-flex,
//! [`crate::Llama::lora_layer_grad`]): strided matrix products through `gemm`, and the
//! gradients of RMSNorm, SwiGLU and causal attention, each one pass over its rows in parallel.

use super::cpu::{exp_f32, AttnDims};
use rayon::prelude::*;

/// A row-major or transposed view of a matrix inside a slice: element `(i, j)` is
/// `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// `[rows, cols]`, row-major, starting at `data[0]` with row stride `rs`.
    pub fn rows(data: &'a [f32], rs: usize) -> Self {
        Mat { data, rs, cs: 1 }
    }

    /// The transpose of a row-major matrix with row stride `rs`.
    pub fn t(data: &'a [f32], rs: usize) -> Self {
        Mat { data, rs: 1, cs: rs }
    }

    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < self.data.len(), "{what}: a {rows}×{cols} view reaches {last} of {}", self.data.len());
        }
    }
}

/// `dst[m, n] = (acc ? dst : 0) + beta · lhs[m, k] · rhs[k, n]`; `dst` is row-major with row
/// stride `dst_rs`. Bounds of every view are checked before `gemm` reads them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: Mat,
    rhs: Mat,
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    Mat::rows(dst, dst_rs).check(m, n, "mm output");
    if k == 0 {
        if !acc {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    lhs.check(m, k, "mm lhs");
    rhs.check(k, n, "mm rhs");
    let par = if m * n * k >= 1 << 21 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: every view was checked to address only elements inside its slice, and `dst`
    // (mutable, checked above) does not alias `lhs` or `rhs` (borrowed immutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            par,
        );
    }
}

/// Adds to `dx` the gradient of RMSNorm (`y = w · x / sqrt(mean(x²) + eps)`, rows of `[n, d]`)
/// for the output gradient `dy`: `inv · (g − x̂ · mean(g ⊙ x̂))` with `g = dy ⊙ w`, `x̂ = x · inv`.
pub(crate) fn rms_norm_backward(x: &[f32], w: &[f32], eps: f32, dy: &[f32], dx: &mut [f32]) {
    let d = w.len();
    assert!(x.len() == dy.len() && x.len() == dx.len() && x.len().is_multiple_of(d.max(1)), "rms_norm_backward sizes");
    dx.par_chunks_mut(d).zip(x.par_chunks(d)).zip(dy.par_chunks(d)).for_each(|((dx, x), dy)| {
        let ss: f32 = x.iter().map(|v| v * v).sum();
        let inv = 1.0 / (ss / d as f32 + eps).sqrt();
        let dot: f32 = dy.iter().zip(w).zip(x).map(|((g, w), x)| g * w * x * inv).sum();
        let c = dot / d as f32;
        for (((o, g), w), x) in dx.iter_mut().zip(dy).zip(w).zip(x) {
            *o += inv * (g * w - x * inv * c);
        }
    });
}

/// The gradient of `silu(gate) · up` (rows `[gate | up]` of `gu`, `[n, 2f]`) for the output
/// gradient `dg` (`[n, f]`), laid out like `gu`.
pub(crate) fn silu_mul_backward(gu: &[f32], dg: &[f32], f: usize) -> Vec<f32> {
    let mut out = vec![0f32; gu.len()];
    out.par_chunks_mut(2 * f).zip(gu.par_chunks(2 * f)).zip(dg.par_chunks(f)).for_each(|((o, gu), dg)| {
        let (g, u) = gu.split_at(f);
        let (og, ou) = o.split_at_mut(f);
        for j in 0..f {
            let sig = 1.0 / (1.0 + exp_f32(-g[j]));
            og[j] = dg[j] * u[j] * sig * (1.0 + g[j] * (1.0 - sig));
            ou[j] = dg[j] * g[j] * sig;
        }
    });
    out
}

/// Gradients of causal attention with respect to `q`, `k` and `v` (layouts of
/// [`super::cpu::causal_attention`]) for the output gradient `dz` (`[batch·q_len, hq·dh]`),
/// from the forward pass's probabilities. Query heads that share a KV head add their key and
/// value gradients; a KV head no query head reads gets zeros.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    dz: &[f32],
    kv_head_of: &[usize],
    d: AttnDims,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let AttnDims { batch, q_len: tq, kv_len: tk, head_dim: dh } = d;
    let hq = kv_head_of.len();
    let (qw, kw) = (hq * dh, k.len() / (batch * tk).max(1));
    let hk = kw / dh.max(1);
    let offset = tk - tq;
    // One task per (sequence, KV head): its query heads' dq, and its dk and dv.
    type Task = (Vec<(usize, Vec<f32>)>, Vec<f32>, Vec<f32>);
    let tasks: Vec<Task> = (0..batch * hk)
        .into_par_iter()
        .map(|task| {
            let (b, j) = (task / hk, task % hk);
            let (mut dk, mut dv) = (vec![0f32; tk * dh], vec![0f32; tk * dh]);
            let kj = Mat::rows(&k[b * tk * kw + j * dh..], kw);
            let vj = &v[b * tk * kw + j * dh..];
            let mut dqs = Vec::new();
            let (mut dp, mut dq) = (vec![0f32; tq * tk], vec![0f32; tq * dh]);
            for h in (0..hq).filter(|&h| kv_head_of[h] == j) {
                let p = &probs[(b * hq + h) * tq * tk..(b * hq + h + 1) * tq * tk];
                let dzh = Mat::rows(&dz[b * tq * qw + h * dh..], qw);
                // dP = dZ · Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)).
                mm(tq, tk, dh, &mut dp, tk, false, dzh, Mat::t(vj, kw), 1.0);
                for (i, (ds, p)) in dp.chunks_exact_mut(tk).zip(p.chunks_exact(tk)).enumerate() {
                    let seen = (i + offset + 1).min(tk);
                    let dot: f32 = ds[..seen].iter().zip(&p[..seen]).map(|(a, b)| a * b).sum();
                    for (x, &pv) in ds[..seen].iter_mut().zip(&p[..seen]) {
                        *x = pv * (*x - dot);
                    }
                    ds[seen..].fill(0.0);
                }
                mm(tq, dh, tk, &mut dq, dh, false, Mat::rows(&dp, tk), kj, scale);
                mm(tk, dh, tq, &mut dk, dh, true, Mat::t(&dp, tk), Mat::rows(&q[b * tq * qw + h * dh..], qw), scale);
                mm(tk, dh, tq, &mut dv, dh, true, Mat::t(p, tk), dzh, 1.0);
                dqs.push((h, dq.clone()));
            }
            (dqs, dk, dv)
        })
        .collect();
    let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
    for (task, (dqs, tk_k, tk_v)) in tasks.iter().enumerate() {
        let (b, j) = (task / hk, task % hk);
        for (h, rows) in dqs {
            for (i, row) in rows.chunks_exact(dh).enumerate() {
                let at = (b * tq + i) * qw + h * dh;
                dq[at..at + dh].copy_from_slice(row);
            }
        }
        for (i, (rk, rv)) in tk_k.chunks_exact(dh).zip(tk_v.chunks_exact(dh)).enumerate() {
            let at = (b * tk + i) * kw + j * dh;
            dk[at..at + dh].copy_from_slice(rk);
            dv[at..at + dh].copy_from_slice(rv);
        }
    }
    (dq, dk, dv)
}
