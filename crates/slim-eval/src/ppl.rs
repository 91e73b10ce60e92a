//! Perplexity over non-overlapping windows of a token stream, batched.

use anyhow::{ensure, Result};
use burn_tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    ensure!(cfg.batch >= 1, "--batch must be at least 1, got 0");
    ensure!(cfg.max_windows != Some(0), "--windows must be at least 1, got 0");
    let wins = windows(ids, cfg.seq_len, cfg.max_windows);
    ensure!(!wins.is_empty(), "the text has {} tokens: fewer than one window of --seq-len {}", ids.len(), cfg.seq_len);
    crate::check_token_ids(&ids[..wins.len() * cfg.seq_len], model.config().vocab_size)?;
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
        let logits = logits.into_data().into_vec::<f32>().map_err(|e| anyhow::format_err!("reading logits: {e:?}"))?;
        nll_sum += chunk
            .par_iter()
            .enumerate()
            .map(|(w, win)| {
                (0..t - 1)
                    .map(|i| token_nll(&logits[(w * t + i) * v..(w * t + i + 1) * v], win[i + 1] as usize))
                    .sum::<f64>()
            })
            .sum::<f64>();
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    let tokens_scored = wins.len() * (t - 1);
    ensure!(nll_sum.is_finite(), "the loss is not finite ({nll_sum}): the model produces NaN or Inf");
    Ok(PplResult { ppl: (nll_sum / tokens_scored as f64).exp(), windows: wins.len(), tokens_scored, nll_sum })
}

/// `−log softmax(logits)[target]`, computed stably in f64 (max subtracted first).
///
/// This reduction runs on the host: burn-flex's `log_softmax` took 1.17 s on a
/// 1024 × 49152 logits tensor (2 busy cores), longer than the lm_head matmul itself.
pub fn token_nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln() - logits[target] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_nll_matches_the_definition() {
        let l = [1.0f32, 2.0, 3.0, -1.0];
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        for t in 0..4 {
            let want = -((l[t] as f64).exp() / z).ln();
            assert!((token_nll(&l, t) - want).abs() < 1e-12);
        }
        // Large logits stay finite.
        assert!((token_nll(&[1000.0, 1000.0], 0) - 2f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn a_zero_window_limit_and_out_of_range_ids_are_errors_naming_them() {
        use slim_checkpoint::synthetic::SyntheticSpec;
        let (cfg, w) = SyntheticSpec::dense("llama", 1, 16, 4, 2, 4, 24, 64, 1).build();
        let model = Llama::<slim_model::Cpu>::from_weights(cfg, &w, &Default::default()).unwrap();
        let ids: Vec<u32> = (0..40).collect();
        let c = |seq_len, batch, max_windows| PplConfig { seq_len, batch, max_windows, progress: false };
        assert_eq!(perplexity(&model, &ids, &c(8, 2, None)).unwrap().windows, 5);
        let e = perplexity(&model, &ids, &c(8, 1, Some(0))).unwrap_err().to_string();
        assert!(e.contains("--windows must be at least 1"), "{e}");
        let e = perplexity(&model, &ids, &c(41, 1, None)).unwrap_err().to_string();
        assert!(e.contains("40 tokens") && e.contains("--seq-len 41"), "{e}");
        let mut bad = ids.clone();
        bad[9] = 64;
        let e = perplexity(&model, &bad, &c(8, 2, None)).unwrap_err().to_string();
        assert!(e.contains("token id 64") && e.contains("token 9 of"), "{e}");
        // An id past the last whole window is never scored, so it is not an error.
        bad[9] = 9;
        bad[39] = 1000;
        assert!(perplexity(&model, &bad, &c(8, 2, Some(4))).is_ok());
    }

    #[test]
    fn windows_drop_the_remainder_and_respect_the_limit() {
        let ids: Vec<u32> = (0..10).collect();
        assert_eq!(windows(&ids, 3, None), vec![&[0, 1, 2][..], &[3, 4, 5], &[6, 7, 8]]);
        assert_eq!(windows(&ids, 3, Some(2)).len(), 2);
        assert!(windows(&ids, 11, None).is_empty());
    }
}
