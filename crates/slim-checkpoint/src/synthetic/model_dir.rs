//! Model directories of random weights in a real model's shape ([`super::ModelShape`]), for
//! benchmarks and backend checks where no real model can be fetched: `slimllm synth-model`.
//!
//! Weights are drawn as in [`super::SyntheticSpec::build`] (projections uniform scaled by
//! `sqrt(3 / fan_in)`, so of variance `1 / fan_in`; norms `1 ± 0.2`; biases `± 0.1`; embeddings and
//! an untied lm_head uniform in [-1, 1)), but from a different stream: each tensor has its own
//! seed (from the model seed and the tensor's name) and is filled in chunks of [`CHUNK`] values,
//! each with its own generator, in parallel. A tensor's values therefore depend only on the seed,
//! its name and its shape, not on the thread count or on the other tensors: the first N layers of
//! a model are those of the same shape and seed with more layers.
//!
//! Tensors are written one at a time through [`slim_fs::SafetensorsWriter`] (the memory is one
//! tensor), in shards of at most [`SHARD_BYTES`] as transformers' `save_pretrained` makes them, into
//! a folder built beside the destination and renamed into place ([`slim_fs::DirInstall`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde_json::json;
use slim_fs::{DirInstall, Existing, SafetensorsConfig, SafetensorsWriter, Sharding, TensorSpec};

use super::byte_bpe::write_byte_level_tokenizer;
use super::{ShapeSpec, SplitMix};
pub use crate::dtype::WeightDtype;
use crate::layout::{expected_shapes, Global, Param, TensorId};
use crate::ModelConfig;

/// Values per independently seeded chunk of a tensor.
pub const CHUNK: usize = 1 << 16;
/// The largest shard: transformers' default `max_shard_size` of 5 GB.
pub const SHARD_BYTES: u64 = 5_000_000_000;

/// Where the tokenizer of a synthetic model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerSource {
    /// The byte-level BPE of [`super::byte_level_tokenizer`], in the family's pre-tokenizer.
    ByteLevel,
    /// `tokenizer.json` (and `tokenizer_config.json` when present) copied from this model folder.
    CopyFrom(PathBuf),
}

/// What to write besides the shape.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// Seed of every draw.
    pub seed: u64,
    /// Element type of the weights.
    pub dtype: WeightDtype,
    /// The tokenizer files.
    pub tokenizer: TokenizerSource,
    /// What to do when the destination holds something.
    pub existing: Existing,
    /// Largest shard in bytes ([`SHARD_BYTES`]).
    pub shard_bytes: u64,
    /// Recorded in `config.json` under `synthetic.shape` (the preset's name).
    pub label: String,
}

/// What [`write_synthetic_model`] wrote.
#[derive(Clone, Debug)]
pub struct SynthSummary {
    /// Parameters (tied embeddings once).
    pub params: u64,
    /// Bytes of tensor data.
    pub weight_bytes: u64,
    /// Files in the folder, sorted.
    pub files: Vec<String>,
}

/// Writes a dense model of shape `spec` with seeded random weights into `out`: `config.json`,
/// `model.safetensors` (or shards and their index), `tokenizer.json`, `tokenizer_config.json`.
/// Everything is checked before the first byte is written (the shape, the tokenizer's ids against
/// the vocabulary, the destination); the folder is built beside `out` and renamed into place.
pub fn write_synthetic_model(spec: &ShapeSpec, out: &Path, opts: &SynthOptions) -> Result<SynthSummary> {
    ensure!(spec.num_layers > 0, "a model needs at least 1 layer");
    let mut cfg_json = spec.config_json(opts.dtype.torch_dtype());
    cfg_json["synthetic"] = json!({"shape": opts.label, "seed": opts.seed, "generator": "slimllm synth-model 1"});
    let cfg = ModelConfig::from_json_str(&cfg_json.to_string()).context("the synthetic config")?;
    if let TokenizerSource::CopyFrom(dir) = &opts.tokenizer {
        check_tokenizer_source(dir, spec.vocab_size)?;
    }
    let install = DirInstall::begin(out, opts.existing)?;
    let dir = install.path();
    let shapes = expected_shapes(&cfg);
    let fs_dtype = opts.dtype.to_fs();
    let specs: Vec<TensorSpec> = shapes.iter().map(|(n, s)| TensorSpec::new(n, fs_dtype, s)).collect();
    let weight_bytes = specs.iter().map(|s| s.byte_len().expect("a model's tensors fit in u64")).sum();
    let config = SafetensorsConfig { sharding: Sharding::MaxBytes(opts.shard_bytes), metadata: BTreeMap::new() };
    let mut writer = SafetensorsWriter::create(dir, specs, &config)?;
    let mut buf = Vec::new();
    for (name, shape) in &shapes {
        fill_tensor(&mut buf, name, shape, opts.seed, opts.dtype);
        writer.write_tensor(name, &buf).with_context(|| format!("writing tensor `{name}`"))?;
    }
    drop(buf);
    writer.finish()?;
    match &opts.tokenizer {
        TokenizerSource::ByteLevel => write_byte_level_tokenizer(dir, spec.arch)?,
        TokenizerSource::CopyFrom(src) => {
            for name in ["tokenizer.json", "tokenizer_config.json"] {
                let from = src.join(name);
                if name == "tokenizer.json" || from.is_file() {
                    let bytes = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
                    slim_fs::write_atomic(&dir.join(name), &bytes)?;
                }
            }
        }
    }
    slim_fs::write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&cfg_json)?.as_bytes())?;
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    install.commit()?;
    Ok(SynthSummary { params: spec.num_params(), weight_bytes, files })
}

