//! The gradient of the language-model loss with respect to the LoRA adapters, one micro-batch
//! at a time, with activations recomputed layer by layer (gradient checkpointing at layer
//! boundaries), as `slim_model::taylor_sums` does for the Taylor scorer:
//! 1. a forward pass without any autodiff graph keeps each layer's input `h_l`
//!    (`L × rows × len × d` floats);
//! 2. the final norm and lm_head are differentiated for `g_L = ∂ℒ/∂h_L`, one sequence at a
//!    time (a `[len, vocab]` logit block is the largest tensor);
//! 3. from the top layer down, layer `l` is rerun on `h_l` and `Σ layer_l(h_l) ⊙ g_{l+1}` is
//!    differentiated: the adapters' gradients, and `g_l = ∂ℒ/∂h_l` for the layer below. On the
//!    CPU backend by the layer's backward pass written by hand
//!    ([`slim_model::Llama::lora_layer_grad`]: 2.3× faster than autodiff through burn's ops);
//!    on other backends by burn-autodiff, with the layer's adapters tracked.
//!
//! Memory is one layer's graph plus the boundaries, whatever the depth. The base weights are
//! never tracked, so no gradient of theirs is computed or stored.
//!
//! Dropout masks are drawn from a seed per (micro-batch, layer, projection), so the
//! recomputed pass of step 3 sees the masks of step 1.

use crate::adapter::layer_grads;
use anyhow::{ensure, Context, Result};
use burn_autodiff::Autodiff;
use slim_checkpoint::layout::Proj;
use slim_checkpoint::synthetic::SplitMix;
use slim_model::burn_tensor::{backend::Backend, Tensor, TensorData};
use slim_model::{Llama, TapSet};

type Ad<B> = Autodiff<B>;

/// The label of a position that is not scored (prompt or padding), as in transformers.
pub const IGNORE: i32 = -100;

/// `rows` sequences of `len` tokens. `labels[t]` is the token position `t` should hold
/// (normally `ids[t]`), or [`IGNORE`]; the logits of position `t` are scored against
/// `labels[t + 1]`, as transformers shifts `labels`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `rows × len` token ids, row-major.
    pub ids: Vec<u32>,
    /// One label per id.
    pub labels: Vec<i32>,
    /// Sequences.
    pub rows: usize,
    /// Tokens per sequence.
    pub len: usize,
}

impl Batch {
    /// Scored predictions: labels other than [`IGNORE`] past the first position of each row.
    pub fn scored(&self) -> usize {
        self.labels.chunks(self.len).map(|r| r[1..].iter().filter(|&&l| l != IGNORE).count()).sum()
    }

    /// Checks the sizes and the token ids against a vocabulary of `vocab`.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        ensure!(self.len >= 2 && self.rows >= 1, "a batch needs rows of at least 2 tokens");
        ensure!(self.ids.len() == self.rows * self.len, "{} ids for {}×{}", self.ids.len(), self.rows, self.len);
        ensure!(self.labels.len() == self.ids.len(), "{} labels for {} ids", self.labels.len(), self.ids.len());
        ensure!(self.ids.iter().all(|&i| (i as usize) < vocab), "a token id is outside the vocabulary of {vocab}");
        ensure!(
            self.labels.iter().all(|&l| l == IGNORE || (l >= 0 && (l as usize) < vocab)),
            "a label is neither {IGNORE} nor a token id of the vocabulary of {vocab}"
        );
        Ok(())
    }
}

/// Where dropout masks come from: the run's seed, the micro-batch's global index and `p`.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    /// Dropout probability.
    pub p: f64,
    /// The run's seed.
    pub seed: u64,
    /// Index of the micro-batch since the run began.
    pub micro_batch: u64,
}

