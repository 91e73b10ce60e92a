//! Alignment of the kept sizes (issue 13, "quantized types"): block-quantized GGUF types
//! store a row in blocks of 32 values (q8_0, q4_0) or 256 (k-quants), so a row length that
//! is not a multiple of the block cannot take them. Pruning changes two row lengths:
//! `ffn_down`'s, the layer's kept channel count `m'`, and `attn_output`'s, the kept query
//! heads times `head_dim`. With alignment `N`, every module a layer prunes keeps a size
//! that is a multiple of `N`: `m' = j·N` channels, and a head count whose `heads·head_dim`
//! is a multiple of `N`.
//!
//! Heads move in the GQA mode's units ([`crate::effective_mode`]): per-group, one query head
//! in each of the `n_kv` groups; whole-group, one group of `g` heads (one head under
//! multi-head attention). A layer keeping `k` units keeps `k·u` heads, `u` the heads of a
//! unit, so `k` must be a multiple of [`unit_step`]` = N / gcd(N, u·head_dim)`. Keeping
//! the mode's unit keeps its constraint (same group size per group, or whole groups).
//!
//! The counts are those of the unaligned allocation, with each kept size then rounded by
//! [`round_kept`]: **to the nearest allowed size, ties to the larger**, where the allowed
//! sizes are the positive multiples below the dense size, and the dense size itself.
//! - Nearest, rather than always down or always up: the allocation's per-layer ratios
//!   (importance-weighted for SlimLLM, FLAP's ranking) are kept as closely as the blocks
//!   allow, the errors of the layers partly cancel, and the solvers absorb the rest
//!   through their level (`r0`, the uniform ratio, the ranking's stop), since they count
//!   the aligned shapes. Always down would prune every layer harder than asked and always
//!   up would erase every small ratio, both skewing the allocation toward the other layers.
//! - Never 0: a layer keeps at least one head (group) and one channel, as the clip rule
//!   of the unaligned counts already guarantees; 0 would remove the module.
//! - Never above the dense size: pruning only removes. The dense size is allowed even when
//!   it is no multiple of `N`: an untouched module is no less quantizable than the dense
//!   model's own, and a module with no multiple of `N` below its size (SmolLM2's attention
//!   at `N = 256`: 3 groups of 3 heads of 64, no head count a multiple of 4) stays whole
//!   instead of failing the run. [`check_align`] rejects an `N` under which no layer can
//!   lose anything.
//!
//! A layer that loses nothing once aligned is left untouched (no mode, no recovery biases
//! counted), as the pipeline leaves it. Rounding is monotone, so the parameter count stays
//! a non-increasing step function of each solver's level, with coarser steps.
//! With `N = 1` every function here is the identity: the allocations are bit for bit the
//! unaligned ones.

use crate::{effective_mode, PruneCounts};
use anyhow::{ensure, Result};
use slim_artifact::schema::GqaMode;
use slim_checkpoint::{LayerShape, ModelConfig};

/// No alignment, the serde default of every `align` field: configs written before
/// alignment existed read as unaligned.
pub fn unaligned() -> usize {
    1
}

/// Whether `align` is no alignment: `align` fields are then left out of a config's JSON, so
/// the cache keys of unaligned runs are those they had before alignment existed.
pub fn is_unaligned(align: &usize) -> bool {
    *align == 1
}

/// Kept units must be multiples of this for `units·unit_width` to be a multiple of
/// `align`: `align / gcd(align, unit_width)`; 1 when `align ≤ 1`.
pub fn unit_step(align: usize, unit_width: usize) -> usize {
    if align <= 1 {
        return 1;
    }
    align / gcd(align, unit_width)
}

/// `kept` (at most `dense`) rounded to the nearest of the allowed sizes, the multiples of
/// `step` in `1..dense` and `dense` itself; ties go to the larger (the module docs say why).
pub fn round_kept(kept: usize, dense: usize, step: usize) -> usize {
    debug_assert!(kept <= dense && step >= 1, "kept {kept} of {dense}, step {step}");
    if kept >= dense || step <= 1 {
        return kept.min(dense);
    }
    let lo = kept / step * step;
    let hi = (lo + step).min(dense);
    if lo == 0 || hi - kept <= kept - lo {
        hi
    } else {
        lo
    }
}

