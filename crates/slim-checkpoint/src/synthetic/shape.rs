//! The shapes of real models, by name, for `slimllm synth-model`: every `config.json` value of the
//! published model (hidden size, heads, KV heads, head width, FFN width, vocabulary, tying, RoPE
//! base, norm epsilon, context length, special token ids), so that a model of random weights in
//! this shape loads, runs and costs what the real one does.

use serde::Serialize;
use serde_json::{json, Value};

use crate::Arch;

/// A published model whose shape `slimllm synth-model` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ModelShape {
    /// SmolLM2-135M (llama, GQA 9/3).
    #[serde(rename = "smollm2-135m")]
    Smollm2_135m,
    /// Qwen2.5-0.5B (qwen2, GQA 14/2, tied).
    #[serde(rename = "qwen2.5-0.5b")]
    Qwen25_0_5b,
    /// Qwen2.5-1.5B (qwen2, GQA 12/2, tied).
    #[serde(rename = "qwen2.5-1.5b")]
    Qwen25_1_5b,
    /// LLaMA-7B (LLaMA-1, MHA 32 heads).
    #[serde(rename = "llama-7b")]
    Llama7b,
    /// LLaMA-13B (LLaMA-1, MHA 40 heads).
    #[serde(rename = "llama-13b")]
    Llama13b,
}

slim_artifact::kinds!(ModelShape, "model shape" {
    Smollm2_135m => "SmolLM2-135M: llama, hidden 576, 30 layers, 9 heads / 3 KV, FFN 1536, vocab 49152, tied",
    Qwen25_0_5b => "Qwen2.5-0.5B: qwen2, hidden 896, 24 layers, 14 heads / 2 KV, FFN 4864, vocab 151936, tied",
    Qwen25_1_5b => "Qwen2.5-1.5B: qwen2, hidden 1536, 28 layers, 12 heads / 2 KV, FFN 8960, vocab 151936, tied",
    Llama7b => "LLaMA-7B (LLaMA-1): hidden 4096, 32 layers, 32 heads, FFN 11008, vocab 32000, untied",
    Llama13b => "LLaMA-13B (LLaMA-1): hidden 5120, 40 layers, 40 heads, FFN 13824, vocab 32000, untied",
});

/// Every value of a model's `config.json` that [`crate::ModelConfig`] reads, and a few more that
/// transformers reads (context length, token ids).
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeSpec {
    /// Architecture (`llama` or `qwen2`; qwen2 has q/k/v biases).
    pub arch: Arch,
    /// Residual width.
    pub hidden_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads per layer.
    pub num_heads: usize,
    /// Key/value heads per layer.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// SwiGLU intermediate width.
    pub intermediate_size: usize,
    /// Vocabulary size (embedding rows).
    pub vocab_size: usize,
    /// lm_head shares the embedding matrix.
    pub tied: bool,
    /// RoPE base.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Context length the model was trained for.
    pub max_position_embeddings: usize,
    /// Beginning-of-sequence token id.
    pub bos_token_id: u32,
    /// End-of-sequence token id.
    pub eos_token_id: u32,
}

impl ModelShape {
    /// The preset's config values, as in the model's published `config.json`.
    ///
    /// SmolLM2-135M and Qwen2.5-0.5B are those of `data/models/smollm2-135m` and
    /// `data/models/qwen2.5-coder-0.5b` (fetched from their GGUF files), except that Qwen2.5-0.5B is
    /// tied, as published (the GGUF import writes its `output.weight` as an untied lm_head).
    /// Qwen2.5-1.5B is the base model's config; LLaMA-7B and -13B are LLaMA-1's
    /// (`huggyllama/llama-7b`: eps 1e-6, context 2048; LLaMA-2 has 1e-5 and 4096).
    pub fn spec(self) -> ShapeSpec {
        let llama1 = |hidden, layers, heads, ffn| ShapeSpec {
            arch: Arch::Llama,
            hidden_size: hidden,
            num_layers: layers,
            num_heads: heads,
            num_kv_heads: heads,
            head_dim: hidden / heads,
            intermediate_size: ffn,
            vocab_size: 32000,
            tied: false,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 2048,
            bos_token_id: 1,
            eos_token_id: 2,
        };
        let qwen25 = |hidden, layers, heads, ffn, head_dim, max_pos, eos| ShapeSpec {
            arch: Arch::Qwen2,
            hidden_size: hidden,
            num_layers: layers,
            num_heads: heads,
            num_kv_heads: 2,
            head_dim,
            intermediate_size: ffn,
            vocab_size: 151936,
            tied: true,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: max_pos,
            bos_token_id: 151643,
            eos_token_id: eos,
        };
        match self {
            ModelShape::Smollm2_135m => ShapeSpec {
                arch: Arch::Llama,
                hidden_size: 576,
                num_layers: 30,
                num_heads: 9,
                num_kv_heads: 3,
                head_dim: 64,
                intermediate_size: 1536,
                vocab_size: 49152,
                tied: true,
                rope_theta: 100_000.0,
                rms_norm_eps: 1e-5,
                max_position_embeddings: 8192,
                bos_token_id: 1,
                eos_token_id: 2,
            },
            ModelShape::Qwen25_0_5b => qwen25(896, 24, 14, 4864, 64, 32768, 151645),
            ModelShape::Qwen25_1_5b => qwen25(1536, 28, 12, 8960, 128, 131072, 151643),
            ModelShape::Llama7b => llama1(4096, 32, 32, 11008),
            ModelShape::Llama13b => llama1(5120, 40, 40, 13824),
        }
    }
}

impl ShapeSpec {
    /// The `config.json` of a dense model of this shape, its weights stored as `torch_dtype`
    /// (`float32`, `float16`, `bfloat16`).
    pub fn config_json(&self, torch_dtype: &str) -> Value {
        let mut v = json!({
            "architectures": [self.arch.architecture()],
            "model_type": self.arch.model_type(),
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tied,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": torch_dtype,
        });
        let extra = match self.arch {
            Arch::Llama => json!({"attention_bias": false, "mlp_bias": false}),
            Arch::Qwen2 => json!({"use_sliding_window": false}),
        };
        v.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        v
    }

    /// Parameters of the model (tied embeddings counted once).
    pub fn num_params(&self) -> u64 {
        let (d, dh, v) = (self.hidden_size as u64, self.head_dim as u64, self.vocab_size as u64);
        let (hq, hk, m) = (self.num_heads as u64, self.num_kv_heads as u64, self.intermediate_size as u64);
        let mut layer = 2 * d + d * hq * dh + 2 * d * hk * dh + hq * dh * d + 3 * d * m;
        if self.arch == Arch::Qwen2 {
            layer += hq * dh + 2 * hk * dh;
        }
        v * d * if self.tied { 1 } else { 2 } + d + self.num_layers as u64 * layer
    }
}
