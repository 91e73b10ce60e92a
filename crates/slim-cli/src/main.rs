//! `slimllm`: structured pruning of LLaMA-family models with SlimLLM, and its evaluation.
//!
//! Parsing lives here; each command's work lives in its own module.

mod bench;
mod cache;
mod check_backend;
mod eval;
mod export;
mod generate;
mod import;
mod pipeline;
mod preflight;
mod report;
mod synth_model;
mod tokenize;
mod tune;
mod weights_arg;
mod zeroshot;
mod zeroshot_log;

use anyhow::Result;
use clap::{Parser, Subcommand};
use slim_artifact::Kind;
use slim_model::BackendKind;
use std::path::PathBuf;

/// mimalloc, counted: the pipeline reports each stage's and each layer's peak heap (`slim_mem`).
#[global_allocator]
static ALLOC: slim_mem::Counting<mimalloc::MiMalloc> = slim_mem::Counting(mimalloc::MiMalloc);

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (include/mimalloc.h); the
/// crate exports no constant for it. A test checks the index by its documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory committed for 10 s instead of mimalloc's 1 s: a forward pass frees
/// and reallocates hundreds of megabytes of activations and logits, and with the default
/// every pass faulted them back in, zeroing pages (14 % of a prefill profile; prefill of
/// SmolLM2 at 8 × 128 went from ~470 to ~650 tokens/s). An explicit
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide integer option; mimalloc reads it on its next purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    }
}

/// Structured pruning of LLaMA-family language models (SlimLLM), measured.
#[derive(Parser)]
#[command(name = "slimllm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Options every command understands.
#[derive(clap::Args, Clone)]
struct GlobalArgs {
    /// Folder holding the fetched data sets (`datasets/ptb`, `datasets/brown`).
    #[arg(long, global = true, env = "SLIMLLM_DATA", default_value = "data")]
    data_root: PathBuf,
    /// Backend that runs the model: `cpu` is always built; `wgpu` and `cuda` need the
    /// cargo features of the same name.
    #[arg(long, global = true, value_parser = kind::<BackendKind>(), default_value = BackendKind::Cpu.name())]
    backend: BackendKind,
    /// Hide progress bars (they are drawn on stderr only when it is a terminal anyway).
    #[arg(long, global = true)]
    quiet: bool,
}

/// A clap value parser for a setting of the library ([`Kind`]): its names, as serde writes
/// them into keys and summaries, are the possible values, with their help.
fn kind<K: Kind + Clone>() -> impl clap::builder::TypedValueParser<Value = K> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(K::ALL.iter().map(|k| PossibleValue::new(k.name()).help(k.help())))
        .map(|s| K::parse(&s).expect("clap accepts only the possible values"))
}

#[derive(Subcommand)]
enum Command {
    /// Import a GGUF file into an HF-layout directory (config.json, tokenizer.json,
    /// model.safetensors in f32).
    Import(import::ImportArgs),
    /// Export a model directory (dense or pruned) as a GGUF file that stock llama.cpp runs.
    Export(export::ExportArgs),
    /// Evaluate a model directory.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Greedy decoding from a prompt.
    Generate(generate::GenerateArgs),
    /// Token ids of a text file, as JSON.
    Tokenize(tokenize::TokenizeArgs),
    /// Dense prefill throughput (tokens/s) of a model directory.
    Bench(bench::BenchArgs),
    /// Write a model directory of a real model's shape with seeded random weights (streamed one
    /// tensor at a time), for benchmarks and backend checks where no real model can be fetched.
    SynthModel(synth_model::SynthModelArgs),
    /// The SlimLLM pruning pipeline (cached stages).
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Rerun one stage: its cache entries are recomputed and replaced, every other stage is
    /// reused from the cache where it can be. Takes the same settings as `pipeline run`.
    Stage(pipeline::StageArgs),
    /// A Markdown report with charts from run summaries and bench results.
    Report(report::ReportArgs),
    /// The artifact cache: verify entries against their manifests, remove unreferenced ones.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Check a backend (`--backend wgpu|cuda`) against the CPU on seeded synthetic models: logits,
    /// greedy tokens, zero-shot log-likelihoods and a pruning run's decisions. Needs no file.
    CheckBackend(check_backend::CheckArgs),
    /// Recovery fine-tuning with LoRA (the paper's "w/ tune"): adapters on the seven projections,
    /// trained layer by layer on burn-autodiff, merged into a new model directory (adapter beside
    /// it in PEFT's format); checkpoints let a killed run resume.
    Tune(tune::TuneArgs),
}

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SLIMLLM_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Import(a) => import::run(a),
        Command::Export(a) => export::run(a),
        Command::Eval(c) => eval::run(c, &g),
        Command::Generate(a) => generate::run(a, &g),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Bench(a) => bench::run(a, &g),
        Command::SynthModel(a) => synth_model::run(a),
        Command::Pipeline(c) => pipeline::run(c, &g),
        Command::Stage(a) => pipeline::stage(a, &g),
        Command::Cache(c) => cache::run(c, &g),
        Command::Report(a) => report::run(a),
        Command::CheckBackend(a) => check_backend::run(a, &g),
        Command::Tune(a) => tune::run(a, &g),
    }
}

/// Whether to draw progress bars.
fn progress(g: &GlobalArgs) -> bool {
    !g.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Writes `value` as the last line of stdout and, when given, to `out` (atomically).
fn emit_json(value: &serde_json::Value, out: Option<&std::path::Path>) -> Result<()> {
    // stdout first: a failing --out never loses the result.
    println!("{}", serde_json::to_string(value)?);
    if let Some(path) = out {
        // slim_fs's atomic write (temp file beside, fsync, rename, fsync the folder), through the
        // store's JSON helper, which slim-cli already depends on.
        slim_artifact::write_json_atomic(path, value)
            .map_err(|e| anyhow::Error::new(e).context(format!("--out {}", path.display())))?;
    }
    Ok(())
}

/// Checks before any long work that `--out` can be written: its folder exists (created if
/// missing) and accepts a file.
fn check_out(out: Option<&std::path::Path>) -> Result<()> {
    let Some(path) = out else { return Ok(()) };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| anyhow::format_err!("--out {}: cannot create folder {}: {e}", path.display(), parent.display()))?;
    let probe = parent.join(format!(".slimllm-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        anyhow::format_err!("--out {}: folder {} is not writable: {e}", path.display(), parent.display())
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_index_names_the_purge_delay() {
        // mimalloc v3's options.c sets the purge delay's default to 1000 ms; no neighbouring
        // option defaults to 1000 (eager_commit_delay is 1, use_numa_nodes 0).
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert!(
            v == 1000 || std::env::var_os("MIMALLOC_PURGE_DELAY").is_some(),
            "option {} reads {v}",
            super::MI_OPTION_PURGE_DELAY
        );
    }
}
