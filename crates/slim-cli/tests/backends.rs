//! Backend equivalence as a process. `slimllm check-backend` on the CPU always runs (the whole
//! command on seeded synthetic models: its JSON, its exit status); with `--features wgpu` the same
//! checks run against burn-wgpu, and SmolLM2's perplexity on both backends is compared.
//!
//! CI builds `--features wgpu` and runs this file on Mesa's Lavapipe, a conforming Vulkan driver
//! that runs on the CPU (`cargo xtask ci`, step "wgpu"; Debian's `mesa-vulkan-drivers`).

use std::path::Path;
use std::process::Command;

fn slimllm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slimllm"))
}

/// Runs `check-backend` on `backend`, asserting success; returns its JSON report.
fn check_backend(backend: &str, dir: &Path) -> serde_json::Value {
    let json = dir.join(format!("check-{backend}.json"));
    let out = slimllm().args(["--quiet", "--backend", backend, "check-backend", "--json"]).arg(&json).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "check-backend --backend {backend} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

/// The lines of a report: (model, check) → (value, tolerance, pass).
fn lines(report: &serde_json::Value) -> Vec<(String, String, f64, f64, bool)> {
    report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap().to_string();
            (s("model"), s("check"), l["value"].as_f64().unwrap(), l["tolerance"].as_f64().unwrap(), l["pass"] == true)
        })
        .collect()
}

#[test]
fn check_backend_on_the_cpu_compares_every_fixture_and_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let report = check_backend("cpu", tmp.path());
    assert_eq!(report["passed"], true);
    let lines = lines(&report);
    // 4 fixtures × 6 checks (logits, greedy tokens, zero-shot log-likelihoods and flags, the LoRA
    // step's loss and gradients), and 3 of the pipeline.
    assert_eq!(lines.len(), 27, "{lines:?}");
    for model in ["llama-mha", "llama-gqa", "llama-pruned", "qwen2-pruned", "pipeline"] {
        assert!(lines.iter().any(|l| l.0 == model), "{model} missing from {lines:?}");
    }
    // The CPU against itself: every difference is exactly 0 (the backend is deterministic).
    assert!(lines.iter().all(|l| l.2 == 0.0 && l.4), "{lines:?}");
    let layers = report["target"]["pipeline"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 6);
    let pruned = layers.iter().filter(|l| l["heads"].as_u64() < Some(8) || l["channels"].as_u64() < Some(256)).count();
    assert!(pruned >= 1, "the 30 % pipeline pruned nothing: {layers:?}");
}

/// `eval ppl` of SmolLM2 on the first `windows` PTB-valid windows on `backend`.
#[cfg(feature = "wgpu")]
fn smollm2_ppl(backend: &str, windows: usize, dir: &Path) -> f64 {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let model = root.join("models/smollm2-135m");
    assert!(model.join("config.json").is_file(), "{} is missing: run `cargo xtask fetch ci`", model.display());
    let out = dir.join(format!("ppl-{backend}.json"));
    let status = slimllm()
        .args(["--quiet", "--backend", backend, "--data-root"])
        .arg(&root)
        .args(["eval", "ppl", "--data", "ptb-valid", "--windows", &windows.to_string(), "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "eval ppl --backend {backend} failed");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    v["ppl"].as_f64().unwrap()
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_the_cpu_on_synthetic_models_and_on_smollm2() {
    let tmp = tempfile::tempdir().unwrap();
    let report = check_backend("wgpu", tmp.path());
    assert_eq!(report["backend"], "wgpu");
    let lines = lines(&report);
    assert_eq!(lines.len(), 27, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.1.starts_with("LoRA")).count(), 8, "{lines:?}");
    for (model, check, value, tol, pass) in &lines {
        assert!(*pass && value <= tol, "{model} {check}: {value:e} over {tol:e}");
    }
    let logits: Vec<f64> = lines.iter().filter(|l| l.1 == "logits").map(|l| l.2).collect();
    assert!(logits.iter().all(|&d| d <= 1e-4), "{logits:?}");
    // A real model: 2 windows of 128 tokens of PTB-valid.
    let (wgpu, cpu) = (smollm2_ppl("wgpu", 2, tmp.path()), smollm2_ppl("cpu", 2, tmp.path()));
    let rel = (wgpu - cpu).abs() / cpu;
    eprintln!("SmolLM2-135M PTB-valid, 2 windows: wgpu {wgpu:.6}, cpu {cpu:.6} ({rel:.2e} relative)");
    assert!(rel <= 1e-5, "wgpu {wgpu} vs cpu {cpu}: {rel:e} relative");
}
