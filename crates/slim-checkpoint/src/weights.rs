//! Safetensors weights of a model directory: loading (single file or sharded; f32, f16,
//! bf16, converted to f32) and saving (f32, through `slim_fs`'s streaming writer, under a
//! temporary name and renamed).
//!
//! Loading checks a file's layout before the `safetensors` crate parses it, so that a damaged
//! file is reported by what is wrong with it: a truncated file says how many bytes it should have
//! and has, a tensor whose offsets do not fit its dtype and shape is named. Every value is checked
//! to be finite (NaN or infinity is an error naming the tensor and the file). A symbolic link loop
//! on the way to a file is reported as such, not as a missing file.

use crate::layout::expected_shapes;
use crate::{HostTensor, ModelConfig, WeightDtype};
use anyhow::{bail, ensure, format_err, Result};
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use slim_fs::{SafetensorsConfig, SafetensorsWriter, Sharding, TensorSpec};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Named tensors of a model, by HF name (the names of [`crate::layout`]).
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
    /// `model.safetensors.index.json`) through [`crate::WeightSource`].
    pub fn load(dir: &Path) -> Result<Self> {
        crate::WeightSource::open(dir)?.read_all()
    }

    /// Parses the bytes of a safetensors file (`path` names it in errors), converting every
    /// tensor to f32.
    pub fn from_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut w = Self::new();
        w.load_bytes(bytes, path)?;
        Ok(w)
    }

    fn load_bytes(&mut self, bytes: &[u8], path: &Path) -> Result<()> {
        check_layout(bytes, path)?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| match e {
            SafeTensorError::InvalidOffset(name) => {
                format_err!("{}: tensor `{name}` has invalid data_offsets", path.display())
            }
            e => format_err!("{}: invalid safetensors: {e}", path.display()),
        })?;
        for (name, view) in st.tensors() {
            let t = to_host(&name, view.dtype(), view.shape().to_vec(), view.data(), path)?;
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

/// The safetensors files of a model directory, in shard order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(slim_fs::safetensors::SINGLE_FILE);
    if is_file(&single)? {
        return Ok(vec![single]);
    }
    let index = dir.join(slim_fs::safetensors::INDEX_FILE);
    if is_file(&index)? {
        let text = std::fs::read_to_string(&index).map_err(|e| io_error("reading", &index, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format_err!("{} is not valid JSON: {e}", index.display()))?;
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

/// Writes a complete model directory: `config.json`, `model.safetensors` (f32; shards of at most
/// 5 GB and their index past that), the tokenizer files copied from `side_files_from` and, for a
/// pruned model, the transformers code its `config.json` names
/// ([`crate::config::SLIMLLM_CODE_FILES`]). Every file is written under a temporary name and
/// renamed into place (`slim_fs`), weights before config; the weights are streamed one tensor at a
/// time.
pub fn save_model_dir(dir: &Path, cfg: &ModelConfig, weights: &Weights, side_files_from: &Path) -> Result<()> {
    weights.check_against(cfg).map_err(|e| e.context("refusing to save weights that do not match the config"))?;
    save_model_dir_with(dir, cfg, side_files_from, WeightDtype::F32, &mut |name| weights.get(name).cloned())
}

/// [`save_model_dir`] with the tensors produced on demand and stored in `dtype`: `tensor` is
/// called once per tensor of `cfg`, in file order (sorted by name), and only one tensor is held at
/// a time, so a model far larger than memory can be written from a source that makes it layer by
/// layer. A tensor whose shape differs from what `cfg` says is an error naming it, and nothing is
/// renamed into place. `config.json`'s `torch_dtype` is set to `dtype`.
pub fn save_model_dir_with(
    dir: &Path,
    cfg: &ModelConfig,
    side_files_from: &Path,
    dtype: WeightDtype,
    tensor: &mut dyn FnMut(&str) -> Result<HostTensor>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
    let expected = expected_shapes(cfg);
    let specs = expected.iter().map(|(n, s)| TensorSpec::new(n, dtype.to_fs(), s)).collect();
    let config =
        SafetensorsConfig { sharding: Sharding::MaxBytes(crate::synthetic::SHARD_BYTES), metadata: BTreeMap::new() };
    let mut w = SafetensorsWriter::create(dir, specs, &config)?;
    let mut bytes = Vec::new();
    for (name, shape) in &expected {
        let t = tensor(name)?;
        ensure!(&t.shape == shape, "tensor `{name}` has shape {:?}, the config says {shape:?}", t.shape);
        crate::dtype::write_values(&mut w, name, &t.data, dtype, &mut bytes)?;
    }
    w.finish()?;
    for name in SIDE_FILES {
        let src = side_files_from.join(name);
        if side_files_from != dir && is_file(&src)? {
            let bytes = std::fs::read(&src).map_err(|e| io_error("reading", &src, e))?;
            slim_fs::write_atomic(&dir.join(name), &bytes)?;
        }
    }
    if cfg.is_pruned() {
        for (name, text) in crate::config::SLIMLLM_CODE_FILES {
            slim_fs::write_atomic(&dir.join(name), text.as_bytes())?;
        }
    }
    let mut cfg_json = cfg.to_json();
    if cfg_json.get("torch_dtype").is_some() || dtype != WeightDtype::F32 {
        cfg_json["torch_dtype"] = dtype.torch_dtype().into();
    }
    let cfg_text = serde_json::to_string_pretty(&cfg_json)?;
    slim_fs::write_atomic(&dir.join("config.json"), cfg_text.as_bytes())?;
    Ok(())
}

/// Writes `bytes` to `path` atomically: [`slim_fs::write_atomic`], which new code calls directly.
/// Kept for the callers outside this crate that still name it here.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(slim_fs::write_atomic(path, bytes)?)
}

/// Whether `path` is a regular file (through symbolic links). Only "nothing there" counts as no:
/// other errors, a symbolic link loop above all, are reported rather than taken for a missing file.
fn is_file(path: &Path) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.is_file()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("inspecting", path, e)),
    }
}

