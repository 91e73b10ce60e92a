//! A model directory (dense or pruned, llama or qwen2) to a GGUF file that stock llama.cpp runs.
//!
//! - A dense model keeps its architecture (`llama`, `qwen2`), as llama.cpp's own converter writes it.
//! - A pruned model, whose layers each have their own head count, KV-head count, FFN width and
//!   recovery biases, becomes llama.cpp's `deci` architecture (DeciLM / Nemotron-NAS), whose
//!   `attention.head_count`, `attention.head_count_kv` and `feed_forward_length` are per-layer
//!   arrays and whose graph applies q/k/v, o_proj and down_proj biases
//!   (../shared/reference/gguf-deci.md). Its metadata also carries the model's config.json
//!   ([`SLIMLLM_CONFIG_KEY`]), so that `slimllm import` restores the directory exactly.
//!
//! llama.cpp maps query head `h` to KV head `h / (n_head / n_head_kv)`: groups of equal size. A
//! pruned GQA layer may keep a different number of query heads per KV head, so each group is
//! padded to the largest with dummy heads whose q rows (and q bias) and o_proj columns are zero.
//! That is exact: a dummy head's attention output is multiplied by zero columns of o_proj.
//! Rotary heads are stored in llama.cpp's interleaved order (the converter's permutation) for
//! `llama` and `deci`; `qwen2` keeps the HF order (NEOX rotation).
//!
//! 1-D tensors (norms, biases) are F32, as in llama.cpp's converter; 2-D weights take the
//! requested type. Quantized types store rows in blocks (32 values for q8_0), so a row length that
//! is not a multiple of the block (a pruned FFN width of 1,126) is refused with an error that says
//! which layer and what to do.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use slim_checkpoint::layout::{self, Param, Proj, TensorId};
use slim_checkpoint::{Arch as CkptArch, ModelConfig, WeightSource};

use crate::encode::encode;
use crate::export_tokenizer::tokenizer_metadata;
use crate::import::{permute_qk, unpermute_qk};
use crate::reader::{MetaArray, MetaValue};
use crate::types::GgmlType;
use crate::writer::{GgufWriter, TensorPlan};

/// Metadata key of a `deci` export holding the model's config.json (compact JSON): its base
/// architecture and per-layer shapes, which `slimllm import` restores exactly.
pub const SLIMLLM_CONFIG_KEY: &str = "slimllm.config_json";

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSummary {
    /// `general.architecture` written: `llama`, `qwen2` or `deci`.
    pub architecture: String,
    /// The type of the 2-D weights.
    pub weight_type: GgmlType,
    /// Tensors written.
    pub n_tensors: usize,
    /// The model's parameters (dummy heads not counted).
    pub n_params: u64,
    /// Dummy query heads added to even out GQA groups, over all layers.
    pub padded_heads: usize,
    /// Size of the file.
    pub bytes: u64,
    /// The file.
    pub out: PathBuf,
}

