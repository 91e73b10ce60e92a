//! A decoder layer's backward pass for LoRA training, written by hand on host slices for the CPU
//! backend (burn-flex, also under burn-autodiff with untracked tensors): one forward pass through
//! the fused kernels that keeps what the backward pass reads (the normed inputs, q/k/v after
//! RoPE, the attention probabilities, the SwiGLU input, each adapter's `x·Aᵀ`), then the
//! gradients of the adapters and of the layer's input. The base weights are frozen, so only
//! input gradients flow through them: one matrix product per projection, against the two
//! (activations and weights) that autodiff computes for a tracked graph through burn's ops.
//!
//! The math, per projection `y = x·W + s·(m ⊙ x)·Aᵀ·Bᵀ` (m the dropout mask, `t = (m ⊙ x)·Aᵀ`):
//! `∂Bᵀ = s·tᵀ·∂y`, `e = ∂y·B`, `∂Aᵀ = s·(m ⊙ x)ᵀ·e`, `∂x = ∂y·Wᵀ + s·m ⊙ (e·A)`.
//! Checked against autodiff and finite differences in slim-tune's tests.

use super::{Layer, Linear, Llama};
use crate::kernels::backward::{self as bw, Mat};
use crate::kernels::{cpu, host_data, host_of, host_tensor, AttnDims};
use crate::rope::RopeTables;
use burn_flex::FlexTensor;
use burn_tensor::{backend::Backend, Tensor};
use slim_checkpoint::layout::{Activation, NormKind, Proj};

/// One adapter on the host: `Aᵀ` (`[in, r]`), `Bᵀ` (`[r, out]`), the dropout mask of its input.
struct HostAdapter {
    a_t: FlexTensor,
    b_t: FlexTensor,
    mask: Option<FlexTensor>,
    rank: usize,
}

/// An adapter of a stacked projection: which of [`Proj::ALL`], its first output column, width.
struct Slot<'a> {
    proj: usize,
    adapter: &'a HostAdapter,
    col: usize,
    out: usize,
}

/// What a slot's forward pass keeps: its masked input (when masked) and `t = (m ⊙ x)·Aᵀ`.
struct Kept {
    masked: Option<Vec<f32>>,
    t: Vec<f32>,
}

/// The adapters' gradients (`∂Aᵀ`, `∂Bᵀ`) of one projection.
type ProjGrads = (usize, Vec<f32>, Vec<f32>, [usize; 2], [usize; 2]);

fn masked(x: &[f32], mask: Option<&FlexTensor>) -> Option<Vec<f32>> {
    mask.map(|m| x.iter().zip(host_data(m)).map(|(a, b)| a * b).collect())
}

/// The slots' `t`, and their contribution `s·t·Bᵀ` added to the columns of `y` (`[n, width]`).
fn slots_forward(x: &[f32], n: usize, inp: usize, slots: &[Slot], s: f32, y: Option<(&mut [f32], usize)>) -> Vec<Kept> {
    let mut kept = Vec::with_capacity(slots.len());
    let mut y = y;
    for slot in slots {
        let ad = slot.adapter;
        let m = masked(x, ad.mask.as_ref());
        let xin = m.as_deref().unwrap_or(x);
        let mut t = vec![0f32; n * ad.rank];
        bw::mm(
            n,
            ad.rank,
            inp,
            &mut t,
            ad.rank,
            false,
            Mat::rows(xin, inp),
            Mat::rows(host_data(&ad.a_t), ad.rank),
            1.0,
        );
        if let Some((y, width)) = y.as_mut() {
            let dst = &mut y[slot.col..];
            bw::mm(
                n,
                slot.out,
                ad.rank,
                dst,
                *width,
                true,
                Mat::rows(&t, ad.rank),
                Mat::rows(host_data(&ad.b_t), slot.out),
                s,
            );
        }
        kept.push(Kept { masked: m, t });
    }
    kept
}

/// `x·W (+ b)` and the slots' adapters: the stacked output `[n, width]`, and what the slots keep.
fn group_forward(
    lin: &Linear<impl Backend>,
    x: &[f32],
    inp: usize,
    slots: &[Slot],
    s: f32,
) -> Option<(Vec<f32>, Vec<Kept>)> {
    let wt = host_of(&lin.wt)?;
    let bias = match &lin.bias {
        Some(b) => Some(host_of(b)?),
        None => None,
    };
    let mut y = cpu::linear(x, host_data(&wt), bias.as_ref().map(host_data), inp);
    let width = host_data(&wt).len() / inp.max(1);
    let kept = slots_forward(x, x.len() / inp.max(1), inp, slots, s, Some((&mut y, width)));
    Some((y, kept))
}