impl Dropout {
    /// The masks of layer `l`'s adapted projections for `n` tokens (`[n, in]`, entries 0 or
    /// `1 / (1 − p)`).
    fn masks<B: Backend>(&self, model: &Llama<Ad<B>>, l: usize, n: usize) -> [Option<Tensor<Ad<B>, 2>>; 7] {
        let cfg = model.config();
        let lora = model.lora(l).expect("adapters attached");
        let keep = 1.0 / (1.0 - self.p) as f32;
        let device = model.device().clone();
        std::array::from_fn(|i| {
            lora.weights[i].as_ref()?;
            let [_, inp] = Proj::ALL[i].dims(cfg, l)?;
            let key =
                self.seed ^ (self.micro_batch.wrapping_mul(0x9E37_79B9)) ^ ((l as u64) << 40) ^ ((i as u64) << 56);
            let mut rng = SplitMix(key);
            let data: Vec<f32> = (0..n * inp).map(|_| if rng.unit() < self.p { 0.0 } else { keep }).collect();
            Some(Tensor::from_data(TensorData::new(data, [n, inp]), &device))
        })
    }
}

/// Per layer, the running sum of each adapter tensor's gradient (order of
/// [`crate::Adapter::tensors`] within the layer).
pub type GradSums<B> = Vec<Vec<Tensor<B, 2>>>;

/// Runs `batch` through `model` (adapters attached with [`Llama::set_lora`]) and adds the
/// gradient of `Σ NLL / denom` to `sums` (created on first use). Returns `Σ NLL` (nats) over
/// the batch's scored predictions. `head` is [`head_weight`] (computed here when `None`).
pub fn accumulate<B: Backend>(
    model: &mut Llama<Ad<B>>,
    batch: &Batch,
    denom: f64,
    dropout: Option<Dropout>,
    head: Option<&Tensor<B, 2>>,
    sums: &mut Option<GradSums<B>>,
) -> Result<f64> {
    let n_layers = model.config().num_layers();
    let (rows, len) = (batch.rows, batch.len);
    batch.validate(model.config().vocab_size)?;

    // 1. Layer inputs, no graph.
    let mut bounds: Vec<Tensor<B, 3>> = Vec::with_capacity(n_layers + 1);
    let mut x = model.embed(model.ids_tensor(&batch.ids, rows, len)?);
    for l in 0..n_layers {
        bounds.push(x.clone().inner());
        set_masks(model, l, dropout, rows * len);
        x = model.layer_forward(l, x, TapSet::NONE).0;
        clear_masks(model, l);
    }
    bounds.push(x.inner());

    // 2. ∂ℒ/∂h_L, one sequence at a time.
    let owned;
    let head = match head {
        Some(h) => h,
        None => {
            owned = head_weight(model);
            &owned
        }
    };
    let mut nll = 0.0;
    let mut up = Vec::with_capacity(rows);
    for r in 0..rows {
        let h = Tensor::<Ad<B>, 3>::from_inner(row(&bounds[n_layers], r)).require_grad();
        let (s, g) = row_nll(model, head, h, &batch.labels[r * len..(r + 1) * len], denom)?;
        nll += s;
        up.push(g);
    }
    let mut g = Tensor::cat(up, 0);

    // 3. Layer by layer, top down.
    let sums = sums.get_or_insert_with(|| (0..n_layers).map(|_| Vec::new()).collect());
    for l in (0..n_layers).rev() {
        set_masks(model, l, dropout, rows * len);
        bounds.truncate(l + 1); // inputs of the layers above are no longer needed

        // On the CPU backend the layer's backward pass by hand (slim_model's fused kernels);
        // elsewhere autodiff through burn's ops.
        let xin = Tensor::<Ad<B>, 3>::from_inner(bounds[l].clone());
        if let Some((dx, lg)) = model.lora_layer_grad(l, &xin, &Tensor::from_inner(g.clone())) {
            add_grads(sums, l, lg.into_iter().map(|t| t.inner()).collect());
            g = dx.inner();
            clear_masks(model, l);
            continue;
        }
        track(model, l, true);
        let xin = xin.require_grad();
        let y = model.layer_forward(l, xin.clone(), TapSet::NONE).0;
        let grads = (y * Tensor::from_inner(g)).sum().backward();
        let lg = layer_grads::<B>(model.lora(l).context("adapters attached")?, &grads, l)?;
        add_grads(sums, l, lg);
        g = xin.grad(&grads).with_context(|| format!("layer {l}: no input gradient"))?;
        track(model, l, false);
        clear_masks(model, l);
    }
    Ok(nll)
}

