//! HF-layout model directories, read and written without any tensor framework.
//!
//! A model directory holds `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`) and `tokenizer.json`.
//! Pruned models differ from dense ones only by per-layer shapes, which live in
//! `config.json` under the key [`config::SLIMLLM_KEY`]; a dense model is the special case
//! where every layer has the shapes of the HF fields.
//!
//! [`layout`] is the one place tensor names (HF and GGUF) and shapes are spelled.
//!
//! Stage crates that slice or refit weights (surgery, recovery) use this crate, so they
//! never depend on burn.

pub mod config;
pub mod dtype;
pub mod layout;
pub mod source;
pub mod synthetic;
pub mod tensor;
pub mod tokenizer_json;
pub mod weights;

pub use config::{Arch, LayerShape, ModelConfig};
pub use dtype::WeightDtype;
pub use source::{LayerSource, WeightSource};
pub use tensor::HostTensor;
pub use tokenizer_json::{check_vocab, load_model_tokenizer, load_tokenizer_json, parse_tokenizer_json};
pub use weights::{save_model_dir, save_model_dir_with, Weights};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_source;
#[cfg(test)]
mod tests_synth;
