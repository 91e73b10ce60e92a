//! Text generation: greedy or sampled (temperature, nucleus) decoding with the KV cache.

use anyhow::{ensure, Result};
use burn_tensor::backend::Backend;
use slim_model::{tensor_to_host, Llama};

/// How to pick each next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenConfig {
    /// Tokens to generate at most (generation also stops at the model's EOS).
    pub max_new: usize,
    /// 0 is greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities sum to at
    /// least this (1 keeps all).
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Recompute the whole prefix every step instead of using the KV cache (a check).
    pub recompute: bool,
}

impl GenConfig {
    /// Greedy decoding of `max_new` tokens.
    pub fn greedy(max_new: usize) -> Self {
        Self { max_new, temperature: 0.0, top_p: 1.0, seed: 0, recompute: false }
    }
}

/// Continues `prompt` (token ids) and returns the new ids, EOS excluded.
pub fn generate<B: Backend>(model: &Llama<B>, prompt: &[u32], cfg: &GenConfig) -> Result<Vec<u32>> {
    ensure!(!prompt.is_empty(), "an empty prompt");
    ensure!(
        cfg.temperature >= 0.0 && cfg.temperature.is_finite(),
        "temperature must be finite and at least 0, got {}",
        cfg.temperature
    );
    ensure!(cfg.top_p > 0.0 && cfg.top_p <= 1.0, "top-p must lie in (0, 1], got {}", cfg.top_p);
    let eos = model.config().eos_token_id;
    let mut rng = slim_model::SplitMix(cfg.seed);
    let mut ids = prompt.to_vec();
    let mut cache = model.new_cache(1);
    let mut new = Vec::new();
    let mut fed = 0;
    for _ in 0..cfg.max_new {
        let logits = if cfg.recompute {
            model.forward(model.ids_tensor(&ids, 1, ids.len())?)
        } else {
            // The logits of the last position only: a prompt's other positions need none, nor their last
            // layer's attention and MLP.
            let step = &ids[fed..];
            let h = model.last_hidden_cached(model.ids_tensor(step, 1, step.len())?, &mut cache)?;
            fed = ids.len();
            model.logits(h)
        };
        let [_, t, v] = logits.dims();
        let last = tensor_to_host(logits.slice([0..1, t - 1..t, 0..v]).reshape([v]))?;
        let next = pick(&last.data, cfg.temperature, cfg.top_p, rng.unit()) as u32;
        if Some(next) == eos {
            break;
        }
        ids.push(next);
        new.push(next);
    }
    Ok(new)
}

/// The next token from `logits`: the argmax when `temperature` is 0, else the token where
/// `u` (uniform in [0, 1)) falls in the cumulative distribution of softmax(logits / T)
/// restricted to its top-p nucleus (most likely first, ties by lower id).
pub fn pick(logits: &[f32], temperature: f64, top_p: f64, u: f64) -> usize {
    let argmax = || logits.iter().enumerate().fold(0, |best, (i, &x)| if x > logits[best] { i } else { best });
    if temperature == 0.0 {
        return argmax();
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let mut p: Vec<(usize, f64)> =
        logits.iter().enumerate().map(|(i, &x)| (i, ((x as f64 - max) / temperature).exp())).collect();
    let z: f64 = p.iter().map(|x| x.1).sum();
    p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0;
    let mut mass = 0.0;
    for &(_, w) in &p {
        kept += 1;
        mass += w / z;
        if mass >= top_p {
            break;
        }
    }
    let nucleus = &p[..kept];
    let total: f64 = nucleus.iter().map(|x| x.1).sum();
    let mut acc = 0.0;
    for &(i, w) in nucleus {
        acc += w / total;
        if u < acc {
            return i;
        }
    }
    nucleus.last().map_or_else(argmax, |x| x.0)
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn zero_temperature_is_argmax_with_the_first_of_ties() {
        assert_eq!(pick(&[0.1, 3.0, 3.0, -1.0], 0.0, 1.0, 0.99), 1);
    }

    #[test]
    fn sampling_follows_the_softmax_and_the_nucleus() {
        // probabilities at T = 1: softmax of ln(0.5, 0.3, 0.2) = 0.5, 0.3, 0.2
        let logits = [0.3f32.ln(), 0.5f32.ln(), 0.2f32.ln()];
        assert_eq!(pick(&logits, 1.0, 1.0, 0.49), 1);
        assert_eq!(pick(&logits, 1.0, 1.0, 0.51), 0);
        assert_eq!(pick(&logits, 1.0, 1.0, 0.81), 2);
        // top-p 0.75 keeps {1, 0} (0.5 + 0.3 ≥ 0.75), renormalized to 0.625 / 0.375.
        assert_eq!(pick(&logits, 1.0, 0.75, 0.62), 1);
        assert_eq!(pick(&logits, 1.0, 0.75, 0.99), 0);
        // top-p small enough keeps only the most likely token.
        assert_eq!(pick(&logits, 1.0, 0.1, 0.99), 1);
        // a high temperature flattens: u = 0.4 falls past token 1's share (< 0.4 once flat).
        assert_eq!(pick(&logits, 100.0, 1.0, 0.4), 0);
    }

    #[test]
    fn empirical_frequencies_match_the_probabilities() {
        let logits = [0.3f32.ln(), 0.5f32.ln(), 0.2f32.ln()];
        let mut rng = slim_model::SplitMix(5);
        let mut counts = [0usize; 3];
        let n = 20_000;
        for _ in 0..n {
            counts[pick(&logits, 1.0, 1.0, rng.unit())] += 1;
        }
        for (c, p) in counts.iter().zip([0.3, 0.5, 0.2]) {
            // 4 standard deviations of a binomial proportion.
            assert!((*c as f64 / n as f64 - p).abs() < 4.0 * (p * (1.0 - p) / n as f64).sqrt(), "{counts:?}");
        }
    }
}
