//! A GGUF v3 (and v2) reader: header, metadata, tensor infos, and tensor data loaded on demand.
//!
//! It exists because the project's model sources ship as GGUF files and a reader of a few hundred
//! lines with its own tests is lighter than a second tensor framework (see docs/toolchain.md).
//! The file is memory-mapped; parsing reads the header and metadata only, and checks every length,
//! count and offset against the file size first, so a crafted file yields an error, never a panic
//! or an unbounded allocation.
//!
//! Layout (little-endian): magic `GGUF`, u32 version, u64 tensor_count, u64 kv_count,
//! kv_count × (string key, u32 value type, value), tensor_count × (string name, u32 n_dims,
//! n_dims × u64 dim, u32 ggml type, u64 offset), padding to `general.alignment` (default 32),
//! then the data section, in which each tensor's offset is relative.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, format_err, Context, Result};
use memmap2::Mmap;

use crate::types::GgmlType;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array, stored by element type so that a long numeric array costs its on-disk size.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a tensor lies and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// GGUF tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml dims, fastest-varying first: `[ne0 = in_features, ne1 = out_features]` for a matrix.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Product of the dims.
    pub n_elements: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

/// An opened GGUF file.
pub struct GgufFile {
    path: PathBuf,
    data: Backing,
    /// GGUF format version (2 or 3).
    pub version: u32,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Alignment of the data section and of each tensor.
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

/// Longest accepted string (metadata key, value, or tensor name): larger than any chat template.
pub const MAX_STRING_LEN: u64 = 64 << 20;
/// Deepest accepted nesting of metadata arrays.
pub const MAX_ARRAY_DEPTH: usize = 4;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

enum Backing {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`; tensor data is read only when asked for.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).with_context(|| format!("opening GGUF file {}", path.display()))?;
        // SAFETY: the map is read-only and private to this process; a concurrent writer truncating the
        // file could fault, which is the accepted risk of memory-mapping model files (as every loader does).
        let mmap = unsafe { Mmap::map(&file) }.with_context(|| format!("memory-mapping {}", path.display()))?;
        Self::parse(path.to_path_buf(), Backing::Mmap(mmap))
    }

    /// Parses a GGUF file held in memory; `name` is used in error messages.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<GgufFile> {
        Self::parse(PathBuf::from(name), Backing::Owned(bytes))
    }

    fn parse(path: PathBuf, data: Backing) -> Result<GgufFile> {
        let header = parse_header(data.bytes()).with_context(|| format!("reading GGUF file {}", path.display()))?;
        Ok(GgufFile {
            path,
            data,
            version: header.version,
            meta_index: header.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect(),
            metadata: header.metadata,
            tensor_index: header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect(),
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    /// The file's path (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata key-value pairs, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The metadata value under `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The metadata value under `key`, or an error naming the key and file.
    pub fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key).ok_or_else(|| format_err!("metadata key `{key}` missing in {}", self.path.display()))
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            MetaValue::String(s) => Ok(s),
            v => bail!("metadata key `{key}` in {} is {}, expected a string", self.path.display(), kind(v)),
        }
    }

    /// A non-negative integer value of any integer type.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        let n: Option<u64> = match *v {
            MetaValue::U8(x) => Some(x.into()),
            MetaValue::U16(x) => Some(x.into()),
            MetaValue::U32(x) => Some(x.into()),
            MetaValue::U64(x) => Some(x),
            MetaValue::I8(x) => u64::try_from(x).ok(),
            MetaValue::I16(x) => u64::try_from(x).ok(),
            MetaValue::I32(x) => u64::try_from(x).ok(),
            MetaValue::I64(x) => u64::try_from(x).ok(),
            _ => bail!("metadata key `{key}` in {} is {}, expected an integer", self.path.display(), kind(v)),
        };
        n.ok_or_else(|| format_err!("metadata key `{key}` in {} is negative", self.path.display()))
    }

    /// A float value (f32 or f64; f32 is widened exactly).
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        match *self.require(key)? {
            MetaValue::F32(x) => Ok(x.into()),
            MetaValue::F64(x) => Ok(x),
            ref v => bail!("metadata key `{key}` in {} is {}, expected a float", self.path.display(), kind(v)),
        }
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match *self.require(key)? {
            MetaValue::Bool(x) => Ok(x),
            ref v => bail!("metadata key `{key}` in {} is {}, expected a bool", self.path.display(), kind(v)),
        }
    }

    /// An array value.
    pub fn get_array(&self, key: &str) -> Result<&MetaArray> {
        match self.require(key)? {
            MetaValue::Array(a) => Ok(a),
            v => bail!("metadata key `{key}` in {} is {}, expected an array", self.path.display(), kind(v)),
        }
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.get_array(key)? {
            MetaArray::String(v) => Ok(v),
            a => bail!(
                "metadata key `{key}` in {} is an array of {}, expected strings",
                self.path.display(),
                array_kind(a)
            ),
        }
    }

    /// The info of tensor `name`, or an error naming it and the file.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| format_err!("tensor `{name}` missing in {}", self.path.display()))
    }

    /// The raw (possibly quantized) bytes of tensor `name`; bounds were checked at open.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor_info(name)?;
        let start = (self.data_offset + t.offset) as usize;
        Ok(&self.data.bytes()[start..start + t.n_bytes as usize])
    }

    /// Tensor `name` dequantized to f32, in ggml order (row-major with `dims[0]` fastest).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor_info(name)?;
        let bytes = self.tensor_bytes(name)?;
        crate::dequant::dequantize(t.ggml_type, bytes, t.n_elements as usize)
            .with_context(|| format!("dequantizing tensor `{name}` of {}", self.path.display()))
    }
}

