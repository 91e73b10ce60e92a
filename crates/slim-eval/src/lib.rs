//! Evaluation of a model directory: perplexity on held-out text with the LLM-Pruner /
//! SlimLLM protocol (non-overlapping windows, no BOS unless the tokenizer adds one,
//! loss over the `seq_len − 1` shifted predictions of every window); and generation,
//! greedy or sampled, with the KV cache; and zero-shot multiple choice with lm-eval 0.3's
//! semantics ([`zeroshot`]).

mod generate;
mod ids;
mod ppl;
pub mod zeroshot;

pub use generate::{generate, pick, GenConfig};
pub use ids::check_token_ids;
pub use ppl::{perplexity, perplexity_streamed, token_nll, windows, PplConfig, PplResult, STREAM_ACTIVATION_BYTES};
