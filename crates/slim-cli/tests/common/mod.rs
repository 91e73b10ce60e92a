//! Helpers shared by the process-level tests: a small synthetic model, a pipeline command
//! line over it, and a byte-level snapshot of a cache.

#![allow(dead_code)]

use slim_checkpoint::synthetic::SyntheticSpec;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

pub fn model(dir: &Path) {
    let (cfg, w) = SyntheticSpec::dense("llama", 6, 96, 8, 4, 12, 256, 301, 3).build();
    slim_checkpoint::save_model_dir(dir, &cfg, &w, dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap(); // hashed, never parsed with random calibration
}

pub fn pipeline(model: &Path, cache: &Path, run_root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slimllm"));
    c.args(["--quiet", "--data-root"]).arg(run_root);
    c.args(["pipeline", "run", "--model"]).arg(model);
    c.args([
        "--target",
        "0.3",
        "--calib-source",
        "random",
        "--calib-windows",
        "16",
        "--calib-len",
        "64",
        "--pruned-layers",
        "5",
        "--no-eval",
        "--run",
        "kill",
    ]);
    c.arg("--cache").arg(cache);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Every file under `root` except manifests' timestamps: (relative path → bytes digest),
/// temp folders excluded. Manifests are compared by their payload lists.
pub fn snapshot(cache: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![cache.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(cache).unwrap().display().to_string();
            if rel.split('/').any(|c| c.starts_with(".tmp")) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if rel.ends_with("manifest.json") {
                let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                out.insert(rel, m["payloads"].to_string());
            } else {
                out.insert(rel, format!("{:x}", md5_like(&std::fs::read(&p).unwrap())));
            }
        }
    }
    out
}

/// FNV-1a: enough to compare files byte for byte here.
pub fn md5_like(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100000001b3))
}
