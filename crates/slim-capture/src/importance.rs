//! The dense layer-importance pass (spec §3.2): `s_l` = mean over tokens of the cosine
//! similarity between layer l's input and output.

use crate::stats::mean_row_cosine;
use anyhow::Result;
use burn_tensor::backend::Backend;
use slim_artifact::schema::LayerImportance;
use slim_model::{Llama, TapSet};

/// Runs the calibration windows through every layer of the dense model.
///
/// # Shapes
/// ids: `n_windows · seq_len` token ids, row-major
pub fn layer_importance<B: Backend>(
    model: &Llama<B>,
    ids: &[u32],
    n_windows: usize,
    seq_len: usize,
    on_layer: &mut dyn FnMut(usize),
) -> Result<LayerImportance> {
    let mut x = model.embed(model.ids_tensor(ids, n_windows, seq_len)?);
    let d = model.config().hidden_size;
    let n = n_windows * seq_len;
    let mut cos = Vec::with_capacity(model.config().num_layers());
    for l in 0..model.config().num_layers() {
        let (y, _) = model.layer_forward(l, x.clone(), TapSet::NONE);
        cos.push(mean_row_cosine(x.reshape([n, d]), y.clone().reshape([n, d]))?);
        x = y;
        on_layer(l);
    }
    Ok(LayerImportance { cos, n_tokens: n })
}
