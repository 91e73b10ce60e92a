//! `cargo xtask pipeline [args...]`: fetch what the pipeline needs, then run it through the `slimllm` binary.
//!
//! For now the "pipeline" is one step, the dense perplexity of SmolLM2-135M on PTB-valid; the stage graph and its
//! caching will live in `slimllm pipeline` (slim-pipeline), and this command will only fetch and forward to it.
//! Steps are data ([`STEPS`]) so that adding one is a one-line change.

use std::process::Command;

use crate::{
    fetch::{self, Ctx, Target},
    util,
};

/// Arguments of `cargo xtask pipeline`.
#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments, appended to the `slimllm` command line of the last step.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub extra: Vec<String>,
}

/// What the pipeline fetches first.
const NEEDS: &[Target] = &[Target::Smollm2, Target::Ptb];

/// The `slimllm` invocations, in order.
const STEPS: &[&[&str]] = &[&[
    "eval",
    "ppl",
    "--model",
    "data/models/smollm2-135m",
    "--data",
    "ptb-valid",
]];

/// Runs `cargo xtask pipeline`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let ctx = Ctx {
        root: util::repo_root(),
        force: false,
    };
    fetch::fetch(&ctx, NEEDS)?;
    for (i, step) in STEPS.iter().enumerate() {
        let mut cmd = slimllm();
        cmd.args(*step);
        if i + 1 == STEPS.len() {
            cmd.args(&args.extra);
        }
        util::run(&mut cmd, &ctx.root)?;
    }
    Ok(())
}

/// `$CARGO run --release -p slim-cli --bin slimllm --`.
pub fn slimllm() -> Command {
    let mut cmd = Command::new(util::cargo());
    cmd.args([
        "run",
        "--release",
        "-p",
        "slim-cli",
        "--bin",
        "slimllm",
        "--",
    ]);
    cmd
}
