//! Imports a GGUF file into an HF directory: `cargo run --release -p slim-gguf --example import -- IN.gguf OUT_DIR`.
//!
//! For manual checks (the HF oracle comparisons in README.md); the project's CLI is `slimllm import`.

use std::path::PathBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [gguf, out] = args.as_slice() else {
        anyhow::bail!("usage: import IN.gguf OUT_DIR");
    };
    let t0 = Instant::now();
    let s = slim_gguf::import_gguf(&PathBuf::from(gguf), &PathBuf::from(out))?;
    println!("{s:?} in {:.2?}", t0.elapsed());
    Ok(())
}
