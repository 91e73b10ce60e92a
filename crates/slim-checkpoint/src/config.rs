//! `config.json`: the HF fields of LLaMA and Qwen2 models plus SlimLLM's per-layer shapes.
//!
//! Dense models are described by the standard HF fields alone.
//! A pruned model keeps those fields (with the dense values, for reference) and adds
//! [`SLIMLLM_KEY`], an object `{"format_version": 2, "base_model_type": "llama", "layers":
//! [LayerShape, ...]}` with one entry per decoder layer; when present it is authoritative for
//! every layer. Since format 2 a pruned model's `model_type` is [`SLIMLLM_MODEL_TYPE`], with
//! `architectures` and `auto_map` naming the modeling code that `save_model_dir` writes beside it
//! (`configuration_slimllm.py`, `modeling_slimllm.py`), so that transformers loads it with
//! `trust_remote_code=True` and, without it, refuses with its own message rather than a size
//! mismatch. Format 1 (`model_type` llama or qwen2 with the same per-layer list) is still read.

use anyhow::{bail, ensure, format_err, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Key in `config.json` under which per-layer shapes are stored.
pub const SLIMLLM_KEY: &str = "slimllm";
/// Version of the object stored under [`SLIMLLM_KEY`]: 2 added `base_model_type` and the
/// `slimllm` model type; 1 is still read.
pub const SLIMLLM_FORMAT_VERSION: u64 = 2;
/// `model_type` of a pruned model's `config.json` (format 2), whose base is `slimllm.base_model_type`.
pub const SLIMLLM_MODEL_TYPE: &str = "slimllm";
/// The transformers class of a pruned model, in `modeling_slimllm.py`.
pub const SLIMLLM_ARCHITECTURE: &str = "SlimLlmForCausalLM";
/// The transformers code of a pruned model by file name: the modules `auto_map` names, which
/// `save_model_dir` writes beside the weights of every model whose config has [`SLIMLLM_KEY`].
pub const SLIMLLM_CODE_FILES: [(&str, &str); 2] = [
    ("configuration_slimllm.py", include_str!("../python/configuration_slimllm.py")),
    ("modeling_slimllm.py", include_str!("../python/modeling_slimllm.py")),
];

/// Supported architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama-2/3 and SmolLM2 layout (MHA or GQA, no q/k/v bias).
    Llama,
    /// Qwen2: q/k/v biases, usually untied lm_head.
    Qwen2,
}

impl Arch {
    /// The architecture an HF `model_type` names (`llama`, `qwen2`).
    pub fn from_model_type(model_type: &str) -> Result<Arch> {
        match model_type {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            other => bail!("unsupported model_type `{other}` (supported: llama, qwen2, {SLIMLLM_MODEL_TYPE})"),
        }
    }

    /// The HF `model_type` of a dense model of this architecture.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// The transformers class of a dense model of this architecture.
    pub fn architecture(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// Shapes of one decoder layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShape {
    /// Query heads kept in this layer.
    pub num_heads: usize,
    /// Key/value heads of this layer.
    pub num_kv_heads: usize,
    /// For each query head, the KV head it reads (sorted, contiguous groups).
    pub kv_head_of: Vec<usize>,
    /// Width of the SwiGLU intermediate.
    pub intermediate_size: usize,
    /// Whether o_proj has a bias (added by regression recovery).
    pub o_proj_bias: bool,
    /// Whether down_proj has a bias (added by regression recovery).
    pub down_proj_bias: bool,
}

impl LayerShape {
    /// The dense shape: `num_heads` query heads in contiguous groups over `num_kv_heads`.
    pub fn dense(num_heads: usize, num_kv_heads: usize, intermediate_size: usize) -> Self {
        let group = num_heads / num_kv_heads.max(1);
        Self {
            num_heads,
            num_kv_heads,
            kv_head_of: (0..num_heads).map(|h| h / group.max(1)).collect(),
            intermediate_size,
            o_proj_bias: false,
            down_proj_bias: false,
        }
    }

