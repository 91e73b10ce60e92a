//! Head and channel scoring for structured pruning (spec §3.5–§3.9), as pure functions of
//! captured statistics and host weights.
//!
//! A [`Scorer`] (in the style of ripgrep's `Matcher`) rates attention units and MLP channels;
//! [`select_heads`] and [`select_channels`] turn those ratings into kept sets, with the
//! SlimLLM greedy swap and the keep-lowest-1 % rule.
//! Variants live one per module and are chosen by [`ScorerKind`]: SlimLLM itself, and as
//! baselines from spec §9 magnitude, Wanda-sp, FLAP's fluctuation metric, LLM-Pruner's
//! first-order Taylor importance and random scores.
//! Every variant goes through the same selection code, so the keep-lowest rule and the GQA
//! modes behave identically for all of them.
//!
//! Grouped-query attention (spec §8.2) is handled through [`HeadPrune`]:
//! per-group pruning (option B) removes the same number of query heads from every KV group,
//! whole-group pruning (option A) removes whole KV groups with their query heads.
//! With multi-head attention (one query head per KV head) a group is a single head, so
//! whole-group pruning is exactly the paper's algorithm, and per-group pruning can only
//! prune nothing; with a single KV group per-group pruning is the paper's algorithm.

mod flap;
mod magnitude;
mod random;
mod slimllm;
mod taylor;
mod util;
mod wanda_sp;

#[cfg(test)]
mod tests;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use slim_artifact::schema::{AttnStats, GqaMode, MlpStats, TaylorLayer};
use slim_checkpoint::HostTensor;

pub use flap::Flap;
pub use magnitude::Magnitude;
pub use random::{Random, RANDOM_SEED};
pub use slimllm::{attn_unit_objective, SlimLlm};
pub use taylor::Taylor;
pub use wanda_sp::WandaSp;

/// Which scorer to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScorerKind {
    /// SlimLLM: Pearson redundancy of heads with greedy swap, PCA-weighted channel score.
    #[serde(rename = "slimllm")]
    SlimLlm,
    /// Magnitude baseline: Frobenius norm of a head's o_proj columns, norm of a down_proj column.
    #[serde(rename = "magnitude")]
    Magnitude,
    /// Wanda-sp: `mean_i |W_ij|·sqrt(E[x_j²])` per o_proj/down_proj input channel, summed per head.
    #[serde(rename = "wanda-sp")]
    WandaSp,
    /// FLAP's WIFV: `Var(x_j)·‖W_{:,j}‖²` per channel; a head sums its channels' squares.
    #[serde(rename = "flap")]
    Flap,
    /// Uniform random scores from a fixed seed and the layer index: the floor to beat.
    #[serde(rename = "random")]
    Random,
    /// LLM-Pruner's first-order Taylor `Σ |∂ℒ/∂W ⊙ W|` over each head's and channel's
    /// weights (needs the Taylor capture's gradients).
    #[serde(rename = "taylor")]
    Taylor,
}

slim_artifact::kinds!(ScorerKind, "scorer" {
    SlimLlm => "SlimLLM: Pearson head redundancy with greedy swap; PCA feature-space channel score",
    Magnitude => "weight magnitude: o_proj column norms per head, down_proj column norm per channel",
    WandaSp => "Wanda structured: |W|·‖x‖ over each head's or channel's input columns",
    Flap => "FLAP's fluctuation metric: input variance times the squared weight-column norm",
    Random => "seeded random choice: the floor every scorer must beat",
    Taylor => "LLM-Pruner's first-order Taylor |∂L/∂W ⊙ W| (one gradient pass of the dense model)",
});

/// The scorer of [`ScorerKind::Random`].
static RANDOM: Random = Random::new(RANDOM_SEED);

impl ScorerKind {
    /// The scorer implementing this kind.
    pub fn scorer(self) -> &'static dyn Scorer {
        match self {
            ScorerKind::SlimLlm => &SlimLlm,
            ScorerKind::Magnitude => &Magnitude,
            ScorerKind::WandaSp => &WandaSp,
            ScorerKind::Flap => &Flap,
            ScorerKind::Random => &RANDOM,
            ScorerKind::Taylor => &Taylor,
        }
    }

    /// Whether the scorer reads the Taylor capture ([`HeadInputs::taylor`]).
    pub fn needs_gradients(self) -> bool {
        self == ScorerKind::Taylor
    }
}

/// What an attention scorer may read for one layer.
#[derive(Clone, Copy, Debug)]
pub struct HeadInputs<'a> {
    /// Head statistics of the layer.
    pub stats: &'a AttnStats,
    /// `[d, H·d_h]` o_proj weight (HF layout; head h owns columns `h·d_h..(h+1)·d_h`).
    pub o_proj: &'a HostTensor,
    /// `[H]`: the KV head each query head reads, sorted, contiguous equal-size groups.
    pub kv_head_of: &'a [usize],
    /// Number of KV heads.
    pub num_kv_heads: usize,
    /// The layer's Taylor sums, when captured (only the `taylor` scorer reads them).
    pub taylor: Option<&'a TaylorLayer>,
}

