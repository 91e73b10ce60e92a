//! Rotary position embeddings in the HF "rotate half" convention.

use burn_tensor::{backend::Backend, Tensor, TensorData};

/// cos/sin tables for positions `[start, start + len)`, on the host (for the fused CPU
/// kernel) and on the device (for the burn-op path).
pub(crate) struct RopeTables<B: Backend> {
    len: usize,
    head_dim: usize,
    cos_host: Vec<f32>,
    sin_host: Vec<f32>,
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
}

impl<B: Backend> RopeTables<B> {
    /// Tables for `len` positions from `start`, head width `head_dim`, base `theta`.
    ///
    /// # Shapes
    /// host tables: `[len, head_dim]`; device tables: `[1, len, 1, head_dim]`
    pub(crate) fn new(start: usize, len: usize, head_dim: usize, theta: f64, device: &B::Device) -> Self {
        let half = head_dim / 2;
        // Same arithmetic as HF: inv_freq in f32, then position * inv_freq in f32.
        let inv_freq: Vec<f32> =
            (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        let mut cos = Vec::with_capacity(len * head_dim);
        let mut sin = Vec::with_capacity(len * head_dim);
        for p in start..start + len {
            for _ in 0..2 {
                for f in &inv_freq {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        let shape = [1, len, 1, head_dim];
        Self {
            len,
            head_dim,
            cos: Tensor::from_data(TensorData::new(cos.clone(), shape), device),
            sin: Tensor::from_data(TensorData::new(sin.clone(), shape), device),
            cos_host: cos,
            sin_host: sin,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub(crate) fn cos_host(&self) -> &[f32] {
        &self.cos_host
    }

    pub(crate) fn sin_host(&self) -> &[f32] {
        &self.sin_host
    }

    /// Applies the rotation with burn ops.
    ///
    /// # Shapes
    /// x: `[batch, len, heads, head_dim]` → same
    pub(crate) fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, t, h, dh] = x.dims();
        let half = dh / 2;
        let x1 = x.clone().slice([0..b, 0..t, 0..h, 0..half]);
        let x2 = x.clone().slice([0..b, 0..t, 0..h, half..dh]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}
