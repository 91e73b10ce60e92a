//! Uniform allocation, LLM-Pruner style (spec §9, §13.3): the same ratio `r` on every layer
//! of a half-open range `first..end`, 0 elsewhere.
//!
//! LLM-Pruner (`hf_prune.py`, block-wise local pruning, `global_pruning=False`) prunes
//! `range(4, L − 2)` of a 32-layer LLaMA with one ratio for heads and channels: layers 0–3
//! and 30–31 stay dense. [`UniformConfig::llm_pruner`] scales that to `4..L−2` for any
//! `L ≥ 7`; a model with fewer layers (where that range would be empty) is pruned on
//! every layer, `0..L`.
//!
//! Counts, clipping and the parameter count are those of SlimLLM's allocation
//! ([`crate::layer_prune_counts`], [`crate::clip_ratios`]): per layer
//! `round(r·units)` heads (per-group: per group; whole-group: groups) and `round(r·m)`
//! channels, banker's rounding, `r` clipped to `(m−1)/m` and the head count to `units − 1`,
//! then aligned ([`crate::align`]) when `align > 1`.
//! [`solve_uniform`] finds `r` with the bisection of [`crate::solve`] (the parameter count
//! is a non-increasing step function of `r`; the closer of the two steps around the goal is
//! returned, the one at or below it on a tie).
//!
//! Deviation from LLM-Pruner: its ratio is a per-layer ratio given by hand (0.25 ⇒ ≈ 20 %
//! of all parameters on LLaMA-7B); here the ratio is solved for a fraction of all
//! parameters, as SlimLLM's `r0`. LLM-Pruner also counts no recovery biases (it has no
//! weight compensation), hence `recovery_adds_bias = false` in
//! [`UniformConfig::llm_pruner`].

use crate::solve::bisect_r0;
use crate::{clip_ratios, pruned_config, ratio_cap, Allocation};
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use slim_artifact::schema::GqaMode;
use slim_checkpoint::ModelConfig;
use std::ops::Range;

/// Settings of the uniform allocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UniformConfig {
    /// Fraction of all parameters to remove, in (0, 1).
    pub target: f64,
    /// First pruned layer.
    pub first: usize,
    /// One past the last pruned layer.
    pub end: usize,
    /// How attention heads are grouped under GQA.
    #[serde(rename = "mode")]
    pub gqa: GqaMode,
    /// Whether recovery adds an o_proj and a down_proj bias to every pruned layer.
    pub recovery_adds_bias: bool,
    /// Kept sizes are aligned to multiples of this ([`crate::align`]); 1 = none, and then
    /// absent from the JSON (and the cache key).
    #[serde(default = "crate::align::unaligned", skip_serializing_if = "crate::align::is_unaligned")]
    pub align: usize,
}

impl UniformConfig {
    /// LLM-Pruner's range scaled to `n_layers`: `4..n_layers−2` when `n_layers ≥ 7`, else
    /// every layer `0..n_layers` (the range would be empty); no recovery biases counted, no
    /// alignment.
    pub fn llm_pruner(target: f64, n_layers: usize, mode: GqaMode) -> Self {
        let (first, end) = if n_layers >= 7 { (4, n_layers - 2) } else { (0, n_layers) };
        Self { target, first, end, gqa: mode, recovery_adds_bias: false, align: 1 }
    }

    /// The pruned layers.
    pub fn layers(&self) -> Range<usize> {
        self.first..self.end
    }
}

/// `r` on the layers of `layers`, 0 elsewhere, before clipping.
///
/// # Shapes
/// → `[n_layers]`
pub fn uniform_ratios(n_layers: usize, layers: Range<usize>, r: f64) -> Vec<f64> {
    (0..n_layers).map(|l| if layers.contains(&l) { r } else { 0.0 }).collect()
}

/// The uniform allocation for ratio `r` (`u.target` is only recorded).
pub fn allocate_uniform(cfg: &ModelConfig, u: &UniformConfig, r: f64) -> Result<Allocation> {
    check(cfg, u)?;
    ensure!(r.is_finite() && r >= 0.0, "the ratio must be a non-negative number, got {r}");
    let raw = uniform_ratios(cfg.num_layers(), u.layers(), r);
    let (pruned, counts) = pruned_config(cfg, &raw, u.gqa, u.recovery_adds_bias, u.align)?;
    let before = cfg.num_params();
    let after = pruned.num_params();
    Ok(Allocation {
        level: r,
        target: u.target,
        achieved: 1.0 - after as f64 / before as f64,
        params_before: before,
        params_after: after,
        selected: u.layers().collect(),
        ratios: clip_ratios(cfg, &raw),
        counts,
    })
}

/// Finds the common ratio for `u.target` (see the module docs); a target beyond what the
/// clip limits allow is an error naming the maximum.
pub fn solve_uniform(cfg: &ModelConfig, u: &UniformConfig) -> Result<Allocation> {
    check(cfg, u)?;
    // At r_hi every layer of the range sits at its clip limit.
    let r_hi = cfg.layers[u.layers()].iter().map(ratio_cap).fold(0.0, f64::max);
    bisect_r0(
        cfg,
        u.target,
        r_hi,
        |r| allocate_uniform(cfg, u, r),
        || {
            format!(
                "uniform pruning of layers {}..{}, {:?} pruning{}",
                u.first,
                u.end,
                u.gqa,
                crate::align::describe(u.align)
            )
        },
    )
}

fn check(cfg: &ModelConfig, u: &UniformConfig) -> Result<()> {
    let l = cfg.num_layers();
    ensure!(u.first < u.end && u.end <= l, "layer range {}..{} must be non-empty and lie in 0..{l}", u.first, u.end);
    crate::check_align(cfg, u.align, u.gqa)
}