/// Adds layer `l`'s adapter gradients to its running sums.
fn add_grads<B: Backend>(sums: &mut GradSums<B>, l: usize, lg: Vec<Tensor<B, 2>>) {
    let s = &mut sums[l];
    if s.is_empty() {
        *s = lg;
    } else {
        for (a, b) in s.iter_mut().zip(lg) {
            *a = a.clone() + b;
        }
    }
}

/// `Σ NLL` of one sequence from the last layer's output `h` (`[1, len, d]`, tracked), and
/// `∂(Σ NLL / denom)/∂h`.
///
/// The final norm is differentiated by autodiff; the lm_head and the softmax, the largest tensors
/// of a step (`[len, vocab]`), by hand: logits through the fused kernels, then
/// `∂/∂logits = (softmax − onehot) / denom` on the host, `∂/∂u = ∂/∂logits · Wᵀ`.
fn row_nll<B: Backend>(
    model: &Llama<Ad<B>>,
    head: &Tensor<B, 2>,
    h: Tensor<Ad<B>, 3>,
    labels: &[i32],
    denom: f64,
) -> Result<(f64, Tensor<B, 3>)> {
    if !labels[1..].iter().any(|&l| l != IGNORE) {
        return Ok((0.0, h.inner().zeros_like()));
    }
    let vocab = model.config().vocab_size;
    let u = model.final_norm(h.clone()); // [len, d], tracked
    let logits = model.head(Tensor::from_inner(u.clone().inner())).inner(); // untracked
    let [len, _] = logits.dims();
    let host = logits.into_data().into_vec::<f32>().map_err(|e| anyhow::format_err!("reading logits: {e:?}"))?;
    let (total, dlogits) = nll_rows(&host, vocab, labels, Some(denom));
    let dlogits = dlogits.expect("asked for the gradient");
    let device = u.device();
    let dlogits = Tensor::<B, 2>::from_data(TensorData::new(dlogits, [len, vocab]), &device);
    let du = dlogits.matmul(head.clone()); // [len, d]
    let grads = (u * Tensor::from_inner(du)).sum().backward();
    let g = h.grad(&grads).context("no gradient reached the last layer's output")?;
    Ok((total, g))
}

/// The lm_head's weight as `[vocab, d]`, contiguous: what `∂/∂u = ∂/∂logits · W` multiplies by.
/// It never changes in training; compute it once and pass it to [`accumulate`].
pub fn head_weight<B: Backend>(model: &Llama<Ad<B>>) -> Tensor<B, 2> {
    let wt = model.head_weight_t().clone().inner(); // [d, vocab]
    let device = wt.device();
    Tensor::from_data(wt.transpose().into_data(), &device)
}

/// `Σ NLL` over the positions `t` of one sequence whose label `labels[t + 1]` is scored, from
/// its logits (`[len, vocab]`, row-major), in f64; with `denom`, also `∂(Σ NLL / denom)/∂logits`
/// (zero on unscored rows).
fn nll_rows(logits: &[f32], vocab: usize, labels: &[i32], denom: Option<f64>) -> (f64, Option<Vec<f32>>) {
    use rayon::prelude::*;
    let len = labels.len();
    let row = |t: usize, out: Option<&mut [f32]>| -> f64 {
        let target = if t + 1 < len { labels[t + 1] } else { IGNORE };
        if target == IGNORE {
            if let Some(o) = out {
                o.fill(0.0);
            }
            return 0.0;
        }
        let x = &logits[t * vocab..(t + 1) * vocab];
        let m = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let sum: f64 = x.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let lse = m as f64 + sum.ln();
        if let (Some(o), Some(d)) = (out, denom) {
            for (g, &v) in o.iter_mut().zip(x) {
                *g = ((v as f64 - lse).exp() / d) as f32;
            }
            o[target as usize] -= (1.0 / d) as f32;
        }
        lse - x[target as usize] as f64
    };
    // Rows in parallel, summed in order: rayon's `sum` adds in whatever tree its work
    // stealing formed, so the total would differ in the last bit from run to run.
    match denom {
        None => {
            let per_row: Vec<f64> = (0..len).into_par_iter().map(|t| row(t, None)).collect();
            (per_row.iter().sum(), None)
        }
        Some(_) => {
            let mut grad = vec![0f32; len * vocab];
            let per_row: Vec<f64> = grad.par_chunks_mut(vocab).enumerate().map(|(t, o)| row(t, Some(o))).collect();
            (per_row.iter().sum(), Some(grad))
        }
    }
}

