//! Perplexity over non-overlapping windows of a token stream, batched.

use anyhow::{ensure, Result};
use burn_tensor::activation::log_softmax;
use burn_tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use slim_model::Llama;

/// How to cut and batch the token stream.
#[derive(Clone, Debug)]
pub struct PplConfig {
    /// Window length in tokens (128 in the paper's protocol).
    pub seq_len: usize,
    /// Windows per forward pass.
    pub batch: usize,
    /// Score only the first N windows.
    pub max_windows: Option<usize>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// The outcome of a perplexity run.
#[derive(Clone, Debug, Serialize)]
pub struct PplResult {
    /// exp(mean NLL).
    pub ppl: f64,
    /// Windows scored.
    pub windows: usize,
    /// Predictions scored (`windows · (seq_len − 1)`).
    pub tokens_scored: usize,
    /// Sum of the token NLLs, in nats.
    pub nll_sum: f64,
}

/// Non-overlapping windows of `ids`, the remainder dropped, at most `max` of them.
pub fn windows(ids: &[u32], seq_len: usize, max: Option<usize>) -> Vec<&[u32]> {
    let n = ids.len() / seq_len;
    let n = max.map_or(n, |m| m.min(n));
    (0..n).map(|i| &ids[i * seq_len..(i + 1) * seq_len]).collect()
}

/// Perplexity of `model` on the token stream `ids`.
pub fn perplexity<B: Backend>(model: &Llama<B>, ids: &[u32], cfg: &PplConfig) -> Result<PplResult> {
    ensure!(cfg.seq_len >= 2, "--seq-len must be at least 2, got {}", cfg.seq_len);
    ensure!(cfg.batch >= 1, "--batch must be at least 1");
    let wins = windows(ids, cfg.seq_len, cfg.max_windows);
    ensure!(!wins.is_empty(), "the text has {} tokens: fewer than one window of {}", ids.len(), cfg.seq_len);
    let bar = if cfg.progress { ProgressBar::new(wins.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} windows, {per_sec}, ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message("perplexity");
    let t = cfg.seq_len;
    let mut nll_sum = 0f64;
    for chunk in wins.chunks(cfg.batch) {
        let b = chunk.len();
        let flat: Vec<u32> = chunk.iter().flat_map(|w| w.iter().copied()).collect();
        let logits = model.forward(model.ids_tensor(&flat, b, t)?); // [b, t, V]
        let v = logits.dims()[2];
        let logp = log_softmax(logits.slice([0..b, 0..t - 1, 0..v]), 2); // [b, t-1, V]
        let targets: Vec<u32> = chunk.iter().flat_map(|w| w[1..].iter().copied()).collect();
        let targets = model.ids_tensor(&targets, b, t - 1)?.unsqueeze_dim::<3>(2); // [b, t-1, 1]
        let picked = logp.gather(2, targets).into_data().convert::<f64>().into_vec::<f64>().map_err(|e| anyhow::format_err!("{e:?}"))?;
        nll_sum -= picked.iter().sum::<f64>();
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    let tokens_scored = wins.len() * (t - 1);
    ensure!(nll_sum.is_finite(), "the loss is not finite ({nll_sum}): the model produces NaN or Inf");
    Ok(PplResult { ppl: (nll_sum / tokens_scored as f64).exp(), windows: wins.len(), tokens_scored, nll_sum })
}
