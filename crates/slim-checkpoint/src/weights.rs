//! Safetensors weights of a model directory: loading (single file or sharded; f32, f16,
//! bf16, converted to f32) and saving (f32, written under a temporary name and renamed).

use crate::{HostTensor, ModelConfig};
use anyhow::{bail, ensure, format_err, Context, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Named tensors of a model, by HF name (`model.layers.0.self_attn.q_proj.weight`, ...).
#[derive(Clone, Debug, Default)]
pub struct Weights {
    tensors: BTreeMap<String, HostTensor>,
}

/// Files of a model directory other than weights and config that travel with it.
const SIDE_FILES: &[&str] =
    &["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"];

impl Weights {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every tensor of `dir` (`model.safetensors`, or the shards of
    /// `model.safetensors.index.json`).
    pub fn load(dir: &Path) -> Result<Self> {
        let mut w = Self::new();
        for file in weight_files(dir)? {
            w.load_file(&file)?;
        }
        ensure!(!w.tensors.is_empty(), "no tensors in {}", dir.display());
        Ok(w)
    }

    fn load_file(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the file is opened read-only and not modified while mapped; a concurrent
        // writer would only change the bytes we read, which validation below catches or
        // which yields wrong weights, never undefined behaviour in safe code that copies them.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        self.load_bytes(&mmap, path)
    }

    /// Parses the bytes of a safetensors file (`path` names it in errors), converting every
    /// tensor to f32.
    pub fn from_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut w = Self::new();
        w.load_bytes(bytes, path)?;
        Ok(w)
    }

    fn load_bytes(&mut self, bytes: &[u8], path: &Path) -> Result<()> {
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| format_err!("{}: invalid safetensors: {e}", path.display()))?;
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let bytes = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => {
                    bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                other => bail!(
                    "{}: tensor `{name}` has unsupported dtype {other:?} (f32, f16, bf16 are supported)",
                    path.display()
                ),
            };
            let t = HostTensor::new(shape, data).with_context(|| format!("{}: tensor `{name}`", path.display()))?;
            if self.tensors.insert(name.clone(), t).is_some() {
                bail!("{}: tensor `{name}` appears in more than one file", path.display());
            }
        }
        Ok(())
    }

    /// Inserts or replaces a tensor.
    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        self.tensors.insert(name.into(), t);
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Result<&HostTensor> {
        self.tensors.get(name).ok_or_else(|| format_err!("missing tensor `{name}`"))
    }

    /// A tensor by name, checking its shape.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let t = self.get(name)?;
        ensure!(t.shape == shape, "tensor `{name}` has shape {:?}, expected {shape:?}", t.shape);
        Ok(t)
    }

    /// Removes and returns a tensor.
    pub fn take(&mut self, name: &str) -> Result<HostTensor> {
        self.tensors.remove(name).ok_or_else(|| format_err!("missing tensor `{name}`"))
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Total number of values.
    pub fn num_values(&self) -> u64 {
        self.tensors.values().map(|t| t.numel() as u64).sum()
    }

    /// Checks that the tensor set is exactly what `cfg` describes, with the right shapes.
    pub fn check_against(&self, cfg: &ModelConfig) -> Result<()> {
        let expected = expected_shapes(cfg);
        for (name, shape) in &expected {
            self.get_shaped(name, shape)?;
        }
        for name in self.tensors.keys() {
            ensure!(expected.contains_key(name), "unexpected tensor `{name}` for this config");
        }
        Ok(())
    }
}

/// Every tensor a model with `cfg` has, with its HF shape.
pub fn expected_shapes(cfg: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
    let (d, dh, v) = (cfg.hidden_size, cfg.head_dim, cfg.vocab_size);
    let mut m = BTreeMap::new();
    m.insert("model.embed_tokens.weight".to_string(), vec![v, d]);
    m.insert("model.norm.weight".to_string(), vec![d]);
    if !cfg.tie_word_embeddings {
        m.insert("lm_head.weight".to_string(), vec![v, d]);
    }
    for (i, l) in cfg.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let (q, kv, f) = (l.num_heads * dh, l.num_kv_heads * dh, l.intermediate_size);
        m.insert(format!("{p}.input_layernorm.weight"), vec![d]);
        m.insert(format!("{p}.post_attention_layernorm.weight"), vec![d]);
        m.insert(format!("{p}.self_attn.q_proj.weight"), vec![q, d]);
        m.insert(format!("{p}.self_attn.k_proj.weight"), vec![kv, d]);
        m.insert(format!("{p}.self_attn.v_proj.weight"), vec![kv, d]);
        m.insert(format!("{p}.self_attn.o_proj.weight"), vec![d, q]);
        if cfg.qkv_bias {
            m.insert(format!("{p}.self_attn.q_proj.bias"), vec![q]);
            m.insert(format!("{p}.self_attn.k_proj.bias"), vec![kv]);
            m.insert(format!("{p}.self_attn.v_proj.bias"), vec![kv]);
        }
        if l.o_proj_bias {
            m.insert(format!("{p}.self_attn.o_proj.bias"), vec![d]);
        }
        m.insert(format!("{p}.mlp.gate_proj.weight"), vec![f, d]);
        m.insert(format!("{p}.mlp.up_proj.weight"), vec![f, d]);
        m.insert(format!("{p}.mlp.down_proj.weight"), vec![d, f]);
        if l.down_proj_bias {
            m.insert(format!("{p}.mlp.down_proj.bias"), vec![d]);
        }
    }
    m
}

/// The safetensors files of a model directory, in shard order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| format_err!("{}: missing `weight_map`", index.display()))?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_owned)).collect();
        files.sort();
        files.dedup();
        for f in &files {
            ensure!(
                !f.contains('/') && !f.contains('\\') && f != "..",
                "{}: shard name `{f}` must be a plain file name",
                index.display()
            );
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    bail!("{}: no model.safetensors or model.safetensors.index.json", dir.display())
}

/// Writes a complete model directory: `config.json`, `model.safetensors` (f32) and the
/// tokenizer files copied from `side_files_from`. Every file is written under a temporary
/// name and renamed into place, weights before config.
pub fn save_model_dir(dir: &Path, cfg: &ModelConfig, weights: &Weights, side_files_from: &Path) -> Result<()> {
    weights.check_against(cfg).context("refusing to save weights that do not match the config")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes: Vec<(&str, Vec<usize>, &[u8])> = weights
        .tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.shape.clone(), bytemuck::cast_slice::<f32, u8>(&t.data)))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| Ok((*n, safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| format_err!("building safetensors views: {e}"))?;
    let tmp = dir.join(".model.safetensors.tmp");
    safetensors::serialize_to_file(views, None, &tmp).map_err(|e| format_err!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join("model.safetensors")).with_context(|| format!("renaming {}", tmp.display()))?;
    for name in SIDE_FILES {
        let src = side_files_from.join(name);
        if src.is_file() && side_files_from != dir {
            write_atomic(&dir.join(name), &std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?)?;
        }
    }
    let cfg_text = serde_json::to_string_pretty(&cfg.to_json())?;
    write_atomic(&dir.join("config.json"), cfg_text.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| format_err!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