/// The input gradient of a stacked projection (`[n, inp]`) for the output gradient `dy`
/// (`[n, width]`), and each slot's adapter gradients.
#[allow(clippy::too_many_arguments)]
fn group_backward(
    lin: &Linear<impl Backend>,
    x: &[f32],
    inp: usize,
    slots: &[Slot],
    kept: &[Kept],
    dy: &[f32],
    s: f32,
    grads: &mut Vec<ProjGrads>,
) -> Option<Vec<f32>> {
    let wt = host_of(&lin.wt)?;
    let width = host_data(&wt).len() / inp.max(1);
    let n = x.len() / inp.max(1);
    let mut dx = vec![0f32; n * inp];
    bw::mm(n, inp, width, &mut dx, inp, false, Mat::rows(dy, width), Mat::t(host_data(&wt), width), 1.0);
    for (slot, k) in slots.iter().zip(kept) {
        let (ad, r, out) = (slot.adapter, slot.adapter.rank, slot.out);
        let dys = Mat::rows(&dy[slot.col..], width);
        let mut db = vec![0f32; r * out];
        bw::mm(r, out, n, &mut db, out, false, Mat::t(&k.t, r), dys, s);
        let mut e = vec![0f32; n * r];
        bw::mm(n, r, out, &mut e, r, false, dys, Mat::t(host_data(&ad.b_t), out), 1.0);
        let xin = k.masked.as_deref().unwrap_or(x);
        let mut da = vec![0f32; inp * r];
        bw::mm(inp, r, n, &mut da, r, false, Mat::t(xin, inp), Mat::rows(&e, r), s);
        let a_t = Mat::t(host_data(&ad.a_t), r);
        match &ad.mask {
            None => bw::mm(n, inp, r, &mut dx, inp, true, Mat::rows(&e, r), a_t, s),
            Some(m) => {
                let mut tmp = vec![0f32; n * inp];
                bw::mm(n, inp, r, &mut tmp, inp, false, Mat::rows(&e, r), a_t, s);
                for ((d, t), m) in dx.iter_mut().zip(&tmp).zip(host_data(m)) {
                    *d += t * m;
                }
            }
        }
        grads.push((slot.proj, da, db, [inp, r], [r, out]));
    }
    Some(dx)
}

/// Columns `c0..c0 + w` of the row-major `[n, width]` matrix `x`, contiguous.
fn columns(x: &[f32], width: usize, c0: usize, w: usize) -> Vec<f32> {
    x.chunks_exact(width).flat_map(|row| row[c0..c0 + w].iter().copied()).collect()
}

