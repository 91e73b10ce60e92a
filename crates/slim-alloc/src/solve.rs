//! The `r0` solver: the mean ratio over the selected layers whose pruned model has as close
//! to `(1 − target)·params` parameters as the head and channel granularity allows.

use crate::{layer_ratios, pruned_config, ratio_cap, selected_layers, PruneCounts};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use slim_artifact::schema::GqaMode;
use slim_checkpoint::ModelConfig;

/// Settings of the allocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocConfig {
    /// Fraction of all parameters to remove, in (0, 1).
    pub target: f64,
    /// Layers pruned `K` (the most redundant by cosine).
    pub num_selected: usize,
    /// Softmax temperature `α`.
    pub alpha: f64,
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

impl AllocConfig {
    /// The paper's settings scaled to a model: `K = L − 4` (26 of 30, as 26 of 32 at 20 % on
    /// LLaMA-7B), `α = 10` up to a 35 % target and 7 above (spec §5), per-group GQA pruning
    /// (spec §8.2 recommendation), affine recovery biases counted, no alignment.
    pub fn paper_defaults(target: f64, num_layers: usize) -> Self {
        Self {
            target,
            num_selected: num_layers.saturating_sub(4).max(1),
            alpha: if target <= 0.35 { 10.0 } else { 7.0 },
            gqa: GqaMode::PerGroup,
            recovery_adds_bias: true,
            align: 1,
        }
    }
}

/// The outcome of an allocation (SlimLLM's [`solve`], [`crate::solve_uniform`] or
/// [`crate::solve_global`]; the field docs say where a variant reads a field differently).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// The scalar the solver found for the target, by allocation: the paper's r0 (mean ratio
    /// over the selected layers before clipping) for SlimLLM's [`solve`], the common ratio
    /// before clipping for the uniform one, the z-score threshold (that of the last unit
    /// removed) for the global one.
    pub level: f64,
    /// The requested fraction.
    pub target: f64,
    /// The fraction of parameters actually removed.
    pub achieved: f64,
    /// Parameters of the dense model.
    pub params_before: u64,
    /// Parameters after pruning (with recovery biases when counted).
    pub params_after: u64,
    /// Pruned layers, most redundant first (uniform: the layer range in order; global: the
    /// touched layers by descending ratio, ties lower layer first).
    pub selected: Vec<usize>,
    /// `[L]` clipped ratio of every layer (global: the fraction of the layer's MLP channels
    /// removed; its head counts are in `counts` only).
    pub ratios: Vec<f64>,
    /// `[L]` what every layer loses.
    pub counts: Vec<PruneCounts>,
}

/// The allocation for a given `r0` (`alloc.target` is only recorded).
pub fn allocate(cfg: &ModelConfig, cos: &[f64], alloc: &AllocConfig, r0: f64) -> Result<Allocation> {
    check(cfg, cos, alloc)?;
    ensure!(r0.is_finite() && r0 >= 0.0, "r0 must be a non-negative number, got {r0}");
    let raw = layer_ratios(cos, alloc.num_selected, alloc.alpha, r0);
    let (pruned, counts) = pruned_config(cfg, &raw, alloc.gqa, alloc.recovery_adds_bias, alloc.align)?;
    let before = cfg.num_params();
    let after = pruned.num_params();
    Ok(Allocation {
        level: r0,
        target: alloc.target,
        achieved: 1.0 - after as f64 / before as f64,
        params_before: before,
        params_after: after,
        selected: selected_layers(cos, alloc.num_selected),
        ratios: crate::clip_ratios(cfg, &raw),
        counts,
    })
}

/// Finds `r0` for `alloc.target`.
///
/// The parameter count is a non-increasing step function of `r0 > 0`, so `r0` is bisected
/// to the first step at or below the goal, and the closer of that step and the one before
/// is returned (the one at or below on a tie).
/// A target beyond what the clip limit allows is an error naming the maximum.
pub fn solve(cfg: &ModelConfig, cos: &[f64], alloc: &AllocConfig) -> Result<Allocation> {
    check(cfg, cos, alloc)?;
    // At r0_hi every selected layer sits at its clip limit.
    let w = layer_ratios(cos, alloc.num_selected, alloc.alpha, 1.0);
    let r0_hi =
        selected_layers(cos, alloc.num_selected).iter().map(|&l| ratio_cap(&cfg.layers[l]) / w[l]).fold(0.0, f64::max);
    bisect_r0(
        cfg,
        alloc.target,
        r0_hi,
        |r0| allocate(cfg, cos, alloc, r0),
        || {
            let align = crate::align::describe(alloc.align);
            format!("K = {}, alpha = {}, {:?} pruning{align}", alloc.num_selected, alloc.alpha, alloc.gqa)
        },
    )
}

/// The bisection shared by the `r0` variants ([`solve`], [`crate::solve_uniform`]).
///
/// `at(r0)` is the allocation for `r0`; its parameter count must be a non-increasing step
/// function of `r0 ≥ 0`, and every layer that can be pruned must sit at its clip limit at
/// `r0_hi`. `r0` is bisected to the first step at or below `(1 − target)·params`, and the
/// closer of that step and the one before is returned (the one at or below on a tie; the
/// step at `r0 = 0` is never returned). A target beyond `at(r0_hi)` is an error naming the
/// maximum fraction, "… can be removed with {how()}".
pub(crate) fn bisect_r0(
    cfg: &ModelConfig,
    target: f64,
    r0_hi: f64,
    at: impl Fn(f64) -> Result<Allocation>,
    how: impl FnOnce() -> String,
) -> Result<Allocation> {
    let p = target;
    ensure!(p.is_finite() && p > 0.0 && p < 1.0, "target {p} must lie strictly between 0 and 1");
    let before = cfg.num_params() as f64;
    let goal = (1.0 - p) * before;
    let top = at(r0_hi)?;
    if (top.params_after as f64) > goal {
        bail!("target {p} is unreachable: at most {:.4} of the parameters can be removed with {}", top.achieved, how());
    }
    let (mut lo, mut hi) = (0.0f64, r0_hi);
    let mut hi_alloc = top;
    let mut lo_alloc = at(0.0)?;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        let a = at(mid)?;
        if (a.params_after as f64) <= goal {
            hi = mid;
            hi_alloc = a;
        } else {
            lo = mid;
            lo_alloc = a;
        }
    }
    let d_hi = goal - hi_alloc.params_after as f64;
    let d_lo = lo_alloc.params_after as f64 - goal;
    Ok(if lo > 0.0 && d_lo < d_hi { lo_alloc } else { hi_alloc })
}

fn check(cfg: &ModelConfig, cos: &[f64], alloc: &AllocConfig) -> Result<()> {
    let l = cfg.num_layers();
    ensure!(cos.len() == l, "{} layer importances for {l} layers", cos.len());
    ensure!(cos.iter().all(|c| c.is_finite()), "layer importance has a non-finite value");
    ensure!(alloc.num_selected >= 1 && alloc.num_selected <= l, "K = {} must lie in 1..={l}", alloc.num_selected);
    ensure!(alloc.alpha.is_finite(), "alpha must be finite, got {}", alloc.alpha);
    crate::check_align(cfg, alloc.align, alloc.gqa)
}