    fn validate(&self, layer: usize) -> Result<()> {
        ensure!(self.num_heads > 0, "layer {layer}: num_heads is 0");
        ensure!(self.num_kv_heads > 0, "layer {layer}: num_kv_heads is 0");
        ensure!(self.intermediate_size > 0, "layer {layer}: intermediate_size is 0");
        ensure!(
            self.kv_head_of.len() == self.num_heads,
            "layer {layer}: kv_head_of has {} entries for {} heads",
            self.kv_head_of.len(),
            self.num_heads
        );
        ensure!(
            self.kv_head_of.iter().all(|&k| k < self.num_kv_heads),
            "layer {layer}: kv_head_of refers to a KV head >= num_kv_heads ({})",
            self.num_kv_heads
        );
        ensure!(
            self.kv_head_of.windows(2).all(|w| w[0] <= w[1]),
            "layer {layer}: kv_head_of must be sorted (heads stored group by group)"
        );
        Ok(())
    }
}

/// Everything the runtime needs to know about a model's shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Architecture family.
    pub arch: Arch,
    /// Residual-stream width `d`.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Context length the model was trained for.
    pub max_position_embeddings: usize,
    /// lm_head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// q/k/v projections have biases (Qwen2).
    pub qkv_bias: bool,
    /// Beginning-of-sequence token, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token, if any.
    pub eos_token_id: Option<u32>,
    /// One entry per decoder layer.
    pub layers: Vec<LayerShape>,
    /// The original JSON, kept so that unknown fields survive a save.
    pub raw: Map<String, Value>,
}

/// Upper bounds on the sizes a config may declare, each far beyond any released LLaMA or Qwen
/// model (LLaMA-3.1-405B: 126 layers, width 16,384, 128 heads, FFN 53,248, vocabulary 128,256),
/// so that a corrupt or hostile config.json is an error, not an allocation of billions of
/// layers (found by the config_json fuzz target: 300,001 layers took seconds per load).
const MAX_DIM: [(&str, u64); 8] = [
    ("num_hidden_layers", 4096),
    ("hidden_size", 1 << 20),
    ("num_attention_heads", 1 << 14),
    ("num_key_value_heads", 1 << 14),
    ("head_dim", 1 << 14),
    ("intermediate_size", 1 << 22),
    ("vocab_size", 1 << 24),
    ("max_position_embeddings", 1 << 26),
];

fn get_usize(m: &Map<String, Value>, key: &str) -> Result<usize> {
    let v = m.get(key).ok_or_else(|| format_err!("missing key `{key}`"))?;
    let n = v.as_u64().ok_or_else(|| format_err!("key `{key}` is not a non-negative integer: {v}"))?;
    if let Some((_, max)) = MAX_DIM.iter().find(|(k, _)| *k == key) {
        ensure!(n <= *max, "key `{key}` is {n}, above the limit of {max}");
    }
    usize::try_from(n).with_context(|| format!("key `{key}` too large"))
}

fn get_f64(m: &Map<String, Value>, key: &str) -> Result<f64> {
    let v = m.get(key).ok_or_else(|| format_err!("missing key `{key}`"))?;
    v.as_f64().ok_or_else(|| format_err!("key `{key}` is not a number: {v}"))
}

fn get_opt_token(m: &Map<String, Value>, key: &str) -> Result<Option<u32>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => match a.first() {
            Some(v) => Ok(Some(v.as_u64().ok_or_else(|| format_err!("key `{key}` is not a token id"))? as u32)),
            None => Ok(None),
        },
        Some(v) => Ok(Some(v.as_u64().ok_or_else(|| format_err!("key `{key}` is not a token id: {v}"))? as u32)),
    }
}

