//! The forward pass's non-matmul steps, each with two implementations: fused host kernels
//! ([`cpu`]) when the backend is burn-flex, and a composition of burn ops on every other
//! backend. The choice is made per call from the backend's tensor type, so the model code
//! stays generic over `B` and nothing above this module knows which path ran.
//!
//! Why: burn-flex runs RMSNorm, SiLU, RoPE and masked softmax as chains of separate
//! elementwise ops, each allocating and walking its whole tensor; profiled on SmolLM2 at
//! batch 8 × 128 they took more than half of every layer's time (`examples/layerprof.rs`,
//! numbers in docs/measurements.md).

pub(crate) mod backward;
pub(crate) mod cpu;
pub(crate) mod ops;
#[cfg(target_arch = "x86_64")]
mod prefill;
pub(crate) mod team;
pub(crate) mod widen;

use crate::rope::RopeTables;
use burn_flex::FlexTensor;
use burn_tensor::{
    backend::{AutodiffBackend, Backend},
    DType, Int, Tensor, TensorData, TensorPrimitive,
};
use std::any::{Any, TypeId};
use std::ops::Range;

pub(crate) use cpu::AttnDims;

/// True when `B`'s float tensors are burn-flex tensors (the CPU backend).
fn is_flex<B: Backend>() -> bool {
    TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<FlexTensor>()
}

/// burn-flex under burn-autodiff (LoRA training, the Taylor scorer).
type AdFlex = burn_autodiff::Autodiff<burn_flex::Flex>;
type AdFlexTensor = <AdFlex as burn_tensor::backend::BackendTypes>::FloatTensorPrimitive;

/// Whether `t` can take the fused kernels: an f32 burn-flex tensor, or an f32 burn-flex tensor
/// under autodiff that no gradient flows through (the untracked passes of training: layer
/// boundaries, validation). A tracked tensor takes the burn ops, which autodiff differentiates.
fn is_fast<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    if t.dtype() != DType::F32 {
        return false;
    }
    if is_flex::<B>() {
        return true;
    }
    if TypeId::of::<B::FloatTensorPrimitive>() != TypeId::of::<AdFlexTensor>() {
        return false;
    }
    let prim: Box<dyn Any> = Box::new(t.clone().into_primitive().tensor());
    prim.downcast::<AdFlexTensor>().is_ok_and(|ad| ad.node.requirement.is_none())
}

/// The burn-flex tensor inside `t` (which [`is_fast`] accepted), made contiguous.
fn to_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
    let prim: Box<dyn Any> = Box::new(t.into_primitive().tensor());
    let flex = match prim.downcast::<FlexTensor>() {
        Ok(f) => *f,
        Err(p) => p.downcast::<AdFlexTensor>().expect("is_fast checked the primitive type").primitive,
    };
    flex.to_contiguous()
}

/// Wraps a host buffer as a tensor of `B`, which must be burn-flex or burn-flex under autodiff
/// (then as an untracked tensor).
fn from_host<B: Backend, const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    let flex = FlexTensor::from_data(TensorData::new(data, shape));
    let prim: Box<dyn Any> =
        if is_flex::<B>() { Box::new(flex) } else { Box::new(<AdFlex as AutodiffBackend>::from_inner(flex)) };
    let prim = *prim.downcast::<B::FloatTensorPrimitive>().expect("caller checked that B is burn-flex");
    Tensor::from_primitive(TensorPrimitive::Float(prim))
}

/// `t` as a contiguous burn-flex tensor whose data [`host_data`] reads, when it takes the fused
/// kernels ([`is_fast`]); `None` on other backends and for tracked tensors.
pub(crate) fn host_of<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<FlexTensor> {
    is_fast(t).then(|| to_flex(t.clone()))
}

/// The f32 values of a tensor from [`host_of`].
pub(crate) fn host_data(t: &FlexTensor) -> &[f32] {
    slice(t)
}

/// A host buffer as an (untracked) tensor of `B`, which must be burn-flex or burn-flex under
/// autodiff ([`host_of`] returned `Some` for one of its tensors).
pub(crate) fn host_tensor<B: Backend, const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    from_host(data, shape)
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("to_flex returns contiguous f32 tensors")
}

/// A linear map with its weight stored transposed.
///
/// # Shapes
/// x: `[n, in]`, wt: `[in, out]`, bias: `[out]` → `[n, out]`
pub(crate) fn linear<B: Backend>(x: Tensor<B, 2>, wt: &Tensor<B, 2>, bias: Option<&Tensor<B, 1>>) -> Tensor<B, 2> {
    let ([n, inp], [_, out]) = (x.dims(), wt.dims());
    if is_fast(&x) && is_fast(wt) && bias.is_none_or(is_fast) {
        let (x, wt) = (to_flex(x), to_flex(wt.clone()));
        let b = bias.map(|b| to_flex(b.clone()));
        return from_host(cpu::linear(slice(&x), slice(&wt), b.as_ref().map(slice), inp), [n, out]);
    }
    ops::linear(x, wt, bias)
}

