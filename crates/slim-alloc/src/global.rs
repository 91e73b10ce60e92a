//! FLAP's global allocation (An et al., AAAI 2024, the default adaptive structure "AL-AM";
//! spec §9, §13.3): per-layer standardized importance of attention units and MLP channels,
//! ranked together over all layers and removed, least important first, until the parameter
//! count is closest to the goal.
//!
//! FLAP's code (`lib/prune.py`, `prune_flap`): `standarlization = (x − mean(x, 1)) /
//! std(x, 1)` per layer, separately for the attention metric (over o_proj's input
//! channels, then averaged over each head's 128 channels) and the MLP metric; all head and
//! channel scores are concatenated and sorted, each head weighted `compression_weight =
//! 512/3` channel-equivalents (a LLaMA-7B head, `4·d·128` parameters, over a channel,
//! `3·d`), and the threshold is the sorted score where `cumsum(weight)` of the kept units
//! is closest to `(1 − p)·Σ weight`; units with a score `> threshold` are kept.
//!
//! Here, with `s` a layer's scores of one kind (higher = more important = kept):
//! - **Standardization** ([`standardize`]): `z_i = (s_i − mean(s)) / std(s)` with the
//!   unbiased `std = sqrt(Σ(s − mean)² / (n − 1))`, as `torch.std`; when `n < 2` or
//!   `std = 0` (where torch gives NaN) every `z` is 0.
//! - **Units.** Attention units depend on the layer's [`effective_mode`]. Whole-group: one
//!   score per KV group, `heads[k]`; the unit removes the group's `g = H/H_kv` query heads
//!   and its KV head. Per-group: one score per query head (head `h` is in group `h / g`),
//!   standardized over the layer's `H` heads; the unit of round `r` (0-based) removes one
//!   more head from *every* group, its score is the mean over groups of the `(r+1)`-th
//!   lowest `z` in each group, so [`PruneCounts::heads_per_group`] stays uniform and the
//!   rounds come in order. MLP: one unit per channel.
//! - **Costs** are exact: a unit's cost is the drop of [`ModelConfig::num_params`] when the
//!   layer loses it (q/k/v rows, o_proj columns, q/k/v biases when the model has them, the
//!   three MLP matrices' row/column). For LLaMA-7B a head costs `4·4096·128` and a channel
//!   `3·4096`: FLAP's 512/3. When `recovery_adds_bias`, the first removal from a layer
//!   also adds its o_proj and down_proj biases (`d` each, where not already present).
//! - **Order**: ascending `z`, ties broken by (layer, kind: attention before MLP, index);
//!   the index is the group, round or channel number.
//! - **Minimum rule**: a removal that would leave a layer without a query head, a KV group
//!   or a channel (or, per-group, remove all `g` heads of a group) is skipped and the unit
//!   stays. Within a layer and kind the order is ascending `(z, index)`, so the skipped
//!   unit is always the last of its layer and kind ("protected" in [`GlobalUnit`]).
//! - **Stop**: with `P_k` the parameter count after the first `k` removals (strictly
//!   decreasing), the first `k` with `P_k ≤ (1 − target)·params` or `k − 1` when strictly
//!   closer (never `k = 0`, as [`crate::solve`]); an error names the maximum fraction when
//!   no `P_k` reaches the goal.
//! - **Alignment** (`align > 1`, [`crate::align`]): `P_k` counts every layer's first `k`
//!   removals with its kept sizes rounded ([`crate::align::LayerSteps`]), which is
//!   non-increasing in `k` (flat where no rounded size changes), and the stop's counts
//!   are rounded the same way; a layer whose rounded counts remove nothing stays untouched.
//!
//! Within a layer the removed units are those with the lowest scores (ties: lower index),
//! per group in per-group mode, so a surgery that removes a layer's lowest-scored units
//! reproduces the allocation.
//!
//! Deviations from FLAP's code:
//! - The input is one score per unit, standardized over the layer's units; FLAP
//!   standardizes over the `H·d_h` o_proj channels and then averages per head, which gives
//!   the same order within a layer but a different scale across layers.
//! - The target is a fraction of all parameters (embeddings included, as SlimLLM's), not of
//!   the attention and MLP weights only; costs are exact (GQA, biases) instead of 512/3.
//! - FLAP has no minimum rule (a layer can lose every head) and no GQA handling.
//! - FLAP keeps units with `z > threshold`, so ties at the threshold all go; here the stop
//!   is a position in the tie-broken order.