impl ModelConfig {
    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| crate::weights::io_error("reading", &path, e))?;
        Self::from_json_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("config.json is not valid JSON")?;
        let Value::Object(m) = value else { bail!("config.json is not a JSON object") };
        let model_type =
            m.get("model_type").and_then(Value::as_str).ok_or_else(|| format_err!("missing key `model_type`"))?;
        let slim = m.get(SLIMLLM_KEY);
        let base_model_type = match slim.and_then(|v| v.get("base_model_type")) {
            None => None,
            Some(v) => {
                Some(v.as_str().ok_or_else(|| format_err!("`{SLIMLLM_KEY}.base_model_type` is not a string: {v}"))?)
            }
        };
        let arch = match (model_type, base_model_type) {
            (SLIMLLM_MODEL_TYPE, None) => {
                bail!("model_type `{SLIMLLM_MODEL_TYPE}` needs `{SLIMLLM_KEY}.base_model_type` (llama or qwen2)")
            }
            (SLIMLLM_MODEL_TYPE, Some(base)) => Arch::from_model_type(base)
                .with_context(|| format!("`{SLIMLLM_KEY}.base_model_type` of a `{SLIMLLM_MODEL_TYPE}` model"))?,
            (own, base) => {
                let arch = Arch::from_model_type(own)?;
                ensure!(
                    base.is_none_or(|b| b == own),
                    "model_type is `{own}` but `{SLIMLLM_KEY}.base_model_type` is `{}`",
                    base.unwrap_or_default()
                );
                arch
            }
        };
        let hidden_size = get_usize(&m, "hidden_size")?;
        let num_layers = get_usize(&m, "num_hidden_layers")?;
        let num_heads = get_usize(&m, "num_attention_heads")?;
        let num_kv_heads = match m.get("num_key_value_heads") {
            None | Some(Value::Null) => num_heads,
            Some(_) => get_usize(&m, "num_key_value_heads")?,
        };
        ensure!(num_heads > 0 && num_kv_heads > 0, "num_attention_heads and num_key_value_heads must be positive");
        ensure!(
            num_heads % num_kv_heads == 0,
            "num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"
        );
        let head_dim = match m.get("head_dim") {
            None | Some(Value::Null) => {
                ensure!(
                    hidden_size % num_heads == 0,
                    "hidden_size {hidden_size} not divisible by num_attention_heads {num_heads} and no head_dim"
                );
                hidden_size / num_heads
            }
            Some(_) => get_usize(&m, "head_dim")?,
        };
        ensure!(head_dim % 2 == 0 && head_dim > 0, "head_dim {head_dim} must be even and positive for RoPE");
        let intermediate_size = get_usize(&m, "intermediate_size")?;
        let qkv_bias = match arch {
            Arch::Qwen2 => true,
            Arch::Llama => m.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
        };
        // The runtime reads the activation through `layout::Activation::of`; one it lacks is refused here.
        crate::layout::Activation::from_config_json(&m)?;
        if m.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            bail!("rope_scaling is not supported");
        }
        let layers = match slim {
            None => vec![LayerShape::dense(num_heads, num_kv_heads, intermediate_size); num_layers],
            Some(v) => {
                let version = v
                    .get("format_version")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format_err!("`{SLIMLLM_KEY}.format_version` missing"))?;
                ensure!(
                    (1..=SLIMLLM_FORMAT_VERSION).contains(&version),
                    "`{SLIMLLM_KEY}.format_version` is {version}; this build reads 1 to {SLIMLLM_FORMAT_VERSION}"
                );
                let layers: Vec<LayerShape> = serde_json::from_value(v.get("layers").cloned().unwrap_or(Value::Null))
                    .with_context(|| format!("`{SLIMLLM_KEY}.layers`"))?;
                ensure!(
                    layers.len() == num_layers,
                    "`{SLIMLLM_KEY}.layers` has {} entries, num_hidden_layers is {num_layers}",
                    layers.len()
                );
                layers
            }
        };
        for (i, l) in layers.iter().enumerate() {
            l.validate(i)?;
            // Pruning only removes: no layer is wider than the dense shape the config declares.
            ensure!(
                l.num_heads <= num_heads && l.num_kv_heads <= num_kv_heads && l.intermediate_size <= intermediate_size,
                "layer {i}: {} heads, {} KV heads, {} channels exceed the dense {num_heads}, {num_kv_heads}, \
                 {intermediate_size}",
                l.num_heads,
                l.num_kv_heads,
                l.intermediate_size
            );
        }
        Ok(Self {
            arch,
            hidden_size,
            vocab_size: get_usize(&m, "vocab_size")?,
            head_dim,
            rms_norm_eps: get_f64(&m, "rms_norm_eps")?,
            rope_theta: m.get("rope_theta").map(|_| get_f64(&m, "rope_theta")).transpose()?.unwrap_or(10000.0),
            max_position_embeddings: get_usize(&m, "max_position_embeddings")?,
            tie_word_embeddings: m.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            qkv_bias,
            bos_token_id: get_opt_token(&m, "bos_token_id")?,
            eos_token_id: get_opt_token(&m, "eos_token_id")?,
            layers,
            raw: m,
        })
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The dense layer shape the HF fields describe.
    fn hf_dense_layer(&self) -> Option<LayerShape> {
        let heads = self.raw.get("num_attention_heads")?.as_u64()? as usize;
        let kv = self.raw.get("num_key_value_heads").and_then(Value::as_u64).map_or(heads, |k| k as usize);
        let ffn = self.raw.get("intermediate_size")?.as_u64()? as usize;
        Some(LayerShape::dense(heads, kv, ffn))
    }

    /// Whether some layer differs from the dense shape the HF fields describe, so that
    /// [`ModelConfig::to_json`] writes [`SLIMLLM_KEY`] and the model needs the SlimLLM modeling code.
    pub fn is_pruned(&self) -> bool {
        let dense = self.hf_dense_layer();
        self.layers.iter().any(|l| Some(l) != dense.as_ref())
    }

    /// The JSON to write: the original fields, with [`SLIMLLM_KEY`] set from `layers` unless
    /// every layer has the shape the HF fields describe ([`ModelConfig::is_pruned`]). A pruned
    /// model gets `model_type` [`SLIMLLM_MODEL_TYPE`], `architectures` [`SLIMLLM_ARCHITECTURE`] and
    /// the `auto_map` of the files `save_model_dir` writes beside it; a dense one keeps its fields
    /// (or gets back its base type and class, if it was read as a `slimllm` model).
    pub fn to_json(&self) -> Value {
        let mut m = self.raw.clone();
        m.remove(SLIMLLM_KEY);
        if self.is_pruned() {
            m.insert("model_type".into(), json!(SLIMLLM_MODEL_TYPE));
            m.insert("architectures".into(), json!([SLIMLLM_ARCHITECTURE]));
            m.insert(
                "auto_map".into(),
                json!({
                    "AutoConfig": "configuration_slimllm.SlimLlmConfig",
                    "AutoModelForCausalLM": "modeling_slimllm.SlimLlmForCausalLM",
                }),
            );
            m.insert(
                SLIMLLM_KEY.into(),
                json!({
                    "format_version": SLIMLLM_FORMAT_VERSION,
                    "base_model_type": self.arch.model_type(),
                    "layers": self.layers,
                }),
            );
        } else if m.get("model_type").and_then(Value::as_str) == Some(SLIMLLM_MODEL_TYPE) {
            m.insert("model_type".into(), json!(self.arch.model_type()));
            m.insert("architectures".into(), json!([self.arch.architecture()]));
            m.remove("auto_map");
        }
        m.insert("num_hidden_layers".into(), json!(self.layers.len()));
        m.insert("head_dim".into(), json!(self.head_dim));
        Value::Object(m)
    }

    /// Parameter count of the model these shapes describe (tied embeddings counted once).
    pub fn num_params(&self) -> u64 {
        let d = self.hidden_size as u64;
        let v = self.vocab_size as u64;
        let mut n = v * d + d; // embeddings + final norm
        if !self.tie_word_embeddings {
            n += v * d;
        }
        n + (0..self.layers.len()).map(|l| self.layer_params(l)).sum::<u64>()
    }

    /// Parameter count of decoder layer `l` (norms, projections and their biases).
    pub fn layer_params(&self, l: usize) -> u64 {
        let (d, dh) = (self.hidden_size as u64, self.head_dim as u64);
        let l = &self.layers[l];
        let (hq, hk, m) = (l.num_heads as u64, l.num_kv_heads as u64, l.intermediate_size as u64);
        let mut n = 2 * d; // norms
        n += d * hq * dh + 2 * d * hk * dh + hq * dh * d; // q, k, v, o
        if self.qkv_bias {
            n += hq * dh + 2 * hk * dh;
        }
        n += 3 * d * m;
        n + d * (l.o_proj_bias as u64 + l.down_proj_bias as u64)
    }
}
