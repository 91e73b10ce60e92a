//! Evaluation of a model directory: perplexity on held-out text with the LLM-Pruner /
//! SlimLLM protocol (non-overlapping windows, no BOS unless the tokenizer adds one,
//! loss over the `seq_len − 1` shifted predictions of every window); and generation,
//! greedy or sampled, with the KV cache.

mod generate;
mod ppl;

pub use generate::{generate, pick, GenConfig};
pub use ppl::{perplexity, token_nll, windows, PplConfig, PplResult};