/// `ELOOP`: too many levels of symbolic links (std has no stable `ErrorKind` for it yet).
#[cfg(any(target_os = "linux", target_os = "android"))]
const ELOOP: i32 = 40;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const ELOOP: i32 = 62; // macOS and the BSDs

/// An I/O error with `<doing> <path>` as its context, which says "symbolic link loop" for `ELOOP`
/// (the OS's own words, "too many levels of symbolic links", stay as the cause).
pub(crate) fn io_error(doing: &str, path: &Path, e: io::Error) -> anyhow::Error {
    let looped = cfg!(unix) && e.raw_os_error() == Some(ELOOP);
    let what = format!("{doing} {}{}", path.display(), if looped { ": symbolic link loop (ELOOP)" } else { "" });
    anyhow::Error::new(e).context(what)
}

/// The longest header the `safetensors` crate accepts.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Checks the layout of a safetensors file before the `safetensors` crate parses it, so that the
/// common damage is named: a file cut short (expected and actual size), bytes after the last
/// tensor, a tensor whose offsets do not match its dtype and shape or overlap another tensor.
/// What this does not recognise (malformed JSON, unknown dtypes) is left to the crate's parser.
fn check_layout(bytes: &[u8], path: &Path) -> Result<()> {
    let len = bytes.len() as u64;
    let n = header_length(&bytes[..bytes.len().min(8)], len, path)?;
    check_header(&bytes[8..8 + n as usize], len, path)
}

/// The header length N of a safetensors file of `len` bytes from its first bytes (`prefix`, up to
/// 8), checked against the format's limit and the file's size.
pub(crate) fn header_length(prefix: &[u8], len: u64, path: &Path) -> Result<u64> {
    let p = path.display();
    let Some(n) = prefix.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))) else {
        bail!("{p}: truncated safetensors file: expected at least 8 bytes (the header length), file has {len}");
    };
    ensure!(
        n <= MAX_HEADER_BYTES,
        "{p}: not a safetensors file: its header length {n} exceeds the format's limit of {MAX_HEADER_BYTES} bytes"
    );
    let header_end = 8 + n;
    ensure!(
        header_end <= len,
        "{p}: truncated safetensors file: expected at least {header_end} bytes (8 + a header of {n}), file has {len}"
    );
    Ok(n)
}

/// [`check_layout`] past the header length: `header` is the JSON header of a file of `len` bytes.
pub(crate) fn check_header(header: &[u8], len: u64, path: &Path) -> Result<()> {
    let p = path.display();
    let header_end = 8 + header.len() as u64;
    let Ok(serde_json::Value::Object(header)) = serde_json::from_slice(header) else {
        return Ok(()); // the crate's parser reports the JSON error
    };
    let mut spans = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info.get("data_offsets").and_then(|o| o.as_array()).and_then(|o| match o.as_slice() {
            [a, b] => Some((a.as_u64()?, b.as_u64()?)),
            _ => None,
        });
        let Some((start, end)) = offsets else {
            bail!("{p}: tensor `{name}` has no valid data_offsets (two byte offsets into the data)");
        };
        ensure!(start <= end, "{p}: tensor `{name}` has data_offsets [{start}, {end}], which end before they start");
        let dtype_size = info.get("dtype").and_then(|d| d.as_str()).and_then(dtype_bytes);
        let shape: Option<Vec<u64>> =
            info.get("shape").and_then(|s| s.as_array()).and_then(|s| s.iter().map(|d| d.as_u64()).collect());
        if let (Some(size), Some(shape)) = (dtype_size, shape) {
            if let Some(need) = shape.iter().try_fold(size, |n, &d| n.checked_mul(d)) {
                ensure!(
                    end - start == need,
                    "{p}: tensor `{name}` has data_offsets [{start}, {end}] ({} bytes), \
                     but its dtype and shape {shape:?} need {need}",
                    end - start
                );
            }
        }
        spans.push((start, end, name));
    }
    spans.sort();
    let mut expected_start = 0;
    for &(start, end, name) in &spans {
        ensure!(
            start == expected_start,
            "{p}: tensor `{name}` has data_offsets [{start}, {end}], but the tensors before it end at byte \
             {expected_start} (tensors must be stored back to back)"
        );
        expected_start = end;
    }
    let expected = header_end.saturating_add(expected_start);
    ensure!(expected <= len, "{p}: truncated safetensors file: expected {expected} bytes, file has {len}");
    ensure!(
        expected == len,
        "{p}: {} bytes after the last tensor: expected {expected} bytes, file has {len}",
        len - expected
    );
    Ok(())
}

