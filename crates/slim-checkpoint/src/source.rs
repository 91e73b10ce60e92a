//! The weights of a model directory, read one tensor at a time: [`WeightSource`].
//!
//! Opening reads only the files' headers (checked as [`crate::Weights::load`] checks a whole file:
//! truncation, offsets, duplicates across shards, supported dtypes); a tensor's bytes are read when
//! it is asked for, converted to f32 and checked to be finite. Nothing stays in memory between two
//! reads but the headers, so a stage that works one layer at a time holds one layer's f32 weights,
//! whatever the size of the model and whatever dtype it is stored in.
//!
//! The bytes are read with positioned reads (`pread`), not through a memory map: pages of a
//! mapping that were touched count as the process's resident memory until the mapping goes, which
//! would make a streamed pass over a 13 GB file look (and, under pressure, behave) like a 13 GB
//! process. The kernel's page cache keeps the speed of a second read either way.

use crate::layout::{self, Global, TensorId};
use crate::weights::{check_header, header_length, io_error, to_host_in_pieces, weight_files};
use crate::{HostTensor, ModelConfig, WeightDtype, Weights};
use anyhow::{ensure, format_err, Result};
use safetensors::Dtype;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where one tensor's bytes are.
#[derive(Clone, Debug)]
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// A header entry, as the format spells it.
#[derive(Deserialize)]
struct Info {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// The tensors of a model directory (`model.safetensors`, or the shards of
/// `model.safetensors.index.json`), read on demand; see the module docs.
#[derive(Debug)]
pub struct WeightSource {
    dir: PathBuf,
    files: Vec<(PathBuf, File)>,
    entries: BTreeMap<String, Entry>,
}

impl WeightSource {
    /// Opens every weight file of `dir` and reads their headers.
    pub fn open(dir: &Path) -> Result<WeightSource> {
        let mut src = WeightSource { dir: dir.to_owned(), files: Vec::new(), entries: BTreeMap::new() };
        for path in weight_files(dir)? {
            src.add_file(path)?;
        }
        ensure!(!src.entries.is_empty(), "no tensors in {}", dir.display());
        Ok(src)
    }

    fn add_file(&mut self, path: PathBuf) -> Result<()> {
        let file = File::open(&path).map_err(|e| io_error("opening", &path, e))?;
        let len = file.metadata().map_err(|e| io_error("inspecting", &path, e))?.len();
        let mut prefix = vec![0u8; len.min(8) as usize];
        read_at(&file, &mut prefix, 0).map_err(|e| io_error("reading", &path, e))?;
        let n = header_length(&prefix, len, &path)?;
        let mut header = vec![0u8; n as usize];
        read_at(&file, &mut header, 8).map_err(|e| io_error("reading", &path, e))?;
        check_header(&header, len, &path)?;
        let p = path.display();
        let raw: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| format_err!("{p}: invalid safetensors header: {e}"))?;
        let idx = self.files.len();
        for (name, v) in raw {
            if name == "__metadata__" {
                continue;
            }
            let info: Info = serde_json::from_value(v).map_err(|e| match e.to_string() {
                m if m.contains("unknown variant") => {
                    format_err!("{p}: tensor `{name}` has an unsupported dtype ({m}; f32, f16, bf16 are supported)")
                }
                m => format_err!("{p}: tensor `{name}`: invalid header entry: {m}"),
            })?;
            ensure!(
                matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16),
                "{p}: tensor `{name}` has unsupported dtype {:?} (f32, f16, bf16 are supported)",
                info.dtype
            );
            let base = 8 + n;
            let entry = Entry {
                file: idx,
                dtype: info.dtype,
                shape: info.shape,
                start: base + info.data_offsets.0,
                end: base + info.data_offsets.1,
            };
            if self.entries.insert(name.clone(), entry).is_some() {
                anyhow::bail!("{p}: tensor `{name}` appears in more than one file");
            }
        }
        self.files.push((path, file));
        Ok(())
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.entry(name)?.shape)
    }

    /// The stored dtype of a tensor.
    pub fn dtype(&self, name: &str) -> Result<Dtype> {
        Ok(self.entry(name)?.dtype)
    }

    /// The dtype the model is stored in: that of its token embedding (of its first tensor when it
    /// has none).
    pub fn model_dtype(&self) -> WeightDtype {
        let e = self.entries.get(Global::Embedding.hf_name()).or_else(|| self.entries.values().next());
        e.and_then(|e| WeightDtype::of_safetensors(e.dtype)).unwrap_or(WeightDtype::F32)
    }

    /// Bytes the tensors take on disk.
    pub fn stored_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.end - e.start).sum()
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| format_err!("{}: missing tensor `{name}`", self.dir.display()))
    }

    /// Reads tensor `name` as f32 (checked finite).
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        let e = self.entry(name)?;
        let (path, file) = &self.files[e.file];
        let len = (e.end - e.start) as usize;
        to_host_in_pieces(name, e.dtype, e.shape.clone(), len, path, |buf, at| {
            read_at(file, buf, e.start + at as u64).map_err(|err| io_error("reading", path, err))
        })
    }

    /// Reads `name`, checking its shape.
    pub fn read_shaped(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let have = self.shape(name)?;
        ensure!(have == shape, "{}: tensor `{name}` has shape {have:?}, expected {shape:?}", self.dir.display());
        self.read(name)
    }

    /// Every tensor, as [`Weights`].
    pub fn read_all(&self) -> Result<Weights> {
        let mut w = Weights::new();
        for name in self.names() {
            w.insert(name, self.read(name)?);
        }
        Ok(w)
    }

    /// The tensors of decoder layer `l` of a model with `cfg` (shapes checked against it), as
    /// [`Weights`] holding nothing else.
    pub fn read_layer(&self, cfg: &ModelConfig, l: usize) -> Result<Weights> {
        layer_of(cfg, l, |name, shape| self.read_shaped(name, shape))
    }

    /// A global tensor of a model with `cfg` (its shape checked).
    pub fn read_global(&self, cfg: &ModelConfig, g: Global) -> Result<HostTensor> {
        let t = TensorId::Global(g);
        let shape = t.shape(cfg).ok_or_else(|| format_err!("this model has no `{}`", g.hf_name()))?;
        self.read_shaped(g.hf_name(), &shape)
    }

    /// Checks that the stored tensors are exactly those `cfg` describes, with their shapes,
    /// without reading any of them.
    pub fn check_against(&self, cfg: &ModelConfig) -> Result<()> {
        let expected = layout::expected_shapes(cfg);
        for (name, shape) in &expected {
            let have = self.shape(name)?;
            ensure!(have == shape.as_slice(), "tensor `{name}` has shape {have:?}, expected {shape:?}");
        }
        for name in self.entries.keys() {
            ensure!(expected.contains_key(name), "unexpected tensor `{name}` for this config");
        }
        Ok(())
    }
}

