//! What a LLaMA-family model is made of, spelled once: the name of every tensor in the Hugging
//! Face layout and in GGUF, its shape from a [`ModelConfig`], and the norm and activation the
//! runtime implements.
//!
//! Every other crate builds tensor names through this module (surgery, the runtime's loader, the
//! pipeline, the GGUF importer), so a renamed tensor or a new architecture is one edit here.
//! A tensor is a [`TensorId`]: one of the [`Global`] tensors, a layer's [`LayerNorm`] weight, or a
//! [`Proj`]ection's weight or bias. Its HF and GGUF names are exact inverses of
//! [`TensorId::from_hf_name`] and [`TensorId::from_gguf_name`] (tested for every tensor of llama
//! and qwen2 configs, dense and pruned), so an importer and an exporter map names the same way.
//!
//! | tensor | HF name | GGUF name |
//! |---|---|---|
//! | embedding | `model.embed_tokens.weight` | `token_embd.weight` |
//! | final norm | `model.norm.weight` | `output_norm.weight` |
//! | lm_head (untied only) | `lm_head.weight` | `output.weight` |
//! | input norm of layer l | `model.layers.{l}.input_layernorm.weight` | `blk.{l}.attn_norm.weight` |
//! | post-attention norm | `model.layers.{l}.post_attention_layernorm.weight` | `blk.{l}.ffn_norm.weight` |
//! | q, k, v, o | `model.layers.{l}.self_attn.{q,k,v,o}_proj.{weight,bias}` | `blk.{l}.attn_{q,k,v,output}.…` |
//! | gate, up, down | `model.layers.{l}.mlp.{gate,up,down}_proj.{weight,bias}` | `blk.{l}.ffn_{gate,up,down}.…` |
//!
//! Biases exist where the config says so: q/k/v with `qkv_bias` (qwen2), o_proj and down_proj
//! where a layer's shape has them (added by recovery); gate and up never have one.

use crate::ModelConfig;
use anyhow::{bail, format_err, Result};
use serde_json::Value;
use std::collections::BTreeMap;

/// The tensors outside the decoder layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Global {
    /// The token embedding, `[vocab, d]`.
    Embedding,
    /// The norm after the last layer, `[d]`.
    FinalNorm,
    /// The output projection, `[vocab, d]`; absent when tied to the embedding.
    LmHead,
}

impl Global {
    /// Every global tensor, in the order a model file lists them.
    pub const ALL: [Global; 3] = [Global::Embedding, Global::FinalNorm, Global::LmHead];

    /// The HF module (the name without `.weight`), as Linear-style loaders take it.
    pub fn module(self) -> &'static str {
        match self {
            Global::Embedding => "model.embed_tokens",
            Global::FinalNorm => "model.norm",
            Global::LmHead => "lm_head",
        }
    }

    /// The HF tensor name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Global::Embedding => "model.embed_tokens.weight",
            Global::FinalNorm => "model.norm.weight",
            Global::LmHead => "lm_head.weight",
        }
    }

    /// The GGUF tensor name.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Global::Embedding => "token_embd.weight",
            Global::FinalNorm => "output_norm.weight",
            Global::LmHead => "output.weight",
        }
    }

    /// The tensor that maps the final hidden state to logits: the lm_head, or the embedding
    /// when `cfg` ties them.
    pub fn output(cfg: &ModelConfig) -> Global {
        if cfg.tie_word_embeddings {
            Global::Embedding
        } else {
            Global::LmHead
        }
    }
}

/// The two norms of a decoder layer (weights only: RMSNorm has no bias).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerNorm {
    /// Before attention (`input_layernorm`, GGUF `attn_norm`).
    Input,
    /// Before the MLP (`post_attention_layernorm`, GGUF `ffn_norm`).
    PostAttention,
}

impl LayerNorm {
    /// Both norms, in layer order.
    pub const ALL: [LayerNorm; 2] = [LayerNorm::Input, LayerNorm::PostAttention];

    /// The HF name of this norm's weight in layer `layer`.
    pub fn weight(self, layer: usize) -> String {
        format!("{LAYER_PREFIX}{layer}.{}.weight", self.hf_part())
    }

    /// The GGUF name of this norm's weight in layer `layer`.
    pub fn gguf_name(self, layer: usize) -> String {
        format!("{GGUF_LAYER_PREFIX}{layer}.{}.weight", self.gguf_part())
    }

    fn hf_part(self) -> &'static str {
        match self {
            LayerNorm::Input => "input_layernorm",
            LayerNorm::PostAttention => "post_attention_layernorm",
        }
    }

    fn gguf_part(self) -> &'static str {
        match self {
            LayerNorm::Input => "attn_norm",
            LayerNorm::PostAttention => "ffn_norm",
        }
    }
}

