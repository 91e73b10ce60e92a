//! A pruned model directory as `save_model_dir` writes it, loaded by transformers with the
//! modeling code written beside it (`trust_remote_code=True`), gives the logits of slimllm's
//! runtime: tiny seeded llama (tied) and qwen2 (untied) models with uneven GQA groups, fewer heads,
//! KV heads and channels per layer, and o_proj/down_proj biases. `tools/transformers/check_logits.py`
//! also checks the KV cache, left padding, `generate` and tied embeddings on the same model.
//!
//! Needs a Python with torch and transformers: `SLIMLLM_PYTHON`, else `data/tools/venv-transformers`
//! (`tools/transformers/setup.sh`, which `cargo xtask ci` runs first) or `.venv-ref` of the workspace
//! (`tools/reference/setup.sh`). Without one the test fails, naming the setup command: a check that
//! passes without checking anything would be worse than none.

use slim_checkpoint::synthetic::{SplitMix, SyntheticSpec};
use slim_checkpoint::{save_model_dir, LayerShape};
use slim_model::{tensor_to_host, Cpu, Llama};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python to run: one with torch and transformers, or a panic naming how to make one.
fn python() -> Option<PathBuf> {
    let works = |p: &Path| {
        Command::new(p).args(["-c", "import torch, transformers"]).output().is_ok_and(|o| o.status.success())
    };
    if let Some(p) = std::env::var_os("SLIMLLM_PYTHON") {
        let p = PathBuf::from(p);
        assert!(works(&p), "SLIMLLM_PYTHON={} cannot import torch and transformers", p.display());
        return Some(p);
    }
    let found = ["data/tools/venv-transformers/bin/python", ".venv-ref/bin/python"]
        .into_iter()
        .map(|rel| root().join(rel))
        .find(|p| works(p));
    assert!(
        found.is_some(),
        "no Python with torch and transformers: run tools/transformers/setup.sh (or set SLIMLLM_PYTHON)"
    );
    found
}

fn layer(num_heads: usize, kv_head_of: &[usize], ffn: usize, o_bias: bool, down_bias: bool) -> LayerShape {
    LayerShape {
        num_heads,
        num_kv_heads: kv_head_of.iter().max().map_or(0, |k| k + 1),
        kv_head_of: kv_head_of.to_vec(),
        intermediate_size: ffn,
        o_proj_bias: o_bias,
        down_proj_bias: down_bias,
    }
}

/// Layer 0 keeps the dense shape (the HF fields of the config come from it); the others are pruned.
fn pruned_spec(model_type: &'static str, seed: u64) -> SyntheticSpec {
    let layers = vec![
        layer(6, &[0, 0, 1, 1, 2, 2], 20, false, false),
        layer(5, &[0, 0, 0, 1, 2], 13, true, true),
        layer(4, &[0, 1, 1, 1], 9, false, true),
        layer(2, &[0, 0], 7, true, false),
    ];
    SyntheticSpec {
        model_type,
        hidden_size: 24,
        head_dim: 4,
        vocab_size: 37,
        layers,
        tied: model_type == "llama",
        seed,
    }
}

fn check(spec: &SyntheticSpec, python: &Path) {
    let (cfg, w) = spec.build();
    assert!(cfg.is_pruned());
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    save_model_dir(&model_dir, &cfg, &w, &model_dir).unwrap();

    let (batch, len) = (2, 11);
    let mut rng = SplitMix(spec.seed + 100);
    let ids: Vec<u32> = (0..batch * len).map(|_| rng.below(spec.vocab_size as u64) as u32).collect();
    let model = Llama::<Cpu>::from_weights(cfg.clone(), &w, &burn_flex::FlexDevice).unwrap();
    let logits = tensor_to_host(model.forward(model.ids_tensor(&ids, batch, len).unwrap())).unwrap();
    let v = spec.vocab_size;
    let rows: Vec<Vec<u32>> = ids.chunks(len).map(<[u32]>::to_vec).collect();
    let logits: Vec<Vec<Vec<f32>>> =
        logits.data.chunks(len * v).map(|b| b.chunks(v).map(<[f32]>::to_vec).collect()).collect();
    let expected = dir.path().join("expected.json");
    std::fs::write(&expected, serde_json::json!({"ids": rows, "logits": logits}).to_string()).unwrap();

    let out = Command::new(python)
        .arg(root().join("tools/transformers/check_logits.py"))
        .arg("--model")
        .arg(&model_dir)
        .arg("--expected")
        .arg(&expected)
        .env("HF_HUB_OFFLINE", "1")
        // transformers copies remote code into a modules cache, by default under ~/.cache.
        .env("HF_MODULES_CACHE", dir.path().join("hf-modules"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{} {}", spec.model_type, stdout.trim());
    if !out.status.success() {
        let kept = dir.keep();
        panic!(
            "{}: transformers disagrees with slimllm (model kept in {}):\n{stdout}\n{}",
            spec.model_type,
            kept.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(result["class"], "SlimLlmForCausalLM");
    assert_eq!(result["refused_without_trust_remote_code"], true);
    assert!(result["logits_rel_err"].as_f64().unwrap() <= 1e-4, "{result}");
}

#[test]
fn transformers_loads_pruned_llama_and_qwen2_with_slimllm_logits() {
    let Some(python) = python() else { return };
    check(&pruned_spec("llama", 5), &python);
    check(&pruned_spec("qwen2", 6), &python);
}
