//! A GGUF v3 writer: metadata, tensor infos and tensor data, streamed to a file that appears under
//! its final name only once complete.
//!
//! The layout is the one [`crate::GgufFile`] reads (and ggml's `gguf.cpp` writes): the header
//! (magic, version 3, tensor count, metadata count), the metadata key-value pairs, the tensor infos
//! (name, dims in ggml order — the fastest-varying first —, type, offset relative to the data
//! section), padding to `general.alignment`, then each tensor's bytes padded to the alignment.
//! Offsets are known before any data is written, so tensors are encoded and written one at a time:
//! memory stays at one tensor.
//!
//! The file is written through [`slim_fs::AtomicFile`]: a temporary name beside the destination,
//! renamed over it by [`GgufWriter::finish`]; an error, a panic or a kill before that leaves no file
//! under the final name.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use slim_fs::AtomicFile;

use crate::reader::{MetaArray, MetaValue};
use crate::types::GgmlType;

/// The alignment this writer uses (ggml's default; written as `general.alignment` too).
pub const ALIGNMENT: u64 = 32;

/// One tensor the file will hold.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    /// GGUF tensor name.
    pub name: String,
    /// Dims in ggml order (`ne0` first: for a row-major `[out, in]` matrix, `[in, out]`).
    pub dims: Vec<u64>,
    /// Element type of the stored bytes.
    pub ty: GgmlType,
}

impl TensorPlan {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes the encoded tensor takes, or an error when its rows are not whole blocks of `ty`.
    pub fn n_bytes(&self) -> Result<u64> {
        let row = self.dims.first().copied().unwrap_or(1);
        let block = self.ty.block_size() as u64;
        ensure!(
            row.is_multiple_of(block),
            "tensor `{}`: rows of {row} values are not a whole number of {}-value blocks of type {:?}",
            self.name,
            block,
            self.ty
        );
        self.ty.n_bytes(self.n_elements()).with_context(|| format!("tensor `{}`: size overflows", self.name))
    }
}

/// A GGUF file being written; tensors must be written in the order they were planned.
pub struct GgufWriter {
    file: AtomicFile,
    plan: Vec<(TensorPlan, u64)>,
    next: usize,
    written: u64,
}

impl GgufWriter {
    /// Writes the header, metadata and tensor infos of `path` (under a temporary name), after
    /// which each planned tensor is given to [`GgufWriter::write_tensor`] in order.
    /// `general.alignment` is added to `metadata` (it must not be there already).
    pub fn create(path: &Path, metadata: &[(String, MetaValue)], tensors: Vec<TensorPlan>) -> Result<GgufWriter> {
        ensure!(
            metadata.iter().all(|(k, _)| k != "general.alignment"),
            "internal invariant: the writer sets general.alignment itself"
        );
        let mut seen = std::collections::HashSet::new();
        for t in &tensors {
            ensure!(seen.insert(t.name.as_str()), "tensor `{}` is planned twice", t.name);
        }
        let mut head = Vec::with_capacity(1 << 20);
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64 + 1).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut head, k);
            put_value(&mut head, v).with_context(|| format!("metadata key `{k}`"))?;
        }
        put_str(&mut head, "general.alignment");
        put_value(&mut head, &MetaValue::U32(ALIGNMENT as u32))?;
        let mut plan = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        for t in tensors {
            let size = t.n_bytes()?;
            put_str(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            plan.push((t, offset));
            offset = (offset + size).div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        pad(&mut head);
        let mut file = AtomicFile::create(path)?;
        file.write_all(&head)?;
        Ok(GgufWriter { file, plan, next: 0, written: 0 })
    }

    /// The tensor [`GgufWriter::write_tensor`] expects next, if any.
    pub fn next_tensor(&self) -> Option<&TensorPlan> {
        self.plan.get(self.next).map(|(t, _)| t)
    }

    /// Appends the encoded bytes of the next planned tensor, which must be named `name`.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some((t, offset)) = self.plan.get(self.next) else {
            bail!("tensor `{name}` written after every planned tensor");
        };
        ensure!(t.name == name, "tensor `{name}` written where `{}` was planned next", t.name);
        let want = t.n_bytes()?;
        ensure!(bytes.len() as u64 == want, "tensor `{name}`: {} bytes given, {want} planned", bytes.len());
        debug_assert_eq!(self.written, *offset);
        self.file.write_all(bytes)?;
        let padded = (bytes.len() as u64).div_ceil(ALIGNMENT) * ALIGNMENT;
        self.file.write_all(&vec![0u8; (padded - bytes.len() as u64) as usize])?;
        self.written += padded;
        self.next += 1;
        Ok(())
    }

    /// Checks that every planned tensor was written, then renames the file into place.
    pub fn finish(self) -> Result<()> {
        if let Some((t, _)) = self.plan.get(self.next) {
            bail!("tensor `{}` was planned but not written", t.name);
        }
        Ok(self.file.commit()?)
    }
}

