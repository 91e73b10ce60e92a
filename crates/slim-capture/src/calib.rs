//! Calibration windows, drawn like LLM-Pruner's `get_examples` (spec §3.1): repeatedly pick
//! a random document, tokenize it, accept it if it has at least `seq_len` tokens and was not
//! drawn before, and take a random window of it.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use slim_checkpoint::synthetic::SplitMix;
use slim_data::TextSource;
use std::path::Path;

/// Where calibration text comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibSource {
    /// Brown corpus, fiction genres (K-R): the stand-in for BookCorpus.
    BrownFiction,
    /// Penn Treebank training split.
    PtbTrain,
    /// Uniformly random token ids (seeded): for tests on synthetic models without a
    /// tokenizer, never for real pruning.
    Random,
}

slim_artifact::kinds!(CalibSource, "calibration source" {
    BrownFiction => "Brown corpus, fiction genres (K-R): the stand-in for BookCorpus",
    PtbTrain => "Penn Treebank training split",
    Random => "seeded random token ids (tests on synthetic models only)",
});

impl std::str::FromStr for CalibSource {
    type Err = slim_artifact::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Self as slim_artifact::Kind>::parse(s)
    }
}

/// How many windows, how long, from where, with which seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibConfig {
    /// Text source.
    pub source: CalibSource,
    /// Number of windows (32 in the paper).
    pub n_windows: usize,
    /// Tokens per window (128 in the paper).
    pub seq_len: usize,
    /// RNG seed (42 in the paper). The generator is SplitMix64, not Python's, so the
    /// windows differ from the authors' draw; the procedure is the same.
    pub seed: u64,
}

impl CalibConfig {
    /// The paper's setting: 32 × 128 tokens, seed 42, on Brown fiction.
    pub fn paper() -> Self {
        Self { source: CalibSource::BrownFiction, n_windows: 32, seq_len: 128, seed: 42 }
    }
}

/// Draws the calibration windows: `n_windows · seq_len` token ids, row-major.
///
/// `encode` tokenizes one document (the model's tokenizer); `vocab_size` bounds random ids.
pub fn calibration_windows(
    cfg: &CalibConfig,
    data_root: &Path,
    vocab_size: usize,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
) -> Result<Vec<u32>> {
    match calibration_documents(cfg.source, data_root)? {
        Some(docs) => sample_windows(&docs, cfg, encode),
        None => Ok(random_windows(cfg, vocab_size)),
    }
}

/// The documents windows are drawn from, as [`sample_windows`] takes them; `None` for the
/// random source, which draws token ids instead. (The pipeline hashes these into the
/// calibration key, so that other text under the same name is never mistaken for it.)
pub fn calibration_documents(source: CalibSource, data_root: &Path) -> Result<Option<Vec<String>>> {
    Ok(match source {
        CalibSource::BrownFiction => {
            Some(TextSource::brown_fiction(data_root)?.documents().iter().map(|d| d.text.clone()).collect())
        }
        CalibSource::PtbTrain => {
            let src = TextSource::ptb(data_root, slim_data::PtbSplit::Train)?;
            // PTB is one sentence per line: group 40 lines into a document.
            let lines: Vec<&str> = src.documents().iter().flat_map(|d| d.text.lines()).collect();
            Some(lines.chunks(40).map(|c| c.join("\n")).collect())
        }
        CalibSource::Random => None,
    })
}

/// Seeded uniformly random token ids below `vocab_size`: the random source's windows.
pub fn random_windows(cfg: &CalibConfig, vocab_size: usize) -> Vec<u32> {
    let mut rng = SplitMix(cfg.seed);
    (0..cfg.n_windows * cfg.seq_len).map(|_| rng.below(vocab_size as u64) as u32).collect()
}

/// The sampling loop on given documents.
pub fn sample_windows(
    docs: &[String],
    cfg: &CalibConfig,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
) -> Result<Vec<u32>> {
    ensure!(cfg.n_windows > 0 && cfg.seq_len > 0, "calibration needs at least one window of at least one token");
    let mut rng = SplitMix(cfg.seed);
    let mut drawn = vec![false; docs.len()];
    let mut out = Vec::with_capacity(cfg.n_windows * cfg.seq_len);
    let mut attempts = 0usize;
    while out.len() < cfg.n_windows * cfg.seq_len {
        attempts += 1;
        ensure!(
            attempts <= 100 * cfg.n_windows + 10 * docs.len(),
            "could not draw {} windows of {} tokens: only {} of {} documents are long enough and unused",
            cfg.n_windows,
            cfg.seq_len,
            out.len() / cfg.seq_len,
            docs.len()
        );
        let i = rng.below(docs.len() as u64) as usize;
        if drawn[i] {
            continue;
        }
        let ids = encode(&docs[i])?;
        if ids.len() < cfg.seq_len {
            continue;
        }
        drawn[i] = true;
        let j = rng.below((ids.len() - cfg.seq_len + 1) as u64) as usize;
        out.extend_from_slice(&ids[j..j + cfg.seq_len]);
    }
    Ok(out)
}