/// What a channel scorer may read for one layer.
#[derive(Clone, Copy, Debug)]
pub struct ChannelInputs<'a> {
    /// MLP statistics of the layer.
    pub stats: &'a MlpStats,
    /// `[m, d]` gate_proj weight.
    pub gate: &'a HostTensor,
    /// `[m, d]` up_proj weight.
    pub up: &'a HostTensor,
    /// `[d, m]` down_proj weight.
    pub down: &'a HostTensor,
    /// The layer's Taylor sums, when captured (only the `taylor` scorer reads them).
    pub taylor: Option<&'a TaylorLayer>,
}

/// How many attention units to prune, and what a unit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadPrune {
    /// Option B: drop `heads_per_group` query heads from every KV group; keep every KV head.
    PerGroup {
        /// Query heads removed from each group (less than the group size, or 0).
        heads_per_group: usize,
    },
    /// Option A: drop `groups` whole KV groups (their query heads and their KV head).
    WholeGroup {
        /// KV groups removed (less than the number of KV heads, or 0).
        groups: usize,
    },
}

impl HeadPrune {
    /// The GQA mode this count is expressed in.
    pub fn mode(self) -> GqaMode {
        match self {
            HeadPrune::PerGroup { .. } => GqaMode::PerGroup,
            HeadPrune::WholeGroup { .. } => GqaMode::WholeGroup,
        }
    }
}

/// The attention units a selection works on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Units {
    /// Query heads of each unit, ascending: a single head (per-group) or a KV group's heads.
    pub members: Vec<Vec<usize>>,
    /// Swap class of each unit: the greedy search only exchanges units of the same class.
    pub class: Vec<usize>,
}

/// Kept attention heads of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadSelection {
    /// Kept query heads, sorted ascending (groups stay contiguous).
    pub kept: Vec<usize>,
    /// Kept KV heads, sorted ascending.
    pub kv_kept: Vec<usize>,
    /// The scorer's score of each unit: per query head (per-group) or per KV group (whole-group).
    pub scores: Vec<f64>,
}

/// Kept MLP channels of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelSelection {
    /// Kept channels, sorted ascending.
    pub kept: Vec<usize>,
    /// The scorer's importance of each channel (`[m]`, lowest pruned first).
    pub scores: Vec<f64>,
}

/// The keep-lowest rule of spec §3.9: the lowest-scoring channels that are always kept.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepLowest {
    /// Prune the lowest-scoring channels directly.
    None,
    /// Always keep the `round(fraction·m)` lowest (banker's rounding, as Python's `round`).
    Fraction(f64),
}

impl KeepLowest {
    /// The reference code's rule: keep the lowest 1 %.
    pub fn paper() -> Self {
        KeepLowest::Fraction(0.01)
    }

    /// Channels always kept out of `m`.
    pub fn count(self, m: usize) -> usize {
        match self {
            KeepLowest::None => 0,
            KeepLowest::Fraction(f) => ((f * m as f64).round_ties_even().max(0.0) as usize).min(m),
        }
    }
}

