//! Seeded synthetic models. [`SyntheticSpec`]: tiny ones in memory for tests (MHA or GQA, odd
//! sizes, optional biases and per-layer, pruned-like shapes). [`ModelShape`] and
//! [`write_synthetic_model`]: real models' shapes written to disk one tensor at a time, for
//! benchmarks and backend checks without a real model (`slimllm synth-model`). [`byte_level_tokenizer`]:
//! a tokenizer for either. Deterministic across platforms.

mod byte_bpe;
mod model_dir;
mod shape;

pub use byte_bpe::{byte_level_tokenizer, write_byte_level_tokenizer, BYTE_BPE_VOCAB};
pub use model_dir::{
    check_tokenizer_source, tensor_values, write_synthetic_model, SynthOptions, SynthSummary, TokenizerSource,
    WeightDtype, CHUNK, SHARD_BYTES,
};
pub use shape::{ModelShape, ShapeSpec};

use crate::config::LayerShape;
use crate::layout::{expected_shapes, Global, Param, TensorId};
use crate::{HostTensor, ModelConfig, Weights};
use serde_json::json;

/// What to build.
#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    /// `llama` or `qwen2`.
    pub model_type: &'static str,
    /// Residual width.
    pub hidden_size: usize,
    /// Per-head width (even).
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Shapes of each layer.
    pub layers: Vec<LayerShape>,
    /// Tie lm_head to the embeddings.
    pub tied: bool,
    /// RNG seed.
    pub seed: u64,
}

impl SyntheticSpec {
    /// A dense model with `layers` uniform layers.
    #[allow(clippy::too_many_arguments)] // one argument per config field, as the tests read best
    pub fn dense(
        model_type: &'static str,
        layers: usize,
        hidden: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        ffn: usize,
        vocab: usize,
        seed: u64,
    ) -> Self {
        Self {
            model_type,
            hidden_size: hidden,
            head_dim,
            vocab_size: vocab,
            layers: vec![LayerShape::dense(heads, kv_heads, ffn); layers],
            tied: model_type == "llama",
            seed,
        }
    }

    /// Builds the config and random weights (scaled so activations stay O(1)).
    pub fn build(&self) -> (ModelConfig, Weights) {
        let first = &self.layers[0];
        let v = json!({
            "model_type": self.model_type, "hidden_size": self.hidden_size,
            "intermediate_size": first.intermediate_size, "num_hidden_layers": self.layers.len(),
            "num_attention_heads": first.num_heads, "num_key_value_heads": first.num_kv_heads,
            "head_dim": self.head_dim, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
            "vocab_size": self.vocab_size, "tie_word_embeddings": self.tied, "bos_token_id": 1, "eos_token_id": 2,
        });
        let mut cfg = ModelConfig::from_json_str(&v.to_string()).expect("synthetic config is valid");
        cfg.layers = self.layers.clone();
        let mut rng = SplitMix(self.seed);
        let mut w = Weights::new();
        // By HF name, the order the draws have always been taken in.
        for (name, shape) in expected_shapes(&cfg) {
            let n: usize = shape.iter().product();
            let fan_in = *shape.last().unwrap_or(&1) as f32;
            let id = TensorId::from_hf_name(&name).expect("the layout parses the names it spells");
            let data: Vec<f32> = match id {
                TensorId::Norm { .. } | TensorId::Global(Global::FinalNorm) => {
                    (0..n).map(|_| 1.0 + 0.2 * rng.uniform()).collect()
                }
                TensorId::Proj { param: Param::Bias, .. } => (0..n).map(|_| 0.1 * rng.uniform()).collect(),
                TensorId::Global(Global::Embedding | Global::LmHead) => (0..n).map(|_| rng.uniform()).collect(),
                TensorId::Proj { param: Param::Weight, .. } => {
                    (0..n).map(|_| rng.uniform() * (3.0 / fan_in).sqrt()).collect()
                }
            };
            w.insert(name, HostTensor::new(shape, data).expect("shape matches"));
        }
        (cfg, w)
    }
}

/// SplitMix64: a tiny, well-mixed, platform-independent generator.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Uniform in the open interval (0, 1), with 53 bits.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller on two [`Self::unit`] draws).
    pub fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
