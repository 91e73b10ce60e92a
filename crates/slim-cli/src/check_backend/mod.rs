//! `slimllm check-backend`: runs seeded synthetic models on the chosen backend (`--backend`) and on
//! the CPU, and compares what they give: logits, greedy tokens through the KV cache, zero-shot
//! log-likelihoods, the LoRA tuning stage's loss and gradients, and a whole pruning pipeline's
//! decisions. Needs no file: the models are generated on the spot, so the binary alone verifies a
//! GPU machine. Exits with an error when a value is off.

mod probe;

use crate::GlobalArgs;
use anyhow::{bail, Context, Result};
use probe::{fixtures, Observed, Probe};
use serde::Serialize;
use slim_model::{dispatch, BackendKind};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `slimllm check-backend`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Largest accepted difference of logits, relative to the largest CPU logit (max |a − b| /
    /// max |b|); also of each log-likelihood, relative to max(1, |b|).
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// Largest accepted relative difference of the pruned models' logits after the pipeline check
    /// (the refit solves a least-squares problem on activations the backend computed).
    #[arg(long, default_value_t = 1e-3)]
    pipeline_tolerance: f64,
    /// Skip the pipeline check (the slowest part on a software Vulkan).
    #[arg(long)]
    no_pipeline: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One compared value.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Line {
    /// Fixture (or `pipeline`).
    pub model: String,
    /// What was compared.
    pub check: &'static str,
    /// The measured difference (relative, or a count of mismatches).
    pub value: f64,
    /// The largest accepted value.
    pub tolerance: f64,
    /// `value <= tolerance`.
    pub pass: bool,
    /// What the numbers were, in words.
    pub detail: String,
}

impl Line {
    fn new(model: &str, check: &'static str, value: f64, tolerance: f64, detail: String) -> Line {
        Line { model: model.to_string(), check, value, tolerance, pass: value <= tolerance, detail }
    }
}

/// max |a − b| / max |b| (infinite on a length mismatch or a non-finite value).
pub fn rel_max_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let scale = b.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    let diff = a.iter().zip(b).fold(0f64, |m, (&x, &y)| {
        let d = (x as f64 - y as f64).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d)
        }
    });
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// Compares what `target` gave with what the CPU (`reference`) gave.
pub fn compare(target: &Observed, reference: &Observed, tol: f64, pipeline_tol: f64) -> Vec<Line> {
    let mut lines = Vec::new();
    for (t, r) in target.models.iter().zip(&reference.models) {
        let n = &r.name;
        let d = rel_max_diff(&t.logits, &r.logits);
        lines.push(Line::new(n, "logits", d, tol, format!("{} values", r.logits.len())));
        let same = t.greedy == r.greedy;
        let detail =
            if same { format!("{} tokens", r.greedy.len()) } else { format!("{:?} vs {:?}", t.greedy, r.greedy) };
        lines.push(Line::new(n, "greedy tokens", if same { 0.0 } else { 1.0 }, 0.0, detail));
        let worst = t.loglik.iter().zip(&r.loglik).map(|(a, b)| (a.ll - b.ll).abs() / b.ll.abs().max(1.0)).fold(
            if t.loglik.len() == r.loglik.len() { 0f64 } else { f64::INFINITY },
            |m, x| {
                if x.is_nan() {
                    f64::INFINITY
                } else {
                    m.max(x)
                }
            },
        );
        lines.push(Line::new(n, "zero-shot log-likelihood", worst, tol, format!("{} requests", r.loglik.len())));
        let flips = t.loglik.iter().zip(&r.loglik).filter(|(a, b)| a.greedy != b.greedy).count();
        lines.push(Line::new(n, "zero-shot is-greedy", flips as f64, 0.0, format!("{flips} flags differ")));
        let d = (t.lora_nll - r.lora_nll).abs() / r.lora_nll.abs().max(1.0);
        let d = if d.is_nan() { f64::INFINITY } else { d };
        lines.push(Line::new(n, "LoRA loss", d, tol, format!("{:.6} vs {:.6} nats", t.lora_nll, r.lora_nll)));
        let d = rel_max_diff(&t.lora_grads, &r.lora_grads);
        lines.push(Line::new(n, "LoRA gradients", d, tol, format!("{} values", r.lora_grads.len())));
    }
    if let (Some(t), Some(r)) = (&target.pipeline, &reference.pipeline) {
        let mismatched: Vec<usize> = t
            .layers
            .iter()
            .zip(&r.layers)
            .filter(|(a, b)| {
                (a.heads, a.kv_heads, a.channels, &a.kept_heads, &a.kept_kv_heads)
                    != (b.heads, b.kv_heads, b.channels, &b.kept_heads, &b.kept_kv_heads)
            })
            .map(|(a, _)| a.layer)
            .collect();
        let count = mismatched.len() + t.layers.len().abs_diff(r.layers.len());
        let detail = if count == 0 {
            format!("{} layers, {} parameters after", r.layers.len(), r.params_after)
        } else {
            format!("layers {mismatched:?} differ")
        };
        lines.push(Line::new("pipeline", "kept heads and channels", count as f64, 0.0, detail));
        let pd = (t.params_after as f64 - r.params_after as f64).abs();
        lines.push(Line::new(
            "pipeline",
            "parameters after",
            pd,
            0.0,
            format!("{} vs {}", t.params_after, r.params_after),
        ));
        let d = rel_max_diff(&t.logits, &r.logits);
        lines.push(Line::new(
            "pipeline",
            "pruned model's logits",
            d,
            pipeline_tol,
            format!("{} values", r.logits.len()),
        ));
    }
    lines
}

