//! Converts a GGUF model into an HF-layout directory of f32 weights.
//!
//! The rest of the project loads HF directories (config.json, tokenizer.json, model.safetensors);
//! this is the one place that knows GGUF tensor names, llama.cpp's Q/K row permutation and the
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
/// tokenizer.json, tokenizer_config.json and model.safetensors (all f32).
///
/// `out_dir` is checked first: when it holds anything and `existing` is [`Existing::Refuse`], the
/// error is a [`slim_fs::Error::Occupied`] and nothing is read or written. Otherwise the folder is
/// built beside `out_dir` and renamed into place once complete; on any error it is removed and
/// `out_dir` is left as it was.
pub fn import_gguf(gguf: &Path, out_dir: &Path, existing: Existing) -> Result<ImportSummary> {
    let install = DirInstall::begin(out_dir, existing)?;
    let file = GgufFile::open(gguf)?;
    let cfg = ModelConfig::from_gguf(&file)?;
    let tokenizer = build_tokenizer_json(&file)?;
    let tokenizer_config = build_tokenizer_config_json(&file)
        .with_context(|| format!("building tokenizer_config.json from {}", gguf.display()))?;
    let plan = plan_tensors(&file, &cfg).with_context(|| format!("mapping the tensors of {}", gguf.display()))?;

    let dir = install.path();
    slim_fs::write_json_atomic(&dir.join("config.json"), &cfg.to_config_json())?;
    slim_fs::write_json_atomic(&dir.join("generation_config.json"), &cfg.to_generation_config_json())?;
    // Compact: the vocab and merges make a pretty-printed tokenizer.json several times larger.
    slim_fs::write_atomic(&dir.join("tokenizer.json"), &serde_json::to_vec(&tokenizer)?)?;
    slim_fs::write_json_atomic(&dir.join("tokenizer_config.json"), &tokenizer_config)?;
    write_safetensors(&file, &cfg, &plan, dir)?;
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
    let fixed = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Ok(n.to_owned());
    }
    let unknown = || format_err!("unknown tensor name `{gguf_name}` for architecture {}", arch.name());
    let rest = gguf_name.strip_prefix("blk.").ok_or_else(unknown)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) || (layer.len() > 1 && layer.starts_with('0')) {
        return Err(unknown());
    }
    let (part, suffix) = rest.split_once('.').ok_or_else(unknown)?;
    let module = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return Err(unknown()),
    };
    let bias_ok = arch == Arch::Qwen2 && matches!(part, "attn_q" | "attn_k" | "attn_v");
    match suffix {
        "weight" => {}
        "bias" if bias_ok => {}
        _ => return Err(unknown()),
    }
    Ok(format!("model.layers.{layer}.{module}.{suffix}"))
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
    let mut plan = Vec::with_capacity(file.tensors().len());
    for t in file.tensors() {
        let hf_name = hf_tensor_name(&t.name, cfg.arch)?;
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let expected = expected_shape(&hf_name, cfg);
        if shape != expected {
            bail!("tensor `{}` has HF shape {shape:?}, expected {expected:?} from the config", t.name);
        }
        let unpermute_heads = match (cfg.arch, t.name.rsplit('.').nth(1)) {
            (Arch::Llama, Some("attn_q")) => Some(cfg.n_head),
            (Arch::Llama, Some("attn_k")) => Some(cfg.n_head_kv),
            _ => None,
        };
        plan.push(Planned { gguf_name: t.name.clone(), hf_name, shape, n_elements: t.n_elements, unpermute_heads });
    }
    // Every expected tensor must be there (names are unique, so equal counts mean equal sets).
    let per_layer = if cfg.arch == Arch::Qwen2 { 12 } else { 9 };
    let expected = 2 + usize::from(!cfg.tie_word_embeddings) + per_layer * cfg.n_layers;
    if plan.len() != expected {
        let names: std::collections::HashSet<&str> = plan.iter().map(|p| p.hf_name.as_str()).collect();
        let missing = all_expected_names(cfg).into_iter().find(|n| !names.contains(n.as_str()));
        bail!(
            "expected {expected} tensors for {} layers, found {}{}",
            cfg.n_layers,
            plan.len(),
            missing.map(|m| format!(" (missing `{m}`)")).unwrap_or_default()
        );
    }
    plan.sort_by(|a, b| a.hf_name.cmp(&b.hf_name));
    Ok(plan)
}

fn all_expected_names(cfg: &ModelConfig) -> Vec<String> {
    let mut v = vec!["model.embed_tokens.weight".to_owned(), "model.norm.weight".to_owned()];
    if !cfg.tie_word_embeddings {
        v.push("lm_head.weight".to_owned());
    }
    for l in 0..cfg.n_layers {
        for m in [
            "input_layernorm.weight",
            "post_attention_layernorm.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
        ] {
            v.push(format!("model.layers.{l}.{m}"));
        }
        if cfg.arch == Arch::Qwen2 {
            for m in ["q_proj", "k_proj", "v_proj"] {
                v.push(format!("model.layers.{l}.self_attn.{m}.bias"));
            }
        }
    }
    v
}

fn expected_shape(hf_name: &str, c: &ModelConfig) -> Vec<usize> {
    let q = c.n_head * c.head_dim;
    let kv = c.n_head_kv * c.head_dim;
    let module = hf_name.rsplit('.').nth(1).unwrap_or("");
    let is_bias = hf_name.ends_with(".bias");
    match (module, is_bias) {
        ("embed_tokens", _) | ("lm_head", _) => vec![c.vocab_size, c.hidden],
        ("norm", _) | ("input_layernorm", _) | ("post_attention_layernorm", _) => vec![c.hidden],
        ("q_proj", false) => vec![q, c.hidden],
        ("k_proj", false) | ("v_proj", false) => vec![kv, c.hidden],
        ("q_proj", true) => vec![q],
        ("k_proj", true) | ("v_proj", true) => vec![kv],
        ("o_proj", _) => vec![c.hidden, q],
        ("gate_proj", _) | ("up_proj", _) => vec![c.ffn, c.hidden],
        ("down_proj", _) => vec![c.hidden, c.ffn],
        _ => unreachable!("hf_tensor_name only produces the names above, got `{hf_name}`"),
    }
}

/// Streams the planned tensors, dequantized (and Q/K unpermuted), into `dir/model.safetensors`.
fn write_safetensors(file: &GgufFile, cfg: &ModelConfig, plan: &[Planned], dir: &Path) -> Result<()> {
    let specs = plan.iter().map(|p| TensorSpec::new(&p.hf_name, slim_fs::Dtype::F32, &p.shape)).collect();
    let metadata =
        BTreeMap::from([("format".to_owned(), "pt".to_owned()), ("source".to_owned(), "slim-gguf import".to_owned())]);
    let mut w = SafetensorsWriter::create(dir, specs, &SafetensorsConfig { sharding: Sharding::Single, metadata })?;
    for p in plan {
        let mut values = file.tensor_f32(&p.gguf_name)?;
        if let Some(n_head) = p.unpermute_heads {
            values = unpermute_qk(&values, n_head, cfg.hidden);
        }
        w.write_f32(&p.hf_name, &values)?;
    }
    w.finish()?;
    Ok(())
}
