//! `slimllm import`: GGUF → HF-layout directory.

use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `slimllm import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// GGUF v3 file (llama or qwen2 architecture; F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0,
    /// Q4_K, Q6_K tensors).
    #[arg(long)]
    gguf: PathBuf,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: ImportArgs) -> Result<()> {
    let t = std::time::Instant::now();
    let s = slim_gguf::import_gguf(&a.gguf, &a.out)?;
    tracing::info!(
        "imported {} ({} tensors, {} parameters) into {} in {:.1}s",
        s.architecture,
        s.n_tensors,
        s.n_params,
        s.out_dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
