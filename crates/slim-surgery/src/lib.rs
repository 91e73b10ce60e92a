//! Pruning surgery on host weights: kept query heads (q rows, o_proj columns), kept KV heads
//! (k/v rows) and kept MLP channels (gate/up rows, down_proj columns) are sliced out, and an
//! optional affine correction is folded into o_proj / down_proj as a row scale and a bias
//! (spec §3.7, §3.10). Kept heads stay sorted by KV group, so the standard layout holds.

use anyhow::{ensure, Context, Result};
use slim_artifact::schema::Affine;
use slim_checkpoint::layout::Proj;
use slim_checkpoint::{HostTensor, LayerShape, ModelConfig, Weights};

/// Keeps query heads `heads` (sorted) and KV heads `kv_heads` (sorted) of layer `l`, then
/// folds `affine` into o_proj. Returns the layer's new shape; `cfg` is updated.
pub fn prune_attention(
    cfg: &mut ModelConfig,
    w: &mut Weights,
    l: usize,
    heads: &[usize],
    kv_heads: &[usize],
    affine: Option<&Affine>,
) -> Result<LayerShape> {
    let old = cfg.layers.get(l).with_context(|| format!("layer {l} out of range"))?.clone();
    let kept = attention_shape(&old, l, heads, kv_heads, old.o_proj_bias)?;
    let dh = cfg.head_dim;
    let rows = |hs: &[usize]| -> Vec<usize> { hs.iter().flat_map(|&h| h * dh..(h + 1) * dh).collect() };
    let (q_rows, kv_rows) = (rows(heads), rows(kv_heads));
    for (proj, idx) in [(Proj::Q, &q_rows), (Proj::K, &kv_rows), (Proj::V, &kv_rows)] {
        let t = w.take(&proj.weight(l))?.select_rows(idx)?;
        w.insert(proj.weight(l), t);
        if proj.has_bias(cfg, l) {
            let b = w.take(&proj.bias(l))?.select_1d(idx)?;
            w.insert(proj.bias(l), b);
        }
    }
    let o = w.take(&Proj::O.weight(l))?.select_cols(&q_rows)?;
    let had_bias = old.o_proj_bias;
    let bias = fold_affine(w, Proj::O, l, o, had_bias, affine)?;
    let shape = LayerShape { o_proj_bias: bias, ..kept };
    cfg.layers[l] = shape.clone();
    Ok(shape)
}

/// The shape layer `l` (now `old`) has once query heads `heads` and KV heads `kv_heads` are kept,
/// with an o_proj bias when `o_proj_bias`; checks what [`prune_attention`] checks. A run uses it
/// to know the pruned model's tensors before it slices any.
pub fn attention_shape(
    old: &LayerShape,
    l: usize,
    heads: &[usize],
    kv_heads: &[usize],
    o_proj_bias: bool,
) -> Result<LayerShape> {
    ensure!(!heads.is_empty() && !kv_heads.is_empty(), "layer {l}: surgery would remove every head");
    ensure!(
        heads.windows(2).all(|p| p[0] < p[1]) && kv_heads.windows(2).all(|p| p[0] < p[1]),
        "layer {l}: kept heads must be sorted and unique"
    );
    ensure!(heads.iter().all(|&h| h < old.num_heads), "layer {l}: kept head out of range ({} heads)", old.num_heads);
    let mut kv_head_of = Vec::with_capacity(heads.len());
    for &h in heads {
        let kv = old.kv_head_of[h];
        let pos = kv_heads
            .binary_search(&kv)
            .map_err(|_| anyhow::format_err!("layer {l}: head {h} reads KV head {kv}, which is not kept"))?;
        kv_head_of.push(pos);
    }
    Ok(LayerShape { num_heads: heads.len(), num_kv_heads: kv_heads.len(), kv_head_of, o_proj_bias, ..old.clone() })
}

/// The shape layer `l` (now `old`) has once MLP channels `channels` are kept, with a down_proj
/// bias when `down_proj_bias`; checks what [`prune_mlp`] checks.
pub fn mlp_shape(old: &LayerShape, l: usize, channels: &[usize], down_proj_bias: bool) -> Result<LayerShape> {
    ensure!(!channels.is_empty(), "layer {l}: surgery would remove every MLP channel");
    ensure!(channels.windows(2).all(|p| p[0] < p[1]), "layer {l}: kept channels must be sorted and unique");
    if let Some(&c) = channels.last() {
        ensure!(c < old.intermediate_size, "layer {l}: kept channel {c} out of range ({})", old.intermediate_size);
    }
    Ok(LayerShape { intermediate_size: channels.len(), down_proj_bias, ..old.clone() })
}

/// Like [`prune_attention`], but o_proj's kept columns are replaced by `o_proj`
/// (`[d, |S|·d_h]`, columns `i·d_h..(i+1)·d_h` for head `heads[i]`) and `bias` (`[d]`) is
/// added to its bias: the least-squares refit of the kept heads' columns.
pub fn prune_attention_columns(
    cfg: &mut ModelConfig,
    w: &mut Weights,
    l: usize,
    heads: &[usize],
    kv_heads: &[usize],
    o_proj: HostTensor,
    bias: &[f64],
) -> Result<LayerShape> {
    let (d, cols) = (cfg.hidden_size, heads.len() * cfg.head_dim);
    ensure!(
        o_proj.shape == [d, cols],
        "layer {l}: refitted o_proj has shape {:?}, expected [{d}, {cols}]",
        o_proj.shape
    );
    install_columns(cfg, w, Proj::O, l, o_proj, bias, |cfg, w| {
        Ok(prune_attention(cfg, w, l, heads, kv_heads, None)?.o_proj_bias)
    })?;
    cfg.layers[l].o_proj_bias = true;
    Ok(cfg.layers[l].clone())
}

