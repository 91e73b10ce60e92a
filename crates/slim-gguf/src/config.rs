//! The model hyper-parameters of a GGUF file, and the HF `config.json` made from them.
//!
//! The importer needs them twice: to write a `config.json` that `transformers` (and slim-model) load,
//! and to check tensor shapes and undo llama.cpp's Q/K permutation, which depends on the head counts.
//! Only `llama` and `qwen2` are supported; every key is required, except where the GGUF format
//! itself defines a default that llama.cpp applies (noted at each use).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::reader::{GgufFile, MetaValue};
use crate::tokenizer::special_tokens;

/// A supported architecture (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `llama`: Q/K rows permuted by the converter, no attention biases.
    Llama,
    /// `qwen2`: not permuted, q/k/v biases.
    Qwen2,
}

impl Arch {
    /// The GGUF metadata key prefix and architecture name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// Hyper-parameters read from a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// MLP intermediate size.
    pub ffn: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Training context length.
    pub context_length: u64,
    /// Number of tokens in the tokenizer.
    pub vocab_size: usize,
    /// True when there is no separate `output.weight`.
    pub tie_word_embeddings: bool,
    /// BOS token id.
    pub bos_token_id: u32,
    /// EOS token id.
    pub eos_token_id: u32,
}

impl ModelConfig {
    /// Reads and validates the hyper-parameters.
    pub fn from_gguf(gguf: &GgufFile) -> Result<ModelConfig> {
        read(gguf).with_context(|| format!("reading model config from {}", gguf.path().display()))
    }

    /// The HF `config.json`.
    pub fn to_config_json(&self) -> Value {
        let (arch_class, model_type) = match self.arch {
            Arch::Llama => ("LlamaForCausalLM", "llama"),
            Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        };
        let mut cfg = json!({
            "architectures": [arch_class],
            "model_type": model_type,
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_head_kv,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.context_length,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        match self.arch {
            Arch::Llama => {
                cfg["attention_bias"] = json!(false);
                cfg["mlp_bias"] = json!(false);
            }
            Arch::Qwen2 => {
                // Qwen2 always has q/k/v biases (its HF class has no switch for them).
                cfg["use_sliding_window"] = json!(false);
            }
        }
        cfg
    }

    /// The HF `generation_config.json`.
    pub fn to_generation_config_json(&self) -> Value {
        json!({"bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id})
    }
}

/// Builds the HF `config.json` of a GGUF model.
pub fn build_config_json(gguf: &GgufFile) -> Result<Value> {
    Ok(ModelConfig::from_gguf(gguf)?.to_config_json())
}

fn read(g: &GgufFile) -> Result<ModelConfig> {
    let arch = match g.get_str("general.architecture")? {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        other => bail!("architecture `{other}` is not supported (supported: llama, qwen2)"),
    };
    let a = arch.name();
    let usize_key = |k: &str| -> Result<usize> { Ok(g.get_u64(&format!("{a}.{k}"))? as usize) };
    let n_layers = usize_key("block_count")?;
    let hidden = usize_key("embedding_length")?;
    let ffn = usize_key("feed_forward_length")?;
    let n_head = usize_key("attention.head_count")?;
    // llama.cpp: head_count_kv defaults to head_count when absent (no GQA).
    let n_head_kv = if g.get(&format!("{a}.attention.head_count_kv")).is_some() {
        usize_key("attention.head_count_kv")?
    } else {
        n_head
    };
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        bail!("head counts {n_head} (query) / {n_head_kv} (key-value) are not a valid grouping");
    }
    // llama.cpp: n_embd_head_k = attention.key_length if present, else n_embd / n_head.
    let head_dim = if g.get(&format!("{a}.attention.key_length")).is_some() {
        usize_key("attention.key_length")?
    } else {
        if hidden % n_head != 0 {
            bail!(
                "embedding_length {hidden} is not divisible by head_count {n_head} and attention.key_length is absent"
            );
        }
        hidden / n_head
    };
    if g.get(&format!("{a}.attention.value_length")).is_some() && usize_key("attention.value_length")? != head_dim {
        bail!("attention.value_length differs from the key length {head_dim}: not supported");
    }
    // llama.cpp: rope.dimension_count defaults to the head dim; partial rotary is not supported here.
    if g.get(&format!("{a}.rope.dimension_count")).is_some() && usize_key("rope.dimension_count")? != head_dim {
        bail!(
            "rope.dimension_count {} differs from head_dim {head_dim}: partial RoPE is not supported",
            usize_key("rope.dimension_count")?
        );
    }
    if head_dim % 2 != 0 {
        bail!("head_dim {head_dim} is odd");
    }
    let scaling_key = format!("{a}.rope.scaling.type");
    if g.get(&scaling_key).is_some() && g.get_str(&scaling_key)? != "none" {
        bail!("RoPE scaling `{}` is not supported", g.get_str(&scaling_key)?);
    }
    let rms_eps = float_key(g, &format!("{a}.attention.layer_norm_rms_epsilon"))?;
    let rope_theta = float_key(g, &format!("{a}.rope.freq_base"))?;
    let context_length = g.get_u64(&format!("{a}.context_length"))?;

    let vocab_size = g.get_str_array("tokenizer.ggml.tokens")?.len();
    let sp = special_tokens(g, vocab_size)?;
    let bos_token_id = sp.bos.with_context(|| "metadata key `tokenizer.ggml.bos_token_id` missing".to_string())?;
    let eos_token_id = sp.eos.with_context(|| "metadata key `tokenizer.ggml.eos_token_id` missing".to_string())?;
    let tie_word_embeddings = g.tensors().iter().all(|t| t.name != "output.weight");
    Ok(ModelConfig {
        arch,
        n_layers,
        hidden,
        ffn,
        n_head,
        n_head_kv,
        head_dim,
        rms_eps,
        rope_theta,
        context_length,
        vocab_size,
        tie_word_embeddings,
        bos_token_id,
        eos_token_id,
    })
}

/// A float key; an f32 is turned into the f64 with the same shortest decimal form
/// (so 1e-5 stored as f32 is written as 1e-5, not 9.999999747378752e-6).
fn float_key(g: &GgufFile, key: &str) -> Result<f64> {
    match g.require(key)? {
        MetaValue::F32(x) => Ok(x.to_string().parse::<f64>().expect("f32 Display output parses as f64")),
        _ => g.get_f64(key),
    }
}
