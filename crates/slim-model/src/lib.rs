//! LLaMA-family model runtime on burn.
//!
//! Covers the `llama` layout (Llama-2/3, SmolLM2; MHA or GQA) and `qwen2` (q/k/v biases,
//! untied lm_head). Every layer carries its own shapes (query heads, query-head → KV-head
//! map, FFN width, optional o_proj/down_proj biases), so pruned models load like dense ones.
//!
//! The model runs whole ([`Llama::forward`]) or layer by layer ([`Llama::embed`],
//! [`Llama::layer_forward`], [`Llama::logits`]); the layer-wise path hands back the
//! activations the calibration stage needs through [`TapSet`] / [`LayerTaps`], in the same
//! pass. Backends are chosen at the edge with [`BackendKind`] and [`dispatch`].

mod backend;
mod grad;
mod kernels;
mod lora;
mod rope;
mod runtime;
mod taps;
mod tokenizer;

pub use backend::{dispatch, on_pool, BackendKind, BackendRun, Cpu};
pub use grad::{taylor_sums, LayerTaylorSums, TaylorSums};
pub use lora::{LayerLora, LoraWeights};
pub use runtime::{host_to_tensor, tensor_to_host, KvCache, LayerKv, Llama};
pub use slim_checkpoint::synthetic::SplitMix;
pub use slim_checkpoint::{HostTensor, LayerShape, ModelConfig, Weights};
pub use taps::{LayerTaps, TapSet};
pub use tokenizer::Tokenizer;

/// Re-exported so that callers name tensors without depending on burn directly.
pub use burn_tensor;

#[cfg(test)]
mod tests;
