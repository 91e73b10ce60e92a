//! The SlimLLM stage graph (spec §2-§4, §13): capture → score → alloc → recover → surgery,
//! every step an entry of the content-addressed [`Store`], so that each runs and caches on
//! its own. This crate is the only one that knows every stage; the stage crates never see
//! one another.
//!
//! Two calibration modes:
//! - `sequential` (the paper): layer l is calibrated on the outputs of the already pruned
//!   and recovered layers below it, and its MLP after its attention was pruned. Capture keys
//!   chain over the decisions of the layers below.
//! - `dense`: every layer's statistics come from the unpruned model, so one capture serves
//!   every scorer, allocation and recovery.

mod evaluate;
mod explain;
pub mod fixtures;
mod global;
mod graph;
mod keys;
mod layers;
mod report;
mod run;
mod runs;
mod summary;
mod tune;

pub use evaluate::{run_and_evaluate, RunRequest};
pub use explain::{explain_pipeline, ExplainLine};
pub use keys::{model_key, text_digest, ModelSource, STAGE_VERSION};
pub use report::{stage_table, RunReport, StageReport};
pub use run::{eval_ppl_cached, run_pipeline, EvalInput, PipelineOutcome};
pub use runs::{RunDir, RunName, RunsRoot};
pub use summary::{AllocSummary, CacheRef, LayerPlan, PplPair, RunSummary, TuneSummary, EVAL_SEQ_LEN, SUMMARY_FORMAT};
pub use tune::{tune_cached, TuneLog, TuneOutcome, TuneProgress, TuneRequest};

use serde::{Deserialize, Serialize};
use slim_artifact::schema::GqaMode;
use slim_capture::CalibConfig;
use slim_recover::{LstsqConfig, RecoveryKind};
use slim_score::{KeepLowest, ScorerKind};

/// Where calibration statistics come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibMode {
    /// The paper: layer by layer on the pruned prefix.
    Sequential,
    /// One pass of the unpruned model for every layer.
    Dense,
}

/// How the per-layer pruning ratios are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocationKind {
    /// The paper: the top-K layers by input/output cosine similarity, `r0·K·softmax(α·cos)`.
    #[default]
    Cosine,
    /// LLM-Pruner: one ratio on layers `4..L−2` (every layer below 7 layers), none elsewhere.
    Uniform,
    /// FLAP: every head and channel of every layer ranked together by its per-layer
    /// standardized importance (from the dense model's statistics), heads weighted by their
    /// parameter cost, the lowest removed until the target is met.
    FlapGlobal,
}

slim_artifact::kinds!(AllocationKind, "allocation" {
    Cosine => "the paper: top-K layers by input/output cosine similarity, softmax with temperature",
    Uniform => "LLM-Pruner: the same ratio on layers 4..L-2",
    FlapGlobal => "FLAP: heads and channels of all layers ranked together by standardized importance",
});

slim_artifact::kinds!(CalibMode, "calibration mode" {
    Sequential => "the paper: each layer calibrated on the pruned layers below it",
    Dense => "every layer calibrated on the unpruned model (one capture for every scorer)",
});

/// Everything that decides what the pipeline computes (hashed into the cache keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    /// Calibration windows.
    pub calib: CalibConfig,
    /// Fraction of the model's total parameters to remove.
    pub target: f64,
    /// Layers to prune (top-K by similarity); `None` = L − 4.
    pub pruned_layers: Option<usize>,
    /// Softmax temperature α; `None` = 10 for targets up to 35 %, 7 above.
    pub alpha: Option<f64>,
    /// Per-layer ratio allocation (absent from configs written before it existed, which
    /// read as the paper's cosine allocation).
    #[serde(default)]
    pub allocation: AllocationKind,
    /// Head and channel scorer.
    pub scorer: ScorerKind,
    /// The keep-lowest rule for channels.
    pub keep_lowest: KeepLowest,
    /// Output-projection recovery.
    pub recovery: RecoveryKind,
    /// Settings of the `lstsq` recovery (part of the key only when it is used; absent from
    /// configs written before it existed, which read as the standard settings).
    #[serde(default = "LstsqConfig::standard")]
    pub lstsq: LstsqConfig,
    /// Grouped-query attention unit.
    pub gqa: GqaMode,
    /// Calibration mode (`mode` in summaries written before it was renamed).
    #[serde(alias = "mode")]
    pub calib_mode: CalibMode,
    /// Every pruned module keeps a size block-quantized types can store: channels a multiple
    /// of `align`, heads × head_dim a multiple of `align` (`slim_alloc::align`), in every
    /// allocation. 1 = none; then absent from the JSON, so the cache keys and summaries of
    /// unaligned runs are those written before alignment existed.
    #[serde(default = "slim_alloc::align::unaligned", skip_serializing_if = "slim_alloc::align::is_unaligned")]
    pub align: usize,
}

impl PipelineConfig {
    /// The paper's recipe at `target`: Brown-fiction 32×128 calibration (seed 42), SlimLLM
    /// scorer with the 1 % rule, affine recovery, sequential calibration, no alignment.
    pub fn paper(target: f64, gqa: GqaMode) -> Self {
        Self {
            calib: CalibConfig::paper(),
            target,
            pruned_layers: None,
            alpha: None,
            allocation: AllocationKind::Cosine,
            scorer: ScorerKind::SlimLlm,
            keep_lowest: KeepLowest::paper(),
            recovery: RecoveryKind::Affine,
            lstsq: LstsqConfig::standard(),
            gqa,
            calib_mode: CalibMode::Sequential,
            align: 1,
        }
    }

    /// Checks the settings that depend on the model, before any work: an alignment of at
    /// least 1 under which some layer can lose heads or channels (errors name `--align`).
    pub fn check_model(&self, model: &slim_checkpoint::ModelConfig) -> anyhow::Result<()> {
        slim_alloc::check_align(model, self.align, self.gqa).map_err(|e| e.context(format!("--align {}", self.align)))
    }
}

/// One of the five stages, as `slimllm stage <name>` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Calibration windows, layer importance and the per-layer statistics.
    Capture,
    /// Head and channel selection.
    Score,
    /// Per-layer pruning ratios.
    Alloc,
    /// Slicing the weights into the pruned model directory.
    Surgery,
    /// The affine refit of o_proj and down_proj.
    Recover,
}

slim_artifact::kinds!(Stage, "stage" {
    Capture => "calibration windows, layer importance and every layer's statistics",
    Score => "head and channel selection",
    Alloc => "per-layer pruning ratios",
    Surgery => "slicing the weights into the pruned model directory",
    Recover => "the refit of o_proj and down_proj",
});

impl Stage {
    /// Whether the report label `label` belongs to this stage (the calibration windows
    /// belong to capture).
    pub fn covers(self, label: &str) -> bool {
        use slim_artifact::Kind;
        label == self.name() || (self == Stage::Capture && label == "calib")
    }
}

/// How to run, as opposed to what to compute (nothing here enters a cache key).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Show progress bars.
    pub progress: bool,
    /// Recompute this stage's entries even when the cache holds them, replacing them;
    /// every other stage is reused where it can be.
    pub force: Option<Stage>,
    /// Re-hash every file of a reused pruned model against its manifest, not only the ones
    /// whose size or modification time gives them away.
    pub verify_reused: bool,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_keys;
#[cfg(test)]
mod tests_runs;
#[cfg(test)]
mod tests_tune;
