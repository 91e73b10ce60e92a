//! The training loop: batches in a seeded order, gradients per micro-batch ([`crate::grad`]),
//! clipping, AdamW with the linear schedule, validation, checkpoints and resuming.

use crate::adapter::Adapter;
use crate::data::{collate, epoch_order, Example};
use crate::grad::{self, Dropout, GradSums};
use crate::optim::{clip_grad_norm, linear_schedule, AdamW, AdamWConfig};
use crate::LoraSpec;
use anyhow::{bail, ensure, Context, Result};
use burn_autodiff::Autodiff;
use serde::{Deserialize, Serialize};
use slim_model::burn_tensor::backend::Backend;
use slim_model::{tensor_to_host, Llama};
use std::time::Instant;

/// Everything that decides what a run computes (hashed into checkpoints and cache keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneSettings {
    /// The adapters.
    pub lora: LoraSpec,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up, in optimizer steps.
    pub warmup: u64,
    /// Optimizer steps in all (from `--epochs` or `--steps`).
    pub steps: u64,
    /// Sequences per optimizer step.
    pub batch: usize,
    /// Sequences per forward/backward pass (divides `batch`).
    pub micro_batch: usize,
    /// Gradient-norm clipping (transformers' default 1.0; 0 turns it off).
    pub max_grad_norm: f64,
    /// The optimizer.
    pub adamw: AdamWConfig,
    /// Seeds the adapters' initialisation, the data order and dropout.
    pub seed: u64,
}

impl TuneSettings {
    /// The paper's script (spec §5) with `steps` steps.
    pub fn paper(steps: u64) -> Self {
        Self {
            lora: LoraSpec::paper(),
            lr: 1e-4,
            warmup: 100,
            steps,
            batch: 16,
            micro_batch: 4,
            max_grad_norm: 1.0,
            adamw: AdamWConfig::default(),
            seed: 42,
        }
    }

    /// Checks every setting, naming the option at fault.
    pub fn validate(&self) -> Result<()> {
        self.lora.validate()?;
        ensure!(self.lr.is_finite() && self.lr > 0.0, "--lr must be a positive number, got {}", self.lr);
        ensure!(self.steps >= 1, "the run has no step: --steps (or --epochs) gives 0");
        ensure!(self.batch >= 1 && self.micro_batch >= 1, "--batch and --micro-batch must be at least 1");
        ensure!(
            self.batch.is_multiple_of(self.micro_batch),
            "--batch {} is not a multiple of --micro-batch {}",
            self.batch,
            self.micro_batch
        );
        ensure!(self.max_grad_norm >= 0.0, "--max-grad-norm must not be negative, got {}", self.max_grad_norm);
        ensure!(self.adamw.weight_decay >= 0.0, "--weight-decay must not be negative");
        Ok(())
    }
}

/// One optimizer step's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 0-based index.
    pub step: u64,
    /// Mean NLL of the step's scored predictions before the update.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate of the update.
    pub lr: f64,
    /// Input tokens of the step (padding included).
    pub tokens: usize,
    /// Wall time.
    pub seconds: f64,
}

/// A validation pass's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValLog {
    /// Optimizer steps done before it.
    pub after_step: u64,
    /// Mean NLL over the validation set's scored predictions.
    pub loss: f64,
    /// Wall time.
    pub seconds: f64,
}

/// Where a run stands: what a checkpoint holds besides the adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// What the run computes.
    pub settings: TuneSettings,
    /// Steps done.
    pub step: u64,
    /// AdamW's moments and step count.
    pub optimizer: AdamW,
    /// Every step so far.
    pub steps: Vec<StepLog>,
    /// Every validation pass so far.
    pub val: Vec<ValLog>,
}

/// What the loop reports as it goes.
pub trait Observer {
    /// When a run resumes from a checkpoint after `step` steps.
    fn resumed(&mut self, _step: u64) {}
    /// After each optimizer step.
    fn step(&mut self, _log: &StepLog, _state: &TrainState) {}
    /// After each validation pass.
    fn validated(&mut self, _log: &ValLog) {}
    /// When a checkpoint is due (after `state.step` steps); [`crate::job::Job`] writes it to disk
    /// before calling this.
    fn checkpoint(&mut self, _state: &TrainState, _adapter: &Adapter) -> Result<()> {
        Ok(())
    }
}

/// The data a run trains and validates on.
pub struct TuneData<'a> {
    /// Training sequences.
    pub train: &'a [Example],
    /// Validation sequences.
    pub val: &'a [Example],
    /// Token id used to pad shorter sequences of a batch.
    pub pad: u32,
}

/// Optimizer steps one epoch of `n_train` examples gives (the last partial batch dropped).
pub fn steps_per_epoch(n_train: usize, batch: usize) -> u64 {
    (n_train / batch.max(1)) as u64
}

/// The indices of the training examples of optimizer step `step` (0-based), in the order
/// they are consumed: epoch `step / steps_per_epoch` is a fresh seeded permutation.
pub fn step_examples(n_train: usize, step: u64, batch: usize, seed: u64) -> Vec<usize> {
    let per_epoch = steps_per_epoch(n_train, batch).max(1);
    let (epoch, pos) = (step / per_epoch, (step % per_epoch) as usize);
    epoch_order(n_train, epoch, seed)[pos * batch..(pos + 1) * batch].to_vec()
}