/// Fails, naming the folder and the shape's `vocab_size`, when `dir` has no readable tokenizer.json
/// or one with ids the embedding has no row for.
pub fn check_tokenizer_source(dir: &Path, vocab_size: usize) -> Result<()> {
    let path = dir.join("tokenizer.json");
    let tok = crate::load_tokenizer_json(&path)?;
    let vocab = tok.get_vocab(true);
    if let Some((token, &max)) = vocab.iter().max_by_key(|&(_, &id)| id) {
        ensure!(
            (max as usize) < vocab_size,
            "{} has token ids up to {max} (`{token}`), but the shape's vocab_size is {vocab_size}: \
             the embedding would have no row for ids {vocab_size}..={max}",
            path.display()
        );
    }
    Ok(())
}

/// The values of tensor `name` of a synthetic model, as f32 (what [`write_synthetic_model`] writes
/// before conversion to its dtype). For tests; writing never holds the f32 copy.
pub fn tensor_values(name: &str, shape: &[usize], seed: u64) -> Result<Vec<f32>> {
    let mut buf = Vec::new();
    ensure!(TensorId::from_hf_name(name).is_some(), "`{name}` is no tensor of the layout");
    fill_tensor(&mut buf, name, shape, seed, WeightDtype::F32);
    Ok(buf.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
}

/// How a tensor's values are drawn (see the module docs).
#[derive(Clone, Copy, Debug)]
enum Draw {
    /// `1 + 0.2 u`.
    Norm,
    /// `0.1 u`.
    Bias,
    /// `u`.
    Unit,
    /// `u · sqrt(3 / fan_in)`.
    Scaled(f32),
}

impl Draw {
    fn of(name: &str, shape: &[usize]) -> Draw {
        let id = TensorId::from_hf_name(name).unwrap_or_else(|| panic!("the layout parses its own name `{name}`"));
        match id {
            TensorId::Norm { .. } | TensorId::Global(Global::FinalNorm) => Draw::Norm,
            TensorId::Proj { param: Param::Bias, .. } => Draw::Bias,
            TensorId::Global(Global::Embedding | Global::LmHead) => Draw::Unit,
            TensorId::Proj { param: Param::Weight, .. } => {
                Draw::Scaled((3.0 / *shape.last().unwrap_or(&1) as f32).sqrt())
            }
        }
    }

    fn sample(self, rng: &mut SplitMix) -> f32 {
        let u = rng.uniform();
        match self {
            Draw::Norm => 1.0 + 0.2 * u,
            Draw::Bias => 0.1 * u,
            Draw::Unit => u,
            Draw::Scaled(s) => u * s,
        }
    }
}

/// Fills `buf` with the little-endian bytes of tensor `name` in `dtype`, chunk by chunk in
/// parallel (each chunk's generator seeded from the tensor's seed and the chunk's index).
fn fill_tensor(buf: &mut Vec<u8>, name: &str, shape: &[usize], seed: u64, dtype: WeightDtype) {
    let draw = Draw::of(name, shape);
    let n: usize = shape.iter().product();
    let size = dtype.to_fs().size();
    buf.clear();
    buf.resize(n * size, 0);
    let tensor_seed = hash64(seed ^ fnv1a(name.as_bytes()));
    buf.par_chunks_mut(CHUNK * size).enumerate().for_each(|(c, bytes)| {
        let mut rng = SplitMix(hash64(tensor_seed ^ hash64(c as u64)));
        match dtype {
            WeightDtype::F32 => {
                bytes.chunks_exact_mut(4).for_each(|b| b.copy_from_slice(&draw.sample(&mut rng).to_le_bytes()))
            }
            WeightDtype::F16 => bytes.chunks_exact_mut(2).for_each(|b| {
                b.copy_from_slice(&half::f16::from_f32(draw.sample(&mut rng)).to_le_bytes());
            }),
            WeightDtype::Bf16 => bytes.chunks_exact_mut(2).for_each(|b| {
                b.copy_from_slice(&half::bf16::from_f32(draw.sample(&mut rng)).to_le_bytes());
            }),
        }
    });
}

/// SplitMix64's output function of one step from `x`: a well-mixed 64-bit hash.
fn hash64(x: u64) -> u64 {
    SplitMix(x).next_u64()
}

/// FNV-1a of `bytes`: a tensor name's share of its seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}
