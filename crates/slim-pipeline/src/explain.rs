//! `slimllm pipeline explain`: for every entry a run would need, whether the cache holds it
//! and, if not, why not — computed from the key documents alone, without running a stage.

use crate::graph::{Graph, LayerDocs};
use crate::keys::{text_digest, ModelSource};
use crate::{AllocationKind, PipelineConfig};
use anyhow::Result;
use slim_alloc::Allocation;
use slim_artifact::{Explanation, KeyDoc, Store};
use slim_checkpoint::ModelConfig;
use std::fmt;
use std::path::Path;

/// One entry the run would need.
#[derive(Clone, Debug)]
pub struct ExplainLine {
    /// Stage folder of the entry (`capture-attn`, `score-mlp`, …).
    pub stage: String,
    /// The layer, for per-layer entries.
    pub layer: Option<usize>,
    /// What the store says about it.
    pub explanation: Explanation,
}

impl ExplainLine {
    /// True when the entry is in the cache.
    pub fn is_hit(&self) -> bool {
        matches!(self.explanation, Explanation::Hit { .. })
    }
}

impl fmt::Display for ExplainLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.layer {
            Some(l) => format!("{} [layer {l}]", self.stage),
            None => self.stage.clone(),
        };
        match &self.explanation {
            Explanation::Hit { key } => write!(f, "{what:<28} cached ({key})"),
            Explanation::NoPrevious { .. } => write!(f, "{what:<28} runs: no entry of this stage yet"),
            Explanation::Changed { changes, .. } => {
                let why: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                write!(f, "{what:<28} runs: {}", why.join("; "))
            }
        }
    }
}

/// Solves an allocation that is not cached yet, from cached inputs.
type Solver = Box<dyn Fn() -> Result<Allocation>>;

/// Explains, entry by entry, what `run_pipeline` would compute and what it would reuse.
///
/// The per-layer keys need the allocation's head and channel counts: when the allocation
/// is not cached it is solved here from the cached importance (cheap and pure); when the
/// importance is not cached either, the walk stops there, since everything after it runs.
pub fn explain_pipeline(
    model: &ModelSource,
    cfg: &PipelineConfig,
    store: &Store,
    data_root: &Path,
) -> Result<Vec<ExplainLine>> {
    let calib_docs = slim_capture::calibration_documents(cfg.calib.source, data_root)?;
    let graph = Graph { cfg, model: model.key(), calib_text: calib_docs.as_deref().map(text_digest) };
    let dense = ModelConfig::load(model.dir())?;
    cfg.check_model(&dense)?;
    let n_layers = dense.num_layers();
    let mut out = Vec::new();
    let mut line = |doc: &KeyDoc, layer: Option<usize>| -> Result<bool> {
        let explanation = store.explain(doc)?;
        let hit = matches!(explanation, Explanation::Hit { .. });
        out.push(ExplainLine { stage: doc.stage().to_string(), layer, explanation });
        Ok(hit)
    };

    let calib = graph.calib()?;
    line(&calib, None)?;
    let importance = graph.importance(calib.key())?;
    let importance_hit = line(&importance, None)?;
    let taylor = match graph.taylor(calib.key())? {
        Some(t) => {
            line(&t, None)?;
            Some(t.key())
        }
        None => None,
    };
    // The allocation entry, and how to solve it when it is not cached (None: its inputs are
    // not cached either, so everything after it runs).
    let (alloc, solve): (KeyDoc, Option<Solver>) = match cfg.allocation {
        AllocationKind::Cosine => {
            let a = graph.alloc_config(n_layers)?;
            let d = graph.alloc(&a, importance.key())?;
            let solve = if importance_hit {
                let imp: slim_artifact::schema::LayerImportance =
                    store.lookup("importance", &importance.key())?.ok_or_else(gone)?.get_bin("value")?;
                let dense = dense.clone();
                Some(Box::new(move || slim_alloc::solve(&dense, &imp.cos, &a)) as Solver)
            } else {
                None
            };
            (d, solve)
        }
        AllocationKind::Uniform => {
            let u = graph.uniform_config(n_layers);
            let dense = dense.clone();
            (graph.alloc_uniform(&u)?, Some(Box::new(move || slim_alloc::solve_uniform(&dense, &u)) as Solver))
        }
        AllocationKind::FlapGlobal => {
            let g = graph.global_config();
            let sdoc = graph.global_scores(calib.key(), taylor)?;
            let solve = if line(&sdoc, None)? {
                let scores: Vec<slim_alloc::LayerScores> =
                    store.lookup("global-scores", &sdoc.key())?.ok_or_else(gone)?.get_bin("value")?;
                let dense = dense.clone();
                let g2 = g.clone();
                Some(Box::new(move || slim_alloc::solve_global(&dense, &scores, &g2)) as Solver)
            } else {
                None
            };
            (graph.alloc_global(&g, sdoc.key())?, solve)
        }
    };
    let alloc_hit = line(&alloc, None)?;
    let plan: Allocation = if alloc_hit {
        store.lookup("alloc", &alloc.key())?.ok_or_else(gone)?.get_bin("value")?
    } else if let Some(solve) = solve {
        solve()?
    } else {
        return Ok(out);
    };

    let dtype = slim_checkpoint::WeightSource::open(model.dir())?.model_dtype();
    let docs = graph.layer_docs(&plan.counts, calib.key(), taylor, alloc.key(), dtype)?;
    for (l, d) in docs.layers.iter().enumerate() {
        for (_, doc) in d.iter().flat_map(LayerDocs::all) {
            line(doc, Some(l))?;
        }
    }
    line(&docs.surgery, None)?;
    Ok(out)
}

/// The error for an entry that the store listed a moment ago and no longer holds (a
/// concurrent `slimllm cache gc` or `cache verify --repair` removed it).
fn gone() -> anyhow::Error {
    anyhow::format_err!("a cache entry was removed while explaining (a concurrent cache gc?); run explain again")
}
