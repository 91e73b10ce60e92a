//! `cargo xtask pipeline [args...]`: fetch what the pipeline needs, then run it through the `slimllm` binary;
//! `cargo xtask pipeline compare-scorers | compare-allocations | compare-recoveries | grid ...` compares variants
//! from one cached capture ([`crate::compare`]).
//!
//! The stage graph and its caching live in `slimllm pipeline run` (slim-pipeline): this command fetches what it
//! needs and forwards to it. With no extra arguments it prunes 20 % of SmolLM2-135M's parameters with SlimLLM and
//! evaluates PTB-valid perplexity before and after. Steps are data ([`STEPS`]) so that adding one is a one-line change.

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
const NEEDS: &[Target] = &[Target::Smollm2, Target::Ptb, Target::Brown];

/// The `slimllm` invocations, in order.
const STEPS: &[&[&str]] = &[&["pipeline", "run", "--model", "data/models/smollm2-135m", "--report"]];

/// Runs `cargo xtask pipeline`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let ctx = Ctx { root: util::repo_root(), force: false };
    fetch::fetch(&ctx, NEEDS)?;
    if let Some(cmd @ ("compare-scorers" | "compare-allocations" | "compare-recoveries" | "grid")) =
        args.extra.first().map(String::as_str)
    {
        return crate::compare::run(cmd, &args.extra[1..]);
    }
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

/// `$CARGO run --release -p slim-cli --bin slimllm --`, or the binary `$SLIMLLM_BIN` names (a
/// long grid then keeps running one build while the sources change).
pub fn slimllm() -> Command {
    if let Some(bin) = std::env::var_os("SLIMLLM_BIN") {
        return Command::new(bin);
    }
    let mut cmd = Command::new(util::cargo());
    cmd.args(["run", "--release", "-p", "slim-cli", "--bin", "slimllm", "--"]);
    cmd
}
