//! Gradients of the language-model loss with respect to each decoder layer's weights,
//! computed one layer at a time, for the first-order Taylor importance `|∂ℒ/∂W ⊙ W|` of
//! LLM-Pruner (spec §9).
//!
//! The loss is the mean next-token cross-entropy over every predicted position of the
//! calibration windows (`n_windows · (seq_len − 1)` tokens), as Hugging Face's
//! `labels = input_ids` gives it. The gradient is that of the whole loss, summed over all
//! windows *before* `|g ⊙ W|` is taken, as one `loss.backward()` over the batch does.
//!
//! Backpropagation runs layer by layer (gradient checkpointing at layer boundaries), with one
//! layer's weights loaded at a time (read from a [`LayerSource`]: the model's files or weights in
//! memory), so that memory stays bounded by one layer and its autodiff graph for one chunk of
//! windows plus the `[n_windows, seq_len, d]` boundary activations of every layer:
//! 1. a forward pass without any graph stores each layer's input `h_l`;
//! 2. the final norm and lm_head are differentiated for `g_L = ∂ℒ/∂h_L`, a chunk at a time;
//! 3. from the top layer down, layer `l` is rerun on `h_l` with its weights tracked, and
//!    `Σ (layer_l(h_l) ⊙ g_{l+1})` is differentiated: its gradient is the layer's weight
//!    gradient (accumulated over chunks) and `g_l = ∂ℒ/∂h_l` for the layer below.
//!
//! The embedding, norms and lm_head get no gradient (no scorer needs them), nor do the
//! q/k/v and o_proj/down_proj biases.

use crate::runtime::{tensor_to_host, Llama};
use crate::taps::TapSet;
use anyhow::{ensure, Context, Result};
use burn_autodiff::Autodiff;
use burn_tensor::{activation::log_softmax, backend::Backend, Int, Tensor, TensorData};
use slim_checkpoint::layout::Global;
use slim_checkpoint::{LayerSource, ModelConfig};

/// `Σ |g ⊙ W|` of one decoder layer, summed along the dimension a structure shares.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTaylorSums {
    /// `[(H + 2·H_kv)·d_h]`: per output row of q_proj, then k_proj, then v_proj, summed over
    /// the row's inputs.
    pub qkv_rows: Vec<f64>,
    /// `[H·d_h]`: per input column of o_proj, summed over its outputs.
    pub o_cols: Vec<f64>,
    /// `[2m]`: per output row of gate_proj, then up_proj.
    pub gate_up_rows: Vec<f64>,
    /// `[m]`: per input column of down_proj.
    pub down_cols: Vec<f64>,
}

/// What [`taylor_sums`] returns.
#[derive(Clone, Debug)]
pub struct TaylorSums {
    /// Mean next-token cross-entropy of the dense model on the windows (nats).
    pub loss: f64,
    /// One entry per decoder layer.
    pub layers: Vec<LayerTaylorSums>,
}

