//! `cargo xtask llamacpp`: stock llama.cpp, built here from a registry package, as the judge of
//! `slimllm export`.
//!
//! - `build`: tools/llamacpp/build.sh — the llama-cpp-python 0.3.36 sdist from PyPI (checksum
//!   pinned), its vendored llama.cpp built for the CPU into data/tools/llamacpp (git-ignored), with
//!   cmake and ninja from PyPI in a venv there. Idempotent: a finished build is kept.
//! - `check`: builds the release `slimllm` and llama.cpp if needed, then tools/llamacpp/check.py
//!   with the remaining arguments (export, perplexity beside `slimllm eval ppl`, greedy generation,
//!   llama-bench beside `slimllm bench`).

use std::process::Command;

use anyhow::Result;
use clap::Subcommand;

use crate::util::{cargo, repo_root, run};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LlamaCmd,
}

#[derive(Subcommand)]
enum LlamaCmd {
    /// Build llama.cpp (CPU) into data/tools/llamacpp.
    Build {
        /// Parallel compile jobs (default: all cores).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Run tools/llamacpp/check.py (pass its arguments after `--`, e.g.
    /// `-- --model dense=data/models/smollm2-135m --types f32,f16 --windows 64`).
    Check {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub fn run_cmd(args: &Args) -> Result<()> {
    let root = repo_root();
    match &args.command {
        LlamaCmd::Build { jobs } => build(*jobs),
        LlamaCmd::Check { args } => {
            build(None)?;
            run(Command::new(cargo()).args(["build", "--release", "-p", "slim-cli"]), &root)?;
            let python = root.join("data/tools/llamacpp/venv/bin/python");
            run(Command::new(python).arg("tools/llamacpp/check.py").args(args), &root)
        }
    }
}

fn build(jobs: Option<usize>) -> Result<()> {
    let mut cmd = Command::new("bash");
    cmd.arg("tools/llamacpp/build.sh");
    if let Some(j) = jobs {
        cmd.args(["--jobs", &j.to_string()]);
    }
    run(&mut cmd, &repo_root())
}
