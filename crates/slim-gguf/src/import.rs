//! Converts a GGUF model into an HF-layout directory of f32 weights.
//!
//! The rest of the project loads HF directories (config.json, tokenizer.json, model.safetensors);
//! this is the one place that reads GGUF tensors (their names are spelled, both ways, in
//! `slim_checkpoint::layout`), undoes llama.cpp's Q/K row permutation and decodes the
//! quantized encodings. Tensors are dequantized and streamed one at a time through `slim_fs`'s
//! safetensors writer, so memory stays at about one tensor beyond the memory-mapped file.
//!
//! The whole folder is built under a temporary name beside the output and renamed into place at
//! the end (`slim_fs::DirInstall`): a failed or interrupted import leaves an existing output folder
//! exactly as it was, and a non-empty output folder is replaced only when asked
//! ([`Existing::Replace`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, format_err, Context, Result};
use slim_checkpoint::dtype::write_values;
use slim_checkpoint::layout::{self, Param, Proj, TensorId};
use slim_checkpoint::WeightDtype;
use slim_fs::{DirInstall, Existing, SafetensorsConfig, SafetensorsWriter, Sharding, TensorSpec};

use crate::config::{Arch, ModelConfig};
use crate::reader::GgufFile;
use crate::tokenizer::{build_tokenizer_config_json, build_tokenizer_json};

/// What an import produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportSummary {
    /// `general.architecture` of the source.
    pub architecture: String,
    /// Number of tensors written.
    pub n_tensors: usize,
    /// Number of parameters written.
    pub n_params: u64,
    /// The output directory.
    pub out_dir: PathBuf,
}

/// Reads a GGUF v3 file and writes an HF-layout directory: config.json, generation_config.json,
/// tokenizer.json, tokenizer_config.json and model.safetensors (f32; [`import_gguf_as`] for f16 or
/// bf16).
///
/// `out_dir` is checked first: when it holds anything and `existing` is [`Existing::Refuse`], the
/// error is a [`slim_fs::Error::Occupied`] and nothing is read or written. Otherwise the folder is
/// built beside `out_dir` and renamed into place once complete; on any error it is removed and
/// `out_dir` is left as it was.
pub fn import_gguf(gguf: &Path, out_dir: &Path, existing: Existing) -> Result<ImportSummary> {
    import_gguf_as(gguf, out_dir, existing, WeightDtype::F32)
}

/// [`import_gguf`] with the weights stored in `dtype` (f16 and bf16 halve the folder; the
/// GGUF's values are rounded to nearest even, exact for tensors the GGUF held in that dtype).
pub fn import_gguf_as(gguf: &Path, out_dir: &Path, existing: Existing, dtype: WeightDtype) -> Result<ImportSummary> {
    let install = DirInstall::begin(out_dir, existing)?;
    let file = GgufFile::open(gguf)?;
    if file.get_str("general.architecture").ok() == Some("deci") {
        return crate::import_deci::import_deci(&file, install, dtype);
    }
    let cfg = ModelConfig::from_gguf(&file)?;
    let tokenizer = build_tokenizer_json(&file)?;
    let tokenizer_config = build_tokenizer_config_json(&file)
        .with_context(|| format!("building tokenizer_config.json from {}", gguf.display()))?;
    let plan = plan_tensors(&file, &cfg).with_context(|| format!("mapping the tensors of {}", gguf.display()))?;

    let dir = install.path();
    let mut cfg_json = cfg.to_config_json();
    cfg_json["torch_dtype"] = dtype.torch_dtype().into();
    slim_fs::write_json_atomic(&dir.join("config.json"), &cfg_json)?;
    slim_fs::write_json_atomic(&dir.join("generation_config.json"), &cfg.to_generation_config_json())?;
    // Compact: the vocab and merges make a pretty-printed tokenizer.json several times larger.
    slim_fs::write_atomic(&dir.join("tokenizer.json"), &serde_json::to_vec(&tokenizer)?)?;
    slim_fs::write_json_atomic(&dir.join("tokenizer_config.json"), &tokenizer_config)?;
    write_safetensors(&file, &cfg, &plan, dir, dtype)?;
    install.commit()?;
    Ok(ImportSummary {
        architecture: cfg.arch.name().to_owned(),
        n_tensors: plan.len(),
        n_params: plan.iter().map(|p| p.n_elements).sum(),
        out_dir: out_dir.to_path_buf(),
    })
}

/// The HF name of a GGUF tensor, or an error for a name this importer does not know.
pub fn hf_tensor_name(gguf_name: &str, arch: Arch) -> Result<String> {
    tensor_id(gguf_name, arch).map(|t| t.hf_name())
}

/// The tensor a GGUF name names ([`layout::TensorId::from_gguf_name`]), or an error for a name
/// this importer does not know: of the biases, an `arch` file holds only qwen2's q/k/v ones.
fn tensor_id(gguf_name: &str, arch: Arch) -> Result<TensorId> {
    let unknown = || format_err!("unknown tensor name `{gguf_name}` for architecture {}", arch.name());
    let id = TensorId::from_gguf_name(gguf_name).ok_or_else(unknown)?;
    if let TensorId::Proj { proj, param: Param::Bias, .. } = id {
        if !(arch == Arch::Qwen2 && matches!(proj, Proj::Q | Proj::K | Proj::V)) {
            return Err(unknown());
        }
    }
    Ok(id)
}

