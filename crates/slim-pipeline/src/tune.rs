//! The `tune` stage: LoRA recovery fine-tuning of the pruned model ([`slim_tune`]), after the
//! surgery, cached like every other stage. Its key hashes the pruned model's key (the surgery
//! entry), the training text's digest, every setting and the seed; the entry holds the tuned
//! model (`model/`, adapter in `model/adapter/`) and the training log (`log`).
//!
//! A killed tuning run resumes: its checkpoints live in the run folder
//! (`<run>/tune.checkpoint`), keyed by the entry they will become.

use crate::keys::doc;
use crate::report::RunReport;
use crate::run::EvalInput;
use crate::runs::RunDir;
use anyhow::{ensure, Context, Result};
use burn_tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::json;
use slim_artifact::{Key, KeyDoc, Store};
use slim_checkpoint::ModelConfig;
use slim_model::Tokenizer;
use slim_tune::train::{steps_per_epoch, Loop, Observer, StepLog, TrainState, TuneData, ValLog};
use slim_tune::{Job, TuneSettings};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `--tune` asks for.
#[derive(Clone, Debug)]
pub struct TuneRequest {
    /// Everything but the step count, which `steps` or `epochs` gives.
    pub settings: TuneSettings,
    /// Optimizer steps; `None`: `epochs` over the training windows.
    pub steps: Option<u64>,
    /// Epochs when `steps` is `None`.
    pub epochs: f64,
    /// The training text (cut into `seq_len` windows).
    pub data: EvalInput,
    /// Tokens per training sequence.
    pub seq_len: usize,
    /// Sequences held out for validation.
    pub val_size: usize,
    /// Validation and checkpoint cadence (not in the key: they change no weight).
    pub val_every: u64,
    /// Checkpoint every N steps.
    pub checkpoint_every: u64,
}

/// What a tuning run reports (the entry's `log`, and the run summary's `tune`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneLog {
    /// The training text.
    pub data: String,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Training sequences.
    pub train_sequences: usize,
    /// Validation sequences.
    pub val_sequences: usize,
    /// Everything that decided the weights.
    pub settings: TuneSettings,
    /// Every step.
    pub steps: Vec<StepLog>,
    /// Every validation pass.
    pub val: Vec<ValLog>,
    /// Wall seconds of the training.
    pub seconds: f64,
}

impl TuneLog {
    /// The log of a finished run on `data`.
    pub fn new(data: &str, seq_len: usize, train: usize, val: usize, state: &TrainState) -> Self {
        Self {
            data: data.to_string(),
            seq_len,
            train_sequences: train,
            val_sequences: val,
            settings: state.settings.clone(),
            steps: state.steps.clone(),
            val: state.val.clone(),
            seconds: state.steps.iter().map(|s| s.seconds).sum(),
        }
    }
}

/// The tuned model of a run.
#[derive(Debug)]
pub struct TuneOutcome {
    /// The tuned model directory, inside the cache.
    pub dir: PathBuf,
    /// Key of the tune entry.
    pub key: Key,
    /// What the training did.
    pub log: TuneLog,
}

/// The key document of the tune entry of `pruned` (its steps resolved).
pub(crate) fn tune_doc(pruned: Key, req: &TuneRequest, settings: &TuneSettings) -> Result<KeyDoc> {
    let config = json!({
        "data": req.data.data.name(),
        "text": req.data.digest,
        "seq_len": req.seq_len,
        "val_size": req.val_size,
        "settings": settings,
    });
    doc("tune", &config, &[("model", pruned)])
}