/// A scoring method for attention units and MLP channels.
pub trait Scorer {
    /// One score per unit of `units`.
    fn unit_scores(&self, inputs: &HeadInputs<'_>, units: &Units) -> Result<Vec<f64>>;

    /// Whether units with the highest score are pruned first (a redundancy) rather than the
    /// lowest (an importance).
    fn prune_highest(&self) -> bool;

    /// Improves the initial split of units; returns the new kept units (any order).
    /// `kept` and `pruned` come in prune order (most prunable first).
    /// The default keeps the initial split.
    fn refine(&self, inputs: &HeadInputs<'_>, units: &Units, kept: Vec<usize>, pruned: &[usize]) -> Result<Vec<usize>> {
        let _ = (inputs, units, pruned);
        Ok(kept)
    }

    /// Importance of every MLP channel (`[m]`); the lowest are pruned first.
    fn channel_scores(&self, inputs: &ChannelInputs<'_>) -> Result<Vec<f64>>;
}

/// Selects the attention heads a layer keeps.
pub fn select_heads(kind: ScorerKind, inputs: &HeadInputs<'_>, prune: HeadPrune) -> Result<HeadSelection> {
    select_heads_with(kind.scorer(), inputs, prune)
}

/// [`select_heads`] with any scorer.
///
/// The initial pruned set is the `P` most prunable units (stable order on ties);
/// per-group, the `p` most prunable of each group.
/// Then [`Scorer::refine`] may swap units of the same class.
pub fn select_heads_with(scorer: &dyn Scorer, inputs: &HeadInputs<'_>, prune: HeadPrune) -> Result<HeadSelection> {
    let (h, n_kv) = util::validate_heads(inputs)?;
    let g = h / n_kv;
    let units = build_units(inputs.kv_head_of, n_kv, prune.mode());
    let scores = scorer.unit_scores(inputs, &units)?;
    ensure!(
        scores.len() == units.members.len(),
        "scorer returned {} scores for {} units",
        scores.len(),
        units.members.len()
    );
    let order = util::prune_order(&scores, scorer.prune_highest());
    let mut is_pruned = vec![false; units.members.len()];
    match prune {
        HeadPrune::PerGroup { heads_per_group: p } => {
            ensure!(
                p == 0 || p < g,
                "cannot prune {p} query heads from each KV group of {g}{}",
                if g == 1 { " (multi-head attention: use whole-group pruning, where a group is one head)" } else { "" }
            );
            let mut taken = vec![0usize; n_kv];
            for &u in &order {
                let c = units.class[u];
                if taken[c] < p {
                    taken[c] += 1;
                    is_pruned[u] = true;
                }
            }
        }
        HeadPrune::WholeGroup { groups: p } => {
            ensure!(p == 0 || p < n_kv, "cannot prune {p} of {n_kv} KV groups: at least one must remain");
            for &u in order.iter().take(p) {
                is_pruned[u] = true;
            }
        }
    }
    let kept0: Vec<usize> = order.iter().copied().filter(|&u| !is_pruned[u]).collect();
    let pruned0: Vec<usize> = order.iter().copied().filter(|&u| is_pruned[u]).collect();
    let mut kept_units = scorer.refine(inputs, &units, kept0, &pruned0)?;
    kept_units.sort_unstable();
    let mut kept: Vec<usize> = kept_units.iter().flat_map(|&u| units.members[u].iter().copied()).collect();
    kept.sort_unstable();
    let kv_kept = match prune {
        HeadPrune::PerGroup { .. } => (0..n_kv).collect(),
        HeadPrune::WholeGroup { .. } => kept_units.clone(),
    };
    Ok(HeadSelection { kept, kv_kept, scores })
}

/// The units of a layer for a mode: single query heads classed by KV group (per-group), or
/// one unit per KV group, all of one class (whole-group).
pub fn build_units(kv_head_of: &[usize], num_kv_heads: usize, mode: GqaMode) -> Units {
    match mode {
        GqaMode::PerGroup => {
            Units { members: (0..kv_head_of.len()).map(|h| vec![h]).collect(), class: kv_head_of.to_vec() }
        }
        GqaMode::WholeGroup => Units {
            members: (0..num_kv_heads)
                .map(|k| (0..kv_head_of.len()).filter(|&h| kv_head_of[h] == k).collect())
                .collect(),
            class: vec![0; num_kv_heads],
        },
    }
}

/// Selects the MLP channels a layer keeps.
///
/// With `π` the channels sorted by ascending score (stable) and `P_m = keep_lowest.count(m)`,
/// the pruned channels are `π[P_m .. P_m + n_prune]`.
/// As with the reference code's slice, `n_prune` is cut to `m − P_m` when it is larger.
pub fn select_channels(
    kind: ScorerKind,
    inputs: &ChannelInputs<'_>,
    n_prune: usize,
    keep_lowest: KeepLowest,
) -> Result<ChannelSelection> {
    select_channels_with(kind.scorer(), inputs, n_prune, keep_lowest)
}

/// [`select_channels`] with any scorer.
pub fn select_channels_with(
    scorer: &dyn Scorer,
    inputs: &ChannelInputs<'_>,
    n_prune: usize,
    keep_lowest: KeepLowest,
) -> Result<ChannelSelection> {
    let m = util::validate_channels(inputs)?;
    ensure!(n_prune < m, "cannot prune {n_prune} of {m} channels: at least one must remain");
    let scores = scorer.channel_scores(inputs)?;
    ensure!(scores.len() == m, "scorer returned {} channel scores for {m} channels", scores.len());
    let order = util::prune_order(&scores, false);
    let pm = keep_lowest.count(m);
    let end = (pm + n_prune).min(m);
    let mut pruned = vec![false; m];
    for &j in &order[pm..end] {
        pruned[j] = true;
    }
    let kept = (0..m).filter(|&j| !pruned[j]).collect();
    Ok(ChannelSelection { kept, scores })
}

/// Importance of every attention unit of a layer in `mode` (higher = more worth keeping),
/// for allocations that rank units across layers: the scorer's unit scores, negated when
/// the scorer prunes its highest scores first (a redundancy such as SlimLLM's).
pub fn unit_importance(kind: ScorerKind, inputs: &HeadInputs<'_>, mode: GqaMode) -> Result<Vec<f64>> {
    util::validate_heads(inputs)?;
    let scorer = kind.scorer();
    let units = build_units(inputs.kv_head_of, inputs.num_kv_heads, mode);
    let s = scorer.unit_scores(inputs, &units)?;
    Ok(if scorer.prune_highest() { s.into_iter().map(|x| -x).collect() } else { s })
}

/// Importance of every MLP channel of a layer (higher = more worth keeping).
pub fn channel_importance(kind: ScorerKind, inputs: &ChannelInputs<'_>) -> Result<Vec<f64>> {
    util::validate_channels(inputs)?;
    kind.scorer().channel_scores(inputs)
}