use crate::align::LayerSteps;
use crate::{align_counts, apply_counts, effective_mode, Allocation, PruneCounts};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use slim_artifact::schema::GqaMode;
use slim_checkpoint::{LayerShape, ModelConfig};
use std::cmp::Ordering;

/// Importance of one layer's units, higher = more important.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerScores {
    /// One per attention unit: per KV group (whole-group, and multi-head attention), or
    /// per query head (per-group).
    pub heads: Vec<f64>,
    /// One per MLP channel.
    pub channels: Vec<f64>,
}

/// Settings of the global allocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalConfig {
    /// Fraction of all parameters to remove, in (0, 1).
    pub target: f64,
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

impl GlobalConfig {
    /// FLAP's setting: its bias compensation adds o_proj and down_proj biases; no alignment.
    pub fn flap(target: f64, mode: GqaMode) -> Self {
        Self { target, gqa: mode, recovery_adds_bias: true, align: 1 }
    }
}

/// The kind of a unit; attention sorts before MLP on equal `z` in one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum UnitKind {
    /// A KV group (whole-group) or a round of one head per group (per-group).
    Attention,
    /// An MLP channel.
    Channel,
}

/// One unit of the global ranking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalUnit {
    /// Standardized score (per-group rounds: the mean over groups).
    pub z: f64,
    /// Decoder layer.
    pub layer: usize,
    /// Attention or MLP.
    pub kind: UnitKind,
    /// KV group (whole-group), round (per-group, 0-based) or channel.
    pub index: usize,
    /// Parameters its removal saves (recovery biases not included).
    pub cost: u64,
    /// The last unit of its layer and kind, never removed (minimum rule).
    pub protected: bool,
}

/// `(s − mean)/std` with the unbiased std; all 0 when `s.len() < 2` or `std = 0`.
///
/// # Shapes
/// `s` `[n]` → `[n]`
pub fn standardize(s: &[f64]) -> Vec<f64> {
    let (mean, std) = moments(s);
    if s.len() < 2 || std == 0.0 {
        return vec![0.0; s.len()];
    }
    s.iter().map(|&x| (x - mean) / std).collect()
}

