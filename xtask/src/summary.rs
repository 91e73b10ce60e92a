//! xtask's view of a run's `summary.json` (the type is `slim_pipeline::RunSummary`). xtask
//! builds without the pipeline crates, so it reads the fields it needs through this view;
//! a test reads the pipeline's golden summary (`crates/slim-pipeline/src/golden/summary.json`,
//! which the pipeline's own test pins) through it, so a renamed field fails here too.

use anyhow::Context;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The fields of a run summary that xtask reads.
#[derive(Debug, Deserialize)]
pub struct RunSummary {
    /// Run name.
    pub run: String,
    /// The dense model directory.
    pub model: String,
    /// Parameters of the dense model.
    pub params_before: u64,
    /// Parameters of the pruned model.
    pub params_after: u64,
    /// `1 − params_after / params_before`.
    pub removed_fraction: f64,
    /// Perplexity before and after, by text.
    pub ppl: BTreeMap<String, PplPair>,
    /// Wall seconds of the pruning.
    pub pruning_seconds: f64,
    /// Per stage: seconds, entries computed and reused.
    pub stages: Vec<Stage>,
    /// The run's pruned model directory.
    pub pruned_model: String,
    /// Key of the cache entry holding the pruned model.
    pub cache_entry: String,
}

/// Perplexity before and after on one text.
#[derive(Debug, Deserialize)]
pub struct PplPair {
    /// The dense model.
    pub before: Ppl,
    /// The pruned model.
    pub after: Ppl,
}

/// One perplexity result.
#[derive(Debug, Deserialize)]
pub struct Ppl {
    /// exp(mean NLL).
    pub ppl: f64,
}

/// One stage's account.
#[derive(Debug, Deserialize)]
pub struct Stage {
    /// Stage name.
    pub name: String,
    /// Wall seconds.
    pub seconds: f64,
    /// Entries computed.
    pub ran: u64,
    /// Entries reused.
    pub reused: u64,
}

impl RunSummary {
    /// Reads `<runs>/<run>/summary.json`, naming the file in errors.
    pub fn read(path: &Path) -> anyhow::Result<RunSummary> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {} as a run summary", path.display()))
    }

    /// Seconds, entries computed and entries reused of `stage` (zeros when it did not run).
    pub fn stage(&self, name: &str) -> (f64, u64, u64) {
        self.stages
            .iter()
            .filter(|s| s.name == name)
            .fold((0.0, 0, 0), |(t, r, u), s| (t + s.seconds, r + s.ran, u + s.reused))
    }

    /// Perplexity of the pruned (`after`) or dense model on `text`.
    pub fn ppl_of(&self, text: &str, after: bool) -> Option<f64> {
        self.ppl.get(text).map(|p| if after { p.after.ppl } else { p.before.ppl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipelines_golden_summary_reads_through_this_view() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/slim-pipeline/src/golden/summary.json");
        let s = RunSummary::read(&golden).unwrap();
        assert!(!s.stages.is_empty() && !s.ppl.is_empty(), "{s:?}");
        assert!(s.ppl_of("ptb-valid", true).is_some());
    }
}