fn kind(v: &MetaValue) -> &'static str {
    match v {
        MetaValue::U8(_) => "u8",
        MetaValue::I8(_) => "i8",
        MetaValue::U16(_) => "u16",
        MetaValue::I16(_) => "i16",
        MetaValue::U32(_) => "u32",
        MetaValue::I32(_) => "i32",
        MetaValue::F32(_) => "f32",
        MetaValue::Bool(_) => "bool",
        MetaValue::String(_) => "a string",
        MetaValue::Array(_) => "an array",
        MetaValue::U64(_) => "u64",
        MetaValue::I64(_) => "i64",
        MetaValue::F64(_) => "f64",
    }
}

fn array_kind(a: &MetaArray) -> &'static str {
    match a {
        MetaArray::U8(_) => "u8",
        MetaArray::I8(_) => "i8",
        MetaArray::U16(_) => "u16",
        MetaArray::I16(_) => "i16",
        MetaArray::U32(_) => "u32",
        MetaArray::I32(_) => "i32",
        MetaArray::F32(_) => "f32",
        MetaArray::Bool(_) => "bool",
        MetaArray::String(_) => "strings",
        MetaArray::Array(_) => "arrays",
        MetaArray::U64(_) => "u64",
        MetaArray::I64(_) => "i64",
        MetaArray::F64(_) => "f64",
    }
}

struct Header {
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            bail!("truncated file: {what} needs {n} bytes at offset {} but only {} remain", self.pos, self.remaining());
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.arr::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > MAX_STRING_LEN {
            bail!("{what}: string length {len} exceeds the cap of {MAX_STRING_LEN} bytes");
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| format_err!("{what}: string is not valid UTF-8 ({e})"))
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in the rest of the file.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<usize> {
        match count.checked_mul(min_size) {
            Some(need) if need <= self.remaining() => Ok(count as usize),
            _ => bail!("{what} count {count} cannot fit in the {} bytes left in the file", self.remaining()),
        }
    }
}

fn parse_header(buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.arr::<4>("magic")?;
    if &magic != b"GGUF" {
        bail!("bad magic {magic:02x?}, expected \"GGUF\"");
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            bail!("big-endian GGUF files are not supported")
        }
        1 => bail!("GGUF version 1 is not supported (only 2 and 3)"),
        v => bail!("unknown GGUF version {v} (only 2 and 3 are supported)"),
    }
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata kv count")?;
    // Smallest kv: empty key (8) + type (4) + 1-byte value; smallest tensor info: empty name (8) +
    // n_dims (4) + type (4) + offset (8).
    let kv_count = c.check_count(kv_count, 13, "metadata kv")?;
    let mut metadata = Vec::with_capacity(kv_count);
    let mut seen = std::collections::HashSet::new();
    for i in 0..kv_count {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.u32(&format!("type of metadata key `{key}`"))?;
        let value = read_value(&mut c, ty, 0).with_context(|| format!("reading metadata key `{key}`"))?;
        if !seen.insert(key.clone()) {
            bail!("duplicate metadata key `{key}`");
        }
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, MetaValue::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => bail!("general.alignment must be a u32 power of two, got {v:?}"),
    };

    let tensor_count = c.check_count(tensor_count, 24, "tensor info")?;
    let mut tensors = Vec::with_capacity(tensor_count);
    let mut names = std::collections::HashSet::new();
    for i in 0..tensor_count {
        let name = c.string(&format!("name of tensor #{i}"))?;
        let t = read_tensor_info(&mut c, name, buf.len() as u64)?;
        if !names.insert(t.name.clone()) {
            bail!("duplicate tensor name `{}`", t.name);
        }
        tensors.push(t);
    }
    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    if data_offset > file_len && !tensors.is_empty() {
        bail!("data section starts at {data_offset}, past the end of the file ({file_len} bytes)");
    }
    for t in &tensors {
        let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => bail!(
                "tensor `{}` ({} bytes at data offset {}) extends past the end of the file ({file_len} bytes)",
                t.name,
                t.n_bytes,
                t.offset
            ),
        }
        if t.offset % alignment != 0 {
            bail!("tensor `{}` offset {} is not a multiple of the alignment {alignment}", t.name, t.offset);
        }
    }
    Ok(Header { version, metadata, tensors, alignment, data_offset })
}