/// The JSON report.
#[derive(Serialize)]
struct Report<'a> {
    backend: &'a str,
    passed: bool,
    tolerance: f64,
    lines: &'a [Line],
    seconds: Seconds,
    target: &'a Observed,
    reference: &'a Observed,
}

#[derive(Serialize)]
struct Seconds {
    target: f64,
    reference: f64,
}

/// Runs `slimllm check-backend`.
pub fn run(a: CheckArgs, g: &GlobalArgs) -> Result<()> {
    if g.backend == BackendKind::Cpu {
        tracing::warn!("--backend cpu: comparing the CPU backend with itself (a rehearsal; pass --backend wgpu|cuda)");
    }
    let work = tempfile::tempdir().context("creating a scratch folder for the pipeline check")?;
    let (ref_dir, target_dir) = (work.path().join("cpu"), work.path().join(g.backend.name()));
    let pipeline = |d: &'_ PathBuf| if a.no_pipeline { None } else { Some(d.clone()) };
    let (rd, td) = (pipeline(&ref_dir), pipeline(&target_dir));
    for d in [&rd, &td].into_iter().flatten() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for f in fixtures() {
        tracing::info!("fixture {}: {}", f.name, f.about);
    }
    let t = Instant::now();
    let target = dispatch(g.backend, Probe { pipeline_dir: td.as_deref() })
        .with_context(|| format!("running the checks on {}", g.backend.name()))?;
    let target_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let reference = dispatch(BackendKind::Cpu, Probe { pipeline_dir: rd.as_deref() })?;
    let reference_s = t.elapsed().as_secs_f64();
    let lines = compare(&target, &reference, a.tolerance, a.pipeline_tolerance);
    print_table(&lines, g.backend.name());
    println!("{}: {target_s:.1} s, cpu: {reference_s:.1} s", g.backend.name());
    let passed = lines.iter().all(|l| l.pass);
    if let Some(path) = &a.json {
        let report = Report {
            backend: g.backend.name(),
            passed,
            tolerance: a.tolerance,
            lines: &lines,
            seconds: Seconds { target: target_s, reference: reference_s },
            target: &target,
            reference: &reference,
        };
        slim_fs::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("--json {}", path.display()))?;
    }
    let failed: Vec<String> =
        lines.iter().filter(|l| !l.pass).map(|l| format!("{} {}: {}", l.model, l.check, l.detail)).collect();
    if !failed.is_empty() {
        bail!("backend {} differs from the CPU in {} checks: {}", g.backend.name(), failed.len(), failed.join("; "));
    }
    Ok(())
}

fn print_table(lines: &[Line], backend: &str) {
    println!("| model | check | {backend} vs cpu | tolerance | |");
    println!("|---|---|---|---|---|");
    for l in lines {
        let ok = if l.pass { "ok" } else { "FAIL" };
        println!("| {} | {} | {:.3e} ({}) | {:.0e} | {ok} |", l.model, l.check, l.value, l.detail, l.tolerance);
    }
}

#[cfg(test)]
mod tests;
