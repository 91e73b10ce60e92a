//! Layer allocation (spec §3.3, §6): from the dense layer importance `cos[l]` to a pruning
//! ratio per layer, the head and channel counts each ratio implies, the parameter count of
//! the result, and a solver for the mean ratio `r0` that removes a target fraction of all
//! parameters.
//!
//! The reference code's rule: the `K` layers with the highest `cos` (most redundant) get
//! `r_l = r0·K·softmax(α·cos)_l`, the others 0; heads and channels of a layer use the same
//! `r_l`, and counts are `round(r·units)` with Python's half-to-even rounding (then aligned,
//! when an alignment is asked for, by [`align::align_counts`]).
//!
//! Clipping (not in the reference code, which can remove every head): `r_l` is clipped to
//! at most `(m−1)/m`, so at least one channel remains, and the head count to at most
//! `units − 1`, so at least one query head per group (per-group) or one KV group
//! (whole-group) remains. Clipped ratio mass is not moved to other layers; the solver
//! compensates through `r0`.
//!
//! Multi-head attention (one query head per KV head) is always pruned as whole groups, where
//! a group is one head: that is the paper's algorithm, and per-group pruning of groups of
//! one could prune nothing.
//!
//! Two peer allocations sit beside SlimLLM's (spec §9, §13.3): [`solve_uniform`], the same
//! ratio on every layer of a fixed range (LLM-Pruner), and [`solve_global`], FLAP's global
//! ranking of per-layer standardized head and channel scores. All three return an
//! [`Allocation`] whose `params_after` is the parameter count of the pruned shapes.
//!
//! Every allocation takes an alignment `N` ([`align`]): each pruned module keeps a size
//! that block-quantized types can store (channels a multiple of `N`, heads × head_dim a
//! multiple of `N`), and its solver counts the aligned shapes. `N = 1` is no alignment.

pub mod align;
mod global;
mod solve;
mod uniform;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_align;
#[cfg(test)]
mod tests_global;
#[cfg(test)]
mod tests_unaligned;
#[cfg(test)]
mod tests_uniform;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use slim_artifact::schema::GqaMode;
use slim_checkpoint::{LayerShape, ModelConfig};

pub use align::{align_counts, check_align};
pub use global::{global_ranking, solve_global, standardize, GlobalConfig, GlobalUnit, LayerScores, UnitKind};
pub use solve::{allocate, solve, AllocConfig, Allocation};
pub use uniform::{allocate_uniform, solve_uniform, uniform_ratios, UniformConfig};

/// The `k` layers with the highest `cos`, most redundant first (ties: lower layer first).
pub fn selected_layers(cos: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cos.len()).collect();
    order.sort_by(|&a, &b| cos[b].total_cmp(&cos[a]));
    order.truncate(k);
    order
}

/// Per-layer ratios of spec §3.3, before clipping: `r_l = r0·K·w_l` on the top-`k` layers by
/// `cos`, with `w = softmax(α·cos)` over those layers, and 0 elsewhere.
///
/// # Shapes
/// `cos` `[L]` → `[L]`
pub fn layer_ratios(cos: &[f64], k: usize, alpha: f64, r0: f64) -> Vec<f64> {
    let sel = selected_layers(cos, k);
    let mut out = vec![0.0; cos.len()];
    if sel.is_empty() {
        return out;
    }
    let top = sel.iter().map(|&l| alpha * cos[l]).fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = sel.iter().map(|&l| (alpha * cos[l] - top).exp()).collect();
    let z: f64 = e.iter().sum();
    for (&l, &el) in sel.iter().zip(&e) {
        out[l] = r0 * sel.len() as f64 * el / z;
    }
    out
}

/// The largest ratio a layer may have: `(m−1)/m`, so that one channel remains.
pub fn ratio_cap(shape: &LayerShape) -> f64 {
    let m = shape.intermediate_size as f64;
    (m - 1.0) / m
}

/// Ratios clipped to `[0, ratio_cap]` layer by layer.
///
/// # Shapes
/// `ratios` `[L]` → `[L]`
pub fn clip_ratios(cfg: &ModelConfig, ratios: &[f64]) -> Vec<f64> {
    ratios.iter().zip(&cfg.layers).map(|(&r, s)| r.clamp(0.0, ratio_cap(s))).collect()
}

/// The mode a layer is pruned in: whole-group for multi-head attention, else `mode`.
pub fn effective_mode(shape: &LayerShape, mode: GqaMode) -> GqaMode {
    if shape.num_heads == shape.num_kv_heads {
        GqaMode::WholeGroup
    } else {
        mode
    }
}

/// What one layer loses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneCounts {
    /// The GQA mode the counts are in ([`effective_mode`]); `None` for an untouched layer.
    #[serde(rename = "mode")]
    pub gqa: Option<GqaMode>,
    /// Query heads removed from every KV group (per-group mode), else 0.
    pub heads_per_group: usize,
    /// KV groups removed (whole-group mode), else 0.
    pub groups: usize,
    /// Query heads removed in all.
    pub heads: usize,
    /// KV heads removed.
    pub kv_heads: usize,
    /// MLP channels removed.
    pub channels: usize,
    /// Whether the head count was capped to keep one head (group).
    pub heads_clipped: bool,
}

