//! The one safetensors writer: tensors declared up front, bytes streamed one tensor at a time.
//!
//! The format (<https://github.com/huggingface/safetensors>): an 8-byte little-endian header
//! length N, N bytes of JSON (padded with spaces to a multiple of 8), then the tensors' bytes back to
//! back in the order of their `data_offsets`. Because every name, dtype and shape is known before
//! the first byte, the header can be written first and memory stays at one tensor.
//!
//! Sharded output follows transformers' `save_pretrained`: `model-00001-of-0000K.safetensors` files
//! plus `model.safetensors.index.json` (`{"metadata": {"total_size": …}, "weight_map": {tensor:
//! file}}`), and a plan that fits in one shard is written as a plain `model.safetensors`.
//! Every file is written under a temporary name and renamed at [`SafetensorsWriter::finish`], shards
//! first and the index last, so a reader never sees an index whose shards are not all complete.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::atomic::{write_json_atomic, AtomicFile};
use crate::error::{Error, Result};

/// File name of an unsharded model.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The largest header the `safetensors` crate reads.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Element types this writer supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }

    /// The name in safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }
}

/// One tensor to write: name, element type and shape (outermost dimension first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name in the header.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// A tensor named `name`.
    pub fn new(name: &str, dtype: Dtype, shape: &[usize]) -> TensorSpec {
        TensorSpec { name: name.to_owned(), dtype, shape: shape.to_vec() }
    }

    /// Size of its data in bytes, or `None` if that overflows.
    pub fn byte_len(&self) -> Option<u64> {
        self.shape.iter().try_fold(self.dtype.size() as u64, |n, &d| n.checked_mul(d as u64))
    }
}

/// How tensors are spread over files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharding {
    /// Everything in `model.safetensors`.
    Single,
    /// Shards of at most this many tensor bytes each (a single larger tensor gets a shard of its
    /// own), in the order given; one shard is written as `model.safetensors` without an index.
    MaxBytes(u64),
}

/// What [`SafetensorsWriter::create`] writes besides the tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsConfig {
    /// One file or shards.
    pub sharding: Sharding,
    /// The header's `__metadata__` (string to string); left out when empty.
    pub metadata: BTreeMap<String, String>,
}

/// One output file: its name and the range of tensors it holds.
#[derive(Debug)]
struct Shard {
    file_name: String,
    tensors: std::ops::Range<usize>,
}

/// Writes declared tensors in order; see the module docs.
///
/// Dropping it before [`SafetensorsWriter::finish`] removes every temporary file it made.
#[derive(Debug)]
pub struct SafetensorsWriter {
    dir: PathBuf,
    specs: Vec<TensorSpec>,
    shards: Vec<Shard>,
    metadata: BTreeMap<String, String>,
    /// Index of the next tensor to write.
    next: usize,
    /// The shard being written.
    open: Option<AtomicFile>,
    /// Shards written and fsynced under their temporary names, waiting for `finish`.
    closed: Vec<AtomicFile>,
    /// Reused buffer of [`SafetensorsWriter::write_f32`].
    buf: Vec<u8>,
}

impl SafetensorsWriter {
    /// Plans the files for `specs` (in this order) in folder `dir`, checking names and sizes.
    /// Nothing is created until the first tensor is written.
    ///
    /// A sharded plan is refused when `dir` holds a `model.safetensors`, which readers would take
    /// instead of the new shards.
    pub fn create(dir: &Path, specs: Vec<TensorSpec>, config: &SafetensorsConfig) -> Result<SafetensorsWriter> {
        let mut seen = HashSet::new();
        for s in &specs {
            if s.name.is_empty() || s.name == "__metadata__" {
                return Err(Error::safetensors(dir, format!("`{}` cannot name a tensor", s.name)));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(Error::safetensors(dir, format!("tensor `{}` is declared twice", s.name)));
            }
            if s.byte_len().is_none() {
                return Err(Error::safetensors(
                    dir,
                    format!("tensor `{}` of shape {:?} is too large", s.name, s.shape),
                ));
            }
        }
        let groups = match config.sharding {
            Sharding::Single => None,
            Sharding::MaxBytes(0) => {
                return Err(Error::safetensors(dir, "a shard size of 0 bytes cannot hold any tensor"));
            }
            Sharding::MaxBytes(max) => Some(group_by_size(&specs, max)),
        };
        let shards: Vec<Shard> = match groups {
            Some(groups) if groups.len() > 1 => {
                let n = groups.len();
                let name = |i: usize| format!("model-{:05}-of-{n:05}.safetensors", i + 1);
                groups.into_iter().enumerate().map(|(i, tensors)| Shard { file_name: name(i), tensors }).collect()
            }
            _ => vec![Shard { file_name: SINGLE_FILE.to_owned(), tensors: 0..specs.len() }],
        };
        if shards.len() > 1 && dir.join(SINGLE_FILE).exists() {
            let reason = format!("holds a {SINGLE_FILE}, which readers would take instead of the new shards");
            return Err(Error::safetensors(dir, reason));
        }
        let w = SafetensorsWriter {
            dir: dir.to_owned(),
            specs,
            shards,
            metadata: config.metadata.clone(),
            next: 0,
            open: None,
            closed: Vec::new(),
            buf: Vec::new(),
        };
        for shard in &w.shards {
            let n = w.header(shard).len() as u64;
            if n > MAX_HEADER_BYTES {
                let reason = format!(
                    "the header of {} would take {n} bytes, over the limit of {MAX_HEADER_BYTES}",
                    shard.file_name
                );
                return Err(Error::safetensors(dir, reason));
            }
        }
        Ok(w)
    }

