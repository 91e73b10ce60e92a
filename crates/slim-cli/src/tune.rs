//! `slimllm tune`: recovery fine-tuning of a (pruned) model with LoRA, merged into a new model
//! directory, the adapter beside it in PEFT's format.

use crate::preflight;
use crate::GlobalArgs;
use anyhow::{ensure, Context, Result};
use serde_json::json;
use slim_checkpoint::{ModelConfig, WeightSource};
use slim_data::EvalText;
use slim_model::burn_tensor::backend::Backend;
use slim_model::{dispatch, BackendRun, Tokenizer};
use slim_pipeline::{TuneLog, TuneProgress};
use slim_tune::adapter::{parse_target, LoraSpec};
use slim_tune::data::{self, Example};
use slim_tune::train::{step_examples, steps_per_epoch, Loop, TuneData, TuneSettings};
use slim_tune::{Job, Trained};
use std::path::{Path, PathBuf};

/// Arguments of `slimllm tune`. Defaults are the paper's script (spec §5), except the data.
#[derive(clap::Args)]
pub struct TuneArgs {
    /// Model directory to tune (dense or pruned).
    #[arg(long)]
    model: PathBuf,
    /// Output model directory: the merged weights (in the model's dtype), `adapter/` in PEFT's
    /// format and `tune.json` (settings, losses). Written under a temporary name, renamed at the end.
    #[arg(long)]
    out: PathBuf,
    /// Training data: `brown-nonfiction` (plain text cut into --seq-len windows; not the
    /// calibration text, which is Brown fiction, nor the evaluation text, PTB) or `alpaca-demo`
    /// (instructions, prompts masked).
    #[arg(long, value_enum, default_value = "brown-nonfiction")]
    data: TuneText,
    /// Epochs over the training set (the last partial batch of each is dropped).
    #[arg(long, default_value_t = 2.0, conflicts_with = "steps")]
    epochs: f64,
    /// Optimizer steps in all, instead of --epochs.
    #[arg(long, value_parser = preflight::at_least_1)]
    steps: Option<usize>,
    /// LoRA rank (the paper's script: 4; LLM-Pruner's: 8).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    rank: usize,
    /// LoRA α (the update is scaled by α / rank).
    #[arg(long, default_value_t = 16.0, allow_negative_numbers = true)]
    alpha: f64,
    /// Dropout of the adapters' input.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    lora_dropout: f64,
    /// Adapted projections.
    #[arg(long, value_delimiter = ',', default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")]
    targets: Vec<String>,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    lr: f64,
    /// Linear warm-up steps, then linear decay to 0.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Sequences per optimizer step.
    #[arg(long, default_value_t = 16, value_parser = preflight::at_least_1, allow_negative_numbers = true)]
    batch: usize,
    /// Sequences per forward/backward pass (gradient accumulation over batch / micro-batch).
    #[arg(long, default_value_t = 4, value_parser = preflight::at_least_1, allow_negative_numbers = true)]
    micro_batch: usize,
    /// Tokens per training sequence (the paper's cutoff_len).
    #[arg(long, default_value_t = 256, value_parser = preflight::at_least_2, allow_negative_numbers = true)]
    seq_len: usize,
    /// Seeds the adapters, the split, the order of every epoch and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Sequences held out for validation.
    #[arg(long, default_value_t = 128)]
    val_size: usize,
    /// Validate every N steps (and at the start and the end).
    #[arg(long, default_value_t = 100)]
    val_every: u64,
    /// Write a checkpoint every N steps; rerunning the same command resumes from it.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: u64,
    /// Where checkpoints go (default: `<out>.checkpoint` beside --out).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Gradient-norm clipping (0: none).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    max_grad_norm: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    weight_decay: f64,
    /// Start from this PEFT adapter instead of a fresh one (its rank, α and targets win).
    #[arg(long)]
    init_adapter: Option<PathBuf>,
    /// Also write the starting adapter here (PEFT's format), for a reference run.
    #[arg(long)]
    dump_init: Option<PathBuf>,
    /// Also write the sequences of every step, in the order they are used, to this safetensors
    /// file (`input_ids`, `labels`), for a reference run.
    #[arg(long)]
    dump_batches: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(a: TuneArgs, g: &GlobalArgs) -> Result<()> {
    // Every check before the long part.
    let cfg = ModelConfig::load(&a.model)?;
    let source = WeightSource::open(&a.model)?;
    source.check_against(&cfg)?;
    let mut targets: Vec<_> = a.targets.iter().map(|t| parse_target(t).context("--targets")).collect::<Result<_>>()?;
    targets.sort_by_key(|p| slim_checkpoint::layout::Proj::ALL.iter().position(|q| q == p));
    targets.dedup();
    let lora = LoraSpec { rank: a.rank, alpha: a.alpha, dropout: a.lora_dropout, targets };
    let mut settings = TuneSettings {
        lora,
        lr: a.lr,
        warmup: a.warmup,
        steps: 1,
        batch: a.batch,
        micro_batch: a.micro_batch,
        max_grad_norm: a.max_grad_norm,
        adamw: slim_tune::optim::AdamWConfig { weight_decay: a.weight_decay, ..Default::default() },
        seed: a.seed,
    };
    settings.validate()?;
    ensure!(a.epochs.is_finite() && a.epochs > 0.0, "--epochs must be a positive number, got {}", a.epochs);
    if !a.force && a.out.exists() {
        anyhow::bail!("{} exists (pass --force to replace it)", a.out.display());
    }
    preflight::check_positions(&cfg, a.seq_len, &format!("--seq-len {}", a.seq_len))?;

    let tok = Tokenizer::load(&a.model)?;
    let examples = a.data.examples(&tok, &g.data_root, a.seq_len, cfg.eos_token_id)?;
    let tokens: usize = examples.iter().map(|e| e.ids.len()).sum();
    for e in &examples {
        slim_eval::check_token_ids(&e.ids, cfg.vocab_size)
            .with_context(|| format!("{} does not fit {}", a.data.name(), a.model.display()))?;
    }
    // What the run learns from, for checkpoints: the model's tensors (names, shapes, stored
    // size) and every example's ids and labels.
    let inputs = format!(
        "model {} ({} tensors, {} bytes stored), {} examples of {} tokens hashing to {:016x}, seq-len {}, val-size {}",
        a.model.display(),
        source.names().count(),
        source.stored_bytes(),
        examples.len(),
        tokens,
        fingerprint(&examples),
        a.seq_len,
        a.val_size
    );
    let (train, val) = data::split(examples, a.val_size, a.seed)?;
    let per_epoch = steps_per_epoch(train.len(), a.batch);
    ensure!(per_epoch >= 1, "{} training sequences are fewer than one --batch {}", train.len(), a.batch);
    settings.steps = match a.steps {
        Some(s) => s as u64,
        None => (a.epochs * per_epoch as f64).ceil() as u64,
    };
    tracing::info!(
        "{}: {tokens} tokens, {} training and {} validation sequences of at most {}; {} steps of {} sequences \
         ({:.2} epochs)",
        a.data.name(),
        train.len(),
        val.len(),
        a.seq_len,
        settings.steps,
        a.batch,
        settings.steps as f64 / per_epoch as f64
    );
    if let Some(path) = &a.dump_batches {
        dump_batches(path, &train, &settings, tok_pad(&cfg))?;
    }
    let ckpt = a.checkpoint_dir.clone().unwrap_or_else(|| sibling(&a.out, ".checkpoint"));
    let work =
        Work { a: &a, g, cfg: &cfg, settings, train: &train, val: &val, inputs, ckpt: &ckpt, pad: tok_pad(&cfg) };
    dispatch(g.backend, work)?;
    if ckpt.exists() {
        std::fs::remove_dir_all(&ckpt).with_context(|| format!("removing the checkpoint {}", ckpt.display()))?;
    }
    Ok(())
}

/// The padding id: the EOS token (never scored).
fn tok_pad(cfg: &ModelConfig) -> u32 {
    cfg.eos_token_id.unwrap_or(0)
}

fn sibling(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// FNV-1a over every example's ids and labels (a fingerprint for checkpoints, not a security hash).
fn fingerprint(examples: &[Example]) -> u64 {
    let bytes = examples.iter().flat_map(|e| {
        let ids = e.ids.iter().flat_map(|i| i.to_le_bytes());
        ids.chain(e.labels.iter().flat_map(|l| l.to_le_bytes())).chain(u32::MAX.to_le_bytes())
    });
    bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The training data of `slimllm tune --data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TuneText {
    /// The Brown corpus's non-fiction genres as plain text, cut into --seq-len windows, every token scored.
    #[value(name = "brown-nonfiction")]
    BrownNonfiction,
    /// 999 Alpaca-format instructions (`cargo xtask fetch alpaca-demo`) in LLM-Pruner's prompt template,
    /// cut to --seq-len tokens, EOS appended, the prompt not scored.
    #[value(name = "alpaca-demo")]
    AlpacaDemo,
}

impl TuneText {
    fn name(self) -> &'static str {
        match self {
            TuneText::BrownNonfiction => "brown-nonfiction",
            TuneText::AlpacaDemo => "alpaca-demo",
        }
    }

    /// The training examples, tokenized with `tok`.
    fn examples(self, tok: &Tokenizer, data_root: &Path, seq_len: usize, eos: Option<u32>) -> Result<Vec<Example>> {
        Ok(match self {
            TuneText::BrownNonfiction => {
                let text = EvalText::BrownNonfiction.load(data_root).context("--data brown-nonfiction")?;
                let ids = tok.encode(&text).context("tokenizing brown-nonfiction")?;
                data::windows(&ids, seq_len)
            }
            TuneText::AlpacaDemo => {
                let records = slim_data::instruct::load_alpaca_demo(data_root).context("--data alpaca-demo")?;
                records
                    .iter()
                    .map(|r| Ok(Example::masked(&tok.encode(&r.prompt())?, &tok.encode(&r.full())?, seq_len, eos)))
                    .collect::<Result<Vec<_>>>()
                    .context("tokenizing alpaca-demo")?
            }
        })
    }
}

/// The sequences of every step, in order, as `input_ids` and `labels` (`[n, len]`, i64).
fn dump_batches(path: &Path, train: &[Example], s: &TuneSettings, pad: u32) -> Result<()> {
    let mut rows: Vec<&Example> = Vec::new();
    for step in 0..s.steps {
        rows.extend(step_examples(train.len(), step, s.batch, s.seed).into_iter().map(|i| &train[i]));
    }
    // Right-padded to the longest, padding not scored, as the trainer's micro-batches (which pad to
    // their own longest: the same positions, since padding follows every scored token).
    let len = rows.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let batch = slim_tune::data::collate(&rows, pad);
    debug_assert_eq!(batch.len, len);
    let ids: Vec<u8> = batch.ids.iter().flat_map(|&t| (t as i64).to_le_bytes()).collect();
    let labels: Vec<u8> = batch.labels.iter().flat_map(|&t| (t as i64).to_le_bytes()).collect();
    let views = vec![
        (
            "input_ids".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![rows.len(), len], &ids)?,
        ),
        (
            "labels".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![rows.len(), len], &labels)?,
        ),
    ];
    slim_fs::write_atomic(path, &safetensors::serialize(views, None)?)?;
    Ok(())
}

struct Work<'a> {
    a: &'a TuneArgs,
    g: &'a GlobalArgs,
    cfg: &'a ModelConfig,
    settings: TuneSettings,
    train: &'a [Example],
    val: &'a [Example],
    inputs: String,
    ckpt: &'a Path,
    pad: u32,
}

impl BackendRun for Work<'_> {
    type Output = ();
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let a = self.a;
        let job = Job {
            model_dir: &a.model,
            cfg: self.cfg,
            settings: self.settings.clone(),
            init_adapter: a.init_adapter.as_deref(),
            checkpoint_dir: self.ckpt,
            inputs: self.inputs.clone(),
            cadence: Loop { val_every: a.val_every, checkpoint_every: a.checkpoint_every },
        };
        if let Some(dir) = &a.dump_init {
            job.initial_adapter()?.save_peft(dir, Some(&a.model.display().to_string()))?;
        }
        let mut obs = TuneProgress::new(crate::progress(self.g), self.settings.steps);
        let data = TuneData { train: self.train, val: self.val, pad: self.pad };
        let trained = job.run::<B>(&data, &device, &mut obs)?;
        obs.finish();
        write_out::<B>(a, self.cfg, &trained, &device, self.train.len(), self.val.len())
    }
}

/// The merged model, the adapter and the log, as one folder renamed into place.
fn write_out<B: Backend>(
    a: &TuneArgs,
    cfg: &ModelConfig,
    t: &Trained,
    device: &B::Device,
    train: usize,
    val: usize,
) -> Result<()> {
    let existing = if a.force { slim_fs::Existing::Replace } else { slim_fs::Existing::Refuse };
    let install = slim_fs::DirInstall::begin(&a.out, existing)?;
    slim_tune::write_tuned::<B>(install.path(), &a.model, cfg, &t.adapter, device)?;
    let log = TuneLog::new(a.data.name(), a.seq_len, train, val, &t.state);
    slim_fs::write_atomic(&install.path().join("tune.json"), serde_json::to_string_pretty(&log)?.as_bytes())?;
    install.commit()?;
    let last_val = t.state.val.last().map(|v| v.loss);
    let train_loss = t.state.steps.last().map(|s| s.loss);
    println!("{}", json!({"out": a.out, "steps": t.state.step, "val_loss": last_val, "train_loss": train_loss}));
    Ok(())
}

/// `pipeline run --tune …`: recovery fine-tuning as the pipeline's last stage (cached; the run's
/// model is then the tuned one). Defaults as `slimllm tune`'s.
#[derive(clap::Args)]
pub struct PipelineTuneArgs {
    /// Fine-tune the pruned model with LoRA after the surgery.
    #[arg(long)]
    tune: bool,
    /// Training text.
    #[arg(long, default_value = "brown-nonfiction", requires = "tune")]
    tune_data: EvalText,
    /// Optimizer steps (default: --tune-epochs).
    #[arg(long, value_parser = preflight::at_least_1, requires = "tune")]
    tune_steps: Option<usize>,
    /// Epochs over the training windows when --tune-steps is not given.
    #[arg(long, default_value_t = 2.0, requires = "tune")]
    tune_epochs: f64,
    /// LoRA rank.
    #[arg(long, default_value_t = 4, requires = "tune")]
    tune_rank: usize,
    /// LoRA α.
    #[arg(long, default_value_t = 16.0, requires = "tune")]
    tune_alpha: f64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4, requires = "tune", allow_negative_numbers = true)]
    tune_lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 100, requires = "tune")]
    tune_warmup: u64,
    /// Sequences per optimizer step.
    #[arg(long, default_value_t = 16, value_parser = preflight::at_least_1, requires = "tune")]
    tune_batch: usize,
    /// Sequences per forward/backward pass.
    #[arg(long, default_value_t = 4, value_parser = preflight::at_least_1, requires = "tune")]
    tune_micro_batch: usize,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 256, value_parser = preflight::at_least_2, requires = "tune")]
    tune_seq_len: usize,
    /// Sequences held out for validation.
    #[arg(long, default_value_t = 128, requires = "tune")]
    tune_val_size: usize,
    /// Seed of the adapters, the split, the order and dropout.
    #[arg(long, default_value_t = 42, requires = "tune")]
    tune_seed: u64,
}

impl PipelineTuneArgs {
    /// The tuning stage's request, checked, with its text loaded; `None` without `--tune`.
    pub fn request(&self, data_root: &Path) -> Result<Option<slim_pipeline::TuneRequest>> {
        if !self.tune {
            return Ok(None);
        }
        let mut s = TuneSettings::paper(1);
        s.lora = LoraSpec { rank: self.tune_rank, alpha: self.tune_alpha, ..LoraSpec::paper() };
        s.lr = self.tune_lr;
        s.warmup = self.tune_warmup;
        s.batch = self.tune_batch;
        s.micro_batch = self.tune_micro_batch;
        s.seed = self.tune_seed;
        s.validate().map_err(|e| anyhow::format_err!("{}", e.to_string().replace("--", "--tune-")))?;
        ensure!(self.tune_epochs.is_finite() && self.tune_epochs > 0.0, "--tune-epochs must be positive");
        let data = slim_pipeline::EvalInput::load(self.tune_data, data_root)
            .with_context(|| format!("--tune-data {}", self.tune_data))?;
        Ok(Some(slim_pipeline::TuneRequest {
            settings: s,
            steps: self.tune_steps.map(|n| n as u64),
            epochs: self.tune_epochs,
            data,
            seq_len: self.tune_seq_len,
            val_size: self.tune_val_size,
            val_every: 100,
            checkpoint_every: 50,
        }))
    }
}