/// `Σ NLL` and the number of scored predictions of `batch`, without gradients (validation).
pub fn nll<B: Backend>(model: &Llama<Ad<B>>, batch: &Batch) -> Result<(f64, usize)> {
    batch.validate(model.config().vocab_size)?;
    let (rows, len) = (batch.rows, batch.len);
    let vocab = model.config().vocab_size;
    let mut x = model.embed(model.ids_tensor(&batch.ids, rows, len)?);
    for l in 0..model.config().num_layers() {
        x = model.layer_forward(l, x, TapSet::NONE).0;
    }
    let mut total = 0.0;
    for r in 0..rows {
        let logits = model.logits(row(&x, r)).inner();
        let host = logits.into_data().into_vec::<f32>().map_err(|e| anyhow::format_err!("reading logits: {e:?}"))?;
        total += nll_rows(&host, vocab, &batch.labels[r * len..(r + 1) * len], None).0;
    }
    Ok((total, batch.scored()))
}

/// Row `r` of `[rows, len, d]`, as `[1, len, d]`.
fn row<B: Backend>(t: &Tensor<B, 3>, r: usize) -> Tensor<B, 3> {
    let [_, len, d] = t.dims();
    t.clone().slice([r..r + 1, 0..len, 0..d])
}

fn set_masks<B: Backend>(model: &mut Llama<Ad<B>>, l: usize, dropout: Option<Dropout>, n: usize) {
    if let Some(d) = dropout.filter(|d| d.p > 0.0) {
        let masks = d.masks(model, l, n);
        if let Some(lo) = model.lora_mut(l) {
            lo.dropout = masks;
        }
    }
}

fn clear_masks<B: Backend>(model: &mut Llama<Ad<B>>, l: usize) {
    if let Some(lo) = model.lora_mut(l) {
        lo.dropout = Default::default();
    }
}

/// Marks layer `l`'s adapter tensors as tracked (or back to plain tensors).
fn track<B: Backend>(model: &mut Llama<Ad<B>>, l: usize, on: bool) {
    if let Some(lo) = model.lora_mut(l) {
        for lw in lo.weights.iter_mut().flatten() {
            for t in [&mut lw.a_t, &mut lw.b_t] {
                let inner = Tensor::<Ad<B>, 2>::from_inner(t.clone().inner());
                *t = if on { inner.require_grad() } else { inner };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The total is the rows' losses added in row order, to the bit, on every call: rayon's
    /// `sum` added in its work-stealing tree, and a LoRA step's loss differed in the last bit
    /// between two runs (CI's check-backend test caught it).
    #[test]
    fn nll_rows_sums_the_rows_in_order_to_the_bit() {
        let (len, vocab) = (257, 31);
        let logits: Vec<f32> = (0..len * vocab).map(|i| ((i * 7919 % 1013) as f32 / 97.0).sin() * 4.0).collect();
        let labels: Vec<i32> = (0..len).map(|t| if t % 5 == 0 { IGNORE } else { (t * 13 % vocab) as i32 }).collect();
        let one = |t: usize| -> f64 {
            let target = labels.get(t + 1).copied().unwrap_or(IGNORE);
            if target == IGNORE {
                return 0.0;
            }
            let x = &logits[t * vocab..(t + 1) * vocab];
            let m = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            let lse = m as f64 + x.iter().map(|&v| ((v - m) as f64).exp()).sum::<f64>().ln();
            lse - x[target as usize] as f64
        };
        let mut expected = 0.0;
        for t in 0..len {
            expected += one(t);
        }
        for _ in 0..20 {
            assert_eq!(nll_rows(&logits, vocab, &labels, None).0.to_bits(), expected.to_bits());
            assert_eq!(nll_rows(&logits, vocab, &labels, Some(3.0)).0.to_bits(), expected.to_bits());
        }
    }
}