/// Writes the model in `model_dir` as a GGUF file `out` with 2-D weights of type `ty` (F32, F16,
/// BF16 or Q8_0). `out` must not exist unless `force`; it appears only once complete.
pub fn export_gguf(model_dir: &Path, out: &Path, ty: GgmlType, force: bool) -> Result<ExportSummary> {
    ensure!(
        matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0),
        "GGUF type {ty} cannot be exported (supported: f32, f16, bf16, q8_0)"
    );
    if out.exists() && !force {
        bail!("{} already exists; pass --force to replace it", out.display());
    }
    ensure!(!out.is_dir(), "{} is a folder; --out names the .gguf file to write", out.display());
    let cfg =
        ModelConfig::load(model_dir).with_context(|| format!("{} is not a model directory", model_dir.display()))?;
    let shape = ExportShape::of(&cfg);
    check_block_fit(&cfg, &shape, ty)?;
    // One tensor in memory at a time: the export of a model larger than memory streams.
    let weights = WeightSource::open(model_dir)?;
    weights.check_against(&cfg)?;
    let mut meta = shape.metadata(&cfg, ty, model_dir)?;
    meta.extend(tokenizer_metadata(model_dir, cfg.vocab_size, cfg.bos_token_id, cfg.eos_token_id)?);

    let ids = layout::tensors(&cfg);
    let mut plans = Vec::with_capacity(ids.len());
    for id in &ids {
        let hf_shape = shape.padded_shape(&cfg, id);
        let tensor_ty = if hf_shape.len() == 1 { GgmlType::F32 } else { ty };
        plans.push(TensorPlan {
            name: id.gguf_name(),
            dims: hf_shape.iter().rev().map(|&d| d as u64).collect(),
            ty: tensor_ty,
        });
    }
    let mut w = GgufWriter::create(out, &meta, plans.clone())?;
    for (id, plan) in ids.iter().zip(&plans) {
        let t = weights.read(&id.hf_name())?;
        let values = shape.transform(&cfg, id, &t.data);
        let row = plan.dims[0] as usize;
        w.write_tensor(&plan.name, &encode(&values, row, plan.ty)?)?;
    }
    w.finish()?;
    Ok(ExportSummary {
        architecture: shape.arch_name(&cfg).to_owned(),
        weight_type: ty,
        n_tensors: ids.len(),
        n_params: cfg.num_params(),
        padded_heads: shape.padded_heads(&cfg),
        bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        out: out.to_path_buf(),
    })
}

/// Refuses, before anything is read, a quantized type whose blocks do not divide a row length.
fn check_block_fit(cfg: &ModelConfig, shape: &ExportShape, ty: GgmlType) -> Result<()> {
    let block = ty.block_size();
    if block == 1 {
        return Ok(());
    }
    let bad_hidden = !cfg.hidden_size.is_multiple_of(block);
    let bad_layers: Vec<String> = cfg
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let attn = shape.padded_heads_of(cfg, i) * cfg.head_dim;
            let mut why = Vec::new();
            if !l.intermediate_size.is_multiple_of(block) {
                why.push(format!("FFN width {}", l.intermediate_size));
            }
            if !attn.is_multiple_of(block) {
                let heads = shape.padded_heads_of(cfg, i);
                why.push(format!("attention width {attn} ({heads} heads × {})", cfg.head_dim));
            }
            (!why.is_empty()).then(|| format!("layer {i}: {}", why.join(", ")))
        })
        .collect();
    if bad_hidden || !bad_layers.is_empty() {
        let n = bad_layers.len();
        let mut list = bad_layers.into_iter().take(4).collect::<Vec<_>>().join("; ");
        if n > 4 {
            list.push_str(&format!("; and {} more layers", n - 4));
        }
        if bad_hidden {
            list.insert_str(0, &format!("hidden size {}; ", cfg.hidden_size));
        }
        bail!(
            "--type {}: {:?} stores rows in blocks of {block} values, and these widths are not multiples of {block}: \
             {list}. Export as f16, bf16 or f32, or prune with `--align {block}` so that every width fits",
            type_name(ty),
            ty
        );
    }
    Ok(())
}

fn type_name(ty: GgmlType) -> &'static str {
    crate::encode::EXPORT_TYPES.iter().find(|(_, t)| *t == ty).map_or("?", |(n, _)| n)
}

/// The shapes the GGUF has: per layer, the query heads per KV group after padding.
pub(crate) struct ExportShape {
    /// Whether the model is dense (every layer the shape config.json's top-level fields describe).
    dense: bool,
    /// Per layer: query heads per KV head after padding (the largest group).
    group: Vec<usize>,
}

impl ExportShape {
    pub(crate) fn of(cfg: &ModelConfig) -> ExportShape {
        let dense = !cfg.is_pruned();
        let group = cfg
            .layers
            .iter()
            .map(|l| (0..l.num_kv_heads).map(|k| l.kv_head_of.iter().filter(|&&x| x == k).count()).max().unwrap_or(1))
            .collect();
        ExportShape { dense, group }
    }