/// Validation every `val_every` steps (and after the last); checkpoints when the observer
/// asks. Starts from `state` (a resumed run) or from step 0.
pub struct Loop {
    /// Validate every this many steps (0: only at the start and the end).
    pub val_every: u64,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
}

type Ad<B> = Autodiff<B>;

impl Loop {
    /// Trains `adapter` on `model` (the base model, whose weights stay as they are) and returns
    /// the final state. The adapter is updated in place.
    pub fn run<B: Backend>(
        &self,
        model: &mut Llama<Ad<B>>,
        adapter: &mut Adapter,
        data: &TuneData<'_>,
        mut state: TrainState,
        obs: &mut dyn Observer,
    ) -> Result<TrainState> {
        let s = state.settings.clone();
        s.validate()?;
        let per_epoch = steps_per_epoch(data.train.len(), s.batch);
        ensure!(
            per_epoch >= 1,
            "{} training sequences are fewer than one batch of {} (lower --batch)",
            data.train.len(),
            s.batch
        );
        let device = model.device().clone();
        attach(model, adapter, &device);
        let accum = s.batch / s.micro_batch;
        let head = grad::head_weight(model);
        if state.step == 0 && state.val.is_empty() && !data.val.is_empty() {
            let v = validate(model, data, s.micro_batch, 0)?;
            obs.validated(&v);
            state.val.push(v);
        }
        while state.step < s.steps {
            let t0 = Instant::now();
            let step = state.step;
            let picked: Vec<&Example> =
                step_examples(data.train.len(), step, s.batch, s.seed).into_iter().map(|i| &data.train[i]).collect();
            let batches: Vec<_> = picked.chunks(s.micro_batch).map(|c| collate(c, data.pad)).collect();
            let denom: usize = batches.iter().map(|b| b.scored()).sum();
            ensure!(denom > 0, "step {step}: its batch scores no token (every label is masked)");
            let mut sums: Option<GradSums<B>> = None;
            let mut nll = 0.0;
            for (i, b) in batches.iter().enumerate() {
                let dropout = Dropout { p: s.lora.dropout, seed: s.seed, micro_batch: step * accum as u64 + i as u64 };
                nll += grad::accumulate(model, b, denom as f64, Some(dropout), Some(&head), &mut sums)?;
            }
            let loss = nll / denom as f64;
            if !loss.is_finite() {
                bail!(
                    "the training loss is {loss} at step {step}: stopping after {step} good steps (the last \
                     checkpoint, if any, is kept; try a lower --lr)"
                );
            }
            let mut grads = Vec::new();
            for layer in sums.context("no micro-batch ran")? {
                for g in layer {
                    grads.push(tensor_to_host::<B, 2>(g)?.data);
                }
            }
            let grad_norm = clip_grad_norm(&mut grads, s.max_grad_norm);
            if !grad_norm.is_finite() {
                bail!("the gradient norm is {grad_norm} at step {step}: stopping (try a lower --lr)");
            }
            let lr = linear_schedule(s.lr, step, s.warmup, s.steps);
            {
                let mut params: Vec<&mut [f32]> =
                    adapter.tensors_mut().into_iter().map(|t| t.data.as_mut_slice()).collect();
                state.optimizer.update(&mut params, &grads, lr);
            }
            attach(model, adapter, &device);
            state.step += 1;
            let tokens = batches.iter().map(|b| b.rows * b.len).sum();
            let log = StepLog { step, loss, grad_norm, lr, tokens, seconds: t0.elapsed().as_secs_f64() };
            state.steps.push(log.clone());
            obs.step(&log, &state);
            let last = state.step == s.steps;
            if !data.val.is_empty() && (last || (self.val_every > 0 && state.step.is_multiple_of(self.val_every))) {
                let v = validate(model, data, s.micro_batch, state.step)?;
                obs.validated(&v);
                state.val.push(v);
            }
            if last || (self.checkpoint_every > 0 && state.step.is_multiple_of(self.checkpoint_every)) {
                obs.checkpoint(&state, adapter)?;
            }
        }
        Ok(state)
    }
}

/// A fresh state for `settings` and an adapter of `n` tensors with these lengths.
pub fn fresh_state(settings: &TuneSettings, adapter: &Adapter) -> TrainState {
    let lens: Vec<usize> = adapter.tensors().iter().map(|(_, t)| t.data.len()).collect();
    TrainState {
        settings: settings.clone(),
        step: 0,
        optimizer: AdamW::new(settings.adamw, &lens),
        steps: vec![],
        val: vec![],
    }
}

/// Attaches `adapter` to every layer of `model`.
pub fn attach<B: Backend>(model: &mut Llama<Ad<B>>, adapter: &Adapter, device: &B::Device) {
    for l in 0..model.config().num_layers() {
        model.set_lora(l, Some(adapter.layer_on::<Ad<B>>(l, device)));
    }
}

/// Mean NLL over the validation set.
fn validate<B: Backend>(model: &Llama<Ad<B>>, data: &TuneData<'_>, micro: usize, after: u64) -> Result<ValLog> {
    let t0 = Instant::now();
    let (mut total, mut n) = (0.0, 0usize);
    let refs: Vec<&Example> = data.val.iter().collect();
    for c in refs.chunks(micro) {
        let (s, k) = grad::nll(model, &collate(c, data.pad))?;
        total += s;
        n += k;
    }
    ensure!(n > 0, "the validation set scores no token");
    Ok(ValLog { after_step: after, loss: total / n as f64, seconds: t0.elapsed().as_secs_f64() })
}
