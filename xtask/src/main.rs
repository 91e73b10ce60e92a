//! `cargo xtask`: the project's developer commands (fetching models and data, the pipeline, benchmarks, CI).
//!
//! Run as `cargo xtask <command>` through the alias in `.cargo/config.toml`, which builds into `target/xtask`
//! so that xtask never churns the main target directory.
//! One module per command; the real work of the project happens in the `slimllm` binary, which xtask calls through
//! `$CARGO`.

mod bench;
mod bench_llamacpp;
mod ci;
mod compare;
mod fetch;
mod fuzz;
mod grid_rows;
mod llamacpp;
mod pipeline;
mod summary;
mod synth_model;
#[cfg(test)]
mod tidy;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Developer commands for slimllm-rs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download, verify and unpack models and data sets into data/ (idempotent).
    Fetch(fetch::Args),
    /// Fetch what the pipeline needs, then run it through `slimllm` (extra arguments are passed through);
    /// `pipeline compare-scorers --scorer A --scorer B [--target T ...]` prints a side-by-side table.
    Pipeline(pipeline::Args),
    /// Benchmarks.
    Bench(bench::Args),
    /// What CI runs: fetch the test data, `cargo test --workspace --release`, then a short run
    /// of every fuzz target.
    Ci(ci::Args),
    /// Run the libFuzzer harnesses of fuzz/ (installs cargo-fuzz when missing).
    Fuzz(fuzz::Args),
    /// Stock llama.cpp, built from a registry package (`build`), and the checks of `slimllm export`
    /// in it (`check`).
    Llamacpp(llamacpp::Args),
    /// A model directory of a real model's shape with seeded random weights: `slimllm synth-model` with the same
    /// arguments (`--shape smollm2-135m|qwen2.5-0.5b|qwen2.5-1.5b|llama-7b|llama-13b --out DIR ...`).
    SynthModel(synth_model::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fetch(args) => fetch::run(&args),
        Command::Pipeline(args) => pipeline::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Ci(args) => ci::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Llamacpp(args) => llamacpp::run_cmd(&args),
        Command::SynthModel(args) => synth_model::run(&args),
    };
    if let Err(err) = result {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn pipeline_passes_extra_arguments_through() {
        let cli = Cli::try_parse_from(["xtask", "pipeline", "--windows", "10", "-v"]).unwrap();
        let Command::Pipeline(args) = cli.command else { panic!("not the pipeline command") };
        assert_eq!(args.extra, ["--windows", "10", "-v"]);
        assert!(Cli::try_parse_from(["xtask", "fetch", "ptb", "qwen2.5-coder-0.5b", "--force"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "bench", "forward", "--torch-venv", ".venv-ref"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "bench", "prefill", "--len", "1024", "--weights", "f16"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "bench", "prefill", "--weights", "q8_0"]).is_err());
    }

    #[test]
    fn synth_model_passes_every_argument_to_the_binary() {
        let cli =
            Cli::try_parse_from(["xtask", "synth-model", "--shape", "llama-7b", "--layers", "2", "--help"]).unwrap();
        let Command::SynthModel(args) = cli.command else { panic!("not the synth-model command") };
        assert_eq!(args.args, ["--shape", "llama-7b", "--layers", "2", "--help"]);
    }
}
