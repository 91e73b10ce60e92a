//! `cargo xtask fuzz [TARGET…] [--runs N] [--seconds S]`: runs the cargo-fuzz (libFuzzer)
//! harnesses of `fuzz/` on the machine's stable toolchain.
//!
//! cargo-fuzz passes unstable rustc flags (`-Zsanitizer=address` among them), so the build runs
//! with `RUSTC_BOOTSTRAP=1`; cargo-fuzz itself is installed from crates.io when missing. Each
//! target starts from the committed seeds in `fuzz/seeds/<target>/` (made from real files by
//! `tools/fuzz/make_seeds.py`) and keeps what it learns in the git-ignored
//! `fuzz/corpus/<target>/`. A crash stops the command with libFuzzer's report and the input
//! saved under `fuzz/artifacts/<target>/`; fix it and add the input as a regression test.

use std::process::Command;

use anyhow::{bail, Context};

use crate::util;

/// The harnesses, as named in fuzz/Cargo.toml.
pub const TARGETS: [&str; 5] = ["safetensors", "gguf", "config_json", "tokenizer_json", "artifacts"];

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// Targets to run (all when none is given).
    pub targets: Vec<String>,
    /// Executions per target (libFuzzer's -runs; -1: until --seconds).
    #[arg(long, default_value_t = 1_000_000, allow_negative_numbers = true)]
    pub runs: i64,
    /// Stop each target after this many seconds, whatever the count (libFuzzer's -max_total_time).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// Runs `cargo xtask fuzz`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let root = util::repo_root();
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in &args.targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!("unknown fuzz target `{t}` (known: {})", TARGETS.join(", "));
            }
        }
        args.targets.iter().map(String::as_str).collect()
    };
    if util::run_capture(Command::new(util::cargo()).args(["fuzz", "--version"]), &root).is_err() {
        eprintln!("== installing cargo-fuzz");
        util::run(Command::new(util::cargo()).args(["install", "--locked", "cargo-fuzz@0.13.2"]), &root)?;
    }
    let mut report = Vec::new();
    for t in targets {
        let corpus = root.join("fuzz/corpus").join(t);
        util::mkdir(&corpus)?;
        let mut cmd = Command::new(util::cargo());
        cmd.env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "-O", t])
            .arg(&corpus)
            .arg(root.join("fuzz/seeds").join(t))
            .arg("--")
            .arg(format!("-runs={}", args.runs))
            .args(["-rss_limit_mb=2048", "-malloc_limit_mb=2048", "-timeout=10", "-print_final_stats=1"]);
        if let Some(s) = args.seconds {
            cmd.arg(format!("-max_total_time={s}"));
        }
        eprintln!("== fuzz {t}");
        let t0 = std::time::Instant::now();
        let out = cmd.current_dir(&root).output().context("cannot start cargo fuzz")?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            eprintln!("{log}");
            bail!("fuzz target `{t}` failed (see above; the input is under fuzz/artifacts/{t}/)");
        }
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:").map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into());
        let cov = log
            .lines()
            .rev()
            .find_map(|l| l.split("cov: ").nth(1).map(|v| v.split_whitespace().next().unwrap_or("?").to_string()))
            .unwrap_or_else(|| "?".into());
        let line =
            format!("{t}: {runs} executions in {:.0} s, coverage {cov} edges, no crash", t0.elapsed().as_secs_f64());
        eprintln!("{line}");
        report.push(line);
    }
    println!("{}", report.join("\n"));
    Ok(())
}
