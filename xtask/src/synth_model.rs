//! `cargo xtask synth-model [args...]`: `slimllm synth-model [args...]` (a model directory of a real model's shape
//! with seeded random weights; `slim_checkpoint::synthetic`), run in the current folder so that relative paths
//! mean what they say. `cargo xtask synth-model --help` shows the binary's help.

use crate::util;

/// Arguments of `cargo xtask synth-model`: all passed to `slimllm synth-model`.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Arguments of `slimllm synth-model` (`--shape SHAPE --out DIR [--layers N] [--seed S] [--dtype D] ...`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `slimllm synth-model` with `args`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut cmd = crate::pipeline::slimllm();
    cmd.arg("synth-model").args(&args.args);
    util::run(&mut cmd, &std::env::current_dir()?)
}
