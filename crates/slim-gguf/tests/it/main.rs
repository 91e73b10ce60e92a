//! Integration tests of slim-gguf: dequantization against the `gguf` Python package, tokenizers
//! against llama.cpp's vocab test files, and an import of the real SmolLM2 GGUF.
//!
//! Tests that need downloaded files look for them under the repository's `data/downloads/` and fail,
//! naming the `cargo xtask fetch` command, when they are missing.

mod dequant;
mod export;
mod smollm2;
mod vocab;

use std::path::PathBuf;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A downloaded file under `data/downloads/`; panics, naming the fetch command, if it is missing.
pub fn downloaded(rel: &str, fetch: &str) -> PathBuf {
    let p = repo_root().join("data/downloads").join(rel);
    assert!(p.is_file(), "{} is missing: run `cargo xtask fetch {fetch}` first", p.display());
    p
}
