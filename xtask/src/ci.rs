//! `cargo xtask ci`: the gates, cheapest first: `cargo fmt --check` (workspace and fuzz/), `cargo clippy
//! --workspace --all-targets -- -D warnings`, then fetch what the tests need (`fetch ci`), `cargo test
//! --workspace --release` with a torch + transformers venv for the transformers load test (tools/transformers/
//! setup.sh; the tests also run the tidy rules of `xtask/src/tidy.rs`, e.g. no line over 120
//! characters), then the llama.cpp checks of `slimllm export` (tools/llamacpp/ci-check.sh: llama.cpp built
//! from its registry package, exports of seeded pruned models and SmolLM2 run in it), then the wgpu backend
//! against the CPU on a software Vulkan (tools/wgpu/setup.sh installs Mesa's Lavapipe; `cargo test -p slim-cli
//! --features wgpu --test backends`), then a short run of every fuzz target (20 s each; `cargo xtask fuzz` runs
//! them longer).
//!
//! A cold run writes about 11 GB (measured 2026-11-29: target/release 0.9 GB, fuzz/target
//! 1.3 GB, target/xtask 0.6 GB, the fetched data 0.7 GB, cargo's registry 0.9 GB; 2026-12-04: the
//! transformers venv 4.7 GB, llama.cpp 0.5 GB, the exports of the llama.cpp checks 1.1 GB), so the free
//! space is logged before each step: a full disk then shows in the log, not only as a linker
//! crash. CI's run of 2026-12-05 still ran out (0.9 GB left before the fuzz build's 1.4 GB), so the venv is
//! installed without pip's cache or triton (4.6 GB), the llama.cpp checks remove each GGUF once checked, and
//! before the wgpu and fuzz steps a short disk loses the venv, which only the tests use. After a full run on a
//! fresh clone (2026-12-05): target 2.4 GB, fuzz/target 1.4 GB, data/ 5.9 GB (the venv 4.6 GB of it).

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
    let ctx = Ctx { root: util::repo_root(), force: false };
    // Cheapest first: formatting, then lints, then the fetch and the tests.
    util::run(Command::new(util::cargo()).args(["fmt", "--all", "--", "--check"]), &ctx.root)?;
    util::run(
        Command::new(util::cargo()).args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]),
        &ctx.root,
    )?;
    log_free_space(&ctx.root, "clippy");
    // --release: the lint pass shares build scripts and proc macros with the test build below.
    util::run(
        Command::new(util::cargo())
            .args(["clippy", "--workspace", "--all-targets", "--release"])
            .args(["--", "-D", "warnings"]),
        &ctx.root,
    )?;
    log_free_space(&ctx.root, "fetch");
    fetch::fetch(&ctx, &[Target::Ci])?;
    log_free_space(&ctx.root, "transformers");
    // The Python the transformers load test runs on (torch and transformers from PyPI, about 2.5 minutes).
    util::run(Command::new("bash").arg("tools/transformers/setup.sh"), &ctx.root)?;
    log_free_space(&ctx.root, "tests");
    util::run(
        Command::new(util::cargo())
            .args(["test", "--workspace", "--release"])
            .env("SLIMLLM_PYTHON", ctx.root.join("data/tools/venv-transformers/bin/python")),
        &ctx.root,
    )?;
    log_free_space(&ctx.root, "llama.cpp");
    // The real engine as a judge of `slimllm export`: stock llama.cpp built from its registry package
    // (about 20 minutes on 2 cores, cold), then the exports of seeded pruned models and SmolLM2 in it.
    util::run(Command::new("bash").arg("tools/llamacpp/ci-check.sh"), &ctx.root)?;
    log_free_space(&ctx.root, "wgpu");
    // burn-wgpu's build and the fuzz build need room the earlier steps may have taken: on a short disk the
    // transformers venv, needed by the tests only, goes (CI's run of 2026-12-05 had 0.9 GB left before fuzzing).
    make_room(&ctx.root, "wgpu", WGPU_NEEDS_BYTES, AFTER_TESTS);
    // The wgpu backend against the CPU on Mesa's Lavapipe, a software Vulkan (tools/wgpu/setup.sh installs it):
    // `slimllm check-backend` on seeded synthetic models and SmolLM2's perplexity on both backends. Building burn-wgpu
    // is about 20 minutes on 2 cores, cold; the checks about 9 (mostly kernel compilation on llvmpipe).
    util::run(Command::new("bash").arg("tools/wgpu/setup.sh"), &ctx.root)?;
    util::run(
        Command::new(util::cargo()).args([
            "test",
            "--release",
            "-p",
            "slim-cli",
            "--features",
            "wgpu",
            "--test",
            "backends",
        ]),
        &ctx.root,
    )?;
    log_free_space(&ctx.root, "fuzzing");
    make_room(&ctx.root, "fuzzing", FUZZ_NEEDS_BYTES, AFTER_TESTS);
    crate::fuzz::run(&crate::fuzz::Args { targets: Vec::new(), runs: -1, seconds: Some(20) })
}

