//! Imports a GGUF file into an HF directory:
//! `cargo run --release -p slim-gguf --example import -- IN.gguf OUT_DIR [--force]` (`--force` replaces a non-empty
//! OUT_DIR).
//!
//! For manual checks (the HF oracle comparisons in README.md); the project's CLI is `slimllm import`.

use std::path::PathBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (gguf, out, existing) = match args.as_slice() {
        [gguf, out] => (gguf, out, slim_gguf::Existing::Refuse),
        [gguf, out, force] if force == "--force" => (gguf, out, slim_gguf::Existing::Replace),
        _ => anyhow::bail!("usage: import IN.gguf OUT_DIR [--force]"),
    };
    let t0 = Instant::now();
    let s = slim_gguf::import_gguf(&PathBuf::from(gguf), &PathBuf::from(out), existing)?;
    println!("{s:?} in {:.2?}", t0.elapsed());
    Ok(())
}