/// The first-order Taylor sums of every layer (module docs), on `n_windows` windows of
/// `seq_len` tokens (`ids`, row-major), `chunk` windows per backward pass.
/// `on_layer(l)` is called after each layer's backward pass (top layer first).
#[allow(clippy::too_many_arguments)]
pub fn taylor_sums<B: Backend>(
    cfg: ModelConfig,
    src: &dyn LayerSource,
    ids: &[u32],
    n_windows: usize,
    seq_len: usize,
    chunk: usize,
    device: &B::Device,
    on_layer: &mut dyn FnMut(usize),
) -> Result<TaylorSums> {
    type Ad<B> = Autodiff<B>;
    ensure!(seq_len >= 2, "the loss needs windows of at least 2 tokens, got {seq_len}");
    ensure!(n_windows >= 1 && chunk >= 1, "need at least one window and a chunk of at least one");
    ensure!(ids.len() == n_windows * seq_len, "{} ids for {n_windows}×{seq_len} windows", ids.len());
    let n_layers = cfg.num_layers();
    let vocab = cfg.vocab_size;
    let mut model = Llama::<Ad<B>>::empty(cfg.clone(), device)?;
    let n_pred = (n_windows * (seq_len - 1)) as f64;
    let chunks: Vec<(usize, usize)> = (0..n_windows).step_by(chunk).map(|c| (c, chunk.min(n_windows - c))).collect();

    // 1. Layer inputs, without a graph (no tensor requires a gradient yet), one layer loaded at a time.
    let mut bounds: Vec<Vec<Tensor<B, 3>>> = vec![Vec::with_capacity(chunks.len()); n_layers + 1];
    model.load_embedding(src.global(&cfg, Global::Embedding)?)?;
    for &(c0, nc) in &chunks {
        let x = model.embed(model.ids_tensor(&ids[c0 * seq_len..(c0 + nc) * seq_len], nc, seq_len)?);
        bounds[0].push(x.inner());
    }
    model.unload_embedding();
    for l in 0..n_layers {
        model.load_layer(l, &src.layer(&cfg, l)?)?;
        for ci in 0..chunks.len() {
            let x = Tensor::<Ad<B>, 3>::from_inner(bounds[l][ci].clone());
            let y = model.layer_forward(l, x, TapSet::NONE).0;
            bounds[l + 1].push(y.inner());
        }
        model.unload_layer(l);
    }

    // 2. ∂ℒ/∂h_L through the final norm and lm_head.
    model.load_output(&src.global(&cfg, Global::FinalNorm)?, &src.global(&cfg, Global::output(&cfg))?)?;
    let mut loss = 0.0;
    let mut up: Vec<Tensor<B, 3>> = Vec::with_capacity(chunks.len());
    for (ci, &(c0, nc)) in chunks.iter().enumerate() {
        let h = Tensor::<Ad<B>, 3>::from_inner(bounds[n_layers][ci].clone()).require_grad();
        let logits = model.logits(h.clone()).slice([0..nc, 0..seq_len - 1, 0..vocab]);
        let targets: Vec<i32> =
            (c0..c0 + nc).flat_map(|r| ids[r * seq_len + 1..(r + 1) * seq_len].iter().map(|&t| t as i32)).collect();
        let targets = Tensor::<Ad<B>, 3, Int>::from_data(TensorData::new(targets, [nc, seq_len - 1, 1]), device);
        let picked = log_softmax(logits, 2).gather(2, targets);
        let l = picked.sum().mul_scalar(-1.0 / n_pred);
        loss += l.clone().into_data().convert::<f64>().to_vec::<f64>().map_err(|e| anyhow::anyhow!("{e:?}"))?[0];
        let grads = l.backward();
        up.push(h.grad(&grads).context("no gradient reached the last layer's output")?);
    }
    ensure!(loss.is_finite(), "the calibration loss is not finite ({loss})");
    let mut model = Llama::<Ad<B>>::empty(cfg.clone(), device)?;

    // 3. Layer by layer, top down, each layer read again.
    let mut layers = Vec::with_capacity(n_layers);
    for l in (0..n_layers).rev() {
        model.load_layer(l, &src.layer(&cfg, l)?)?;
        for t in model.layer_weights_mut(l) {
            *t = t.clone().require_grad();
        }
        let mut acc: [Option<Tensor<B, 2>>; 4] = Default::default();
        for ci in 0..chunks.len() {
            let x = Tensor::<Ad<B>, 3>::from_inner(bounds[l][ci].clone()).require_grad();
            let y = model.layer_forward(l, x.clone(), TapSet::NONE).0;
            let grads = (y * Tensor::from_inner(up[ci].clone())).sum().backward();
            for (a, t) in acc.iter_mut().zip(model.layer_weights(l)) {
                let g = t.grad(&grads).with_context(|| format!("layer {l}: no weight gradient"))?;
                *a = Some(match a.take() {
                    Some(s) => s + g,
                    None => g,
                });
            }
            up[ci] = x.grad(&grads).with_context(|| format!("layer {l}: no input gradient"))?;
        }
        bounds.truncate(l + 1); // the inputs of layers above are no longer needed
        let [qkv, o, gu, down] = acc.map(|a| a.expect("at least one chunk"));
        let [wq, wo, wg, wd] = model.layer_weights(l).map(|t| t.clone().inner());
        // Weights are stored transposed, `[in, out]`: rows of the HF weight are columns here.
        layers.push(LayerTaylorSums {
            qkv_rows: host_sum(qkv * wq, 0)?,
            o_cols: host_sum(o * wo, 1)?,
            gate_up_rows: host_sum(gu * wg, 0)?,
            down_cols: host_sum(down * wd, 1)?,
        });
        model.unload_layer(l);
        on_layer(l);
    }
    layers.reverse();
    Ok(TaylorSums { loss, layers })
}

/// `Σ |t|` along `dim` of a 2-D tensor, on the host in f64.
fn host_sum<B: Backend>(t: Tensor<B, 2>, dim: usize) -> Result<Vec<f64>> {
    let s = t.abs().sum_dim(dim);
    Ok(tensor_to_host::<B, 2>(s)?.data.iter().map(|&v| v as f64).collect())
}

#[cfg(test)]
mod tests;
