//! `slimllm export`: a model directory (dense or pruned) to a GGUF file that stock llama.cpp runs.

use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `slimllm export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Model directory (config.json, tokenizer.json, model.safetensors): dense or pruned, llama or qwen2.
    #[arg(long)]
    model: PathBuf,
    /// Output format. Only `gguf` for now.
    #[arg(long, default_value = "gguf", value_parser = ["gguf"])]
    format: String,
    /// The GGUF file to write; it appears under this name only once complete.
    #[arg(long)]
    out: PathBuf,
    /// Type of the 2-D weights (norms and biases stay f32). q8_0 needs every row length a multiple
    /// of 32: prune with `--align 32` for it.
    #[arg(long = "type", default_value = "f16", value_parser = slim_gguf::EXPORT_TYPES.map(|(n, _)| n))]
    ty: String,
    /// Replace an existing --out.
    #[arg(long)]
    force: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let t = std::time::Instant::now();
    let ty = slim_gguf::export_type(&a.ty)?;
    let s = slim_gguf::export_gguf(&a.model, &a.out, ty, a.force)?;
    tracing::info!(
        "exported {} as {} GGUF ({:?} weights, {} tensors, {} parameters{}, {:.1} MB) to {} in {:.1}s",
        a.model.display(),
        s.architecture,
        s.weight_type,
        s.n_tensors,
        s.n_params,
        if s.padded_heads > 0 {
            format!(", {} zero heads evening out GQA groups", s.padded_heads)
        } else {
            String::new()
        },
        s.bytes as f64 / 1e6,
        s.out.display(),
        t.elapsed().as_secs_f64()
    );
    println!("{}", llama_cpp_command(&s.out));
    Ok(())
}

/// The command that runs the file in llama.cpp (its `llama-completion` tool; `llama-cli` and
/// `llama-server` take the same `-m`).
pub fn llama_cpp_command(gguf: &std::path::Path) -> String {
    format!("llama-completion -m {} -p \"The capital of France is\" -n 32 --temp 0 -no-cnv", gguf.display())
}
