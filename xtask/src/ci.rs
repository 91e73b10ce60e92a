//! `cargo xtask ci`: fetch what the tests need (`fetch ci`), then `cargo test --workspace --release`.

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
    )
}
