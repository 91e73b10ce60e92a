//! Converts a GGUF model into an HF-layout directory of f32 weights.
//!
//! The rest of the project loads HF directories (config.json, tokenizer.json, model.safetensors);
//! this is the one place that knows GGUF tensor names, llama.cpp's Q/K row permutation and the
//! quantized encodings. Tensors are dequantized and written one at a time, so memory stays at about
//! one tensor beyond the memory-mapped file; the safetensors file is written under a temporary
//! name and renamed into place, so an interrupted import leaves no half-written model.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, format_err, Context, Result};
use serde_json::{json, Map, Value};

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
pub fn import_gguf(gguf: &Path, out_dir: &Path) -> Result<ImportSummary> {
    let file = GgufFile::open(gguf)?;
    let cfg = ModelConfig::from_gguf(&file)?;
    let tokenizer = build_tokenizer_json(&file)?;
    let tokenizer_config = build_tokenizer_config_json(&file)
        .with_context(|| format!("building tokenizer_config.json from {}", gguf.display()))?;
    let plan = plan_tensors(&file, &cfg).with_context(|| format!("mapping the tensors of {}", gguf.display()))?;

    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    write_json(&out_dir.join("config.json"), &cfg.to_config_json())?;
    write_json(&out_dir.join("generation_config.json"), &cfg.to_generation_config_json())?;
    // Compact: the vocab and merges make a pretty-printed tokenizer.json several times larger.
    let tok_path = out_dir.join("tokenizer.json");
    fs::write(&tok_path, serde_json::to_vec(&tokenizer)?).with_context(|| format!("writing {}", tok_path.display()))?;
    write_json(&out_dir.join("tokenizer_config.json"), &tokenizer_config)?;

    let final_path = out_dir.join("model.safetensors");
    let tmp_path = out_dir.join(format!(".model.safetensors.tmp-{}", std::process::id()));
    let written = write_safetensors(&file, &cfg, &plan, &tmp_path);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    fs::rename(&tmp_path, &final_path)
        .with_context(|| format!("renaming {} to {}", tmp_path.display(), final_path.display()))?;
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

fn write_safetensors(file: &GgufFile, cfg: &ModelConfig, plan: &[Planned], path: &Path) -> Result<()> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt", "source": "slim-gguf import"}));
    let mut offset = 0u64;
    for p in plan {
        let end = offset + 4 * p.n_elements;
        header.insert(p.hf_name.clone(), json!({"dtype": "F32", "shape": p.shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut header = serde_json::to_vec(&Value::Object(header))?;
    // The data section starts 8-byte aligned, padded with spaces as the safetensors crate does.
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let io = |e: std::io::Error| format_err!("writing {}: {e}", path.display());
    w.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&header).map_err(io)?;
    let mut buf = Vec::new();
    for p in plan {
        let mut values = file.tensor_f32(&p.gguf_name)?;
        if let Some(n_head) = p.unpermute_heads {
            values = unpermute_qk(&values, n_head, cfg.hidden);
        }
        buf.clear();
        buf.reserve(values.len() * 4);
        for v in &values {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&buf).map_err(io)?;
    }
    w.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}
