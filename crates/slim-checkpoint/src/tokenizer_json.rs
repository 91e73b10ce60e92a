//! `tokenizer.json`: parsed with the HF `tokenizers` crate, whose own errors become errors that
//! name the file, and whose panics on some malformed inputs (found by the `tokenizer_json` fuzz
//! target: tokenizers 0.23's decoder deserializer calls `expect` on a nested parse error) are
//! caught and reported the same way instead of aborting the program.

use anyhow::{format_err, Context, Result};
use std::path::Path;

/// Reads and parses `path`.
pub fn load_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_tokenizer_json(&text, path)
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
