//! GGUF import for slimllm: read a GGUF v3 file, dequantize its tensors, and write an HF-layout
//! directory (config.json, tokenizer.json, model.safetensors in f32) that the rest of the project loads.
//!
//! The project's models are distributed as quantized GGUF files (see docs/sources.md), while every
//! other crate works on HF-layout f32 weights; this crate is the only bridge, and has no burn dependency.
//!
//! - [`GgufFile`]: header, metadata and tensor infos, with tensor data memory-mapped and loaded on demand.
//! - [`dequantize`]: ggml block formats to f32, bit-exact with ggml.
//! - [`build_config_json`], [`build_tokenizer_json`]: the HF files made from the GGUF metadata.
//! - [`import_gguf`]: all of the above into a directory, built beside it and renamed into place.
//! - [`export_gguf`]: the way back, for dense and pruned models (llama.cpp's `deci` architecture for
//!   per-layer shapes), in F32, F16, BF16 or Q8_0, through [`GgufWriter`] and [`encode`].

#![deny(missing_docs)]

mod config;
mod dequant;
mod encode;
mod export;
mod export_tokenizer;
mod import;
mod import_deci;
mod reader;
mod tokenizer;
mod types;
mod writer;

#[cfg(test)]
mod tests;

pub use config::{build_config_json, Arch, ModelConfig};
pub use dequant::dequantize;
pub use encode::{encode, export_type, EXPORT_TYPES};
pub use export::{export_gguf, ExportSummary, SLIMLLM_CONFIG_KEY};
pub use import::{hf_tensor_name, import_gguf, import_gguf_as, permute_qk, unpermute_qk, ImportSummary};
pub use reader::{GgufFile, MetaArray, MetaValue, TensorInfo, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_STRING_LEN};
pub use tokenizer::{build_tokenizer_config_json, build_tokenizer_json, special_tokens, SpecialTokens, QWEN2_REGEX};
pub use types::GgmlType;
pub use writer::{GgufWriter, TensorPlan, ALIGNMENT};

/// What [`import_gguf`] does with an output folder that already holds something, and the error type
/// that says so (`slim_fs::Error::Occupied`), re-exported so that callers need not depend on slim-fs.
pub use slim_fs::{Error as FsError, Existing};
