//! `slimllm eval …`: perplexity and zero-shot tasks.

use crate::preflight::{self, Footprint};
use crate::{emit_json, progress, GlobalArgs};
use anyhow::{Context, Result};
use burn_tensor::backend::Backend;
use serde_json::json;
use slim_checkpoint::{ModelConfig, WeightSource};
use slim_data::EvalText;
use slim_eval::{perplexity_streamed, PplConfig};
use slim_model::{burn_tensor, dispatch, BackendRun, Tokenizer};
use std::path::PathBuf;

/// Evaluation commands.
#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Perplexity with the LLM-Pruner protocol: lines stripped, non-empty ones joined by a
    /// blank line, tokenized once, non-overlapping windows (remainder dropped), loss over
    /// the seq-len − 1 next-token predictions of every window.
    Ppl(PplArgs),
    /// Zero-shot multiple choice (the paper's seven tasks and LAMBADA) with lm-eval 0.3's
    /// prompts and scoring; data from `cargo xtask fetch zeroshot`.
    Zeroshot(crate::zeroshot::ZeroshotArgs),
}

/// Arguments of `slimllm eval ppl`.
#[derive(clap::Args)]
pub struct PplArgs {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Text: `ptb-valid`, `ptb-test` or `brown-nonfiction`.
    #[arg(long)]
    data: EvalText,
    /// Window length in tokens (at least 2).
    #[arg(long, default_value_t = 128, value_parser = preflight::at_least_2, allow_negative_numbers = true)]
    seq_len: usize,
    /// Score only the first N windows (all when omitted).
    #[arg(long, value_parser = preflight::at_least_1, allow_negative_numbers = true)]
    windows: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8, value_parser = preflight::at_least_1, allow_negative_numbers = true)]
    batch: usize,
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Hold the whole model in memory with the projections' and the lm_head's weights in this dtype (f16 or bf16
    /// are widened inside each product; `stored`: as the files hold them) instead of reading one decoder layer at a
    /// time in f32 (the default, for models larger than the memory). Activations are f32 either way.
    #[arg(long, value_enum)]
    weights: Option<crate::weights_arg::WeightsArg>,
}

pub fn run(c: EvalCommand, g: &GlobalArgs) -> Result<()> {
    match c {
        EvalCommand::Zeroshot(a) => crate::zeroshot::run(a, g),
        EvalCommand::Ppl(a) => {
            // Every check before the long part: the model's config (a wrong --model is the likelier mistake and the
            // cheaper check), that the result can be written, that the sizes fit, that the ids fit the model;
            // only then the weights load.
            let model_cfg = ModelConfig::load(&a.model)?;
            crate::check_out(a.out.as_deref())?;
            preflight::check_positions(&model_cfg, a.seq_len, &format!("--seq-len {}", a.seq_len))?;
            // One decoder layer in memory at a time (the same result to the bit as the whole model), so a model
            // larger than the memory is evaluated too; or, with --weights, the whole model in that dtype.
            let fp = Footprint::new(&model_cfg, g.backend);
            let resident = a.weights.map(|w| w.resolve(&a.model)).transpose()?;
            let peak = |batch: usize, windows: usize| match resident {
                Some(dtype) => fp.peak_in(dtype, fp.forward(batch, a.seq_len)),
                None => fp.streamed(batch, a.seq_len, windows),
            };
            // One window before the text is read, then the batch and windows the text allows.
            let held = resident.map_or(String::new(), |d| format!(" with --weights {}", slim_artifact::Kind::name(d)));
            preflight::check_fits(&format!("--seq-len {}{held}", a.seq_len), peak(1, 1))?;
            let tok = Tokenizer::load(&a.model)?;
            let text = a.data.load(&g.data_root)?;
            let ids = tok.encode(&text).with_context(|| format!("tokenizing {}", a.data.name()))?;
            tracing::info!("{}: {} tokens", a.data.name(), ids.len());
            let n = slim_eval::windows(&ids, a.seq_len, a.windows).len();
            anyhow::ensure!(
                n > 0,
                "{} has {} tokens: fewer than one window of --seq-len {}",
                a.data.name(),
                ids.len(),
                a.seq_len
            );
            slim_eval::check_token_ids(&ids[..n * a.seq_len], model_cfg.vocab_size).with_context(|| {
                format!(
                    "{} tokenizes {} ({}) into ids that {} does not have (a tokenizer of another model?)",
                    a.model.join("tokenizer.json").display(),
                    a.data.name(),
                    a.data.location(&g.data_root).display(),
                    a.model.join("config.json").display()
                )
            })?;
            let what =
                format!("--batch {} × --seq-len {} ({} windows at once){held}", a.batch, a.seq_len, a.batch.min(n));
            preflight::check_fits(&what, peak(a.batch.min(n), n))?;
            let cfg = PplConfig { seq_len: a.seq_len, batch: a.batch, max_windows: a.windows, progress: progress(g) };
            let t = std::time::Instant::now();
            let job = PplJob { model: &a.model, model_cfg: &model_cfg, ids: &ids, cfg: &cfg, weights: a.weights };
            let r = dispatch(g.backend, job)?;
            let secs = t.elapsed().as_secs_f64();
            tracing::info!(
                "ppl {:.4} over {} windows in {secs:.1}s ({:.0} tokens/s)",
                r.ppl,
                r.windows,
                (r.windows * a.seq_len) as f64 / secs
            );
            let v = json!({
                "ppl": r.ppl, "windows": r.windows, "tokens_scored": r.tokens_scored,
                "model": a.model.display().to_string(), "data": a.data.name(), "seq_len": a.seq_len,
                "backend": g.backend.name(), "seconds": secs,
                "weights": resident.map_or("streamed f32", slim_artifact::Kind::name),
            });
            emit_json(&v, a.out.as_deref())
        }
    }
}

struct PplJob<'a> {
    model: &'a std::path::Path,
    model_cfg: &'a ModelConfig,
    ids: &'a [u32],
    cfg: &'a PplConfig,
    weights: Option<crate::weights_arg::WeightsArg>,
}

impl BackendRun for PplJob<'_> {
    type Output = slim_eval::PplResult;
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        if let Some(w) = self.weights {
            let (model, _) = w.load::<B>(self.model, &device)?;
            return slim_eval::perplexity(&model, self.ids, self.cfg);
        }
        let src = WeightSource::open(self.model)?;
        src.check_against(self.model_cfg)?;
        perplexity_streamed::<B>(&src, self.model_cfg, self.ids, self.cfg, &device)
    }
}
