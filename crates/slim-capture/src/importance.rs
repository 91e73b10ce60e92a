//! The dense layer-importance pass (spec §3.2): `s_l` = mean over tokens of the cosine
//! similarity between layer l's input and output.

use crate::stats::mean_row_cosine;
use anyhow::Result;
use burn_tensor::{backend::Backend, Tensor};
use slim_artifact::schema::LayerImportance;

/// Runs the calibration windows through every layer of the dense model: `x0` is the input of
/// layer 0 (the embedded windows) and `run_layer(l, x)` layer `l`'s output on `x`, so that a
/// caller holding one layer at a time ([`slim_model::Llama::empty`]) streams the pass.
///
/// # Shapes
/// x0: `[n_windows, seq_len, d]`
pub fn layer_importance<B: Backend>(
    x0: Tensor<B, 3>,
    n_layers: usize,
    run_layer: &mut dyn FnMut(usize, Tensor<B, 3>) -> Result<Tensor<B, 3>>,
    on_layer: &mut dyn FnMut(usize),
) -> Result<LayerImportance> {
    let [b, t, d] = x0.dims();
    let n = b * t;
    let mut x = x0;
    let mut cos = Vec::with_capacity(n_layers);
    for l in 0..n_layers {
        let y = run_layer(l, x.clone())?;
        cos.push(mean_row_cosine(x.reshape([n, d]), y.clone().reshape([n, d]))?);
        x = y;
        on_layer(l);
    }
    Ok(LayerImportance { cos, n_tokens: n })
}