/// The seven linear maps of a decoder layer (serialized by their HF module names, `q_proj`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Proj {
    #[serde(rename = "q_proj")]
    /// Queries, `[hq·dh, d]`.
    Q,
    /// Keys, `[hk·dh, d]`.
    #[serde(rename = "k_proj")]
    K,
    /// Values, `[hk·dh, d]`.
    #[serde(rename = "v_proj")]
    V,
    /// Attention output, `[d, hq·dh]`.
    #[serde(rename = "o_proj")]
    O,
    /// MLP gate, `[f, d]`.
    #[serde(rename = "gate_proj")]
    Gate,
    /// MLP up, `[f, d]`.
    #[serde(rename = "up_proj")]
    Up,
    /// MLP down, `[d, f]`.
    #[serde(rename = "down_proj")]
    Down,
}

/// A tensor of a projection: its weight or its bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    /// `.weight`, `[out, in]`.
    Weight,
    /// `.bias`, `[out]`.
    Bias,
}

impl Param {
    fn suffix(self) -> &'static str {
        match self {
            Param::Weight => "weight",
            Param::Bias => "bias",
        }
    }

    fn from_suffix(s: &str) -> Option<Param> {
        [Param::Weight, Param::Bias].into_iter().find(|p| p.suffix() == s)
    }
}

impl Proj {
    /// Every projection, in layer order.
    pub const ALL: [Proj; 7] = [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Gate, Proj::Up, Proj::Down];

    /// The HF module of this projection in layer `layer` (`model.layers.{layer}.self_attn.q_proj`),
    /// as Linear-style loaders take it: the weight is `{module}.weight`, the bias `{module}.bias`.
    pub fn module(self, layer: usize) -> String {
        format!("{LAYER_PREFIX}{layer}.{}", self.hf_part())
    }

    /// The HF name of this projection's weight in layer `layer`.
    pub fn weight(self, layer: usize) -> String {
        self.hf_name(layer, Param::Weight)
    }

    /// The HF name of this projection's bias in layer `layer`.
    pub fn bias(self, layer: usize) -> String {
        self.hf_name(layer, Param::Bias)
    }

    /// The HF name of this projection's `param` in layer `layer`.
    pub fn hf_name(self, layer: usize, param: Param) -> String {
        format!("{}.{}", self.module(layer), param.suffix())
    }

    /// The GGUF name of this projection's `param` in layer `layer` (`blk.{layer}.attn_q.weight`).
    pub fn gguf_name(self, layer: usize, param: Param) -> String {
        format!("{GGUF_LAYER_PREFIX}{layer}.{}.{}", self.gguf_part(), param.suffix())
    }

    /// Whether this projection of layer `layer` has a bias in a model with `cfg` (false for a
    /// layer `cfg` does not have).
    pub fn has_bias(self, cfg: &ModelConfig, layer: usize) -> bool {
        let Some(shape) = cfg.layers.get(layer) else { return false };
        match self {
            Proj::Q | Proj::K | Proj::V => cfg.qkv_bias,
            Proj::O => shape.o_proj_bias,
            Proj::Down => shape.down_proj_bias,
            Proj::Gate | Proj::Up => false,
        }
    }

    /// `[out, in]` of this projection's weight in layer `layer`, or `None` for a layer `cfg`
    /// does not have.
    pub fn dims(self, cfg: &ModelConfig, layer: usize) -> Option<[usize; 2]> {
        let shape = cfg.layers.get(layer)?;
        let (d, dh) = (cfg.hidden_size, cfg.head_dim);
        let (q, kv, f) = (shape.num_heads * dh, shape.num_kv_heads * dh, shape.intermediate_size);
        Some(match self {
            Proj::Q => [q, d],
            Proj::K | Proj::V => [kv, d],
            Proj::O => [d, q],
            Proj::Gate | Proj::Up => [f, d],
            Proj::Down => [d, f],
        })
    }

    fn hf_part(self) -> &'static str {
        match self {
            Proj::Q => "self_attn.q_proj",
            Proj::K => "self_attn.k_proj",
            Proj::V => "self_attn.v_proj",
            Proj::O => "self_attn.o_proj",
            Proj::Gate => "mlp.gate_proj",
            Proj::Up => "mlp.up_proj",
            Proj::Down => "mlp.down_proj",
        }
    }

    fn gguf_part(self) -> &'static str {
        match self {
            Proj::Q => "attn_q",
            Proj::K => "attn_k",
            Proj::V => "attn_v",
            Proj::O => "attn_output",
            Proj::Gate => "ffn_gate",
            Proj::Up => "ffn_up",
            Proj::Down => "ffn_down",
        }
    }
}

