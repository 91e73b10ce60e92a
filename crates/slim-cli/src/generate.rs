//! `slimllm generate`: greedy or sampled decoding with the KV cache, optionally through the
//! model's chat template.

use crate::preflight::{self, Footprint};
use crate::GlobalArgs;
use anyhow::{ensure, Context, Result};
use burn_tensor::backend::Backend;
use slim_eval::GenConfig;
use slim_model::{burn_tensor, dispatch, BackendRun, Tokenizer};
use std::path::PathBuf;

/// Arguments of `slimllm generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text; repeat the flag to continue several prompts, one after the other.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Wrap the prompt as a user message in the model's chat template
    /// (`tokenizer_config.json`'s `chat_template`) and open the assistant's turn.
    #[arg(long)]
    chat: bool,
    /// Tokens to generate at most (generation also stops at EOS).
    #[arg(long, default_value_t = 16, value_parser = crate::preflight::at_least_1, allow_negative_numbers = true)]
    max_new: usize,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f64,
    /// Nucleus sampling: sample among the most likely tokens covering this probability mass.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    seed: u64,
    /// Recompute the whole prefix at every step instead of using the KV cache (a check; slow).
    #[arg(long)]
    recompute: bool,
    /// Also write the JSON result to this file (`slimllm report` shows it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The dtype the projections' weights are kept in: f32 (default), f16 or bf16 (widened inside each product), or
    /// `stored`, as the model's files hold them (half the memory and the bytes read per token of an f32 model).
    #[arg(long, value_enum, default_value = "f32")]
    weights: crate::weights_arg::WeightsArg,
}

pub fn run(a: GenerateArgs, g: &GlobalArgs) -> Result<()> {
    ensure!(
        a.temperature >= 0.0 && a.temperature.is_finite(),
        "--temperature must be finite and at least 0, got {}",
        a.temperature
    );
    ensure!(a.top_p > 0.0 && a.top_p <= 1.0, "--top-p must lie in (0, 1], got {}", a.top_p);
    let model_cfg = slim_checkpoint::ModelConfig::load(&a.model)?;
    crate::check_out(a.out.as_deref())?;
    let tok = Tokenizer::load(&a.model)?;
    let fp = Footprint::new(&model_cfg, g.backend);
    let dtype = a.weights.resolve(&a.model)?;
    let mut prompts = Vec::new();
    for p in &a.prompt {
        let text = if a.chat { Tokenizer::chat_prompt(&a.model, &[("user", p)])? } else { p.clone() };
        let ids = tok.encode(&text)?;
        ensure!(!ids.is_empty(), "the prompt `{p}` tokenizes to nothing");
        slim_eval::check_token_ids(&ids, model_cfg.vocab_size).with_context(|| {
            format!(
                "--prompt `{p}`: {} gives ids that {} does not have (a tokenizer of another model?)",
                a.model.join("tokenizer.json").display(),
                a.model.join("config.json").display()
            )
        })?;
        // Every step may need the whole sequence: prompt and --max-new tokens.
        let total = ids.len().saturating_add(a.max_new);
        let what = format!("--max-new {} after a prompt of {} tokens", a.max_new, ids.len());
        preflight::check_positions(&model_cfg, total, &what)?;
        let step = if a.recompute {
            fp.forward(1, total)
        } else {
            fp.cached_pass(1, 0, ids.len(), ids.len()).max(fp.cached_pass(1, total, 1, 1))
        };
        preflight::check_fits(&what, fp.peak_in(dtype, step))?;
        prompts.push((text, ids));
    }
    let cfg = GenConfig {
        max_new: a.max_new,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        recompute: a.recompute,
    };
    let t = std::time::Instant::now();
    let outs = dispatch(g.backend, Job { model: &a.model, weights: a.weights, prompts: &prompts, cfg })?;
    let secs = t.elapsed().as_secs_f64();
    let mut generations = Vec::new();
    for ((p, (text, ids)), (new, s)) in a.prompt.iter().zip(&prompts).zip(outs) {
        generations.push(serde_json::json!({
            "prompt": p, "rendered_prompt": text, "completion": tok.decode(&new)?, "ids": new,
            "prompt_tokens": ids.len(), "seconds": s,
        }));
    }
    let v = serde_json::json!({
        "model": a.model.display().to_string(), "params": model_cfg.num_params(), "generations": generations,
        "seconds": secs,
        "config": {
            "chat": a.chat, "max_new": a.max_new, "temperature": a.temperature, "top_p": a.top_p, "seed": a.seed,
            "kv_cache": !a.recompute,
        },
    });
    crate::emit_json(&v, a.out.as_deref())
}

struct Job<'a> {
    model: &'a std::path::Path,
    weights: crate::weights_arg::WeightsArg,
    prompts: &'a [(String, Vec<u32>)],
    cfg: GenConfig,
}

impl BackendRun for Job<'_> {
    /// New ids and seconds, per prompt.
    type Output = Vec<(Vec<u32>, f64)>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let (model, _) = self.weights.load::<B>(self.model, &device)?;
        self.prompts
            .iter()
            .map(|(_, ids)| {
                let t = std::time::Instant::now();
                Ok((slim_eval::generate(&model, ids, &self.cfg)?, t.elapsed().as_secs_f64()))
            })
            .collect()
    }
}
