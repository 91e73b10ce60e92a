//! Recovery fine-tuning (the paper's "w/ tune" rows): LoRA adapters on the seven projections
//! of every decoder layer, trained on burn-autodiff with activations recomputed layer by layer
//! ([`grad`]), AdamW with a linear warm-up and decay ([`optim`]), seeded batches
//! ([`data`]), validation and resumable checkpoints ([`train`], [`checkpoint`]); the result
//! merged into the model's weights or saved in PEFT's format ([`adapter`]).
//!
//! Like every stage crate, this one depends on no other stage.

pub mod adapter;
pub mod checkpoint;
pub mod data;
pub mod grad;
pub mod job;
pub mod optim;
pub mod train;

pub use adapter::{Adapter, LoraSpec};
pub use job::{write_tuned, Job, Trained};
pub use train::{Loop, Observer, StepLog, TrainState, TuneData, TuneSettings, ValLog};

#[cfg(test)]
mod tests;