/// Keeps MLP channels `channels` (sorted) of layer `l`, then folds `affine` into down_proj.
pub fn prune_mlp(
    cfg: &mut ModelConfig,
    w: &mut Weights,
    l: usize,
    channels: &[usize],
    affine: Option<&Affine>,
) -> Result<LayerShape> {
    let old = cfg.layers.get(l).with_context(|| format!("layer {l} out of range"))?.clone();
    mlp_shape(&old, l, channels, old.down_proj_bias)?;
    for proj in [Proj::Gate, Proj::Up] {
        let t = w.take(&proj.weight(l))?.select_rows(channels)?;
        w.insert(proj.weight(l), t);
    }
    let down = w.take(&Proj::Down.weight(l))?.select_cols(channels)?;
    let bias = fold_affine(w, Proj::Down, l, down, old.down_proj_bias, affine)?;
    let shape = LayerShape { intermediate_size: channels.len(), down_proj_bias: bias, ..old };
    cfg.layers[l] = shape.clone();
    Ok(shape)
}

/// Like [`prune_mlp`], but down_proj's kept columns are replaced by `down` (`[d, |K|]`,
/// column i for channel `channels[i]`) and `bias` (`[d]`) is added to its bias: a
/// recovery that refits the weights themselves (least squares) rather than scaling them.
pub fn prune_mlp_columns(
    cfg: &mut ModelConfig,
    w: &mut Weights,
    l: usize,
    channels: &[usize],
    down: HostTensor,
    bias: &[f64],
) -> Result<LayerShape> {
    let d = cfg.hidden_size;
    ensure!(
        down.shape == [d, channels.len()],
        "layer {l}: refitted down_proj has shape {:?}, expected [{d}, {}]",
        down.shape,
        channels.len()
    );
    install_columns(cfg, w, Proj::Down, l, down, bias, |cfg, w| {
        Ok(prune_mlp(cfg, w, l, channels, None)?.down_proj_bias)
    })?;
    cfg.layers[l].down_proj_bias = true;
    Ok(cfg.layers[l].clone())
}

/// Checks a refitted output projection (`weight` already shaped `[d, kept]`) and its bias,
/// runs `prune` (the slicing surgery, which leaves the projection's bias as it was and
/// returns whether it has one), then stores `weight` as `proj`'s weight in layer `l` and
/// `bias + old_bias` as its bias.
fn install_columns(
    cfg: &mut ModelConfig,
    w: &mut Weights,
    proj: Proj,
    l: usize,
    weight: HostTensor,
    bias: &[f64],
    prune: impl FnOnce(&mut ModelConfig, &mut Weights) -> Result<bool>,
) -> Result<()> {
    let d = cfg.hidden_size;
    let prefix = proj.module(l);
    ensure!(bias.len() == d, "{prefix}: refitted bias has {} entries for {d} outputs", bias.len());
    ensure!(
        weight.data.iter().all(|v| v.is_finite()) && bias.iter().all(|v| v.is_finite()),
        "{prefix}: refitted weight or bias is not finite"
    );
    let had_bias = prune(cfg, w)?;
    w.insert(proj.weight(l), weight);
    let old = if had_bias { Some(w.take(&proj.bias(l))?) } else { None };
    let b: Vec<f32> = (0..d).map(|k| bias[k] as f32 + old.as_ref().map_or(0.0, |o| o.data[k])).collect();
    w.insert(proj.bias(l), HostTensor::new(vec![d], b)?);
    Ok(())
}

/// Stores `weight` (already column-sliced) as `proj`'s weight in layer `l`, scaled row-wise by
/// the affine scale, with bias `b + old_bias`. Returns whether the projection now has a bias.
fn fold_affine(
    w: &mut Weights,
    proj: Proj,
    l: usize,
    mut weight: HostTensor,
    had_bias: bool,
    affine: Option<&Affine>,
) -> Result<bool> {
    let d = weight.shape[0];
    let cols = weight.shape[1];
    let Some(a) = affine else {
        w.insert(proj.weight(l), weight);
        return Ok(had_bias);
    };
    let prefix = proj.module(l);
    ensure!(
        a.scale.len() == d && a.bias.len() == d,
        "{prefix}: affine correction has {} / {} entries for {d} outputs",
        a.scale.len(),
        a.bias.len()
    );
    ensure!(a.scale.iter().chain(&a.bias).all(|v| v.is_finite()), "{prefix}: affine correction is not finite");
    for (k, row) in weight.data.chunks_mut(cols).enumerate() {
        let s = a.scale[k] as f32;
        row.iter_mut().for_each(|x| *x *= s);
    }
    let old = if had_bias { Some(w.take(&proj.bias(l))?) } else { None };
    // The fit is on the projection's input contributions; an existing bias rides on top.
    let bias: Vec<f32> = (0..d).map(|k| a.bias[k] as f32 + old.as_ref().map_or(0.0, |o| o.data[k])).collect();
    w.insert(proj.weight(l), weight);
    w.insert(proj.bias(l), HostTensor::new(vec![d], bias)?);
    Ok(true)
}

#[cfg(test)]
mod tests;
