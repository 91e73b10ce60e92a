//! `slimllm synth-model` through the binary: a 2-layer slice of a preset loads with the preset's
//! config values and a working tokenizer, the same seed writes the same bytes, and the full
//! 30-layer SmolLM2-135M shape gives finite logits of a stated scale. (Bad invocations are rows of
//! `bad_input.rs`.)

use slim_model::burn_tensor::backend::Backend;
use slim_model::{dispatch, BackendKind, BackendRun, Llama, ModelConfig, Weights};
use std::path::{Path, PathBuf};
use std::process::Command;

fn synth(out: &Path, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_slimllm")).args(["synth-model", "--out"]).arg(out).args(args).output();
    let o = o.unwrap();
    assert!(o.status.success(), "synth-model {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_two_layer_slice_has_the_presets_config_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    synth(&a, &["--shape", "smollm2-135m", "--layers", "2", "--seed", "1"]);
    let cfg = ModelConfig::load(&a).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_layers(), cfg.head_dim, cfg.vocab_size), (576, 2, 64, 49152));
    let l = &cfg.layers[0];
    assert_eq!((l.num_heads, l.num_kv_heads, l.intermediate_size), (9, 3, 1536));
    assert_eq!((cfg.tie_word_embeddings, cfg.rope_theta, cfg.rms_norm_eps), (true, 100_000.0, 1e-5));
    assert_eq!(cfg.raw["synthetic"]["shape"], "smollm2-135m");
    Weights::load(&a).unwrap().check_against(&cfg).unwrap();
    let tok = slim_model::Tokenizer::load(&a).unwrap();
    let ids = tok.encode_plain("The byte-level tokenizer takes any text: 1234, naïve.").unwrap();
    assert!(!ids.is_empty() && ids.iter().all(|&i| (i as usize) < cfg.vocab_size), "{ids:?}");
    // Same seed, same bytes; another seed, other weights; --force replaces.
    synth(&b, &["--shape", "smollm2-135m", "--layers", "2", "--seed", "1"]);
    synth(&c, &["--shape", "smollm2-135m", "--layers", "2", "--seed", "2"]);
    let st = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(st(&a) == st(&b), "the same seed wrote different weights");
    assert!(st(&a) != st(&c), "two seeds wrote the same weights");
    synth(&c, &["--shape", "smollm2-135m", "--layers", "2", "--seed", "1", "--force"]);
    assert!(st(&a) == st(&c), "--force did not replace the model");
}

/// Logits of one forward pass over `ids`, as f32.
struct Logits {
    dir: PathBuf,
    ids: Vec<u32>,
}

impl BackendRun for Logits {
    type Output = Vec<f32>;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Vec<f32>> {
        let model = Llama::<B>::load(&self.dir, &device)?;
        let logits = model.forward(model.ids_tensor(&self.ids, 1, self.ids.len())?);
        Ok(slim_model::tensor_to_host(logits)?.data)
    }
}

#[test]
fn the_full_smollm2_shape_gives_finite_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smol");
    synth(&dir, &["--shape", "smollm2-135m"]);
    let mut rng = slim_model::SplitMix(5);
    let ids: Vec<u32> = (0..32).map(|_| rng.below(49152) as u32).collect();
    let logits = dispatch(BackendKind::Cpu, Logits { dir, ids }).unwrap();
    assert_eq!(logits.len(), 32 * 49152);
    assert!(logits.iter().all(|v| v.is_finite()), "non-finite logits after 30 layers");
    let n = logits.len() as f64;
    let mean = logits.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (logits.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!("smollm2-135m, 30 layers, seed 0: logits mean {mean:.3}, std {std:.3}, max |logit| {max:.2}");
    // The final norm leaves rows of RMS about 1 and the tied lm_head is uniform in [-1, 1), so a
    // logit's standard deviation is about sqrt(576 / 3) = 13.9.
    assert!((8.0..20.0).contains(&std), "logit std {std}");
}