fn pad(buf: &mut Vec<u8>) {
    let len = buf.len() as u64;
    buf.resize((len.div_ceil(ALIGNMENT) * ALIGNMENT) as usize, 0);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// The GGUF value type id of a value (`gguf_type` in ggml).
fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_value(buf: &mut Vec<u8>, v: &MetaValue) -> Result<()> {
    buf.extend_from_slice(&type_id(v).to_le_bytes());
    put_payload(buf, v)
}

fn put_payload(buf: &mut Vec<u8>, v: &MetaValue) -> Result<()> {
    match v {
        MetaValue::U8(x) => buf.push(*x),
        MetaValue::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => buf.push(u8::from(*x)),
        MetaValue::String(s) => put_str(buf, s),
        MetaValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(a) => put_array(buf, a)?,
    }
    Ok(())
}

fn put_array(buf: &mut Vec<u8>, a: &MetaArray) -> Result<()> {
    macro_rules! items {
        ($id:expr, $v:expr, $f:expr) => {{
            buf.extend_from_slice(&($id as u32).to_le_bytes());
            buf.extend_from_slice(&($v.len() as u64).to_le_bytes());
            for x in $v {
                $f(&mut *buf, x);
            }
        }};
    }
    match a {
        MetaArray::U8(v) => items!(0, v, |b: &mut Vec<u8>, x: &u8| b.push(*x)),
        MetaArray::I8(v) => items!(1, v, |b: &mut Vec<u8>, x: &i8| b.extend_from_slice(&x.to_le_bytes())),
        MetaArray::U16(v) => items!(2, v, |b: &mut Vec<u8>, x: &u16| b.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I16(v) => items!(3, v, |b: &mut Vec<u8>, x: &i16| b.extend_from_slice(&x.to_le_bytes())),
        MetaArray::U32(v) => items!(4, v, |b: &mut Vec<u8>, x: &u32| b.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I32(v) => items!(5, v, |b: &mut Vec<u8>, x: &i32| b.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F32(v) => items!(6, v, |b: &mut Vec<u8>, x: &f32| b.extend_from_slice(&x.to_le_bytes())),
        MetaArray::Bool(v) => items!(7, v, |b: &mut Vec<u8>, x: &bool| b.push(u8::from(*x))),
        MetaArray::String(v) => items!(8, v, |b: &mut Vec<u8>, x: &String| put_str(b, x)),
        MetaArray::U64(v) => items!(10, v, |b: &mut Vec<u8>, x: &u64| b.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I64(v) => items!(11, v, |b: &mut Vec<u8>, x: &i64| b.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F64(v) => items!(12, v, |b: &mut Vec<u8>, x: &f64| b.extend_from_slice(&x.to_le_bytes())),
        MetaArray::Array(v) => {
            buf.extend_from_slice(&9u32.to_le_bytes());
            buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for inner in v {
                put_array(buf, inner)?;
            }
        }
    }
    Ok(())
}
