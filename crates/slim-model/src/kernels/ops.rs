//! The same steps as [`super::cpu`], composed of burn ops: the path of every backend other
//! than burn-flex (wgpu, cuda), and the reference the fused kernels are tested against.

use super::AttnDims;
use crate::rope::RopeTables;
use burn_tensor::activation::{silu, softmax};
use burn_tensor::{backend::Backend, Int, Tensor, TensorData};

/// # Shapes
/// x: `[n, in]`, wt: `[in, out]`, bias: `[out]` → `[n, out]`
pub(crate) fn linear<B: Backend>(x: Tensor<B, 2>, wt: &Tensor<B, 2>, bias: Option<&Tensor<B, 1>>) -> Tensor<B, 2> {
    let y = x.matmul(wt.clone());
    match bias {
        Some(b) => y + b.clone().unsqueeze::<2>(),
        None => y,
    }
}

/// # Shapes
/// x: `[n, d]`, w: `[d]` → `[n, d]`
pub(crate) fn rms_norm<B: Backend>(x: Tensor<B, 2>, w: &Tensor<B, 1>, eps: f64) -> Tensor<B, 2> {
    let var = x.clone().powi_scalar(2).mean_dim(1); // [n, 1]
    x * var.add_scalar(eps).sqrt().recip() * w.clone().unsqueeze::<2>()
}

/// # Shapes
/// gu: `[n, 2f]` (gate and up side by side) → `[n, f]`
pub(crate) fn silu_mul<B: Backend>(gu: Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, f2] = gu.dims();
    let f = f2 / 2;
    silu(gu.clone().slice([0..n, 0..f])) * gu.slice([0..n, f..f2])
}

/// # Shapes
/// x: `[batch·len, heads·dh]` → same
pub(crate) fn rope<B: Backend>(x: Tensor<B, 2>, rope: &RopeTables<B>) -> Tensor<B, 2> {
    let [n, width] = x.dims();
    let (len, dh) = (rope.len(), rope.head_dim());
    rope.apply(x.reshape([n / len, len, width / dh, dh])).reshape([n, width])
}

/// # Shapes
/// q: `[batch·q_len, hq·dh]`, k, v: `[batch·kv_len, hk·dh]` → `[batch·q_len, hq·dh]`
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    kv_head_of: &[usize],
    kv_index: &Tensor<B, 1, Int>,
    d: AttnDims,
) -> Tensor<B, 2> {
    let AttnDims { batch: b, q_len: tq, kv_len: tk, head_dim: dh } = d;
    let (hq, hk) = (kv_head_of.len(), k.dims()[1] / dh);
    let device = q.device();
    let q = q.reshape([b, tq, hq, dh]).swap_dims(1, 2); // [b, hq, tq, dh]
    let k = k.reshape([b, tk, hk, dh]).swap_dims(1, 2);
    let v = v.reshape([b, tk, hk, dh]).swap_dims(1, 2);
    let identity = hk == hq && kv_head_of.iter().enumerate().all(|(i, &j)| i == j);
    let (k, v) = if identity { (k, v) } else { (k.select(1, kv_index.clone()), v.select(1, kv_index.clone())) };
    let scale = 1.0 / (dh as f64).sqrt();
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + causal_mask::<B>(tq, tk, &device);
    let z = softmax(scores, 3).matmul(v); // [b, hq, tq, dh]
    z.swap_dims(1, 2).reshape([b * tq, hq * dh])
}

/// Additive causal mask: query `i` sees keys `0..=i + kv_len - q_len`, -inf elsewhere.
///
/// # Shapes
/// → `[1, 1, q_len, kv_len]`
fn causal_mask<B: Backend>(tq: usize, tk: usize, device: &B::Device) -> Tensor<B, 4> {
    let offset = tk - tq;
    let m: Vec<f32> = (0..tq * tk).map(|x| if x % tk > x / tk + offset { f32::NEG_INFINITY } else { 0.0 }).collect();
    Tensor::from_data(TensorData::new(m, [1, 1, tq, tk]), device)
}
