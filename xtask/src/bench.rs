//! `cargo xtask bench forward|decode [--torch-venv DIR]`: dense prefill or KV-cache decode throughput of
//! `slimllm bench`, optionally next to PyTorch's (`tools/reference/bench_forward.py` run with the venv's python), and
//! their ratio; decode, and `cargo xtask bench prefill` (one prompt, the last position's logits), next to llama.cpp's
//! `llama-bench` when it is built. `cargo xtask bench pipeline`: the pipeline's wall time against one forward pass.
//!
//! Both programs are expected to print their result as a JSON line with a `tokens_per_s` number (the last such line
//! counts); as a fallback a line of the form `... <number> tokens/s` is accepted.

use std::{path::PathBuf, process::Command};

use anyhow::format_err;

use crate::bench_llamacpp::{LlamaBench, Work};
use crate::{pipeline::slimllm, util};

const MODEL: &str = "data/models/smollm2-135m";
const BATCH: &str = "8";
const SEQ_LEN: &str = "128";

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(clap::Subcommand)]
enum Bench {
    /// Forward-pass throughput of SmolLM2-135M, batch 8 × 128 tokens.
    Forward {
        /// A Python venv with torch and transformers (e.g. `.venv-ref`, made by tools/reference/setup.sh).
        #[arg(long)]
        torch_venv: Option<PathBuf>,
        /// Rounds: each runs slimllm, then PyTorch, one after the other; the medians over
        /// rounds are compared (this machine's throughput drifts by ±15 % between runs).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Decode throughput of SmolLM2-135M with the KV cache, batch 1: after a 128-token prompt,
    /// `--tokens` tokens one at a time (each step computes its logits), next to PyTorch's.
    Decode {
        /// A Python venv with torch and transformers (e.g. `.venv-ref`, made by tools/reference/setup.sh).
        #[arg(long)]
        torch_venv: Option<PathBuf>,
        /// Rounds: each runs slimllm, then PyTorch (3 timed repeats each); the medians over rounds are compared.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Tokens decoded per repeat.
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        /// Threads for both (RAYON_NUM_THREADS for slimllm, torch.set_num_threads for PyTorch).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// The dtype slimllm keeps the weights in (`slimllm bench --weights`); with llama.cpp built
        /// (`cargo xtask llamacpp build`), llama-bench runs a GGUF export of the same type beside it.
        #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
        weights: String,
    },
    /// Prompt throughput of SmolLM2-135M, batch 1: one prompt of `--len` tokens through the KV cache and the last
    /// position's logits (`slimllm bench --logits last`), beside llama.cpp's `llama-bench -p` on a GGUF export of
    /// the same weight type when llama.cpp is built (`cargo xtask llamacpp build`).
    Prefill {
        /// Rounds: each runs slimllm, then llama-bench (3 timed repeats each); the medians over rounds are compared.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 128)]
        len: usize,
        /// Threads for both (RAYON_NUM_THREADS for slimllm).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// The dtype slimllm keeps the weights in (`slimllm bench --weights`) and the GGUF export's type.
        #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
        weights: String,
    },
    /// Wall time of the 20 % SlimLLM pipeline on SmolLM2-135M (32 × 128 calibration tokens,
    /// sequential, empty cache, model loading excluded) next to one dense forward pass over
    /// the same 4,096 tokens, and their ratio.
    Pipeline {
        /// Fraction of parameters to remove.
        #[arg(long, default_value_t = 0.2)]
        target: f64,
    },
    /// LoRA training throughput on SmolLM2-135M against PyTorch + PEFT, same batches, same
    /// initial adapter, same threads (`tools/reference/compare_tune.py`, which also checks the
    /// per-step losses agree): training tokens/s of both and their ratio.
    Tune {
        /// A Python venv with torch, transformers and peft (tools/reference/setup.sh).
        #[arg(long)]
        torch_venv: PathBuf,
        /// Optimizer steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Sequences per optimizer step.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Sequences per forward/backward pass.
        #[arg(long, default_value_t = 4)]
        micro_batch: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        /// Threads for both.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

/// Runs `cargo xtask bench`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let root = util::repo_root();
    match &args.bench {
        Bench::Forward { torch_venv, rounds } => {
            let ours = ["bench", "--model", MODEL, "--batch", BATCH, "--seq-len", SEQ_LEN, "--no-decode"];
            let torch = ["--model", MODEL, "--batch", BATCH, "--seq-len", SEQ_LEN];
            compare_rounds(&root, torch_venv.as_deref(), *rounds, &ours, &torch, &[], None)
        }
        Bench::Decode { torch_venv, rounds, tokens, threads, weights } => {
            let work = Work::Decode { tokens: *tokens, depth: SEQ_LEN.into() };
            let llama = LlamaBench::prepare(&root, MODEL, weights, work, *threads)?;
            let (tokens, threads) = (tokens.to_string(), threads.to_string());
            // One prefill of a single token runs first (slimllm bench has no decode-only mode); its
            // JSON line comes before the decode one, and the last line counts.
            let ours =
                [&one_sequence(weights)[..], &["--seq-len", "1", "--decode", &tokens, "--decode-prompt", SEQ_LEN]]
                    .concat();
            let torch =
                ["--model", MODEL, "--seq-len", SEQ_LEN, "--repeats", "3", "--decode", &tokens, "--threads", &threads];
            let env = [("RAYON_NUM_THREADS", threads.as_str())];
            compare_rounds(&root, torch_venv.as_deref(), *rounds, &ours, &torch, &env, llama.as_ref())
        }
        Bench::Prefill { rounds, len, threads, weights } => {
            let llama = LlamaBench::prepare(&root, MODEL, weights, Work::Prompt { len: *len }, *threads)?;
            let (len, threads) = (len.to_string(), threads.to_string());
            let ours = [&one_sequence(weights)[..], &["--seq-len", &len, "--logits", "last", "--no-decode"]].concat();
            let env = [("RAYON_NUM_THREADS", threads.as_str())];
            compare_rounds(&root, None, *rounds, &ours, &[], &env, llama.as_ref())
        }
        Bench::Pipeline { target } => bench_pipeline(&root, *target),
        Bench::Tune { torch_venv, steps, batch, micro_batch, seq_len, threads } => {
            let venv = if torch_venv.is_absolute() { torch_venv.clone() } else { root.join(torch_venv) };
            let mut build = Command::new(util::cargo());
            build.args(["build", "--release", "-p", "slim-cli", "--bin", "slimllm"]);
            util::run_capture(&mut build, &root)?;
            let mut py = Command::new(venv.join("bin/python"));
            py.arg("tools/reference/compare_tune.py").args(["--slimllm", "target/release/slimllm", "--model", MODEL]);
            py.args(["--work", "data/bench/tune", "--steps", &steps.to_string(), "--batch", &batch.to_string()]);
            py.args(["--micro-batch", &micro_batch.to_string(), "--seq-len", &seq_len.to_string()]);
            py.args(["--threads", &threads.to_string()]).env("RAYON_NUM_THREADS", threads.to_string());
            let out = util::run_capture(&mut py, &root)?;
            let last = out.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| format_err!("no JSON result"))?;
            let v: serde_json::Value = serde_json::from_str(last)?;
            let (o, t) = (v["tokens_per_second"]["slimllm"].as_f64(), v["tokens_per_second"]["torch"].as_f64());
            if let (Some(o), Some(t)) = (o, t) {
                println!(
                    "training: slimllm {o:.1} tokens/s, torch + peft {t:.1} tokens/s, ratio slimllm/torch {:.3}",
                    o / t
                );
            }
            Ok(())
        }
    }
}

/// The `slimllm bench` arguments the batch-1 comparisons share: SmolLM2, one sequence, 3 repeats, the weights' dtype.
fn one_sequence(weights: &str) -> [&str; 9] {
    ["bench", "--model", MODEL, "--batch", "1", "--repeats", "3", "--weights", weights]
}

/// `rounds` rounds of `slimllm <ours>` then `<venv>/bin/python tools/reference/bench_forward.py <torch>`, each printing
/// its tokens/s, with `env` set for slimllm; prints the medians over the rounds and their ratio.
fn compare_rounds(
    root: &std::path::Path,
    venv: Option<&std::path::Path>,
    rounds: usize,
    ours_args: &[&str],
    torch_args: &[&str],
    env: &[(&str, &str)],
    llama: Option<&crate::bench_llamacpp::LlamaBench>,
) -> anyhow::Result<()> {
    let venv = venv.map(|v| if v.is_absolute() { v.to_path_buf() } else { root.join(v) });
    let (mut ours, mut torch, mut lcpp) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        let mut cmd = slimllm();
        cmd.args(ours_args).envs(env.iter().copied());
        ours.push(
            tokens_per_s(&util::run_capture(&mut cmd, root)?)
                .ok_or_else(|| format_err!("slimllm bench printed no tokens_per_s"))?,
        );
        if let Some(venv) = &venv {
            let mut py = Command::new(venv.join("bin/python"));
            py.arg("tools/reference/bench_forward.py").args(torch_args);
            torch.push(
                tokens_per_s(&util::run_capture(&mut py, root)?)
                    .ok_or_else(|| format_err!("bench_forward.py printed no tokens_per_s"))?,
            );
        }
        if let Some(l) = llama {
            lcpp.push(l.run(root)?);
        }
        let last = |v: &[f64]| v.last().map_or("-".into(), |x| format!("{x:.1}"));
        println!(
            "round {round}: slimllm {} tokens/s, torch {} tokens/s, llama.cpp {} tokens/s",
            last(&ours),
            last(&torch),
            last(&lcpp)
        );
    }
    let o = median(&ours).unwrap_or(f64::NAN);
    if let (Some(l), Some(b)) = (median(&lcpp), llama) {
        println!(
            "median over {} rounds: slimllm {o:.1} tokens/s, llama.cpp ({}) {l:.1} tokens/s, \
             ratio llama.cpp/slimllm: {:.3}",
            lcpp.len(),
            b.describe(),
            l / o
        );
    }
    match median(&torch) {
        Some(t) => println!(
            "median over {} rounds: slimllm {o:.1} tokens/s, torch {t:.1} tokens/s, ratio slimllm/torch: {:.3}",
            ours.len(),
            o / t
        ),
        // Printed with llama.cpp's line already.
        None if llama.is_some() => {}
        None => println!("median over {} rounds: slimllm {o:.1} tokens/s", ours.len()),
    }
    Ok(())
}