/// Counts for ratio `r` (spec §3.5, §3.8, §8.2): per-group `round(r·g)` heads per group,
/// whole-group `round(r·n_kv)` groups, and `round(r·m)` channels, with banker's rounding;
/// the head count is capped at units − 1.
pub fn layer_prune_counts(r: f64, shape: &LayerShape, mode: GqaMode) -> Result<PruneCounts> {
    ensure!(
        (0.0..=ratio_cap(shape)).contains(&r),
        "ratio {r} outside [0, {}] (at least one channel must remain)",
        ratio_cap(shape)
    );
    ensure!(
        shape.num_kv_heads > 0 && shape.num_heads.is_multiple_of(shape.num_kv_heads),
        "{} query heads do not split into {} KV groups",
        shape.num_heads,
        shape.num_kv_heads
    );
    if r == 0.0 {
        return Ok(PruneCounts::default());
    }
    let g = shape.num_heads / shape.num_kv_heads;
    let mode = effective_mode(shape, mode);
    let units = match mode {
        GqaMode::PerGroup => g,
        GqaMode::WholeGroup => shape.num_kv_heads,
    };
    let want = (r * units as f64).round_ties_even() as usize;
    let n = want.min(units - 1);
    let mut c = PruneCounts {
        gqa: Some(mode),
        heads_clipped: n < want,
        channels: (r * shape.intermediate_size as f64).round_ties_even() as usize,
        ..Default::default()
    };
    match mode {
        GqaMode::PerGroup => {
            c.heads_per_group = n;
            c.heads = n * shape.num_kv_heads;
        }
        GqaMode::WholeGroup => {
            c.groups = n;
            c.heads = n * g;
            c.kv_heads = n;
        }
    }
    Ok(c)
}

/// The shape of a layer after losing `counts`; the affine recovery adds o_proj and
/// down_proj biases when `adds_bias`.
pub fn pruned_shape(shape: &LayerShape, counts: &PruneCounts, adds_bias: bool) -> LayerShape {
    let mut s = LayerShape::dense(
        shape.num_heads - counts.heads,
        shape.num_kv_heads - counts.kv_heads,
        shape.intermediate_size - counts.channels,
    );
    s.o_proj_bias = shape.o_proj_bias || adds_bias;
    s.down_proj_bias = shape.down_proj_bias || adds_bias;
    s
}

/// Parameters of the model after pruning every layer by its ratio (clipped as in
/// [`clip_ratios`]; a layer with ratio 0 is untouched, every other gets the recovery biases
/// when `recovery_adds_bias`). Tied embeddings count once.
///
/// # Shapes
/// `ratios` `[L]` → scalar
pub fn params_after(cfg: &ModelConfig, ratios: &[f64], mode: GqaMode, recovery_adds_bias: bool) -> Result<u64> {
    Ok(pruned_config(cfg, ratios, mode, recovery_adds_bias, 1)?.0.num_params())
}

/// The pruned config and per-layer counts for `ratios` (clipped), each layer's counts
/// aligned to `align` ([`align_counts`]; a layer they leave untouched stays dense).
pub(crate) fn pruned_config(
    cfg: &ModelConfig,
    ratios: &[f64],
    mode: GqaMode,
    recovery_adds_bias: bool,
    align: usize,
) -> Result<(ModelConfig, Vec<PruneCounts>)> {
    ensure!(ratios.len() == cfg.num_layers(), "{} ratios for {} layers", ratios.len(), cfg.num_layers());
    let clipped = clip_ratios(cfg, ratios);
    let mut out = cfg.clone();
    let mut counts = Vec::with_capacity(ratios.len());
    for (l, (shape, &r)) in cfg.layers.iter().zip(&clipped).enumerate() {
        let c = layer_prune_counts(r, shape, mode).map_err(|e| e.context(format!("layer {l}")))?;
        // Without alignment every layer with r > 0 has a mode (the counts of r = 0 have none).
        let c = align_counts(shape, cfg.head_dim, &c, align);
        if c.gqa.is_some() {
            out.layers[l] = pruned_shape(shape, &c, recovery_adds_bias);
        }
        counts.push(c);
    }
    Ok((out, counts))
}

/// The config after every layer loses its `counts` (as [`pruned_config`] builds it): a layer
/// whose `counts.gqa` is `Some` takes [`pruned_shape`], with the recovery biases when
/// `recovery_adds_bias`; a layer whose mode is `None` must lose nothing and stays as it is.
///
/// # Shapes
/// `counts` `[L]`
pub fn apply_counts(cfg: &ModelConfig, counts: &[PruneCounts], recovery_adds_bias: bool) -> Result<ModelConfig> {
    ensure!(counts.len() == cfg.num_layers(), "{} layer counts for {} layers", counts.len(), cfg.num_layers());
    let mut out = cfg.clone();
    for (l, (shape, c)) in cfg.layers.iter().zip(counts).enumerate() {
        ensure!(
            c.heads < shape.num_heads && c.kv_heads < shape.num_kv_heads && c.channels < shape.intermediate_size,
            "layer {l}: removing {} heads, {} KV heads, {} channels leaves nothing of {} heads, {} KV heads, {} \
            channels",
            c.heads,
            c.kv_heads,
            c.channels,
            shape.num_heads,
            shape.num_kv_heads,
            shape.intermediate_size
        );
        match c.gqa {
            Some(_) => out.layers[l] = pruned_shape(shape, c, recovery_adds_bias),
            None => ensure!(
                c.heads == 0 && c.kv_heads == 0 && c.channels == 0,
                "layer {l}: counts without a mode remove something"
            ),
        }
    }
    Ok(out)
}
