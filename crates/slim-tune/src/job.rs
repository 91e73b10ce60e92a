//! A whole tuning job on a model directory: load the model, start (or resume) the adapters,
//! train with checkpoints, and write the tuned model. `slimllm tune` and the pipeline's `tune`
//! stage both run this.

use crate::adapter::Adapter;
use crate::train::{fresh_state, Loop, Observer, StepLog, TrainState, TuneData, TuneSettings, ValLog};
use anyhow::Result;
use burn_autodiff::Autodiff;
use slim_checkpoint::layout::Global;
use slim_checkpoint::{ModelConfig, WeightSource};
use slim_model::burn_tensor::backend::Backend;
use slim_model::Llama;
use std::path::Path;

/// What a job needs besides the data.
pub struct Job<'a> {
    /// The model to tune.
    pub model_dir: &'a Path,
    /// Its config.
    pub cfg: &'a ModelConfig,
    /// The run's settings (the adapter's come from `init_adapter` when given).
    pub settings: TuneSettings,
    /// Start from this PEFT adapter instead of a fresh one.
    pub init_adapter: Option<&'a Path>,
    /// Where checkpoints go; a checkpoint there of the same inputs and settings is resumed.
    pub checkpoint_dir: &'a Path,
    /// What the run learns from (model and data fingerprints), recorded in checkpoints.
    pub inputs: String,
    /// Validation and checkpoint cadence.
    pub cadence: Loop,
}

/// The adapter after training and the run's record.
pub struct Trained {
    /// The trained adapter.
    pub adapter: Adapter,
    /// Settings, step logs and validation logs.
    pub state: TrainState,
}

/// Saves a checkpoint whenever the loop asks, then tells the caller's observer.
struct Saving<'a> {
    dir: &'a Path,
    inputs: &'a str,
    inner: &'a mut dyn Observer,
}

impl Observer for Saving<'_> {
    fn step(&mut self, log: &StepLog, state: &TrainState) {
        self.inner.step(log, state)
    }
    fn validated(&mut self, log: &ValLog) {
        self.inner.validated(log)
    }
    fn checkpoint(&mut self, state: &TrainState, adapter: &Adapter) -> Result<()> {
        crate::checkpoint::save(self.dir, self.inputs, state, adapter)?;
        self.inner.checkpoint(state, adapter)
    }
}

impl Job<'_> {
    /// The starting adapter: `init_adapter`, or a fresh one from the settings' seed.
    pub fn initial_adapter(&self) -> Result<Adapter> {
        match self.init_adapter {
            Some(dir) => Adapter::load_peft(dir, self.cfg),
            None => Adapter::init(self.cfg, &self.settings.lora, self.settings.seed),
        }
    }

    /// Trains (resuming from a checkpoint of the same inputs and settings when there is one).
    pub fn run<B: Backend>(&self, data: &TuneData<'_>, device: &B::Device, obs: &mut dyn Observer) -> Result<Trained> {
        let mut adapter = self.initial_adapter()?;
        let mut settings = self.settings.clone();
        settings.lora = adapter.spec.clone();
        let fresh = fresh_state(&settings, &adapter);
        let state = match crate::checkpoint::load(self.checkpoint_dir, &self.inputs, &fresh, self.cfg)? {
            Some((state, ad)) => {
                obs.resumed(state.step);
                adapter = ad;
                state
            }
            None => fresh,
        };
        let mut model = load_model::<B>(self.model_dir, self.cfg, device)?;
        let mut saving = Saving { dir: self.checkpoint_dir, inputs: &self.inputs, inner: obs };
        let state = self.cadence.run::<B>(&mut model, &mut adapter, data, state, &mut saving)?;
        Ok(Trained { adapter, state })
    }
}

/// The model on `device`, read one tensor group at a time (embedding, each layer, output), so
/// that the host never holds more than one layer's f32 copy beside the model.
fn load_model<B: Backend>(dir: &Path, cfg: &ModelConfig, device: &B::Device) -> Result<Llama<Autodiff<B>>> {
    let src = WeightSource::open(dir)?;
    src.check_against(cfg)?;
    let mut model = Llama::<Autodiff<B>>::empty(cfg.clone(), device)?;
    model.load_embedding(src.read_global(cfg, Global::Embedding)?)?;
    for l in 0..cfg.num_layers() {
        model.load_layer(l, &src.read_layer(cfg, l)?)?;
    }
    model.load_output(&src.read_global(cfg, Global::FinalNorm)?, &src.read_global(cfg, Global::output(cfg))?)?;
    Ok(model)
}

/// Writes the tuned model into the existing folder `dir`: `model_dir`'s tensors with the
/// adapter merged in, stored in `model_dir`'s dtype, one tensor at a time; its config and
/// tokenizer files; and the adapter alone in `dir/adapter/` (PEFT's format).
pub fn write_tuned<B: Backend>(
    dir: &Path,
    model_dir: &Path,
    cfg: &ModelConfig,
    adapter: &Adapter,
    device: &B::Device,
) -> Result<()> {
    let source = WeightSource::open(model_dir)?;
    slim_checkpoint::save_model_dir_with(dir, cfg, model_dir, source.model_dtype(), &mut |name| {
        let t = source.read(name)?;
        Ok(adapter.merged::<B>(name, &t, device)?.unwrap_or(t))
    })?;
    adapter.save_peft(&dir.join("adapter"), Some(&model_dir.display().to_string()))
}
