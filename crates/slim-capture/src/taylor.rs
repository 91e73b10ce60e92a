//! The Taylor capture: one gradient pass of the dense model over the calibration windows
//! ([`slim_model::taylor_sums`], layer by layer), reduced to one first-order importance per
//! query head, KV head and MLP channel of every layer ([`TaylorStats`]).
//!
//! LLM-Pruner computes these gradients once on the dense model, whatever is pruned later;
//! so does this capture, in both calibration modes.

use anyhow::{ensure, Result};
use burn_tensor::backend::Backend;
use slim_artifact::schema::{TaylorLayer, TaylorStats};
use slim_checkpoint::{LayerSource, ModelConfig};
use slim_model::LayerTaylorSums;

/// Windows per backward pass: bounds the lm_head's `[chunk·seq_len, vocab]` logits and their
/// gradient (about 100 MB each for 4 × 128 tokens of a 49k vocabulary).
pub const TAYLOR_CHUNK: usize = 4;

/// The Taylor statistics of the dense model `cfg` (its weights read from `src`, one layer at a
/// time) on `n_windows × seq_len` ids.
/// `on_layer(l)` is called as each layer's backward pass ends (top layer first).
#[allow(clippy::too_many_arguments)]
pub fn taylor_stats<B: Backend>(
    cfg: &ModelConfig,
    src: &dyn LayerSource,
    ids: &[u32],
    n_windows: usize,
    seq_len: usize,
    device: &B::Device,
    on_layer: &mut dyn FnMut(usize),
) -> Result<TaylorStats> {
    let sums = slim_model::taylor_sums::<B>(cfg.clone(), src, ids, n_windows, seq_len, TAYLOR_CHUNK, device, on_layer)?;
    let layers = sums.layers.iter().enumerate().map(|(l, s)| reduce(cfg, l, s)).collect::<Result<Vec<_>>>()?;
    let stats = TaylorStats { loss: sums.loss, layers };
    stats.validate().map_err(anyhow::Error::msg)?;
    Ok(stats)
}

/// Sums a layer's row and column sums over each head's `d_h` rows (columns) and splits the
/// stacked gate/up rows.
pub fn reduce(cfg: &ModelConfig, l: usize, s: &LayerTaylorSums) -> Result<TaylorLayer> {
    let shape = &cfg.layers[l];
    let (h, k, m, dh) = (shape.num_heads, shape.num_kv_heads, shape.intermediate_size, cfg.head_dim);
    ensure!(
        s.qkv_rows.len() == (h + 2 * k) * dh,
        "layer {l}: {} q/k/v rows, expected {}",
        s.qkv_rows.len(),
        (h + 2 * k) * dh
    );
    ensure!(s.o_cols.len() == h * dh, "layer {l}: {} o_proj columns, expected {}", s.o_cols.len(), h * dh);
    ensure!(s.gate_up_rows.len() == 2 * m && s.down_cols.len() == m, "layer {l}: MLP sums do not match m = {m}");
    let heads = |v: &[f64]| -> Vec<f64> { v.chunks(dh).map(|c| c.iter().sum()).collect() };
    Ok(TaylorLayer {
        layer: l,
        num_heads: h,
        num_kv_heads: k,
        intermediate: m,
        q: heads(&s.qkv_rows[..h * dh]),
        k: heads(&s.qkv_rows[h * dh..(h + k) * dh]),
        v: heads(&s.qkv_rows[(h + k) * dh..]),
        o: heads(&s.o_cols),
        gate: s.gate_up_rows[..m].to_vec(),
        up: s.gate_up_rows[m..].to_vec(),
        down: s.down_cols.clone(),
    })
}
