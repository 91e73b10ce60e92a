//! Run folders and the cache through the binary, as a careless user meets them: a gc that
//! finds no runs, a run name that is a path, a run folder someone else made, a run's model
//! edited in place. Nothing may be lost, and no result may belong to another input.
//! (The texts' contents keying the cache is tested in slim-pipeline's `tests_runs.rs`.)

use slim_pipeline::fixtures::{worded_model, write_texts};
use std::path::Path;
use std::process::{Command, Output};

fn slimllm(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slimllm"))
        .args(args)
        .arg("--data-root")
        .arg(root.join("data"))
        .arg("--quiet")
        .env("SLIMLLM_CACHE", root.join("cache"))
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A worded model in `root/m`, texts in `root/data`, and one finished run `r` of it.
fn one_run(root: &Path) -> serde_json::Value {
    worded_model(&root.join("m"));
    write_texts(&root.join("data"), 1);
    let m = root.join("m");
    let out = slimllm(root, &run_args(&m, "r"));
    assert!(out.status.success(), "{}", stderr(&out));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    serde_json::from_str(&last).unwrap()
}

fn run_args<'a>(m: &'a Path, run: &'a str) -> Vec<&'a str> {
    vec![
        "pipeline",
        "run",
        "--model",
        m.to_str().unwrap(),
        "--target",
        "0.25",
        "--pruned-layers",
        "3",
        "--calib-source",
        "ptb-train",
        "--calib-windows",
        "4",
        "--calib-len",
        "16",
        "--run",
        run,
    ]
}

fn entries(cache: &Path) -> usize {
    std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| std::fs::read_dir(e.path()).unwrap().flatten().filter(|k| k.file_name().len() == 32).count())
        .sum()
}

#[test]
fn gc_that_finds_no_run_refuses_and_keeps_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    one_run(root);
    let n = entries(&root.join("cache"));
    assert!(n > 20, "the run made {n} entries");
    let elsewhere = root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for args in [
        vec!["cache", "gc", "--runs", root.join("typo").to_str().unwrap()],
        vec!["cache", "gc", "--runs", elsewhere.to_str().unwrap()],
        vec!["--data-root", elsewhere.to_str().unwrap(), "cache", "gc"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_slimllm"))
            .args(&args)
            .env("SLIMLLM_CACHE", root.join("cache"))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains("--all"), "{args:?}: {err}");
        assert_eq!(entries(&root.join("cache")), n, "{args:?} removed entries");
    }
    // The runs under the data root protect every entry of their run.
    let out = slimllm(root, &["cache", "gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&root.join("cache")), n, "gc removed entries its run refers to");
    let out = slimllm(root, &["cache", "gc", "--runs", elsewhere.to_str().unwrap(), "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(entries(&root.join("cache")), 0, "--all with no runs empties the cache");
}

#[test]
fn run_names_stay_under_the_runs_folder_and_foreign_folders_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    worded_model(&root.join("m"));
    write_texts(&root.join("data"), 1);
    let m = root.join("m");
    let outside = root.join("outside");
    std::fs::create_dir_all(outside.join("model")).unwrap();
    std::fs::write(outside.join("model/weights.bin"), b"weeks of training").unwrap();
    for run in [outside.to_str().unwrap(), "../escape", "..", ".hidden", "a/b"] {
        let out = slimllm(root, &run_args(&m, run));
        assert!(!out.status.success() && stderr(&out).contains("--run"), "{run}: {}", stderr(&out));
    }
    assert!(!root.join("data/escape").exists() && !root.join("escape").exists());
    // A folder under the runs root that slimllm did not make.
    let foreign = root.join("data/runs/mine");
    std::fs::create_dir_all(foreign.join("model")).unwrap();
    std::fs::write(foreign.join("model/weights.bin"), b"weeks of training").unwrap();
    let out = slimllm(root, &run_args(&m, "mine"));
    assert!(!out.status.success() && stderr(&out).contains("not a slimllm run folder"), "{}", stderr(&out));
    for dir in [&outside, &foreign] {
        assert_eq!(std::fs::read(dir.join("model/weights.bin")).unwrap(), b"weeks of training");
    }
    assert!(!root.join("cache").exists() || entries(&root.join("cache")) == 0, "refused before any work");
}

#[test]
fn editing_a_runs_model_in_place_changes_neither_the_cache_nor_the_next_runs_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let first = one_run(root);
    let weights = root.join("data/runs/r/model/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 256..] {
        *b = 0x7f; // NaN-ish garbage in the last tensor
    }
    std::fs::write(&weights, &bytes).expect("the run's copy is the user's, writable");
    let out = slimllm(root, &["cache", "verify"]);
    assert!(out.status.success(), "the edit reached the cache: {}", String::from_utf8_lossy(&out.stdout));
    let again = {
        let out = slimllm(root, &run_args(&root.join("m"), "r2"));
        assert!(out.status.success(), "{}", stderr(&out));
        let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
        serde_json::from_str::<serde_json::Value>(&last).unwrap()
    };
    assert_eq!(again["ppl_after"], first["ppl_after"]);
    assert_eq!(again["cache_entry"], first["cache_entry"]);
    let rerun = std::fs::read(root.join("data/runs/r2/model/model.safetensors")).unwrap();
    assert_ne!(rerun, bytes, "the new run got the edited weights");
}