/// A linear map whose weight is kept as stored, `[out, in]`, in half precision
/// (`Llama::load_in`): widened inside the product on the CPU backend, cast per call elsewhere.
///
/// # Shapes
/// x: `[n, in]`, w: `[out, in]`, bias: `[out]` → `[n, out]`
pub(crate) fn linear_stored<B: Backend>(
    x: Tensor<B, 2>,
    w: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Tensor<B, 2> {
    let ([n, inp], [out, _]) = (x.dims(), w.dims());
    if is_fast(&x) && bias.is_none_or(is_fast) && is_flex::<B>() && matches!(w.dtype(), DType::F16 | DType::BF16) {
        let (x, w) = (to_flex(x), to_flex(w.clone()));
        let b = bias.map(|b| to_flex(b.clone()));
        let (x, b) = (slice(&x), b.as_ref().map(slice));
        let y = match w.dtype() {
            DType::F16 => widen::linear(x, w.as_slice::<half::f16>().expect("contiguous f16"), b, inp),
            _ => widen::linear(x, w.as_slice::<half::bf16>().expect("contiguous bf16"), b, inp),
        };
        return from_host(y, [n, out]);
    }
    let wt = w.clone().cast(burn_tensor::FloatDType::F32).transpose();
    ops::linear(x, &wt, bias)
}

/// RMSNorm over the last dimension, computed in f32 like HF.
///
/// # Shapes
/// x: `[n, d]`, w: `[d]` → `[n, d]`
pub(crate) fn rms_norm<B: Backend>(x: Tensor<B, 2>, w: &Tensor<B, 1>, eps: f64) -> Tensor<B, 2> {
    let dims = x.dims();
    if is_fast(&x) && is_fast(w) {
        let (x, w) = (to_flex(x), to_flex(w.clone()));
        return from_host(cpu::rms_norm(slice(&x), slice(&w), eps as f32), dims);
    }
    ops::rms_norm(x, w, eps)
}

/// `silu(gate) · up`, the SwiGLU activation, from the fused gate/up projection.
///
/// # Shapes
/// gu: `[n, 2f]` (gate columns, then up columns) → `[n, f]`
pub(crate) fn silu_mul<B: Backend>(gu: Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, f2] = gu.dims();
    if is_fast(&gu) {
        return from_host(cpu::silu_mul(slice(&to_flex(gu)), f2 / 2), [n, f2 / 2]);
    }
    ops::silu_mul(gu)
}

/// Rotary embedding of token-major projections.
///
/// # Shapes
/// x: `[batch·len, heads·dh]` → same; `rope` holds the tables of the `len` positions
pub(crate) fn rope<B: Backend>(x: Tensor<B, 2>, rope: &RopeTables<B>) -> Tensor<B, 2> {
    let [n, width] = x.dims();
    if is_fast(&x) {
        let x = to_flex(x);
        return from_host(cpu::rope(slice(&x), width, rope.len(), rope.cos_host(), rope.sin_host()), [n, width]);
    }
    ops::rope(x, rope)
}

/// [`rope`] of columns `cols` of `x` (the queries or keys of the fused q/k/v product), read in place on the CPU
/// backend rather than sliced out into a copy first.
///
/// # Shapes
/// x: `[batch·len, width]` → `[batch·len, cols.len()]`
pub(crate) fn rope_columns<B: Backend>(x: &Tensor<B, 2>, cols: Range<usize>, rope: &RopeTables<B>) -> Tensor<B, 2> {
    let [n, width] = x.dims();
    if is_fast(x) {
        let x = to_flex(x.clone());
        let (cos, sin) = (rope.cos_host(), rope.sin_host());
        return from_host(
            cpu::rope_cols(slice(&x), width, cols.start, cols.len(), rope.len(), cos, sin),
            [n, cols.len()],
        );
    }
    self::rope(x.clone().slice([0..n, cols]), rope)
}

/// Causal attention with grouped KV heads.
///
/// # Shapes
/// q: `[batch·q_len, hq·dh]`, k, v: `[batch·kv_len, hk·dh]` → `[batch·q_len, hq·dh]`;
/// `kv_index` is `kv_head_of` as a device tensor, for the burn-op path.
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    kv_head_of: &[usize],
    kv_index: &Tensor<B, 1, Int>,
    d: AttnDims,
) -> Tensor<B, 2> {
    let AttnDims { batch: b, q_len: tq, head_dim: dh, .. } = d;
    let hq = kv_head_of.len();
    if is_fast(&q) && is_fast(&k) && is_fast(&v) {
        let (q, k, v) = (to_flex(q), to_flex(k), to_flex(v));
        let scale = 1.0 / (dh as f32).sqrt();
        let out = cpu::causal_attention(slice(&q), slice(&k), slice(&v), kv_head_of, d, scale);
        return from_host(out, [b * tq, hq * dh]);
    }
    ops::attention(q, k, v, kv_head_of, kv_index, d)
}

#[cfg(test)]
mod tests;
