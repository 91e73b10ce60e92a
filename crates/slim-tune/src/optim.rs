//! AdamW, the linear warm-up and decay schedule, and gradient-norm clipping, on the host in
//! f32, written to match `torch.optim.AdamW`, `transformers.get_linear_schedule_with_warmup`
//! and `torch.nn.utils.clip_grad_norm_` step for step (the reference comparison depends on it).

use serde::{Deserialize, Serialize};

/// AdamW's settings (torch's defaults; weight decay 0 as transformers' `TrainingArguments`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// AdamW's moments for a list of parameter tensors (flat f32 buffers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// Settings.
    pub config: AdamWConfig,
    /// Updates done so far.
    pub step: u64,
    /// First moments, per parameter tensor.
    pub m: Vec<Vec<f32>>,
    /// Second moments, per parameter tensor.
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    /// Zero moments for parameters of the given lengths.
    pub fn new(config: AdamWConfig, lens: &[usize]) -> Self {
        Self {
            config,
            step: 0,
            m: lens.iter().map(|&n| vec![0.0; n]).collect(),
            v: lens.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One update of `params` with `grads` at learning rate `lr`, as torch's single-tensor
    /// AdamW does it: decay, moments, bias corrections as f64 scalars, then
    /// `p -= lr/bc1 · m / (√v / √bc2 + eps)`.
    pub fn update(&mut self, params: &mut [&mut [f32]], grads: &[Vec<f32>], lr: f64) {
        assert_eq!(params.len(), self.m.len(), "one parameter list per optimizer");
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
        let decay = (1.0 - lr * c.weight_decay) as f32;
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            for i in 0..p.len() {
                if c.weight_decay != 0.0 {
                    p[i] *= decay;
                }
                m[i] = m[i] * b1 + g[i] * (1.0 - b1);
                v[i] = v[i] * b2 + g[i] * g[i] * (1.0 - b2);
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] -= step_size * (m[i] / denom);
            }
        }
    }
}

/// The learning rate of update `k` (0-based) under a linear warm-up of `warmup` updates to
/// `lr`, then a linear decay to 0 at `total` updates (`get_linear_schedule_with_warmup`,
/// whose first update runs at 0 when `warmup > 0`).
pub fn linear_schedule(lr: f64, k: u64, warmup: u64, total: u64) -> f64 {
    if k < warmup {
        return lr * k as f64 / warmup.max(1) as f64;
    }
    lr * (total.saturating_sub(k) as f64 / total.saturating_sub(warmup).max(1) as f64).max(0.0)
}

/// The global 2-norm of `grads` (f32 per tensor, as torch computes it), and the gradients
/// scaled by `max_norm / (norm + 1e-6)` when that is below 1 (`clip_grad_norm_`); no
/// clipping when `max_norm <= 0`.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norms: Vec<f32> = grads.iter().map(|g| g.iter().map(|x| x * x).sum::<f32>().sqrt()).collect();
    let total = norms.iter().map(|n| n * n).sum::<f32>().sqrt() as f64;
    if max_norm > 0.0 {
        let coef = (max_norm / (total + 1e-6)).min(1.0) as f32;
        if coef < 1.0 {
            for g in grads.iter_mut() {
                g.iter_mut().for_each(|x| *x *= coef);
            }
        }
    }
    total
}
