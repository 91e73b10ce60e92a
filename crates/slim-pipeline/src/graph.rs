//! The key documents of every stage entry, built in one place so that running the pipeline
//! and explaining it ([`crate::explain_pipeline`]) can never disagree about a key.

use crate::keys::doc;
use crate::{CalibMode, PipelineConfig};
use anyhow::{ensure, Result};
use serde_json::json;
use slim_alloc::{AllocConfig, PruneCounts};
use slim_artifact::schema::GqaMode;
use slim_artifact::{Key, KeyDoc};
use slim_recover::RecoveryKind;
use slim_score::HeadPrune;

/// Key documents of one pipeline configuration on one model.
pub(crate) struct Graph<'a> {
    pub cfg: &'a PipelineConfig,
    pub model: Key,
}

/// The head-pruning unit a layer's counts ask for.
pub(crate) fn head_prune(counts: &PruneCounts, mode: GqaMode) -> HeadPrune {
    match counts.mode.unwrap_or(mode) {
        GqaMode::PerGroup => HeadPrune::PerGroup { heads_per_group: counts.heads_per_group },
        GqaMode::WholeGroup => HeadPrune::WholeGroup { groups: counts.groups },
    }
}

impl Graph<'_> {
    pub fn calib(&self) -> Result<KeyDoc> {
        doc("calib", &self.cfg.calib, &[("model", self.model)])
    }

    pub fn importance(&self, calib: Key) -> Result<KeyDoc> {
        doc("importance", &json!({}), &[("model", self.model), ("calib", calib)])
    }

    /// The allocation settings: the paper's defaults for the target, overridden by the config.
    pub fn alloc_config(&self, n_layers: usize) -> Result<AllocConfig> {
        let cfg = self.cfg;
        let mut a = AllocConfig::paper_defaults(cfg.target, n_layers);
        a.num_selected = cfg.pruned_layers.unwrap_or(a.num_selected);
        a.alpha = cfg.alpha.unwrap_or(a.alpha);
        a.mode = cfg.gqa;
        // The plan always reserves the o_proj/down_proj biases that recovery adds, whatever
        // the recovery, so that changing only the recovery reuses the plan and the scores;
        // with `none` the pruned model ends at most 2·d parameters per pruned layer below
        // the target (0.02 % of SmolLM2-135M). The run reports the exact count either way.
        a.recovery_adds_bias = true;
        ensure!((1..=n_layers).contains(&a.num_selected), "--pruned-layers must lie in 1..={n_layers}, got {}", a.num_selected);
        Ok(a)
    }

    pub fn alloc(&self, alloc: &AllocConfig, importance: Key) -> Result<KeyDoc> {
        doc("alloc", alloc, &[("model", self.model), ("importance", importance)])
    }

    /// The chain key before layer 0: sequential captures of later layers chain over it.
    pub fn chain_start(&self, calib: Key) -> Result<Key> {
        Ok(doc("chain", &json!({"layer": 0}), &[("model", self.model), ("calib", calib)])?.key())
    }

    /// The chain key after layer `l`, from the decisions (recoveries) of that layer.
    pub fn chain_next(&self, l: usize, prev: Key, attn: Key, mlp: Key) -> Result<Key> {
        Ok(doc("chain", &json!({"layer": l + 1}), &[("prev", prev), ("attn", attn), ("mlp", mlp)])?.key())
    }

    fn stats_inputs(&self, chain: Key, calib: Key) -> Vec<(&'static str, Key)> {
        match self.cfg.mode {
            CalibMode::Sequential => vec![("chain", chain)],
            CalibMode::Dense => vec![("model", self.model), ("calib", calib)],
        }
    }

    pub fn capture_attn(&self, l: usize, chain: Key, calib: Key) -> Result<KeyDoc> {
        doc("capture-attn", &json!({"layer": l, "mode": self.cfg.mode}), &self.stats_inputs(chain, calib))
    }

    pub fn score_attn(&self, counts: &PruneCounts, stats: Key) -> Result<KeyDoc> {
        doc("score-attn", &json!({"scorer": self.cfg.scorer, "prune": head_prune(counts, self.cfg.gqa)}), &[("stats", stats), ("model", self.model)])
    }

    /// The recovery o_proj gets: `lstsq` needs the covariance of o_proj's input, which the
    /// capture does not hold yet, so attention falls back to `affine` (and shares its entries).
    pub fn attn_recovery(&self) -> RecoveryKind {
        match self.cfg.recovery {
            RecoveryKind::Lstsq => RecoveryKind::Affine,
            r => r,
        }
    }

    pub fn recover_attn(&self, stats: Key, keep: Key) -> Result<KeyDoc> {
        doc("recover-attn", &json!({"recovery": self.attn_recovery()}), &[("stats", stats), ("keep", keep)])
    }

    /// In sequential mode the MLP is captured after the layer's attention was pruned, so
    /// its key also depends on the attention's recovery entry.
    pub fn capture_mlp(&self, l: usize, chain: Key, calib: Key, attn: Key) -> Result<KeyDoc> {
        let mut inputs = self.stats_inputs(chain, calib);
        if self.cfg.mode == CalibMode::Sequential {
            inputs.push(("attn", attn));
        }
        doc("capture-mlp", &json!({"layer": l, "mode": self.cfg.mode}), &inputs)
    }

    pub fn score_mlp(&self, counts: &PruneCounts, stats: Key) -> Result<KeyDoc> {
        doc("score-mlp", &json!({"scorer": self.cfg.scorer, "channels": counts.channels, "keep_lowest": self.cfg.keep_lowest}), &[("stats", stats), ("model", self.model)])
    }

    /// The entry holds a `Refit` (format 2; format 1 held an optional affine correction).
    pub fn recover_mlp(&self, stats: Key, keep: Key) -> Result<KeyDoc> {
        let config = match self.cfg.recovery {
            RecoveryKind::Lstsq => json!({"recovery": self.cfg.recovery, "lstsq": self.cfg.lstsq, "format": 2}),
            r => json!({"recovery": r, "format": 2}),
        };
        doc("recover-mlp", &config, &[("stats", stats), ("keep", keep), ("model", self.model)])
    }

    pub fn surgery(&self, n_layers: usize, decisions: Key, alloc: Key) -> Result<KeyDoc> {
        doc("surgery", &json!({"layers": n_layers}), &[("model", self.model), ("decisions", decisions), ("alloc", alloc)])
    }
}
