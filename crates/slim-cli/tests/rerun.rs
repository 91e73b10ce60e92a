//! A second identical `pipeline run` through the binary: every entry is reused, nothing is loaded
//! or sliced, and the GGUF export is not redone while the stamp beside it names the same surgery
//! entry.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

fn run(model: &Path, cache: &Path, root: &Path) -> serde_json::Value {
    let mut cmd: Command = common::pipeline(model, cache, root);
    cmd.args(["--gguf", "f32"]).stdout(Stdio::piped());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    serde_json::from_str(&last).unwrap()
}

#[test]
fn a_rerun_with_everything_cached_loads_nothing_and_keeps_its_gguf_export() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, cache, root) = (tmp.path().join("m"), tmp.path().join("cache"), tmp.path().join("data"));
    common::model(&m);
    slim_checkpoint::synthetic::write_byte_level_tokenizer(&m, slim_checkpoint::Arch::Llama).unwrap();
    let first = run(&m, &cache, &root);
    let dir = root.join("runs/kill");
    let (gguf, stamp) = (dir.join("model-f32.gguf"), dir.join("model-f32.gguf.source"));
    let entry = first["cache_entry"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), format!("{entry} f32\n"));
    let modified = || std::fs::metadata(&gguf).unwrap().modified().unwrap();
    let exported = modified();

    let second = run(&m, &cache, &root);
    let stage = |name: &str| second["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned();
    assert_eq!(stage("surgery").unwrap()["ran"], 0, "{}", second["stages"]);
    assert!(stage("load").is_none(), "nothing is loaded: {}", second["stages"]);
    assert_eq!(second["cache_entry"], first["cache_entry"]);
    assert_eq!(modified(), exported, "the GGUF was not written again");

    std::fs::write(&stamp, "0123456789abcdef0123456789abcdef f32\n").unwrap();
    run(&m, &cache, &root);
    assert_ne!(modified(), exported, "a stamp of another entry: exported again");
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), format!("{entry} f32\n"));
}