/// Bytes per element of the dtypes this loader converts (others are rejected later, by name).
fn dtype_bytes(name: &str) -> Option<u64> {
    match name {
        "F32" | "I32" | "U32" => Some(4),
        "F16" | "BF16" | "I16" | "U16" => Some(2),
        "F64" | "I64" | "U64" => Some(8),
        "U8" | "I8" | "BOOL" | "F8_E5M2" | "F8_E4M3" => Some(1),
        _ => None,
    }
}

/// Values per block of [`to_host_in_pieces`]'s NaN check and of [`first_non_finite`].
const BLOCK: usize = 4096;

/// Index of the first NaN or infinity in `v`. Blocks are checked by an OR of exponent-all-ones
/// tests, a branch-free loop the compiler vectorizes; only a bad block is searched element-wise.
pub fn first_non_finite(v: &[f32]) -> Option<usize> {
    for (b, block) in v.chunks(BLOCK).enumerate() {
        let bad = block.iter().fold(false, |acc, x| acc | (x.to_bits() & 0x7f80_0000 == 0x7f80_0000));
        if bad {
            return block.iter().position(|x| !x.is_finite()).map(|i| b * BLOCK + i);
        }
    }
    None
}

/// Converts the little-endian bytes of tensor `name` (of `dtype` and `shape`, read from `path`) to
/// an f32 host tensor, refusing other dtypes and non-finite values by name.
pub fn to_host(name: &str, dtype: Dtype, shape: Vec<usize>, bytes: &[u8], path: &Path) -> Result<HostTensor> {
    to_host_in_pieces(name, dtype, shape, bytes.len(), path, |buf, at| {
        buf.copy_from_slice(&bytes[at..at + buf.len()]);
        Ok(())
    })
}

/// Bytes [`to_host_in_pieces`] converts at a time: a multiple of every dtype's width.
const PIECE: usize = 1 << 20;

/// [`to_host`] of a tensor of `len` bytes that `fill(buf, at)` delivers piece by piece (the bytes at offset `at`
/// into `buf`, at most [`PIECE`] at a time): a tensor read from a file needs no buffer of its own size, only the
/// f32 one it becomes.
pub fn to_host_in_pieces(
    name: &str,
    dtype: Dtype,
    shape: Vec<usize>,
    len: usize,
    path: &Path,
    mut fill: impl FnMut(&mut [u8], usize) -> Result<()>,
) -> Result<HostTensor> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => {
            bail!("{}: tensor `{name}` has unsupported dtype {other:?} (f32, f16, bf16 are supported)", path.display())
        }
    };
    let mut data: Vec<f32> = Vec::with_capacity(len / width);
    let mut buf = vec![0u8; PIECE.min(len)];
    let mut first_bad = None;
    let mut at = 0;
    while at < len {
        let piece = &mut buf[..PIECE.min(len - at)];
        fill(piece, at)?;
        // Block by block, so that each block is checked for NaN and infinity while it is still in cache.
        for block in piece.chunks(BLOCK * width) {
            let start = data.len();
            match dtype {
                Dtype::F32 => data.extend(block.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
                Dtype::F16 => {
                    data.extend(block.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()))
                }
                _ => data.extend(block.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
            }
            if first_bad.is_none() {
                first_bad = first_non_finite(&data[start..]).map(|i| start + i);
            }
        }
        at += piece.len();
    }
    if let Some(i) = first_bad {
        let count = data.iter().filter(|v| !v.is_finite()).count();
        bail!(
            "{}: tensor `{name}` has {count} non-finite value(s) of {} (the first, at index {i}, is {})",
            path.display(),
            data.len(),
            data[i]
        );
    }
    HostTensor::new(shape, data).map_err(|e| format_err!("{}: tensor `{name}`: {e}", path.display()))
}