/// Tunes the model `pruned_dir` (key `pruned`), or reuses the cached result.
#[allow(clippy::too_many_arguments)]
pub fn tune_cached<B: Backend>(
    store: &Store,
    report: &mut RunReport,
    pruned_dir: &Path,
    pruned: Key,
    req: &TuneRequest,
    run: &RunDir,
    device: &B::Device,
    progress: bool,
) -> Result<TuneOutcome> {
    let t = Instant::now();
    let cfg = ModelConfig::load(pruned_dir)?;
    // The training windows: needed for the key only when the steps come from --tune-epochs.
    let windows = || -> Result<_> {
        let ids = Tokenizer::load(pruned_dir)?.encode(&req.data.text)?;
        slim_tune::data::split(slim_tune::data::windows(&ids, req.seq_len), req.val_size, req.settings.seed)
    };
    let mut split = None;
    let mut settings = req.settings.clone();
    settings.steps = match req.steps {
        Some(n) => n,
        None => {
            let (train, _) = split.insert(windows()?);
            let per_epoch = steps_per_epoch(train.len(), settings.batch);
            ensure!(
                per_epoch >= 1,
                "--tune-batch {} is more than the {} training sequences",
                settings.batch,
                train.len()
            );
            (req.epochs * per_epoch as f64).ceil() as u64
        }
    };
    settings.validate()?;
    let d = tune_doc(pruned, req, &settings)?;
    let key = d.key();
    if let Some(e) = store.lookup("tune", &key)? {
        if e.check_dir("model", false).is_ok() {
            report.record("tune", true, t.elapsed().as_secs_f64());
            report.used("tune", key);
            return Ok(TuneOutcome { dir: e.path_of("model")?, key, log: e.get_json("log")? });
        }
        tracing::warn!("tune entry {key} is damaged; removing it and tuning again");
        store.remove("tune", &key)?;
    }
    let (train, val) = match split {
        Some(s) => s,
        None => windows()?,
    };
    ensure!(
        steps_per_epoch(train.len(), settings.batch) >= 1,
        "--tune-batch {} is more than the {} training sequences",
        settings.batch,
        train.len()
    );
    tracing::info!(
        "tuning: {} steps of {} sequences of {} tokens from {} ({} for training, {} for validation)",
        settings.steps,
        settings.batch,
        req.seq_len,
        req.data.data.name(),
        train.len(),
        val.len()
    );
    let ckpt = run.path().join("tune.checkpoint");
    let job = Job {
        model_dir: pruned_dir,
        cfg: &cfg,
        settings: settings.clone(),
        init_adapter: None,
        checkpoint_dir: &ckpt,
        inputs: format!("tune entry {key}"),
        cadence: Loop { val_every: req.val_every, checkpoint_every: req.checkpoint_every },
    };
    let data = TuneData { train: &train, val: &val, pad: cfg.eos_token_id.unwrap_or(0) };
    let mut obs = TuneProgress::new(progress, settings.steps);
    let trained = job.run::<B>(&data, device, &mut obs)?;
    obs.finish();
    let log = TuneLog::new(req.data.data.name(), req.seq_len, train.len(), val.len(), &trained.state);
    let mut w = store.begin(&d)?;
    w.set_producer(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), None);
    let dir = w.dir_path("model")?;
    slim_tune::write_tuned::<B>(&dir, pruned_dir, &cfg, &trained.adapter, device)?;
    w.put_json("log", &log)?;
    w.commit()?;
    if ckpt.exists() {
        std::fs::remove_dir_all(&ckpt).with_context(|| format!("removing {}", ckpt.display()))?;
    }
    report.record("tune", false, t.elapsed().as_secs_f64());
    report.used("tune", key);
    let dir = store.lookup("tune", &key)?.context("tune entry just committed")?.path_of("model")?;
    Ok(TuneOutcome { dir, key, log })
}

/// A progress bar over the steps with the loss, the last validation loss and tokens/s, and a log
/// line every 10 steps (`slimllm tune` and the `tune` stage).
pub struct TuneProgress {
    bar: indicatif::ProgressBar,
    val: Option<f64>,
    start: Instant,
    tokens: usize,
}

impl TuneProgress {
    /// A bar of `steps` steps, drawn when `draw`.
    pub fn new(draw: bool, steps: u64) -> Self {
        let bar = if draw { indicatif::ProgressBar::new(steps) } else { indicatif::ProgressBar::hidden() };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, ETA {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        Self { bar, val: None, start: Instant::now(), tokens: 0 }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for TuneProgress {
    fn resumed(&mut self, step: u64) {
        tracing::info!("resuming from the checkpoint after step {step}");
        self.bar.set_position(step);
    }
    fn step(&mut self, log: &StepLog, state: &TrainState) {
        self.tokens += log.tokens;
        let rate = self.tokens as f64 / self.start.elapsed().as_secs_f64();
        let val = self.val.map_or(String::new(), |v| format!(", val {v:.4}"));
        self.bar.set_message(format!("loss {:.4}{val}, {rate:.0} tok/s", log.loss));
        self.bar.set_position(state.step);
        if state.step.is_multiple_of(10) || state.step == state.settings.steps {
            tracing::info!(
                "step {}/{}: loss {:.4}, grad norm {:.3}, lr {:.2e}, {rate:.0} tokens/s",
                state.step,
                state.settings.steps,
                log.loss,
                log.grad_norm,
                log.lr
            );
        }
    }
    fn validated(&mut self, log: &ValLog) {
        self.val = Some(log.loss);
        tracing::info!("validation after step {}: loss {:.4} (ppl {:.3})", log.after_step, log.loss, log.loss.exp());
    }
}
