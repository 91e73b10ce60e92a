//! `cargo xtask ci`: fetch what the tests need (`fetch ci`), `cargo test --workspace --release`, then a short
//! run of every fuzz target (20 s each; `cargo xtask fuzz` runs them longer).

use std::process::Command;

use crate::{
    fetch::{self, Ctx, Target},
    util,
};

/// Arguments of `cargo xtask ci`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `cargo xtask ci`.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    let ctx = Ctx {
        root: util::repo_root(),
        force: false,
    };
    fetch::fetch(&ctx, &[Target::Ci])?;
    util::run(
        Command::new(util::cargo()).args(["test", "--workspace", "--release"]),
        &ctx.root,
    )?;
    crate::fuzz::run(&crate::fuzz::Args {
        targets: Vec::new(),
        runs: -1,
        seconds: Some(20),
    })
}
