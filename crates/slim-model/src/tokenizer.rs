//! The model directory's `tokenizer.json`, read with the HF `tokenizers` crate.

use anyhow::{format_err, Context, Result};
use std::path::Path;

/// A byte-level BPE tokenizer as HF defines it.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| format_err!("{}: {e}", path.display()))?;
        Ok(Self { inner })
    }

    /// Token ids of `text`, with whatever special tokens the tokenizer's post-processor adds
    /// (SmolLM2 and Qwen2 add none).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| format_err!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| format_err!("decoding: {e}")).context("detokenizing")
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
