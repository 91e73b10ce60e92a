//! `slimllm import`: GGUF → HF-layout directory, built beside `--out` and renamed into place.

use anyhow::{format_err, Result};
use slim_gguf::{Existing, FsError};
use std::path::PathBuf;

/// Arguments of `slimllm import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// GGUF v3 file (llama or qwen2 architecture; F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0,
    /// Q4_K, Q6_K tensors).
    #[arg(long)]
    gguf: PathBuf,
    /// Output directory (created if missing). The model is built in a temporary folder beside
    /// it and renamed into place at the end, so a failed import leaves it as it was.
    #[arg(long)]
    out: PathBuf,
    /// Replace a non-empty --out (only once the new model is complete).
    #[arg(long)]
    force: bool,
    /// Element type of the written weights: f16 and bf16 halve the folder (computation stays
    /// f32: weights are widened when read).
    #[arg(long, default_value = "f32", value_parser = crate::kind::<slim_checkpoint::WeightDtype>())]
    dtype: slim_checkpoint::WeightDtype,
}

pub fn run(a: ImportArgs) -> Result<()> {
    let t = std::time::Instant::now();
    let existing = if a.force { Existing::Replace } else { Existing::Refuse };
    let s = slim_gguf::import_gguf_as(&a.gguf, &a.out, existing, a.dtype).map_err(|e| {
        match e.downcast_ref::<FsError>() {
            Some(FsError::Occupied { what, .. }) => {
                format_err!("--out {} {what}: pass --force to replace it", a.out.display())
            }
            _ => e,
        }
    })?;
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