    /// The files this writer makes, in order (the index last, when sharded).
    pub fn file_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shards.iter().map(|s| s.file_name.clone()).collect();
        if self.shards.len() > 1 {
            names.push(INDEX_FILE.to_owned());
        }
        names
    }

    /// Writes the bytes of tensor `name`, which must be the next one declared, little-endian,
    /// exactly as many as its dtype and shape need.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.start_tensor(name, bytes.len() as u64)?;
        self.open.as_mut().expect("start_tensor opened the shard").write_all(bytes)?;
        self.end_tensor()
    }

    /// Writes an F32 tensor from its values (converted to little-endian bytes in blocks).
    pub fn write_f32(&mut self, name: &str, values: &[f32]) -> Result<()> {
        if let Some(s) = self.specs.get(self.next).filter(|s| s.name == name && s.dtype != Dtype::F32) {
            let reason = format!("tensor `{name}` is declared {}, not F32", s.dtype.name());
            return Err(Error::safetensors(&self.dir, reason));
        }
        self.start_tensor(name, 4 * values.len() as u64)?;
        let mut buf = std::mem::take(&mut self.buf);
        let file = self.open.as_mut().expect("start_tensor opened the shard");
        let mut result = Ok(());
        for block in values.chunks(1 << 16) {
            buf.clear();
            buf.extend(block.iter().flat_map(|v| v.to_le_bytes()));
            result = file.write_all(&buf);
            if result.is_err() {
                break;
            }
        }
        self.buf = buf;
        result?;
        self.end_tensor()
    }

    /// Checks that every declared tensor was written, renames the shards into place, then writes
    /// the index when sharded. Returns the paths written, in [`SafetensorsWriter::file_names`] order.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        if let Some(s) = self.specs.get(self.next) {
            let reason =
                format!("only {} of {} tensors were written (next: `{}`)", self.next, self.specs.len(), s.name);
            return Err(Error::safetensors(&self.dir, reason));
        }
        if self.specs.is_empty() {
            // No tensor opened the (single, empty) file: write its header now.
            self.open_shard(0)?;
            self.close_shard()?;
        }
        let mut paths = Vec::new();
        for f in std::mem::take(&mut self.closed) {
            paths.push(f.path().to_owned());
            f.commit()?;
        }
        if self.shards.len() > 1 {
            let mut weight_map = BTreeMap::new();
            for shard in &self.shards {
                for s in &self.specs[shard.tensors.clone()] {
                    weight_map.insert(s.name.as_str(), shard.file_name.as_str());
                }
            }
            let total: u64 = self.specs.iter().map(|s| s.byte_len().expect("checked in create")).sum();
            let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            let path = self.dir.join(INDEX_FILE);
            write_json_atomic(&path, &index)?;
            paths.push(path);
        }
        Ok(paths)
    }

    fn start_tensor(&mut self, name: &str, n_bytes: u64) -> Result<()> {
        let Some(spec) = self.specs.get(self.next) else {
            let reason = format!("tensor `{name}` was not declared (all {} are written)", self.specs.len());
            return Err(Error::safetensors(&self.dir, reason));
        };
        if spec.name != name {
            let reason = format!("tensor `{}` comes next in the declared order, not `{name}`", spec.name);
            return Err(Error::safetensors(&self.dir, reason));
        }
        let expected = spec.byte_len().expect("checked in create");
        if n_bytes != expected {
            let (dt, shape) = (spec.dtype.name(), &spec.shape);
            let reason = format!("tensor `{name}` ({dt} {shape:?}) needs {expected} bytes, got {n_bytes}");
            return Err(Error::safetensors(&self.dir, reason));
        }
        if self.open.is_none() {
            let shard = self.shards.iter().position(|s| s.tensors.start == self.next).expect("planned in create");
            self.open_shard(shard)?;
        }
        Ok(())
    }

    fn end_tensor(&mut self) -> Result<()> {
        self.next += 1;
        if self.shards.iter().any(|s| s.tensors.end == self.next) {
            self.close_shard()?;
        }
        Ok(())
    }

    fn open_shard(&mut self, i: usize) -> Result<()> {
        let header = self.header(&self.shards[i]);
        let mut f = AtomicFile::create(&self.dir.join(&self.shards[i].file_name))?;
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(&header)?;
        self.open = Some(f);
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        let mut f = self.open.take().expect("a shard is open");
        f.finish_writing()?;
        self.closed.push(f);
        Ok(())
    }

    /// The JSON header of `shard`, padded with spaces to a multiple of 8 bytes. Written by hand so
    /// that keys keep the data order (`__metadata__` first), as the `safetensors` crate writes them.
    fn header(&self, shard: &Shard) -> Vec<u8> {
        let mut h = String::from("{");
        if !self.metadata.is_empty() {
            h += "\"__metadata__\":";
            h += &serde_json::to_string(&self.metadata).expect("a string map serializes");
        }
        let mut offset = 0u64;
        for s in &self.specs[shard.tensors.clone()] {
            let end = offset + s.byte_len().expect("checked in create");
            if h.len() > 1 {
                h.push(',');
            }
            h += &serde_json::to_string(&s.name).expect("a string serializes");
            h += &format!(
                ":{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
                s.dtype.name(),
                serde_json::to_string(&s.shape).expect("a list of sizes serializes")
            );
            offset = end;
        }
        h.push('}');
        let mut bytes = h.into_bytes();
        bytes.resize(bytes.len().next_multiple_of(8), b' ');
        bytes
    }
}

/// Consecutive groups of tensors with at most `max` bytes each (a larger tensor alone).
fn group_by_size(specs: &[TensorSpec], max: u64) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, s) in specs.iter().enumerate() {
        let n = s.byte_len().expect("checked by the caller");
        if i > start && bytes + n > max {
            groups.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < specs.len() {
        groups.push(start..specs.len());
    }
    groups
}
