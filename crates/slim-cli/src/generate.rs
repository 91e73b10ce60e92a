//! `slimllm generate`: greedy decoding (recomputing the prefix; the KV cache comes with the
//! evaluation work).

use crate::GlobalArgs;
use anyhow::{ensure, Result};
use burn_tensor::backend::Backend;
use burn_tensor::ElementConversion;
use slim_model::{burn_tensor, dispatch, BackendRun, Llama, Tokenizer};
use std::path::PathBuf;

/// Arguments of `slimllm generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text (no chat template).
    #[arg(long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 16)]
    max_new: usize,
}

pub fn run(a: GenerateArgs, g: &GlobalArgs) -> Result<()> {
    let tok = Tokenizer::load(&a.model)?;
    let ids = tok.encode(&a.prompt)?;
    ensure!(!ids.is_empty(), "the prompt tokenizes to nothing");
    let new = dispatch(g.backend.kind(), Greedy { model: &a.model, ids, max_new: a.max_new })?;
    println!("{}", serde_json::json!({"prompt": a.prompt, "completion": tok.decode(&new)?, "ids": new}));
    Ok(())
}

struct Greedy<'a> {
    model: &'a std::path::Path,
    ids: Vec<u32>,
    max_new: usize,
}

impl BackendRun for Greedy<'_> {
    type Output = Vec<u32>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Vec<u32>> {
        let model = Llama::<B>::load(self.model, &device)?;
        let eos = model.config().eos_token_id;
        let mut ids = self.ids;
        let mut new = Vec::new();
        for _ in 0..self.max_new {
            let t = ids.len();
            let logits = model.forward(model.ids_tensor(&ids, 1, t)?);
            let v = logits.dims()[2];
            let last = logits.slice([0..1, t - 1..t, 0..v]).reshape([v]);
            let next = last.argmax(0).into_scalar().elem::<i64>() as u32;
            if Some(next) == eos {
                break;
            }
            ids.push(next);
            new.push(next);
        }
        Ok(new)
    }
}
