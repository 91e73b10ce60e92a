//! `slimllm synth-model`: a model directory of a real model's shape with seeded random weights
//! (`slim_checkpoint::synthetic`), for benchmarks and backend checks on machines without a model.

use anyhow::{format_err, Result};
use slim_artifact::Kind;
use slim_checkpoint::synthetic::{
    write_synthetic_model, ModelShape, SynthOptions, TokenizerSource, WeightDtype, SHARD_BYTES,
};
use slim_fs::Existing;
use std::path::PathBuf;

use crate::kind;

/// Arguments of `slimllm synth-model`.
#[derive(clap::Args)]
pub struct SynthModelArgs {
    /// The published model whose config.json values (widths, heads, vocabulary, RoPE base, norm
    /// epsilon, tying) the model gets.
    #[arg(long, value_parser = kind::<ModelShape>())]
    shape: ModelShape,
    /// Output directory. It is built in a temporary folder beside it and renamed into place when
    /// complete; a non-empty one is refused without --force.
    #[arg(long)]
    out: PathBuf,
    /// Decoder layers (default: the shape's). The first N layers are those of the full model of
    /// the same seed.
    #[arg(long, value_parser = crate::preflight::at_least_1, allow_negative_numbers = true)]
    layers: Option<usize>,
    /// Seed of every weight.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Element type of the weights.
    #[arg(long, value_parser = kind::<WeightDtype>(), default_value = "f32")]
    dtype: WeightDtype,
    /// Copy tokenizer.json and tokenizer_config.json from this model directory (its ids must fit
    /// the shape's vocabulary). Default: a byte-level BPE of 259 ids, written from scratch.
    #[arg(long)]
    tokenizer_from: Option<PathBuf>,
    /// Replace a non-empty --out (only once the new model is complete).
    #[arg(long)]
    force: bool,
}

pub fn run(a: SynthModelArgs) -> Result<()> {
    let t = std::time::Instant::now();
    let mut spec = a.shape.spec();
    if let Some(n) = a.layers {
        spec.num_layers = n;
    }
    let tokenizer = match &a.tokenizer_from {
        None => TokenizerSource::ByteLevel,
        Some(dir) => {
            slim_checkpoint::synthetic::check_tokenizer_source(dir, spec.vocab_size)
                .map_err(|e| e.context(format!("--tokenizer-from {} for --shape {}", dir.display(), a.shape.name())))?;
            TokenizerSource::CopyFrom(dir.clone())
        }
    };
    let opts = SynthOptions {
        seed: a.seed,
        dtype: a.dtype,
        tokenizer,
        existing: if a.force { Existing::Replace } else { Existing::Refuse },
        shard_bytes: SHARD_BYTES,
        label: a.shape.name().to_owned(),
    };
    let s = write_synthetic_model(&spec, &a.out, &opts).map_err(|e| match e.downcast_ref::<slim_fs::Error>() {
        Some(slim_fs::Error::Occupied { what, .. }) => {
            format_err!("--out {} {what}: pass --force to replace it", a.out.display())
        }
        _ => e.context(format!("--out {}", a.out.display())),
    })?;
    tracing::info!(
        "wrote {} ({} layers, {} parameters, {} of {} weights in {}) to {} in {:.1}s",
        a.shape.name(),
        spec.num_layers,
        s.params,
        crate::preflight::human(s.weight_bytes),
        a.dtype.name(),
        s.files.join(", "),
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