/// One tensor of a model, independent of how a format spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorId {
    /// A tensor outside the layers.
    Global(Global),
    /// A layer's norm weight.
    Norm {
        /// Decoder layer.
        layer: usize,
        /// Which norm.
        norm: LayerNorm,
    },
    /// A layer's projection weight or bias.
    Proj {
        /// Decoder layer.
        layer: usize,
        /// Which projection.
        proj: Proj,
        /// Weight or bias.
        param: Param,
    },
}

impl TensorId {
    /// The HF name.
    pub fn hf_name(&self) -> String {
        match *self {
            TensorId::Global(g) => g.hf_name().to_owned(),
            TensorId::Norm { layer, norm } => norm.weight(layer),
            TensorId::Proj { layer, proj, param } => proj.hf_name(layer, param),
        }
    }

    /// The GGUF name.
    pub fn gguf_name(&self) -> String {
        match *self {
            TensorId::Global(g) => g.gguf_name().to_owned(),
            TensorId::Norm { layer, norm } => norm.gguf_name(layer),
            TensorId::Proj { layer, proj, param } => proj.gguf_name(layer, param),
        }
    }

    /// The tensor an HF name names, or `None` for a name this layout does not spell (the
    /// inverse of [`TensorId::hf_name`]: layer numbers without leading zeros, nothing after the
    /// suffix).
    pub fn from_hf_name(name: &str) -> Option<TensorId> {
        if let Some(g) = Global::ALL.into_iter().find(|g| g.hf_name() == name) {
            return Some(TensorId::Global(g));
        }
        let (layer, part, param) = split_layer_name(name.strip_prefix(LAYER_PREFIX)?)?;
        Self::from_parts(layer, part, param, LayerNorm::hf_part, Proj::hf_part)
    }

    /// The tensor a GGUF name names, or `None` for a name this layout does not spell (the
    /// inverse of [`TensorId::gguf_name`]).
    pub fn from_gguf_name(name: &str) -> Option<TensorId> {
        if let Some(g) = Global::ALL.into_iter().find(|g| g.gguf_name() == name) {
            return Some(TensorId::Global(g));
        }
        let (layer, part, param) = split_layer_name(name.strip_prefix(GGUF_LAYER_PREFIX)?)?;
        Self::from_parts(layer, part, param, LayerNorm::gguf_part, Proj::gguf_part)
    }

    fn from_parts(
        layer: usize,
        part: &str,
        param: Param,
        norm_part: fn(LayerNorm) -> &'static str,
        proj_part: fn(Proj) -> &'static str,
    ) -> Option<TensorId> {
        if let Some(norm) = LayerNorm::ALL.into_iter().find(|&n| norm_part(n) == part) {
            return (param == Param::Weight).then_some(TensorId::Norm { layer, norm });
        }
        let proj = Proj::ALL.into_iter().find(|&p| proj_part(p) == part)?;
        Some(TensorId::Proj { layer, proj, param })
    }

    /// The HF shape of this tensor in a model with `cfg`, or `None` when that model has no such
    /// tensor (a layer past the last, a bias the config does not give, the lm_head when tied).
    pub fn shape(&self, cfg: &ModelConfig) -> Option<Vec<usize>> {
        let (d, v) = (cfg.hidden_size, cfg.vocab_size);
        match *self {
            TensorId::Global(Global::Embedding) => Some(vec![v, d]),
            TensorId::Global(Global::FinalNorm) => Some(vec![d]),
            TensorId::Global(Global::LmHead) => (!cfg.tie_word_embeddings).then(|| vec![v, d]),
            TensorId::Norm { layer, .. } => (layer < cfg.num_layers()).then(|| vec![d]),
            TensorId::Proj { layer, proj, param: Param::Weight } => proj.dims(cfg, layer).map(Vec::from),
            TensorId::Proj { layer, proj, param: Param::Bias } => {
                proj.dims(cfg, layer).filter(|_| proj.has_bias(cfg, layer)).map(|[out, _]| vec![out])
            }
        }
    }
}

