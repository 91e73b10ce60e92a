//! `slimllm tokenize`: token ids of a file, for comparisons with other tokenizers.

use anyhow::{Context, Result};
use slim_model::Tokenizer;
use std::path::PathBuf;

/// Arguments of `slimllm tokenize`.
#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// Model directory holding tokenizer.json.
    #[arg(long)]
    model: PathBuf,
    /// Text file to tokenize as it is (no joining).
    #[arg(long)]
    text_file: PathBuf,
    /// Join the file's lines with the perplexity protocol first (stripped, non-empty,
    /// separated by a blank line).
    #[arg(long)]
    join: bool,
    /// Write the ids here as a JSON array (stdout when omitted).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let tok = Tokenizer::load(&a.model)?;
    let text = std::fs::read_to_string(&a.text_file).with_context(|| format!("reading {}", a.text_file.display()))?;
    let text = if a.join { slim_data::join_for_ppl(&text) } else { text };
    let ids = tok.encode(&text)?;
    // A model directory's tokenizer must stay inside its model's vocabulary; a folder without config.json holds a
    // tokenizer alone, with nothing to check against.
    let config = a.model.join("config.json");
    if config.exists() {
        let cfg = slim_checkpoint::ModelConfig::load(&a.model)?;
        slim_eval::check_token_ids(&ids, cfg.vocab_size).with_context(|| {
            format!(
                "{} gives ids for {} that {} does not have (a tokenizer of another model?)",
                a.model.join("tokenizer.json").display(),
                a.text_file.display(),
                config.display()
            )
        })?;
    }
    let s = serde_json::to_string(&ids)?;
    match a.out {
        Some(p) => slim_fs::write_atomic(&p, s.as_bytes()).with_context(|| format!("writing {}", p.display())),
        None => {
            println!("{s}");
            Ok(())
        }
    }
}