/// A layer's units and the step of each, in the layer's effective GQA mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSteps {
    /// Head units of the dense layer: `g` per-group, `n_kv` whole-group.
    pub units: usize,
    /// Kept units are multiples of this (or all of them).
    pub unit_step: usize,
    /// Channels of the dense layer.
    pub channels: usize,
    /// Kept channels are multiples of this (or all of them).
    pub channel_step: usize,
}

impl LayerSteps {
    /// The steps of `shape` (heads of `head_dim`) under alignment `align` in `mode`.
    pub fn new(shape: &LayerShape, head_dim: usize, align: usize, mode: GqaMode) -> Self {
        let (hq, kv) = (shape.num_heads, shape.num_kv_heads.max(1));
        let g = hq / kv;
        let (units, unit_heads) = match effective_mode(shape, mode) {
            GqaMode::PerGroup => (g, kv),
            GqaMode::WholeGroup => (kv, g),
        };
        Self {
            units,
            unit_step: unit_step(align, unit_heads * head_dim),
            channels: shape.intermediate_size,
            channel_step: unit_step(align, 1),
        }
    }

    /// Head units removed once `removed` of them are rounded.
    pub fn units_removed(&self, removed: usize) -> usize {
        self.units - round_kept(self.units - removed.min(self.units), self.units, self.unit_step)
    }

    /// Channels removed once `removed` of them are rounded.
    pub fn channels_removed(&self, removed: usize) -> usize {
        self.channels - round_kept(self.channels - removed.min(self.channels), self.channels, self.channel_step)
    }

    /// Whether the layer can lose anything: an allowed size below the dense one exists for
    /// its heads or its channels.
    pub fn can_prune(&self) -> bool {
        self.unit_step < self.units || self.channel_step < self.channels
    }
}

/// `counts` of a layer of `shape` with both kept sizes rounded (module docs); `counts`
/// unchanged when `align ≤ 1` or the layer is untouched, and [`PruneCounts::default`]
/// when the rounded counts remove nothing.
pub fn align_counts(shape: &LayerShape, head_dim: usize, counts: &PruneCounts, align: usize) -> PruneCounts {
    let Some(mode) = counts.gqa else { return counts.clone() };
    if align <= 1 {
        return counts.clone();
    }
    let s = LayerSteps::new(shape, head_dim, align, mode);
    let g = shape.num_heads / shape.num_kv_heads;
    let channels = s.channels_removed(counts.channels);
    let mut c = PruneCounts { gqa: Some(mode), channels, heads_clipped: counts.heads_clipped, ..Default::default() };
    match mode {
        GqaMode::PerGroup => {
            c.heads_per_group = s.units_removed(counts.heads_per_group);
            c.heads = c.heads_per_group * shape.num_kv_heads;
        }
        GqaMode::WholeGroup => {
            c.groups = s.units_removed(counts.groups);
            c.heads = c.groups * g;
            c.kv_heads = c.groups;
        }
    }
    if c.heads == 0 && c.channels == 0 {
        return PruneCounts::default();
    }
    c
}

/// Checks an alignment against a model: `align ≥ 1`, and at least one layer that can lose
/// heads or channels under it ([`LayerSteps::can_prune`]).
pub fn check_align(cfg: &ModelConfig, align: usize, mode: GqaMode) -> Result<()> {
    ensure!(align >= 1, "the alignment must be at least 1 (1: none), got {align}");
    if align == 1 {
        return Ok(());
    }
    let any = cfg.layers.iter().any(|s| s.num_kv_heads > 0 && prunable(s, cfg.head_dim, align, mode));
    ensure!(
        any,
        "alignment {align} leaves no layer anything to prune: no layer can keep fewer than its {} channels as a \
         multiple of {align}, nor fewer than its {} heads ({mode:?} units) with heads × {} a multiple of {align}",
        cfg.layers.iter().map(|s| s.intermediate_size).max().unwrap_or(0),
        cfg.layers.iter().map(|s| s.num_heads).max().unwrap_or(0),
        cfg.head_dim,
    );
    Ok(())
}

fn prunable(s: &LayerShape, head_dim: usize, align: usize, mode: GqaMode) -> bool {
    LayerSteps::new(s, head_dim, align, mode).can_prune()
}

/// The ", align N" a solver's error appends to its settings (empty without alignment).
pub(crate) fn describe(align: usize) -> String {
    if align > 1 {
        format!(", kept sizes aligned to {align}")
    } else {
        String::new()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
