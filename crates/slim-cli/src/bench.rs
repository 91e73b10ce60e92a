//! `slimllm bench`: dense prefill throughput of a model directory (warm-up excluded,
//! median and spread of repeats). Timing lives here, never in tests.

use crate::GlobalArgs;
use anyhow::Result;
use burn_tensor::backend::Backend;
use serde_json::json;
use slim_model::{burn_tensor, dispatch, BackendRun, Llama};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `slimllm bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Timed repeats after one warm-up pass.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

pub fn run(a: BenchArgs, g: &GlobalArgs) -> Result<()> {
    let times = dispatch(g.backend.kind(), Prefill { a: &a })?;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let tokens = (a.batch * a.seq_len) as f64;
    let v = json!({
        "model": a.model.display().to_string(), "backend": g.backend.kind().name(), "batch": a.batch, "seq_len": a.seq_len,
        "repeats": a.repeats, "seconds": times, "median_s": median, "min_s": sorted[0], "max_s": sorted[sorted.len() - 1],
        "tokens_per_s": tokens / median, "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    println!("{v}");
    Ok(())
}

struct Prefill<'a> {
    a: &'a BenchArgs,
}

impl BackendRun for Prefill<'_> {
    type Output = Vec<f64>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Vec<f64>> {
        let a = self.a;
        let model = Llama::<B>::load(&a.model, &device)?;
        let v = model.config().vocab_size as u32;
        // Fixed pseudo-random tokens: throughput does not depend on their values.
        let ids: Vec<u32> = (0..a.batch * a.seq_len).map(|i| (i as u32).wrapping_mul(2_654_435_761) % v).collect();
        let mut times = Vec::with_capacity(a.repeats);
        for i in 0..=a.repeats {
            let t = Instant::now();
            let logits = model.forward(model.ids_tensor(&ids, a.batch, a.seq_len)?);
            // Reading a value back forces asynchronous backends to finish.
            let _ = logits.slice([0..1, 0..1, 0..1]).into_scalar();
            if i > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        Ok(times)
    }
}