fn read_tensor_info(c: &mut Cursor<'_>, name: String, file_len: u64) -> Result<TensorInfo> {
    let ctx = |what: &str| format!("{what} of tensor `{name}`");
    let n_dims = c.u32(&ctx("n_dims"))?;
    if n_dims > MAX_DIMS {
        bail!("tensor `{name}` has {n_dims} dims, more than ggml's maximum of {MAX_DIMS}");
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64(&ctx("dim"))?);
    }
    let type_id = c.u32(&ctx("type"))?;
    let offset = c.u64(&ctx("offset"))?;
    let ggml_type =
        GgmlType::from_id(type_id).ok_or_else(|| format_err!("tensor `{name}` has unknown ggml type id {type_id}"))?;
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= file_len.saturating_mul(8))
        .ok_or_else(|| format_err!("tensor `{name}` dims {dims:?} describe more elements than the file can hold"))?;
    let bs = ggml_type.block_size() as u64;
    if dims.first().is_some_and(|&ne0| ne0 % bs != 0) {
        bail!("tensor `{name}` of type {ggml_type}: first dim {} is not a multiple of the block size {bs}", dims[0]);
    }
    let n_bytes = ggml_type
        .n_bytes(n_elements)
        .ok_or_else(|| format_err!("tensor `{name}`: {n_elements} elements are not whole blocks of {ggml_type}"))?;
    if n_bytes > file_len {
        bail!("tensor `{name}` needs {n_bytes} bytes, more than the whole file ({file_len} bytes)");
    }
    Ok(TensorInfo { name, dims, ggml_type, offset, n_elements, n_bytes })
}

fn read_value(c: &mut Cursor<'_>, ty: u32, depth: usize) -> Result<MetaValue> {
    Ok(match ty {
        0 => MetaValue::U8(c.u8("u8 value")?),
        1 => MetaValue::I8(c.u8("i8 value")? as i8),
        2 => MetaValue::U16(c.u16("u16 value")?),
        3 => MetaValue::I16(c.u16("i16 value")? as i16),
        4 => MetaValue::U32(c.u32("u32 value")?),
        5 => MetaValue::I32(c.u32("i32 value")? as i32),
        6 => MetaValue::F32(f32::from_bits(c.u32("f32 value")?)),
        7 => MetaValue::Bool(read_bool(c)?),
        8 => MetaValue::String(c.string("string value")?),
        9 => MetaValue::Array(read_array(c, depth + 1)?),
        10 => MetaValue::U64(c.u64("u64 value")?),
        11 => MetaValue::I64(c.u64("i64 value")? as i64),
        12 => MetaValue::F64(f64::from_bits(c.u64("f64 value")?)),
        t => bail!("unknown metadata value type {t}"),
    })
}

fn read_bool(c: &mut Cursor<'_>) -> Result<bool> {
    match c.u8("bool value")? {
        0 => Ok(false),
        1 => Ok(true),
        b => bail!("invalid bool byte {b}"),
    }
}

fn read_array(c: &mut Cursor<'_>, depth: usize) -> Result<MetaArray> {
    if depth > MAX_ARRAY_DEPTH {
        bail!("metadata arrays nested deeper than {MAX_ARRAY_DEPTH}");
    }
    let ty = c.u32("array element type")?;
    let len = c.u64("array length")?;
    // On-disk size of the smallest element of each type.
    let min_size = match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        t => bail!("unknown array element type {t}"),
    };
    let n = c.check_count(len, min_size, "array element")?;
    macro_rules! collect {
        ($variant:ident, $read:expr) => {{
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push($read);
            }
            MetaArray::$variant(v)
        }};
    }
    Ok(match ty {
        0 => collect!(U8, c.u8("u8 array element")?),
        1 => collect!(I8, c.u8("i8 array element")? as i8),
        2 => collect!(U16, c.u16("u16 array element")?),
        3 => collect!(I16, c.u16("i16 array element")? as i16),
        4 => collect!(U32, c.u32("u32 array element")?),
        5 => collect!(I32, c.u32("i32 array element")? as i32),
        6 => collect!(F32, f32::from_bits(c.u32("f32 array element")?)),
        7 => collect!(Bool, read_bool(c)?),
        8 => collect!(String, c.string("string array element")?),
        9 => collect!(Array, read_array(c, depth + 1)?),
        10 => collect!(U64, c.u64("u64 array element")?),
        11 => collect!(I64, c.u64("i64 array element")? as i64),
        12 => collect!(F64, f64::from_bits(c.u64("f64 array element")?)),
        _ => unreachable!("element type validated above"),
    })
}
