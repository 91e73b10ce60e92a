//! `slimllm bench`: throughput of one or more model directories, side by side: prefill
//! tokens/s over a grid of batch × length, and decode tokens/s with the KV cache. One
//! warm-up run is excluded; the median and the spread of the repeats are reported. Timing
//! lives here, never in tests.

use crate::preflight::{self, Footprint};
use crate::GlobalArgs;
use anyhow::{ensure, Result};
use burn_tensor::backend::Backend;
use serde_json::{json, Value};
use slim_model::{burn_tensor, dispatch, BackendRun};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `slimllm bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model directory (repeat the flag to compare models).
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    /// Sequences per prefill pass (comma-separated for a grid).
    #[arg(long, value_delimiter = ',', default_value = "8", value_parser = preflight::at_least_1)]
    #[arg(allow_negative_numbers = true)]
    batch: Vec<usize>,
    /// Tokens per sequence in prefill (comma-separated for a grid).
    #[arg(long, value_delimiter = ',', default_value = "128", value_parser = preflight::at_least_1)]
    #[arg(allow_negative_numbers = true)]
    seq_len: Vec<usize>,
    /// Timed repeats after one warm-up run.
    #[arg(long, default_value_t = 5, value_parser = preflight::at_least_1, allow_negative_numbers = true)]
    repeats: usize,
    /// Tokens generated one at a time with the KV cache in the decode measurement (batch 1; 0 skips it).
    #[arg(long, default_value_t = 64, value_parser = preflight::whole, allow_negative_numbers = true)]
    decode: usize,
    /// Prompt length before the decode measurement (prefilled through the cache, not timed).
    #[arg(long, default_value_t = 128, value_parser = preflight::at_least_1, allow_negative_numbers = true)]
    decode_prompt: usize,
    /// Skip the decode measurement.
    #[arg(long)]
    no_decode: bool,
    /// The positions prefill computes logits for: `all` (every position, as a perplexity pass or a PyTorch forward
    /// does) or `last` (the last position of each sequence, after the prompt went through the KV cache, the last
    /// layer's attention and MLP running for that position alone: what `slimllm generate` does with a prompt and
    /// llama.cpp's `llama-bench -p` measures).
    #[arg(long, value_enum, default_value = "all")]
    logits: Logits,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The dtype the projections' weights are kept in while measuring: f32 (default), f16 or bf16 (widened inside
    /// each product; the CPU backend's kernels read them as they are), or `stored`, as the model's files hold them.
    #[arg(long, value_enum, default_value = "f32")]
    weights: crate::weights_arg::WeightsArg,
}

pub fn run(a: BenchArgs, g: &GlobalArgs) -> Result<()> {
    ensure!(a.repeats > 0, "--repeats must be at least 1");
    ensure!(a.batch.iter().chain(&a.seq_len).all(|&x| x > 0), "--batch and --seq-len must be positive");
    // Every model's sizes are checked before the first one loads.
    for model in &a.model {
        preflight_model(&a, model, g.backend)?;
    }
    crate::check_out(a.out.as_deref())?;
    let mut results = Vec::new();
    for model in &a.model {
        for row in dispatch(g.backend, Job { a: &a, model })? {
            println!("{row}");
            results.push(row);
        }
    }
    eprint!("{}", table(&results));
    if let Some(out) = &a.out {
        slim_artifact::write_json_atomic(out, &json!({"backend": g.backend.name(), "results": results}))?;
    }
    Ok(())
}

/// Which positions' logits a prefill computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Logits {
    /// Every position's.
    All,
    /// The last position's of each sequence, the prompt going through the KV cache and the last layer's
    /// attention and MLP running for that position alone.
    Last,
}

/// Fails when a prefill of the grid or the decode measurement cannot fit in memory with `model`, naming the sizes;
/// warns when a length passes the model's context.
fn preflight_model(a: &BenchArgs, model: &std::path::Path, backend: slim_model::BackendKind) -> Result<()> {
    let cfg = slim_checkpoint::ModelConfig::load(model)?;
    let fp = Footprint::new(&cfg, backend);
    let dtype = a.weights.resolve(model)?;
    let on = |what: String| format!("{what} with {}", model.display());
    for &len in &a.seq_len {
        preflight::check_positions(&cfg, len, &format!("--seq-len {len}"))?;
        for &batch in &a.batch {
            preflight::check_fits(
                &on(format!("--batch {batch} × --seq-len {len}")),
                fp.peak_in(dtype, fp.forward(batch, len)),
            )?;
        }
    }
    if !a.no_decode && a.decode > 0 {
        let (p, n) = (a.decode_prompt, a.decode);
        let what = format!("--decode-prompt {p} + --decode {n}");
        preflight::check_positions(&cfg, p.saturating_add(n), &what)?;
        let prompt = fp.cached_pass(1, 0, p, p);
        let last = fp.cached_pass(1, p.saturating_add(n), 1, 1);
        preflight::check_fits(&on(what), fp.peak_in(dtype, prompt.max(last)))?;
    }
    Ok(())
}

/// One result line: the repeats' times, their median and spread, tokens/s at the median.
fn row(
    model: &std::path::Path,
    kind: &str,
    batch: usize,
    seq_len: usize,
    tokens: usize,
    mut times: Vec<f64>,
    weights: slim_checkpoint::WeightDtype,
) -> Value {
    let raw = times.clone();
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
    json!({
        "model": model.display().to_string(), "kind": kind, "batch": batch, "seq_len": seq_len,
        "repeats": n, "seconds": raw, "median_s": median, "min_s": times[0], "max_s": times[n - 1],
        "tokens_per_s": tokens as f64 / median, "threads": rayon::current_num_threads(),
        "weights": slim_artifact::Kind::name(weights),
    })
}

/// The results as a Markdown table, models side by side per measurement.
fn table(rows: &[Value]) -> String {
    let mut s = String::from(
        "| model | weights | measurement | batch × length | tokens/s (median) | spread (min–max s) |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} × {} | {:.1} | {:.3}–{:.3} |\n",
            r["model"].as_str().unwrap_or("?"),
            r["weights"].as_str().unwrap_or("f32"),
            r["kind"].as_str().unwrap_or("?"),
            r["batch"],
            r["seq_len"],
            r["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
            r["min_s"].as_f64().unwrap_or(f64::NAN),
            r["max_s"].as_f64().unwrap_or(f64::NAN)
        );
    }
    s
}

struct Job<'a> {
    a: &'a BenchArgs,
    model: &'a std::path::Path,
}

impl BackendRun for Job<'_> {
    type Output = Vec<Value>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Vec<Value>> {
        let a = self.a;
        let (model, dtype) = a.weights.load::<B>(self.model, &device)?;
        let v = model.config().vocab_size as u32;
        // Fixed pseudo-random tokens: throughput does not depend on their values.
        let ids = |n: usize| -> Vec<u32> { (0..n).map(|i| (i as u32).wrapping_mul(2_654_435_761) % v).collect() };
        let mut out = Vec::new();
        for &batch in &a.batch {
            for &len in &a.seq_len {
                let x = ids(batch * len);
                let mut times = Vec::with_capacity(a.repeats);
                for i in 0..=a.repeats {
                    let t = Instant::now();
                    let ids = model.ids_tensor(&x, batch, len)?;
                    let logits = match a.logits {
                        Logits::All => model.forward(ids),
                        Logits::Last => model.logits(model.last_hidden_cached(ids, &mut model.new_cache(batch))?),
                    };
                    // Reading a value back forces asynchronous backends to finish.
                    let _ = logits.slice([0..1, 0..1, 0..1]).into_scalar();
                    if i > 0 {
                        times.push(t.elapsed().as_secs_f64());
                    }
                }
                let kind = match a.logits {
                    Logits::All => "prefill",
                    Logits::Last => "prefill, last logits",
                };
                out.push(row(self.model, kind, batch, len, batch * len, times, dtype));
            }
        }
        if !a.no_decode && a.decode > 0 {
            let prompt = ids(a.decode_prompt.max(1));
            let next = ids(a.decode_prompt + a.decode + 1);
            let mut times = Vec::with_capacity(a.repeats);
            for i in 0..=a.repeats {
                let mut cache = model.new_cache(1);
                let _ = model
                    .forward_cached(model.ids_tensor(&prompt, 1, prompt.len())?, &mut cache)?
                    .slice([0..1, 0..1, 0..1])
                    .into_scalar();
                let t = Instant::now();
                for s in 0..a.decode {
                    let tok = next[prompt.len() + s];
                    let logits = model.forward_cached(model.ids_tensor(&[tok], 1, 1)?, &mut cache)?;
                    let _ = logits.slice([0..1, 0..1, 0..1]).into_scalar();
                }
                if i > 0 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            out.push(row(self.model, "decode", 1, a.decode_prompt, a.decode, times, dtype));
        }
        Ok(out)
    }
}
