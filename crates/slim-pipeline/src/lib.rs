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

mod keys;
mod report;
mod run;

pub use keys::{model_key, STAGE_VERSION};
pub use report::{RunReport, StageReport};
pub use run::{eval_ppl_cached, run_pipeline, PipelineOutcome};

use serde::{Deserialize, Serialize};
use slim_artifact::schema::GqaMode;
use slim_capture::CalibConfig;
use slim_recover::RecoveryKind;
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
    /// Head and channel scorer.
    pub scorer: ScorerKind,
    /// The keep-lowest rule for channels.
    pub keep_lowest: KeepLowest,
    /// Output-projection recovery.
    pub recovery: RecoveryKind,
    /// Grouped-query attention unit.
    pub gqa: GqaMode,
    /// Calibration mode.
    pub mode: CalibMode,
}

impl PipelineConfig {
    /// The paper's recipe at `target`: Brown-fiction 32×128 calibration (seed 42), SlimLLM
    /// scorer with the 1 % rule, affine recovery, sequential calibration.
    pub fn paper(target: f64, gqa: GqaMode) -> Self {
        Self {
            calib: CalibConfig::paper(),
            target,
            pruned_layers: None,
            alpha: None,
            scorer: ScorerKind::SlimLlm,
            keep_lowest: KeepLowest::paper(),
            recovery: RecoveryKind::Affine,
            gqa,
            mode: CalibMode::Sequential,
        }
    }
}

#[cfg(test)]
mod tests;