/// The tensors of decoder layer `l` of a model with `cfg`, in model order (norms, then each
/// projection's weight and bias); empty past the last layer.
pub fn layer_tensors(cfg: &ModelConfig, l: usize) -> Vec<TensorId> {
    let mut v: Vec<TensorId> = LayerNorm::ALL.map(|norm| TensorId::Norm { layer: l, norm }).to_vec();
    for proj in Proj::ALL {
        v.extend([Param::Weight, Param::Bias].map(|param| TensorId::Proj { layer: l, proj, param }));
    }
    v.retain(|t| t.shape(cfg).is_some());
    v
}

/// Every tensor a model with `cfg` has, in model order: the embedding, each layer's norms and
/// projections (weight, then bias), the final norm, the lm_head when untied.
pub fn tensors(cfg: &ModelConfig) -> Vec<TensorId> {
    let mut v = vec![TensorId::Global(Global::Embedding)];
    for layer in 0..cfg.num_layers() {
        v.extend(layer_tensors(cfg, layer));
    }
    v.extend([Global::FinalNorm, Global::LmHead].map(TensorId::Global));
    v.retain(|t| t.shape(cfg).is_some());
    v
}

/// Every tensor a model with `cfg` has, by HF name, with its HF shape.
pub fn expected_shapes(cfg: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
    tensors(cfg)
        .into_iter()
        .map(|t| {
            let shape = t.shape(cfg).expect("tensors() keeps only tensors with a shape");
            (t.hf_name(), shape)
        })
        .collect()
}

/// The HF name of a GGUF tensor name, or `None` for a name this layout does not spell.
pub fn gguf_to_hf(gguf_name: &str) -> Option<String> {
    TensorId::from_gguf_name(gguf_name).map(|t| t.hf_name())
}

/// The GGUF name of an HF tensor name, or `None` for a name this layout does not spell.
pub fn hf_to_gguf(hf_name: &str) -> Option<String> {
    TensorId::from_hf_name(hf_name).map(|t| t.gguf_name())
}

/// The normalization the runtime applies before attention, before the MLP and after the last
/// layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    /// `x / sqrt(mean(x²) + eps) · w` (LLaMA, Qwen2).
    RmsNorm {
        /// `rms_norm_eps` of the config.
        eps: f64,
    },
}

impl NormKind {
    /// The norm of a model with `cfg`.
    pub fn of(cfg: &ModelConfig) -> NormKind {
        NormKind::RmsNorm { eps: cfg.rms_norm_eps }
    }
}

/// The MLP's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `down(silu(gate(x)) · up(x))`, HF `hidden_act: "silu"`.
    SiluGlu,
}

impl Activation {
    /// The activation an HF `hidden_act` names; an error naming any other value.
    pub fn from_hidden_act(hidden_act: &str) -> Result<Activation> {
        match hidden_act {
            "silu" => Ok(Activation::SiluGlu),
            other => bail!("unsupported hidden_act `{other}` (supported: silu)"),
        }
    }

    /// The HF `hidden_act` of this activation.
    pub fn hidden_act(self) -> &'static str {
        match self {
            Activation::SiluGlu => "silu",
        }
    }

    /// The activation of a model with `cfg`, from its `hidden_act` (`silu`, HF's default for
    /// LLaMA and Qwen2, when absent).
    pub fn of(cfg: &ModelConfig) -> Result<Activation> {
        Self::from_config_json(&cfg.raw)
    }

    /// [`Activation::of`] on the fields of a `config.json`.
    pub(crate) fn from_config_json(m: &serde_json::Map<String, Value>) -> Result<Activation> {
        match m.get("hidden_act") {
            None | Some(Value::Null) => Ok(Activation::SiluGlu),
            Some(Value::String(s)) => Self::from_hidden_act(s),
            Some(v) => Err(format_err!("key `hidden_act` is not a string: {v}")),
        }
    }
}

/// The HF prefix of layer names, followed by the layer number.
const LAYER_PREFIX: &str = "model.layers.";
/// The GGUF prefix of layer names, followed by the layer number.
const GGUF_LAYER_PREFIX: &str = "blk.";

/// Splits `{layer}.{part}.{suffix}` (what follows a layer prefix) into the layer number, the part
/// between (which may contain dots) and the parameter. The layer is decimal digits without a
/// leading zero, so that parsing inverts formatting.
fn split_layer_name(rest: &str) -> Option<(usize, &str, Param)> {
    let (layer, rest) = rest.split_once('.')?;
    let digits = !layer.is_empty() && layer.bytes().all(|b| b.is_ascii_digit());
    if !digits || (layer.len() > 1 && layer.starts_with('0')) {
        return None;
    }
    let (part, suffix) = rest.rsplit_once('.')?;
    Some((layer.parse().ok()?, part, Param::from_suffix(suffix)?))
}

#[cfg(test)]
mod tests;