    pub(crate) fn arch_name(&self, cfg: &ModelConfig) -> &'static str {
        match (self.dense, cfg.arch) {
            (true, CkptArch::Llama) => "llama",
            (true, CkptArch::Qwen2) => "qwen2",
            (false, _) => "deci",
        }
    }

    /// Whether q/k rows are stored in llama.cpp's interleaved rotary order.
    pub(crate) fn permuted(&self, cfg: &ModelConfig) -> bool {
        self.arch_name(cfg) != "qwen2"
    }

    pub(crate) fn padded_heads_of(&self, cfg: &ModelConfig, layer: usize) -> usize {
        self.group[layer] * cfg.layers[layer].num_kv_heads
    }

    fn padded_heads(&self, cfg: &ModelConfig) -> usize {
        (0..cfg.layers.len()).map(|l| self.padded_heads_of(cfg, l) - cfg.layers[l].num_heads).sum()
    }

    /// For each padded query-head slot of `layer`, the model's head it holds (`None`: a dummy).
    pub(crate) fn head_slots(&self, cfg: &ModelConfig, layer: usize) -> Vec<Option<usize>> {
        let l = &cfg.layers[layer];
        let g = self.group[layer];
        let mut slots = vec![None; g * l.num_kv_heads];
        let mut used = vec![0usize; l.num_kv_heads];
        for (h, &k) in l.kv_head_of.iter().enumerate() {
            slots[k * g + used[k]] = Some(h);
            used[k] += 1;
        }
        slots
    }

    /// The HF shape of `id` in the GGUF (query heads padded).
    pub(crate) fn padded_shape(&self, cfg: &ModelConfig, id: &TensorId) -> Vec<usize> {
        let mut s = id.shape(cfg).expect("layout::tensors gives tensors with shapes");
        if let TensorId::Proj { layer, proj, param } = *id {
            let rows = self.padded_heads_of(cfg, layer) * cfg.head_dim;
            match (proj, param) {
                (Proj::Q, _) => s[0] = rows,
                (Proj::O, Param::Weight) => s[1] = rows,
                _ => {}
            }
        }
        s
    }

    /// The values of `id` as the GGUF stores them (padded, permuted), in HF row-major order.
    pub(crate) fn transform(&self, cfg: &ModelConfig, id: &TensorId, data: &[f32]) -> Vec<f32> {
        self.map(cfg, id, data, true)
    }

    /// The inverse of [`ExportShape::transform`]: GGUF values (HF row-major order) back to the
    /// model's tensor, dummy heads dropped.
    pub(crate) fn untransform(&self, cfg: &ModelConfig, id: &TensorId, data: &[f32]) -> Vec<f32> {
        self.map(cfg, id, data, false)
    }

    /// Model → GGUF layout (`to_gguf`) or back. Q's heads are blocks of rows, o_proj's blocks of
    /// columns; both move between the model's head `h` and its padded slot `s` ([`Self::head_slots`]).
    fn map(&self, cfg: &ModelConfig, id: &TensorId, data: &[f32], to_gguf: bool) -> Vec<f32> {
        let TensorId::Proj { layer, proj, param } = *id else { return data.to_vec() };
        let (hd, d, l) = (cfg.head_dim, cfg.hidden_size, &cfg.layers[layer]);
        let n_in = if param == Param::Weight { d } else { 1 };
        let permuted = self.permuted(cfg);
        let slots = self.head_slots(cfg, layer);
        // (source head, destination head) pairs and the head counts on each side.
        let pairs = slots.iter().enumerate().filter_map(|(s, h)| h.map(|h| if to_gguf { (h, s) } else { (s, h) }));
        let (from, to) = if to_gguf { (l.num_heads, slots.len()) } else { (slots.len(), l.num_heads) };
        match proj {
            Proj::Q if to_gguf => {
                let out = move_head_blocks(data, 1, hd * n_in, from, to, pairs);
                if permuted {
                    permute_qk(&out, to, n_in)
                } else {
                    out
                }
            }
            Proj::Q => {
                let plain = if permuted { unpermute_qk(data, from, n_in) } else { data.to_vec() };
                move_head_blocks(&plain, 1, hd * n_in, from, to, pairs)
            }
            Proj::K if permuted && to_gguf => permute_qk(data, l.num_kv_heads, n_in),
            Proj::K if permuted => unpermute_qk(data, l.num_kv_heads, n_in),
            Proj::O if param == Param::Weight => move_head_blocks(data, d, hd, from, to, pairs),
            _ => data.to_vec(),
        }
    }

    fn metadata(&self, cfg: &ModelConfig, ty: GgmlType, model_dir: &Path) -> Result<Vec<(String, MetaValue)>> {
        let arch = self.arch_name(cfg);
        let u32_of = |v: usize, what: &str| -> Result<MetaValue> {
            Ok(MetaValue::U32(u32::try_from(v).with_context(|| format!("{what} {v} does not fit a u32"))?))
        };
        let per_layer = |f: &dyn Fn(usize) -> usize| -> Result<MetaValue> {
            let v: Vec<usize> = (0..cfg.layers.len()).map(f).collect();
            if !self.dense {
                let v = v.iter().map(|&x| u32::try_from(x)).collect::<Result<Vec<u32>, _>>()?;
                return Ok(MetaValue::Array(MetaArray::U32(v)));
            }
            u32_of(v[0], "a layer size")
        };
        let name = model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let file_type = match ty {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 7,
            GgmlType::BF16 => 32,
            _ => unreachable!("checked by export_gguf"),
        };
        let k = |s: &str| format!("{arch}.{s}");
        let mut m = vec![
            ("general.architecture".to_owned(), MetaValue::String(arch.into())),
            ("general.name".to_owned(), MetaValue::String(name)),
            ("general.file_type".to_owned(), MetaValue::U32(file_type)),
            ("general.quantization_version".to_owned(), MetaValue::U32(2)),
            (k("context_length"), u32_of(cfg.max_position_embeddings, "max_position_embeddings")?),
            (k("embedding_length"), u32_of(cfg.hidden_size, "hidden_size")?),
            (k("block_count"), u32_of(cfg.layers.len(), "num_hidden_layers")?),
            (k("feed_forward_length"), per_layer(&|l| cfg.layers[l].intermediate_size)?),
            (k("attention.head_count"), per_layer(&|l| self.padded_heads_of(cfg, l))?),
            (k("attention.head_count_kv"), per_layer(&|l| cfg.layers[l].num_kv_heads)?),
            (k("attention.key_length"), u32_of(cfg.head_dim, "head_dim")?),
            (k("attention.value_length"), u32_of(cfg.head_dim, "head_dim")?),
            (k("rope.dimension_count"), u32_of(cfg.head_dim, "head_dim")?),
            (k("attention.layer_norm_rms_epsilon"), MetaValue::F32(cfg.rms_norm_eps as f32)),
            (k("rope.freq_base"), MetaValue::F32(cfg.rope_theta as f32)),
            (k("vocab_size"), u32_of(cfg.vocab_size, "vocab_size")?),
        ];
        if !self.dense {
            m.push((SLIMLLM_CONFIG_KEY.to_owned(), MetaValue::String(cfg.to_json().to_string())));
        }
        Ok(m)
    }
}

/// Copies blocks of `block` values between head positions: `data` is `outer` rows of `from` blocks,
/// the result `outer` rows of `to` blocks, block `src` of each row going to block `dst` for every
/// `(src, dst)` pair, and blocks no pair names left zero.
fn move_head_blocks(
    data: &[f32],
    outer: usize,
    block: usize,
    from: usize,
    to: usize,
    pairs: impl Iterator<Item = (usize, usize)> + Clone,
) -> Vec<f32> {
    let mut out = vec![0f32; outer * to * block];
    for r in 0..outer {
        for (src, dst) in pairs.clone() {
            let (a, b) = ((r * from + src) * block, (r * to + dst) * block);
            out[b..b + block].copy_from_slice(&data[a..a + block]);
        }
    }
    out
}
