//! [`RunSummary`]: what `slimllm pipeline run` writes to `data/runs/<run>/summary.json`, as a
//! type. The report, `slimllm cache gc` and the comparison commands read this type (or, in
//! xtask, which builds without the pipeline, a view checked against the golden file
//! `src/golden/summary.json`), never string keys into untyped JSON.

use crate::report::StageReport;
use crate::PipelineConfig;
use serde::{Deserialize, Serialize};
use slim_artifact::Key;
use slim_eval::PplResult;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the summary's layout. 1: the untyped summaries written before this type (no
/// `format`, `model_key`, `eval_seq_len` or `cache_keys`); they still read.
pub const SUMMARY_FORMAT: u32 = 2;

/// Sequence length of the pipeline's perplexity evaluation (the LLM-Pruner protocol).
pub const EVAL_SEQ_LEN: usize = 128;

/// A finished pipeline run: what was pruned, how, the result and where everything is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// [`SUMMARY_FORMAT`] of the writer (1 when absent).
    #[serde(default = "format_one")]
    pub format: u32,
    /// Run name (the folder under the runs root).
    pub run: String,
    /// The dense model directory, as given.
    pub model: PathBuf,
    /// Content key of the dense model (absent in format 1).
    #[serde(default)]
    pub model_key: Option<Key>,
    /// Everything that decided what was computed.
    pub config: PipelineConfig,
    /// Backend that ran the model (`cpu`, `wgpu`, `cuda`).
    pub backend: String,
    /// Parameters of the dense model (tied embeddings counted once).
    pub params_before: u64,
    /// Parameters of the pruned model.
    pub params_after: u64,
    /// `1 − params_after / params_before`.
    pub removed_fraction: f64,
    /// The allocation's solution, by kind.
    pub alloc: AllocSummary,
    /// The first perplexity text, whose figures `ppl_before` and `ppl_after` repeat.
    pub ppl_data: Option<String>,
    /// Windows evaluated per text (`None`: all).
    pub eval_windows: Option<usize>,
    /// Tokens per perplexity window.
    #[serde(default = "eval_seq_len")]
    pub eval_seq_len: usize,
    /// Perplexity of the dense model on `ppl_data`.
    pub ppl_before: Option<f64>,
    /// Perplexity of the pruned model on `ppl_data`.
    pub ppl_after: Option<f64>,
    /// Perplexity before and after, by text name.
    pub ppl: BTreeMap<String, PplPair>,
    /// Wall seconds of the pruning (without the evaluation).
    pub pruning_seconds: f64,
    /// Per stage: seconds, entries computed and reused.
    pub stages: Vec<StageReport>,
    /// Per-layer plan, in layer order.
    pub layers: Vec<LayerPlan>,
    /// Layer importance (input/output cosine similarity) of the dense model.
    pub layer_importance: Vec<f64>,
    /// The pruned model directory of the run (a copy of the cache entry's).
    pub pruned_model: PathBuf,
    /// Key of the surgery entry holding the pruned model.
    pub cache_entry: Key,
    /// Every cache entry the run read or wrote, evaluations included (absent in format 1):
    /// what `slimllm cache gc` keeps for this run.
    #[serde(default)]
    pub cache_keys: Vec<CacheRef>,
    /// The recovery fine-tuning of a run with `--tune` (then the run's model is the tuned one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<TuneSummary>,
}

/// What `--tune` did: its cache entry, the training log and the tuned model's perplexity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuneSummary {
    /// Key of the tune entry holding the tuned model.
    pub entry: Key,
    /// Settings, every step and every validation pass.
    pub log: crate::tune::TuneLog,
    /// Perplexity of the tuned model, by text name (the texts of `ppl`).
    pub ppl: BTreeMap<String, slim_eval::PplResult>,
}

fn format_one() -> u32 {
    1
}

fn eval_seq_len() -> usize {
    EVAL_SEQ_LEN
}

/// One cache entry: its stage folder and key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheRef {
    /// Stage folder (`calib`, `capture-attn`, `eval`, …).
    pub stage: String,
    /// The entry's key.
    pub key: Key,
}

/// Perplexity of the dense and the pruned model on one text.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PplPair {
    /// The dense model.
    pub before: PplResult,
    /// The pruned model.
    pub after: PplResult,
}

/// What the allocation solved, by kind; each kind has its own figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AllocSummary {
    /// The paper's top-K cosine softmax.
    Cosine {
        /// The base ratio r0 solved for the parameter target.
        r0: f64,
        /// K, the layers pruned.
        pruned_layers: usize,
        /// Softmax temperature α.
        alpha: f64,
        /// Fraction of the parameters removed by the plan.
        achieved: f64,
    },
    /// LLM-Pruner's one ratio on a range of layers.
    Uniform {
        /// The ratio every layer of the range gets.
        ratio: f64,
        /// First and one-past-last layer of the range.
        layers: [usize; 2],
        /// Fraction of the parameters removed by the plan.
        achieved: f64,
    },
    /// FLAP's global standardized ranking.
    FlapGlobal {
        /// The standardized score below which heads and channels are removed.
        z_threshold: f64,
        /// Layers that lose at least one head or channel.
        touched_layers: usize,
        /// Fraction of the parameters removed by the plan.
        achieved: f64,
    },
}

impl AllocSummary {
    /// Fraction of the parameters the plan removes.
    pub fn achieved(&self) -> f64 {
        match *self {
            AllocSummary::Cosine { achieved, .. }
            | AllocSummary::Uniform { achieved, .. }
            | AllocSummary::FlapGlobal { achieved, .. } => achieved,
        }
    }

    /// One line for people: the allocation and its figures.
    pub fn describe(&self) -> String {
        match self {
            AllocSummary::Cosine { r0, pruned_layers, alpha, .. } => {
                format!("cosine allocation: r0 = {r0:.4}, {pruned_layers} layers pruned, α = {alpha}")
            }
            AllocSummary::Uniform { ratio, layers, .. } => {
                format!("uniform allocation: ratio {ratio:.4} on layers {}..{}", layers[0], layers[1])
            }
            AllocSummary::FlapGlobal { z_threshold, touched_layers, .. } => {
                format!("flap-global allocation: z threshold {z_threshold:.4}, {touched_layers} layers touched")
            }
        }
    }
}

/// One layer of the plan and what it became.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerPlan {
    /// Layer index.
    pub layer: usize,
    /// Pruning ratio the allocation gave it.
    pub ratio: f64,
    /// Query heads kept.
    pub heads: usize,
    /// KV heads kept.
    pub kv_heads: usize,
    /// MLP channels kept.
    pub channels: usize,
    /// Indices of the kept query heads (absent for untouched layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_heads: Option<Vec<usize>>,
    /// Indices of the kept KV heads (absent for untouched layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_kv_heads: Option<Vec<usize>>,
}

impl RunSummary {
    /// Reads a summary file, naming it in every error.
    pub fn read(path: &Path) -> anyhow::Result<RunSummary> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {} as a run summary", path.display()))
    }

    /// The perplexity pair of the first evaluated text.
    pub fn first_ppl(&self) -> Option<&PplPair> {
        self.ppl_data.as_ref().and_then(|d| self.ppl.get(d))
    }
}
