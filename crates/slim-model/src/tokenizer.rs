//! The model directory's `tokenizer.json`, read with the HF `tokenizers` crate.

use anyhow::{format_err, Context, Result};
use std::path::Path;

/// A byte-level BPE tokenizer as HF defines it.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`, checking that every token id has a row in the embedding
    /// (`dir/config.json`'s `vocab_size`).
    pub fn load(dir: &Path) -> Result<Self> {
        // Errors name the file; the tokenizers crate's panics on malformed files become errors.
        let inner = slim_checkpoint::load_model_tokenizer(dir)?;
        Ok(Self { inner })
    }

    /// Token ids of `text`, with whatever special tokens the tokenizer's post-processor adds
    /// (SmolLM2 and Qwen2 add none).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| format_err!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` without any special token: how lm-eval 0.3 encodes the contexts and
    /// continuations of its log-likelihood requests for causal models.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| format_err!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| format_err!("decoding: {e}")).context("detokenizing")
    }

    /// The model's chat template (`tokenizer_config.json`'s `chat_template`) applied to
    /// `messages` as `(role, content)` pairs, ending with the assistant's turn opened.
    pub fn chat_prompt(dir: &Path, messages: &[(&str, &str)]) -> Result<String> {
        let path = dir.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (the chat_template lives there)", path.display()))?;
        let cfg: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let template =
            cfg["chat_template"].as_str().with_context(|| format!("{} has no chat_template", path.display()))?;
        let token = |k: &str| cfg[k].as_str().unwrap_or("").to_string();
        let mut env = minijinja::Environment::new();
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).with_context(|| format!("the chat_template of {}", path.display()))?;
        let msgs: Vec<serde_json::Value> =
            messages.iter().map(|(r, c)| serde_json::json!({"role": r, "content": c})).collect();
        let ctx = minijinja::context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => token("bos_token"),
            eos_token => token("eos_token"),
        };
        env.get_template("chat")?
            .render(ctx)
            .with_context(|| format!("rendering the chat_template of {}", path.display()))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