/// Mean and unbiased standard deviation (0 when `s.len() < 2`).
fn moments(s: &[f64]) -> (f64, f64) {
    let n = s.len();
    if n < 2 {
        return (s.first().copied().unwrap_or(0.0), 0.0);
    }
    let mean = s.iter().sum::<f64>() / n as f64;
    let var = s.iter().map(|&x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// All units of all layers in removal order (see the module docs), protected ones included.
///
/// # Shapes
/// `scores` `[L]` → `[Σ_l units_l]`
pub fn global_ranking(cfg: &ModelConfig, scores: &[LayerScores], mode: GqaMode) -> Result<Vec<GlobalUnit>> {
    Ok(ranking(cfg, scores, mode)?.0)
}

/// What one layer's removals cost: parameters per attention unit and per channel, and the
/// recovery biases its first removal adds.
#[derive(Clone, Copy, Debug)]
struct LayerCost {
    attn: u64,
    channel: u64,
    bias: u64,
}

/// The ranking and each layer's costs.
fn ranking(cfg: &ModelConfig, scores: &[LayerScores], mode: GqaMode) -> Result<(Vec<GlobalUnit>, Vec<LayerCost>)> {
    ensure!(scores.len() == cfg.num_layers(), "{} layer scores for {} layers", scores.len(), cfg.num_layers());
    let mut probe = cfg.clone();
    let mut units = Vec::new();
    let mut costs = Vec::with_capacity(scores.len());
    for (l, (shape, sc)) in cfg.layers.iter().zip(scores).enumerate() {
        let (hq, kv, m) = (shape.num_heads, shape.num_kv_heads, shape.intermediate_size);
        ensure!(kv > 0 && hq.is_multiple_of(kv), "layer {l}: {hq} query heads do not split into {kv} KV groups");
        let g = hq / kv;
        let eff = effective_mode(shape, mode);
        let (want, per) = match eff {
            GqaMode::PerGroup => (hq, "query head"),
            GqaMode::WholeGroup => (kv, "KV group"),
        };
        ensure!(
            sc.heads.len() == want,
            "layer {l}: {} head scores, expected {want} (one per {per}, {eff:?} pruning)",
            sc.heads.len()
        );
        ensure!(sc.channels.len() == m, "layer {l}: {} channel scores, expected {m}", sc.channels.len());
        for (what, v) in [("head", &sc.heads), ("channel", &sc.channels)] {
            if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                bail!("layer {l}: {what} score {i} is not finite ({x})");
            }
        }
        let (mh, sh) = moments(&sc.heads);
        let (mc, sc_) = moments(&sc.channels);
        let zh = standardize(&sc.heads);
        let zc = standardize(&sc.channels);
        ensure!(
            [mh, sh, mc, sc_].iter().chain(&zh).chain(&zc).all(|x| x.is_finite()),
            "layer {l}: the scores are too large to standardize"
        );
        let full = layer_params(&mut probe, shape.clone());
        let mut less = shape.clone();
        match eff {
            GqaMode::PerGroup => less.num_heads -= kv,
            GqaMode::WholeGroup => (less.num_heads, less.num_kv_heads) = (hq - g, kv - 1),
        }
        let attn_cost = full - layer_params(&mut probe, less);
        let mut less = shape.clone();
        less.intermediate_size -= 1;
        let chan_cost = full - layer_params(&mut probe, less);
        let mut biased = shape.clone();
        (biased.o_proj_bias, biased.down_proj_bias) = (true, true);
        costs.push(LayerCost { attn: attn_cost, channel: chan_cost, bias: layer_params(&mut probe, biased) - full });

        let attn_z: Vec<f64> = match eff {
            GqaMode::WholeGroup => zh,
            GqaMode::PerGroup => {
                let sorted: Vec<Vec<f64>> = zh
                    .chunks(g)
                    .map(|c| {
                        let mut c = c.to_vec();
                        c.sort_by(f64::total_cmp);
                        c
                    })
                    .collect();
                (0..g).map(|r| sorted.iter().map(|c| c[r]).sum::<f64>() / kv as f64).collect()
            }
        };
        for (kind, z, cost) in [(UnitKind::Attention, attn_z, attn_cost), (UnitKind::Channel, zc, chan_cost)] {
            let last = last_in_order(&z);
            units.extend(z.iter().enumerate().map(|(index, &z)| GlobalUnit {
                z,
                layer: l,
                kind,
                index,
                cost,
                protected: index == last,
            }));
        }
    }
    units.sort_by(|a, b| {
        cmp_z(a.z, b.z).then(a.layer.cmp(&b.layer)).then(a.kind.cmp(&b.kind)).then(a.index.cmp(&b.index))
    });
    Ok((units, costs))
}

/// Orders finite scores, −0 equal to +0.
fn cmp_z(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// The index that comes last in ascending `(z, index)` order.
fn last_in_order(z: &[f64]) -> usize {
    (0..z.len()).max_by(|&a, &b| cmp_z(z[a], z[b]).then(a.cmp(&b))).unwrap_or(0)
}

/// Parameters of one layer of `shape` in the model `probe` describes.
fn layer_params(probe: &mut ModelConfig, shape: LayerShape) -> u64 {
    probe.layers.clear();
    let base = probe.num_params();
    probe.layers.push(shape);
    probe.num_params() - base
}

/// FLAP's global allocation for `g.target` (see the module docs).
///
/// # Shapes
/// `scores` `[L]`
pub fn solve_global(cfg: &ModelConfig, scores: &[LayerScores], g: &GlobalConfig) -> Result<Allocation> {
    let p = g.target;
    ensure!(p.is_finite() && p > 0.0 && p < 1.0, "target {p} must lie strictly between 0 and 1");
    crate::check_align(cfg, g.align, g.gqa)?;
    let (units, costs) = ranking(cfg, scores, g.gqa)?;
    let before = cfg.num_params();
    let goal = (1.0 - p) * before as f64;
    let steps: Vec<LayerSteps> = cfg.layers.iter().map(|s| LayerSteps::new(s, cfg.head_dim, g.align, g.gqa)).collect();
    // Units removed so far per layer, before alignment, and the parameters each layer's
    // aligned removal saves (net of its recovery biases).
    let mut removed = vec![(0usize, 0usize); cfg.num_layers()];
    let mut saved = vec![0i128; cfg.num_layers()];
    let mut params = before;
    let mut prev: Option<(usize, u64)> = None;
    let mut stop = None;
    for (pos, u) in units.iter().enumerate() {
        if u.protected {
            continue;
        }
        let l = u.layer;
        match u.kind {
            UnitKind::Attention => removed[l].0 += 1,
            UnitKind::Channel => removed[l].1 += 1,
        }
        let (a, c) = (steps[l].units_removed(removed[l].0), steps[l].channels_removed(removed[l].1));
        let cost = &costs[l];
        let mut now = (a as u64 * cost.attn + c as u64 * cost.channel) as i128;
        if g.recovery_adds_bias && a + c > 0 {
            now -= cost.bias as i128;
        }
        params = u64::try_from(params as i128 + saved[l] - now).expect("parameters stay non-negative");
        saved[l] = now;
        if params as f64 <= goal {
            stop = Some(match prev {
                Some((pp, pparams)) if pparams as f64 - goal < goal - params as f64 => (pp, pparams),
                _ => (pos, params),
            });
            break;
        }
        prev = Some((pos, params));
    }
    let Some((stop, expected)) = stop else {
        bail!(
            "target {p} is unreachable: at most {:.4} of the parameters can be removed with FLAP's global allocation, \
            {:?} pruning{}",
            1.0 - params as f64 / before as f64,
            g.gqa,
            crate::align::describe(g.align)
        );
    };

    let mut counts = vec![PruneCounts::default(); cfg.num_layers()];
    for (pos, u) in units[..=stop].iter().enumerate() {
        let (shape, c) = (&cfg.layers[u.layer], &mut counts[u.layer]);
        let eff = effective_mode(shape, g.gqa);
        if u.protected {
            // Skipped by the minimum rule before the stop: the head count is capped.
            c.heads_clipped |= u.kind == UnitKind::Attention && pos < stop;
            continue;
        }
        c.gqa = Some(eff);
        match (u.kind, eff) {
            (UnitKind::Channel, _) => c.channels += 1,
            (UnitKind::Attention, GqaMode::PerGroup) => {
                c.heads_per_group += 1;
                c.heads += shape.num_kv_heads;
            }
            (UnitKind::Attention, GqaMode::WholeGroup) => {
                c.groups += 1;
                c.heads += shape.num_heads / shape.num_kv_heads;
                c.kv_heads += 1;
            }
        }
    }
    for c in counts.iter_mut().filter(|c| c.gqa.is_none()) {
        // A layer whose only attention unit is protected, and nothing else went.
        c.heads_clipped = false;
    }
    for (c, shape) in counts.iter_mut().zip(&cfg.layers) {
        *c = align_counts(shape, cfg.head_dim, c, g.align);
    }
    let after = apply_counts(cfg, &counts, g.recovery_adds_bias)?.num_params();
    ensure!(
        after == expected,
        "internal error: the ranking counted {expected} parameters, the pruned shapes have {after}"
    );
    let ratios: Vec<f64> =
        counts.iter().zip(&cfg.layers).map(|(c, s)| c.channels as f64 / s.intermediate_size as f64).collect();
    let mut selected: Vec<usize> = (0..cfg.num_layers()).filter(|&l| counts[l].gqa.is_some()).collect();
    selected.sort_by(|&a, &b| ratios[b].total_cmp(&ratios[a]));
    Ok(Allocation {
        level: units[stop].z,
        target: p,
        achieved: 1.0 - after as f64 / before as f64,
        params_before: before,
        params_after: after,
        selected,
        ratios,
        counts,
    })
}
