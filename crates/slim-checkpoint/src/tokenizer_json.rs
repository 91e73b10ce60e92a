//! `tokenizer.json`: parsed with the HF `tokenizers` crate, whose own errors become errors that
//! name the file, and whose panics on some malformed inputs (found by the `tokenizer_json` fuzz
//! target: tokenizers 0.23's decoder deserializer calls `expect` on a nested parse error) are
//! caught and reported the same way instead of aborting the program.
//!
//! A model directory's tokenizer must not produce ids the embedding has no row for:
//! [`load_model_tokenizer`] checks its largest id against `config.json`'s `vocab_size`.

use anyhow::{ensure, format_err, Result};
use std::path::Path;

use crate::ModelConfig;

/// Qwen2's pre-tokenizer regex, as in its tokenizer.json.
pub const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Reads and parses `path`.
pub fn load_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::weights::io_error("reading", path, e))?;
    parse_tokenizer_json(&text, path)
}

/// Loads `dir/tokenizer.json` and checks it against `dir/config.json` with [`check_vocab`]. A
/// folder without a config.json (a tokenizer on its own) has no embedding to check against.
pub fn load_model_tokenizer(dir: &Path) -> Result<tokenizers::Tokenizer> {
    let tok_path = dir.join("tokenizer.json");
    let tok = load_tokenizer_json(&tok_path)?;
    let cfg_path = dir.join("config.json");
    if matches!(std::fs::symlink_metadata(&cfg_path), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(tok);
    }
    let cfg = ModelConfig::load(dir)?;
    check_vocab(&tok, &tok_path, cfg.vocab_size, &cfg_path)?;
    Ok(tok)
}

/// Fails, naming both files, when `tok` has a token id (added tokens included) of `vocab_size` or
/// more: the model's embedding has no row for it.
pub fn check_vocab(tok: &tokenizers::Tokenizer, tok_path: &Path, vocab_size: usize, cfg_path: &Path) -> Result<()> {
    let vocab = tok.get_vocab(true);
    if let Some((token, &max)) = vocab.iter().max_by_key(|&(_, &id)| id) {
        ensure!(
            (max as usize) < vocab_size,
            "{} has token ids up to {max} (`{token}`), but {} gives vocab_size {vocab_size}: \
             the embedding has no row for ids {vocab_size}..={max}",
            tok_path.display(),
            cfg_path.display()
        );
    }
    Ok(())
}

/// Parses the text of a tokenizer.json (`path` names it in errors).
pub fn parse_tokenizer_json(text: &str, path: &Path) -> Result<tokenizers::Tokenizer> {
    match std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>()) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format_err!("{}: {e}", path.display())),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the tokenizers crate panicked");
            Err(format_err!("{}: malformed tokenizer: {why}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `tokenizer_json` fuzz target's first crash: a decoder object cut into by another
    /// object makes tokenizers 0.23 panic (`decoders/mod.rs`: `expect` on "expected `:`").
    #[test]
    fn a_tokenizer_that_makes_the_tokenizers_crate_panic_is_an_error() {
        let text = include_str!("../tests/data/fuzz-tokenizer-decoder-panic.json");
        let e = format!("{:#}", parse_tokenizer_json(text, Path::new("bad/tokenizer.json")).unwrap_err());
        assert!(e.starts_with("bad/tokenizer.json: malformed tokenizer") && e.contains("expected `:`"), "{e}");
    }

    #[test]
    fn ordinary_parse_errors_name_the_file() {
        let e = format!("{:#}", parse_tokenizer_json("{}", Path::new("t.json")).unwrap_err());
        assert!(e.starts_with("t.json: "), "{e}");
        let e = format!("{:#}", load_tokenizer_json(Path::new("/nonexistent/tokenizer.json")).unwrap_err());
        assert!(e.contains("reading /nonexistent/tokenizer.json"), "{e}");
    }
}