/// Fills `buf` from `file` at byte `offset`.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Fills `buf` from `file` at byte `offset`.
#[cfg(not(unix))]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// Where a stage that works one layer at a time gets a model's tensors: the files ([`WeightSource`], read on
/// demand) or weights already in memory ([`Weights`], copied out), so that the same code serves both.
pub trait LayerSource {
    /// The tensors of decoder layer `l` of a model with `cfg`, as [`Weights`] holding nothing else.
    fn layer(&self, cfg: &ModelConfig, l: usize) -> Result<Weights>;
    /// A global tensor (embedding, final norm, lm_head) of a model with `cfg`.
    fn global(&self, cfg: &ModelConfig, g: Global) -> Result<HostTensor>;
}

impl LayerSource for WeightSource {
    fn layer(&self, cfg: &ModelConfig, l: usize) -> Result<Weights> {
        self.read_layer(cfg, l)
    }

    fn global(&self, cfg: &ModelConfig, g: Global) -> Result<HostTensor> {
        self.read_global(cfg, g)
    }
}

/// The tensors of decoder layer `l` of a model with `cfg`, each got by name and expected shape.
fn layer_of(cfg: &ModelConfig, l: usize, get: impl Fn(&str, &[usize]) -> Result<HostTensor>) -> Result<Weights> {
    let mut w = Weights::new();
    for t in layout::layer_tensors(cfg, l) {
        let shape = t.shape(cfg).expect("layer_tensors keeps tensors with a shape");
        let name = t.hf_name();
        w.insert(name.clone(), get(&name, &shape)?);
    }
    Ok(w)
}

impl LayerSource for Weights {
    fn layer(&self, cfg: &ModelConfig, l: usize) -> Result<Weights> {
        layer_of(cfg, l, |name, shape| Ok(self.get_shaped(name, shape)?.clone()))
    }

    fn global(&self, cfg: &ModelConfig, g: Global) -> Result<HostTensor> {
        let shape = TensorId::Global(g).shape(cfg).ok_or_else(|| format_err!("this model has no `{}`", g.hf_name()))?;
        Ok(self.get_shaped(g.hf_name(), &shape)?.clone())
    }
}
