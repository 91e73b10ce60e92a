//! Perplexity over non-overlapping windows of a token stream, batched.

use anyhow::{ensure, Result};
use burn_tensor::{backend::Backend, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use slim_checkpoint::layout::Global;
use slim_checkpoint::{ModelConfig, WeightSource};
use slim_model::{Llama, TapSet};

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

/// The windows to score, after checking the settings and the ids against `vocab_size`.
fn checked_windows<'a>(ids: &'a [u32], cfg: &PplConfig, vocab_size: usize) -> Result<Vec<&'a [u32]>> {
    ensure!(cfg.seq_len >= 2, "--seq-len must be at least 2, got {}", cfg.seq_len);
    ensure!(cfg.batch >= 1, "--batch must be at least 1, got 0");
    ensure!(cfg.max_windows != Some(0), "--windows must be at least 1, got 0");
    let wins = windows(ids, cfg.seq_len, cfg.max_windows);
    ensure!(!wins.is_empty(), "the text has {} tokens: fewer than one window of --seq-len {}", ids.len(), cfg.seq_len);
    crate::check_token_ids(&ids[..wins.len() * cfg.seq_len], vocab_size)?;
    Ok(wins)
}

fn bar(cfg: &PplConfig, len: u64, unit: &str) -> ProgressBar {
    let bar = if cfg.progress { ProgressBar::new(len) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template(&format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}"))
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message("perplexity");
    bar
}

/// Summed NLL of each window's next tokens from the logits of `chunk` (`[b, t, V]`).
fn chunk_nll<B: Backend>(logits: Tensor<B, 3>, chunk: &[&[u32]]) -> Result<f64> {
    let [_, t, v] = logits.dims();
    let logits = logits.into_data().into_vec::<f32>().map_err(|e| anyhow::format_err!("reading logits: {e:?}"))?;
    let per_window: Vec<f64> = chunk
        .par_iter()
        .enumerate()
        .map(|(w, win)| {
            (0..t - 1)
                .map(|i| token_nll(&logits[(w * t + i) * v..(w * t + i + 1) * v], win[i + 1] as usize))
                .sum::<f64>()
        })
        .collect();
    // Summed in window order: rayon's `sum` would add in its work-stealing tree, and the
    // perplexity would differ in the last bit from run to run.
    Ok(per_window.iter().sum())
}

fn result(nll_sum: f64, windows: usize, seq_len: usize) -> Result<PplResult> {
    let tokens_scored = windows * (seq_len - 1);
    ensure!(nll_sum.is_finite(), "the loss is not finite ({nll_sum}): the model produces NaN or Inf");
    Ok(PplResult { ppl: (nll_sum / tokens_scored as f64).exp(), windows, tokens_scored, nll_sum })
}

/// Perplexity of `model` on the token stream `ids`.
pub fn perplexity<B: Backend>(model: &Llama<B>, ids: &[u32], cfg: &PplConfig) -> Result<PplResult> {
    let wins = checked_windows(ids, cfg, model.config().vocab_size)?;
    let bar = bar(cfg, wins.len() as u64, "windows");
    let t = cfg.seq_len;
    let mut nll_sum = 0f64;
    for chunk in wins.chunks(cfg.batch) {
        let b = chunk.len();
        let flat: Vec<u32> = chunk.iter().flat_map(|w| w.iter().copied()).collect();
        nll_sum += chunk_nll(model.forward(model.ids_tensor(&flat, b, t)?), chunk)?;
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    result(nll_sum, wins.len(), t)
}

/// Activations a streamed pass holds at once, in bytes: windows are taken in groups whose
/// hidden states fit (at least one batch).
pub const STREAM_ACTIVATION_BYTES: usize = 1 << 30;

/// [`perplexity`] of the model stored in `src` (config `cfg`) with one decoder layer in memory at
/// a time: windows are taken in groups whose hidden states fit [`STREAM_ACTIVATION_BYTES`], and
/// each group goes through every layer, read from `src` and dropped after. The same batches go
/// through the same operations as in [`perplexity`], so the result is the same to the bit
/// (tested); the memory is one layer, a group's hidden states and one batch's logits, whatever
/// the size of the model.
pub fn perplexity_streamed<B: Backend>(
    src: &WeightSource,
    model_cfg: &ModelConfig,
    ids: &[u32],
    cfg: &PplConfig,
    device: &B::Device,
) -> Result<PplResult> {
    streamed::<B>(src, model_cfg, ids, cfg, device, STREAM_ACTIVATION_BYTES)
}

fn streamed<B: Backend>(
    src: &WeightSource,
    model_cfg: &ModelConfig,
    ids: &[u32],
    cfg: &PplConfig,
    device: &B::Device,
    activation_bytes: usize,
) -> Result<PplResult> {
    let wins = checked_windows(ids, cfg, model_cfg.vocab_size)?;
    let t = cfg.seq_len;
    let per_window = t * model_cfg.hidden_size * 4;
    let group = (activation_bytes / per_window).max(1).div_ceil(cfg.batch) * cfg.batch;
    let n_layers = model_cfg.num_layers();
    let bar = bar(cfg, (wins.len().div_ceil(group) * (n_layers + 2)) as u64, "steps (layers of window groups)");
    let mut m = Llama::<B>::empty(model_cfg.clone(), device)?;
    let mut nll_sum = 0f64;
    for windows in wins.chunks(group) {
        m.load_embedding(src.read_global(model_cfg, Global::Embedding)?)?;
        let mut hs = windows
            .chunks(cfg.batch)
            .map(|c| {
                let flat: Vec<u32> = c.iter().flat_map(|w| w.iter().copied()).collect();
                Ok(m.embed(m.ids_tensor(&flat, c.len(), t)?))
            })
            .collect::<Result<Vec<Tensor<B, 3>>>>()?;
        m.unload_embedding();
        bar.inc(1);
        for l in 0..n_layers {
            m.load_layer(l, &src.read_layer(model_cfg, l)?)?;
            hs = hs.into_iter().map(|h| m.layer_forward(l, h, TapSet::NONE).0).collect();
            m.unload_layer(l);
            bar.inc(1);
        }
        let norm = src.read_global(model_cfg, Global::FinalNorm)?;
        m.load_output(&norm, &src.read_global(model_cfg, Global::output(model_cfg))?)?;
        for (h, c) in hs.into_iter().zip(windows.chunks(cfg.batch)) {
            nll_sum += chunk_nll(m.logits(h), c)?;
        }
        m = Llama::<B>::empty(model_cfg.clone(), device)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    result(nll_sum, wins.len(), t)
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

    /// One layer at a time, in groups of windows, gives the whole model's perplexity to the bit,
    /// tied and untied, with a group size that splits the windows unevenly.
    #[test]
    fn the_streamed_perplexity_equals_the_whole_models_to_the_bit() {
        use slim_checkpoint::synthetic::SyntheticSpec;
        for (arch, seed) in [("llama", 3), ("qwen2", 4)] {
            let (cfg, w) = SyntheticSpec::dense(arch, 3, 24, 6, 2, 4, 30, 97, seed).build();
            let dir = tempfile::tempdir().unwrap();
            slim_checkpoint::save_model_dir(dir.path(), &cfg, &w, dir.path()).unwrap();
            let dev = Default::default();
            let model = Llama::<slim_model::Cpu>::from_weights(cfg.clone(), &w, &dev).unwrap();
            let ids: Vec<u32> = (0..400u32).map(|i| (i * 37 + 11) % 97).collect();
            let c = PplConfig { seq_len: 16, batch: 3, max_windows: None, progress: false };
            let whole = perplexity(&model, &ids, &c).unwrap();
            let src = WeightSource::open(dir.path()).unwrap();
            let one_group = perplexity_streamed::<slim_model::Cpu>(&src, &cfg, &ids, &c, &dev).unwrap();
            // 5 windows' hidden states, rounded up to 2 batches: groups of 6, the last of 1.
            let grouped = streamed::<slim_model::Cpu>(&src, &cfg, &ids, &c, &dev, 5 * 16 * 24 * 4).unwrap();
            for s in [one_group, grouped] {
                assert_eq!((s.windows, s.tokens_scored), (25, 25 * 15));
                assert_eq!(s.nll_sum.to_bits(), whole.nll_sum.to_bits(), "{arch}: {s:?} vs {whole:?}");
            }
        }
    }

    #[test]
    fn windows_drop_the_remainder_and_respect_the_limit() {
        let ids: Vec<u32> = (0..10).collect();
        assert_eq!(windows(&ids, 3, None), vec![&[0, 1, 2][..], &[3, 4, 5], &[6, 7, 8]]);
        assert_eq!(windows(&ids, 3, Some(2)).len(), 2);
        assert!(windows(&ids, 11, None).is_empty());
    }
}