/// Logs the free space of the repository's file system before `step`, with a warning under
/// [`LOW_SPACE_BYTES`]. Nothing fails here: `df` may be missing, and the step may still fit.
fn log_free_space(root: &std::path::Path, step: &str) {
    match free_bytes(root) {
        Some(free) => {
            let gb = free as f64 / 1e9;
            if free < LOW_SPACE_BYTES {
                eprintln!("== warning: {gb:.1} GB free before {step}; a cold `cargo xtask ci` writes about 11 GB");
            } else {
                eprintln!("== {gb:.1} GB free before {step}");
            }
        }
        None => eprintln!("== free space unknown before {step} (`df` failed)"),
    }
}

/// Room kept for the wgpu step (burn-wgpu and the tests rebuilt with it; a margin, not a measurement).
const WGPU_NEEDS_BYTES: u64 = 3_000_000_000;
/// What the fuzz step writes (fuzz/target, 1.4 GB measured 2026-12-05), with a margin.
const FUZZ_NEEDS_BYTES: u64 = 2_500_000_000;
/// Outputs of earlier steps that no later step reads and a later `cargo xtask ci` rebuilds, in the order
/// they go when the disk is short.
const AFTER_TESTS: &[&str] = &["data/tools/venv-transformers"];

/// When less than `need` bytes are free before `step`, removes the directories of `removable` (relative to
/// `root`) in order until enough is, logging each. Never fails: a step that still does not fit fails on its own.
fn make_room(root: &std::path::Path, step: &str, need: u64, removable: &[&str]) {
    let Some(free) = free_bytes(root) else { return };
    if free >= need {
        return;
    }
    for r in removable.iter().filter(|r| root.join(r).exists()) {
        eprintln!(
            "== {:.1} GB free before {step}, under the {:.1} GB it needs: removing {r} (rebuilt by the next run)",
            free as f64 / 1e9,
            need as f64 / 1e9
        );
        if let Err(e) = std::fs::remove_dir_all(root.join(r)) {
            eprintln!("== could not remove {r}: {e}");
        }
        if free_bytes(root).is_some_and(|f| f >= need) {
            break;
        }
    }
}

/// Below this much free space the log warns.
const LOW_SPACE_BYTES: u64 = 5_000_000_000;

/// Free bytes on the file system holding `path`, from POSIX `df -Pk`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_df_available(&String::from_utf8_lossy(&out.stdout))
}

/// The "Available" column (in 1024-byte blocks) of `df -Pk`'s second line, in bytes.
fn parse_df_available(text: &str) -> Option<u64> {
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_available_column() {
        let text = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                    /dev/vda         263174212 67108864  29360128      70% /\n";
        assert_eq!(parse_df_available(text), Some(29_360_128 * 1024));
        assert_eq!(parse_df_available("Filesystem\n"), None);
        assert_eq!(parse_df_available(""), None);
        assert_eq!(parse_df_available("h\n/dev/vda 1 2 many 3% /\n"), None);
    }

    #[test]
    fn make_room_leaves_everything_when_the_disk_has_room() {
        let dir = util::scratch_dir(&std::env::temp_dir(), "xtask-ci-test").unwrap();
        std::fs::create_dir_all(dir.join("v/bin")).unwrap();
        make_room(&dir, "test", 1, &["v", "absent"]);
        assert!(dir.join("v/bin").exists());
        // No disk has this much free: the directory goes, the absent one is passed over.
        make_room(&dir, "test", u64::MAX, &["v", "absent"]);
        assert!(!dir.join("v").exists() && dir.exists());
        util::remove(&dir).unwrap();
    }
}
