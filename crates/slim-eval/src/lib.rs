//! Evaluation of a model directory: perplexity on held-out text with the LLM-Pruner /
//! SlimLLM protocol (non-overlapping windows, no BOS unless the tokenizer adds one,
//! loss over the `seq_len − 1` shifted predictions of every window).

mod ppl;

pub use ppl::{perplexity, token_nll, windows, PplConfig, PplResult};