/// Undoes llama.cpp's Q/K row permutation in place of a copy, returning HF row order.
///
/// convert_hf_to_gguf's `permute(w, n_head)` is `w.reshape(n_head, 2, d_h/2, in).swapaxes(1, 2)`:
/// within each head, GGUF row `2i + j` holds HF row `j·d_h/2 + i`.
///
/// # Shapes
/// - `w`: `[n_head · d_h, n_in]` row-major (a weight), or `[n_head · d_h]` with `n_in = 1` (a bias).
pub fn unpermute_qk(w: &[f32], n_head: usize, n_in: usize) -> Vec<f32> {
    let rows = w.len() / n_in;
    assert_eq!(rows * n_in, w.len(), "internal invariant: unpermute_qk needs whole rows");
    assert_eq!(rows % (2 * n_head), 0, "internal invariant: unpermute_qk needs an even head dim");
    let d_h = rows / n_head;
    let half = d_h / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * d_h + 2 * i + j; // GGUF row
                let dst = h * d_h + j * half + i; // HF row
                out[dst * n_in..(dst + 1) * n_in].copy_from_slice(&w[src * n_in..(src + 1) * n_in]);
            }
        }
    }
    out
}

/// The permutation llama.cpp's converter applies (HF → GGUF row order); the inverse of [`unpermute_qk`].
///
/// # Shapes
/// - `w`: `[n_head · d_h, n_in]` row-major.
pub fn permute_qk(w: &[f32], n_head: usize, n_in: usize) -> Vec<f32> {
    let rows = w.len() / n_in;
    let d_h = rows / n_head;
    let half = d_h / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * d_h + j * half + i;
                let dst = h * d_h + 2 * i + j;
                out[dst * n_in..(dst + 1) * n_in].copy_from_slice(&w[src * n_in..(src + 1) * n_in]);
            }
        }
    }
    out
}

/// One tensor to write.
struct Planned {
    gguf_name: String,
    hf_name: String,
    /// HF shape: the GGUF dims reversed.
    shape: Vec<usize>,
    n_elements: u64,
    /// Head count to unpermute with (llama q/k only).
    unpermute_heads: Option<usize>,
}

fn plan_tensors(file: &GgufFile, cfg: &ModelConfig) -> Result<Vec<Planned>> {
    let hf_cfg = hf_config(cfg)?;
    let expected = layout::expected_shapes(&hf_cfg);
    let mut plan = Vec::with_capacity(file.tensors().len());
    for t in file.tensors() {
        let id = tensor_id(&t.name, cfg.arch)?;
        let hf_name = id.hf_name();
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let Some(want) = expected.get(&hf_name) else {
            bail!("tensor `{}` ({hf_name}) is not part of a model with {} layers", t.name, cfg.n_layers);
        };
        if shape != *want {
            bail!("tensor `{}` has HF shape {shape:?}, expected {want:?} from the config", t.name);
        }
        let unpermute_heads = match (cfg.arch, id) {
            (Arch::Llama, TensorId::Proj { proj: Proj::Q, .. }) => Some(cfg.n_head),
            (Arch::Llama, TensorId::Proj { proj: Proj::K, .. }) => Some(cfg.n_head_kv),
            _ => None,
        };
        plan.push(Planned { gguf_name: t.name.clone(), hf_name, shape, n_elements: t.n_elements, unpermute_heads });
    }
    // Every expected tensor must be there (names are unique, so equal counts mean equal sets).
    if plan.len() != expected.len() {
        let names: std::collections::HashSet<&str> = plan.iter().map(|p| p.hf_name.as_str()).collect();
        let missing = layout::tensors(&hf_cfg).into_iter().map(|t| t.hf_name()).find(|n| !names.contains(n.as_str()));
        bail!(
            "expected {} tensors for {} layers, found {}{}",
            expected.len(),
            cfg.n_layers,
            plan.len(),
            missing.map(|m| format!(" (missing `{m}`)")).unwrap_or_default()
        );
    }
    plan.sort_by(|a, b| a.hf_name.cmp(&b.hf_name));
    Ok(plan)
}

/// The config the import writes, as the rest of the project reads it: the shapes of
/// [`layout::expected_shapes`] come from it.
fn hf_config(cfg: &ModelConfig) -> Result<slim_checkpoint::ModelConfig> {
    slim_checkpoint::ModelConfig::from_json_str(&cfg.to_config_json().to_string())
        .context("the config.json made from the GGUF metadata")
}

/// Streams the planned tensors, dequantized (and Q/K unpermuted), into `dir/model.safetensors`.
fn write_safetensors(
    file: &GgufFile,
    cfg: &ModelConfig,
    plan: &[Planned],
    dir: &Path,
    dtype: WeightDtype,
) -> Result<()> {
    let specs = plan.iter().map(|p| TensorSpec::new(&p.hf_name, dtype.to_fs(), &p.shape)).collect();
    let metadata =
        BTreeMap::from([("format".to_owned(), "pt".to_owned()), ("source".to_owned(), "slim-gguf import".to_owned())]);
    let mut w = SafetensorsWriter::create(dir, specs, &SafetensorsConfig { sharding: Sharding::Single, metadata })?;
    let mut buf = Vec::new();
    for p in plan {
        let mut values = file.tensor_f32(&p.gguf_name)?;
        if let Some(n_head) = p.unpermute_heads {
            values = unpermute_qk(&values, n_head, cfg.hidden);
        }
        write_values(&mut w, &p.hf_name, &values, dtype, &mut buf)?;
    }
    w.finish()?;
    Ok(())
}