/// Runs the pipeline on a scratch cache, then `slimllm bench` at batch 32 × 128 (the
/// calibration batch), and prints both and the ratio.
fn bench_pipeline(root: &std::path::Path, target: f64) -> anyhow::Result<()> {
    let cache = util::scratch_dir(&root.join("data"), "bench-cache")?;
    let run = "bench-pipeline";
    let mut cmd = slimllm();
    cmd.args([
        "--quiet",
        "pipeline",
        "run",
        "--model",
        MODEL,
        "--target",
        &target.to_string(),
        "--no-eval",
        "--run",
        run,
    ]);
    cmd.arg("--cache").arg(&cache);
    let result = util::run(&mut cmd, root);
    let _ = std::fs::remove_dir_all(&cache);
    result?;
    let path = root.join("data/runs").join(run).join("summary.json");
    let summary = crate::summary::RunSummary::read(&path)?;
    let total = summary.pruning_seconds;
    let load = summary.stage("load").0;
    let mut cmd = slimllm();
    cmd.args(["bench", "--model", MODEL, "--batch", "32", "--seq-len", "128", "--repeats", "3", "--no-decode"]);
    let out = util::run_capture(&mut cmd, root)?;
    let fwd: f64 = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["median_s"].as_f64()))
        .ok_or_else(|| format_err!("slimllm bench printed no median_s"))?;
    for s in &summary.stages {
        println!("  {:<10} {:>8.2} s  ran {:>3}  reused {:>3}", s.name, s.seconds, s.ran, s.reused);
    }
    println!(
        "pipeline {:.0} % (model load excluded): {:.1} s; load {:.1} s; dense forward over 32 x 128 tokens: {:.2} s; \
        ratio {:.2} (goal: at most 5)",
        target * 100.0,
        total - load,
        load,
        fwd,
        (total - load) / fwd
    );
    Ok(())
}

/// The median of `v` (mean of the middle two for an even count); `None` when empty.
fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// The throughput a benchmark printed: `tokens_per_s` of the last JSON line that has it, else the number before the
/// last `tokens/s`.
fn tokens_per_s(stdout: &str) -> Option<f64> {
    let json = stdout.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        v.get("tokens_per_s")?.as_f64()
    });
    json.or_else(|| {
        stdout.lines().rev().find_map(|line| {
            let before = &line[..line.find("tokens/s")?];
            before.split_whitespace().last()?.trim_end_matches(':').parse().ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::{median, tokens_per_s};

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn parses_throughput() {
        assert_eq!(tokens_per_s("x\n{\"tokens_per_s\": 12.5, \"a\": 1}\n"), Some(12.5));
        assert_eq!(tokens_per_s("forward: 3000.25 tokens/s (median)\n"), Some(3000.25));
        assert_eq!(tokens_per_s("nothing\n"), None);
    }
}
