//! `--weights`: the dtype a command keeps the projections' weights in while it runs.

use anyhow::Result;
use slim_checkpoint::{WeightDtype, WeightSource};
use slim_model::{burn_tensor::backend::Backend, Llama};
use std::path::Path;

/// The dtype of the projections' and the lm_head's weights in memory (activations are f32 either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WeightsArg {
    /// Widened to f32 on load.
    F32,
    /// IEEE half precision, widened inside each product.
    F16,
    /// bfloat16, widened inside each product.
    Bf16,
    /// As the model's files store them (f32, f16 or bf16).
    Stored,
}

impl WeightsArg {
    /// The dtype for the model in `dir`.
    pub(crate) fn resolve(self, dir: &Path) -> Result<WeightDtype> {
        Ok(match self {
            WeightsArg::F32 => WeightDtype::F32,
            WeightsArg::F16 => WeightDtype::F16,
            WeightsArg::Bf16 => WeightDtype::Bf16,
            WeightsArg::Stored => WeightSource::open(dir)?.model_dtype(),
        })
    }

    /// Loads the model in `dir` with its weights in this dtype.
    pub(crate) fn load<B: Backend>(self, dir: &Path, device: &B::Device) -> Result<(Llama<B>, WeightDtype)> {
        let dtype = self.resolve(dir)?;
        Ok((Llama::<B>::load_in(dir, device, dtype)?, dtype))
    }
}