impl<B: Backend> Llama<B> {
    /// Layer `l`'s backward pass for LoRA training, on the host: for the layer's input `x`
    /// (`[batch, len, d]`) and the gradient `dy` of its output, the gradient of its input and
    /// of every adapter tensor (`Aᵀ` then `Bᵀ`, projection by projection in [`Proj::ALL`]
    /// order; the adapters' dropout masks as set on the layer). `None` when the layer has no
    /// adapter or its tensors are not on the CPU backend (or tracked): callers then take
    /// autodiff.
    #[allow(clippy::type_complexity)]
    pub fn lora_layer_grad(
        &self,
        l: usize,
        x: &Tensor<B, 3>,
        dy: &Tensor<B, 3>,
    ) -> Option<(Tensor<B, 3>, Vec<Tensor<B, 2>>)> {
        let layer: &Layer<B> = self.layer(l);
        let lora = layer.lora.as_ref()?;
        let NormKind::RmsNorm { eps } = self.norm_kind;
        let Activation::SiluGlu = self.activation;
        let eps = eps as f32;
        let [b, t, d] = x.dims();
        let n = b * t;
        let (xh, dyh) = (host_of(x)?, host_of(dy)?);
        let (xs, dys) = (host_data(&xh), host_data(&dyh));
        let (w1, w2) = (host_of(&layer.input_norm)?, host_of(&layer.post_norm)?);
        let mut adapters: Vec<Option<HostAdapter>> = Vec::with_capacity(7);
        for (i, w) in lora.weights.iter().enumerate() {
            adapters.push(match w {
                Some(w) => {
                    let mask = match &lora.dropout[i] {
                        Some(m) => Some(host_of(m)?),
                        None => None,
                    };
                    Some(HostAdapter { rank: w.a_t.dims()[1], a_t: host_of(&w.a_t)?, b_t: host_of(&w.b_t)?, mask })
                }
                None => None,
            });
        }
        let s = lora.scale as f32;
        let dh = self.cfg.head_dim;
        let (hq, hk, f) = (layer.shape.num_heads, layer.shape.num_kv_heads, layer.shape.intermediate_size);
        let (qw, kw) = (hq * dh, hk * dh);
        let slots = |group: &[(Proj, usize, usize)]| -> Vec<Slot> {
            group
                .iter()
                .filter_map(|&(p, col, out)| {
                    let i = Proj::ALL.iter().position(|&q| q == p).expect("a projection of Proj::ALL");
                    adapters[i].as_ref().map(|adapter| Slot { proj: i, adapter, col, out })
                })
                .collect()
        };
        let qkv_slots = slots(&[(Proj::Q, 0, qw), (Proj::K, qw, kw), (Proj::V, qw + kw, kw)]);
        let o_slots = slots(&[(Proj::O, 0, d)]);
        let gu_slots = slots(&[(Proj::Gate, 0, f), (Proj::Up, f, f)]);
        let down_slots = slots(&[(Proj::Down, 0, d)]);

        // Forward, keeping what the backward pass reads.
        let a = cpu::rms_norm(xs, host_data(&w1), eps);
        let (qkv, kept_qkv) = group_forward(&layer.qkv, &a, d, &qkv_slots, s)?;
        let rope = RopeTables::<B>::new(0, t, dh, self.cfg.rope_theta, &self.device);
        let (cos, sin) = (rope.cos_host(), rope.sin_host());
        let width = qw + 2 * kw;
        let q = cpu::rope_cols(&qkv, width, 0, qw, t, cos, sin);
        let k = cpu::rope_cols(&qkv, width, qw, kw, t, cos, sin);
        let v = columns(&qkv, width, qw + kw, kw);
        drop(qkv);
        let dims = AttnDims { batch: b, q_len: t, kv_len: t, head_dim: dh };
        let scale = 1.0 / (dh as f32).sqrt();
        let (z, probs) = cpu::attend(&q, &k, &v, &layer.shape.kv_head_of, dims, scale, true);
        let (o, kept_o) = group_forward(&layer.o, &z, qw, &o_slots, s)?;
        let h: Vec<f32> = xs.iter().zip(&o).map(|(x, o)| x + o).collect();
        drop(o);
        let u = cpu::rms_norm(&h, host_data(&w2), eps);
        let (gu, kept_gu) = group_forward(&layer.gate_up, &u, d, &gu_slots, s)?;
        let g = cpu::silu_mul(&gu, f);
        let kept_down = slots_forward(&g, n, f, &down_slots, s, None);

        // Backward.
        let mut grads = Vec::new();
        let mut dh_ = dys.to_vec();
        let dg = group_backward(&layer.down, &g, f, &down_slots, &kept_down, dys, s, &mut grads)?;
        let dgu = bw::silu_mul_backward(&gu, &dg, f);
        let du = group_backward(&layer.gate_up, &u, d, &gu_slots, &kept_gu, &dgu, s, &mut grads)?;
        bw::rms_norm_backward(&h, host_data(&w2), eps, &du, &mut dh_);
        let dz = group_backward(&layer.o, &z, qw, &o_slots, &kept_o, &dh_, s, &mut grads)?;
        let (dq, dk, dv) = bw::attention_backward(&q, &k, &v, &probs, &dz, &layer.shape.kv_head_of, dims, scale);
        // RoPE is a rotation: its gradient is the rotation by the opposite angle.
        let neg_sin: Vec<f32> = sin.iter().map(|v| -v).collect();
        let (dq, dk) = (cpu::rope(&dq, qw, t, cos, &neg_sin), cpu::rope(&dk, kw, t, cos, &neg_sin));
        let mut dqkv = Vec::with_capacity(n * width);
        for i in 0..n {
            dqkv.extend_from_slice(&dq[i * qw..(i + 1) * qw]);
            dqkv.extend_from_slice(&dk[i * kw..(i + 1) * kw]);
            dqkv.extend_from_slice(&dv[i * kw..(i + 1) * kw]);
        }
        let da = group_backward(&layer.qkv, &a, d, &qkv_slots, &kept_qkv, &dqkv, s, &mut grads)?;
        let mut dx = dh_;
        bw::rms_norm_backward(xs, host_data(&w1), eps, &da, &mut dx);

        grads.sort_by_key(|g| g.0);
        let mut out = Vec::with_capacity(grads.len() * 2);
        for (_, da, db, sa, sb) in grads {
            out.push(host_tensor::<B, 2>(da, sa));
            out.push(host_tensor::<B, 2>(db, sb));
        }
        Some((host_tensor::<B, 3>(dx, [b, t, d]), out))
    }
}
