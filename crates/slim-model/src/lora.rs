//! LoRA adapters (Hu et al., 2021) on the seven projections of a decoder layer, computed as
//! PEFT computes them: `y = x·Wᵀ + b + s · (drop(x)·Aᵀ)·Bᵀ` with `s = α / r`, `A` of shape
//! `[r, in]` and `B` of shape `[out, r]` (PEFT's `lora_A.weight` and `lora_B.weight`).
//!
//! This runtime runs q/k/v and gate/up as one stacked matmul each; their adapters add to their
//! own columns of the stacked output (a projection without an adapter adds nothing there).
//! Dropout, when training uses it, is a mask per projection that the trainer supplies
//! (already scaled by `1 / (1 − p)`), so that a recomputed forward pass sees the same mask.

use crate::kernels;
use burn_tensor::{backend::Backend, Tensor};
use slim_checkpoint::layout::Proj;

/// One projection's adapter, stored transposed so that `x·a_t·b_t` needs no transpose.
pub struct LoraWeights<B: Backend> {
    /// `Aᵀ`, `[in, r]`.
    pub a_t: Tensor<B, 2>,
    /// `Bᵀ`, `[r, out]`.
    pub b_t: Tensor<B, 2>,
}

/// The adapters of one decoder layer.
pub struct LayerLora<B: Backend> {
    /// `α / r`.
    pub scale: f64,
    /// Per projection, in [`Proj::ALL`] order; `None` where the projection has no adapter.
    pub weights: [Option<LoraWeights<B>>; 7],
    /// Per projection, the dropout mask of its input (`[n, in]`, entries 0 or `1 / (1 − p)`)
    /// for the next forward pass; `None` for no dropout.
    pub dropout: [Option<Tensor<B, 2>>; 7],
}

impl<B: Backend> LayerLora<B> {
    /// Adapters with the given weights and no dropout.
    pub fn new(scale: f64, weights: [Option<LoraWeights<B>>; 7]) -> Self {
        Self { scale, weights, dropout: Default::default() }
    }

    /// The adapters' contribution to the stacked output of `group` (projections that share
    /// their input `x`, with output widths `widths`), or `None` when none of them has one.
    ///
    /// # Shapes
    /// x: `[n, in]` → `[n, Σ widths]`
    pub(crate) fn delta(&self, group: &[Proj], widths: &[usize], x: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        let idx = |p: Proj| Proj::ALL.iter().position(|&q| q == p).expect("a projection of Proj::ALL");
        if group.iter().all(|&p| self.weights[idx(p)].is_none()) {
            return None;
        }
        let [n, _] = x.dims();
        let parts: Vec<Tensor<B, 2>> = group
            .iter()
            .zip(widths)
            .map(|(&p, &w)| match &self.weights[idx(p)] {
                Some(lw) => {
                    let xin = match &self.dropout[idx(p)] {
                        Some(mask) => x.clone() * mask.clone(),
                        None => x.clone(),
                    };
                    kernels::linear(kernels::linear(xin, &lw.a_t, None), &lw.b_t, None)
                }
                None => Tensor::zeros([n, w], &x.device()),
            })
            .collect();
        let d = if parts.len() == 1 { parts.into_iter().next().expect("one part") } else { Tensor::cat(parts, 1) };
        Some(d.mul_scalar(self.scale))
    }
}
