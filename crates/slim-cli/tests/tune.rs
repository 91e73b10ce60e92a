//! `slimllm tune` through the binary, on a tiny synthetic model and a made-up Brown corpus:
//! bad options are refused by name before anything is written; a run killed with SIGKILL
//! resumes from its last checkpoint and ends with the uninterrupted run's adapter, bit for bit;
//! a loss that stops being finite stops the run with a clear message, keeping the checkpoint.

#![cfg(unix)]

use slim_checkpoint::synthetic::SplitMix;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The pipeline's worded synthetic model (5 GQA layers, a word-level tokenizer of `t0` … `t70`)
/// and a data root whose `datasets/brown` holds two non-fiction files and one fiction file of those
/// words.
fn fixtures(root: &Path) -> (PathBuf, PathBuf) {
    let m = root.join("model");
    slim_pipeline::fixtures::worded_model(&m);
    let data = root.join("data");
    let brown = data.join("datasets/brown");
    std::fs::create_dir_all(&brown).unwrap();
    std::fs::write(brown.join("cats.tsv"), "ca01\tnews\ncj01\tlearned\ncn01\tadventure\n").unwrap();
    let mut rng = SplitMix(5);
    for id in ["ca01", "cj01", "cn01"] {
        // Sentences of a learnable pattern with some noise.
        let lines: Vec<String> = (0..60)
            .map(|_| {
                (0..10)
                    .map(|i| format!("t{}", [3, 9, 14, 20, 27][i % 5] + rng.below(3) as usize))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        std::fs::write(brown.join(format!("{id}.txt")), lines.join("\n")).unwrap();
    }
    (m, data)
}

fn tune(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slimllm"));
    c.args(["--quiet", "--data-root"]).arg(data);
    c.args(["tune", "--model"]).arg(model).arg("--out").arg(out);
    c.args(["--batch", "2", "--micro-batch", "1", "--val-size", "4", "--val-every", "3"]);
    // Defaults of these tests, unless `extra` sets them.
    for (flag, value) in [("--seq-len", "16"), ("--warmup", "2"), ("--lr", "1e-2"), ("--rank", "2")] {
        if !extra.iter().any(|a| a.split('=').next() == Some(flag)) {
            c.args([flag, value]);
        }
    }
    c.args(extra);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_options_are_refused_by_name_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, data) = fixtures(tmp.path());
    let out = tmp.path().join("out");
    let empty = tmp.path().join("no-weights");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(m.join("config.json"), empty.join("config.json")).unwrap();
    let cases: Vec<(Command, &str)> = vec![
        (tune(&m, &data, &out, &["--rank=0"]), "--rank"),
        (tune(&m, &data, &out, &["--lr=-1e-4"]), "--lr"),
        (tune(&m, &data, &out, &["--micro-batch", "3", "--batch", "4"]), "--micro-batch"),
        (tune(&m, &data, &out, &["--lora-dropout", "1.5"]), "--lora-dropout"),
        (tune(&m, &data, &out, &["--targets", "q_proj,attn"]), "`attn` is not a projection"),
        (tune(&m, &tmp.path().join("nodata"), &out, &[]), "brown"),
        (tune(&empty, &data, &out, &[]), "model.safetensors"),
    ];
    for (mut cmd, needle) in cases {
        let o = cmd.output().unwrap();
        let e = stderr(&o);
        assert!(!o.status.success(), "{needle}: succeeded");
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(!out.exists(), "{needle}: something was written at --out");
    }
}

/// The run's adapter file and its per-step losses.
fn result(out: &Path) -> (Vec<u8>, Vec<f64>) {
    let adapter = std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap();
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("tune.json")).unwrap()).unwrap();
    let losses = log["steps"].as_array().unwrap().iter().map(|s| s["loss"].as_f64().unwrap()).collect();
    (adapter, losses)
}

#[test]
fn a_killed_run_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, data) = fixtures(tmp.path());
    let args = ["--steps", "8", "--checkpoint-every", "1", "--lora-dropout", "0.1"];
    let full = tmp.path().join("full");
    let o = tune(&m, &data, &full, &args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (want_adapter, want_losses) = result(&full);
    assert_eq!(want_losses.len(), 8);
    assert!(!tmp.path().join("full.checkpoint").exists(), "the checkpoint is removed once the run is done");
    // The merged model loads like any other and differs from the base model.
    let merged = slim_checkpoint::Weights::load(&full).unwrap();
    let base = slim_checkpoint::Weights::load(&m).unwrap();
    let name = "model.layers.1.mlp.down_proj.weight";
    assert_ne!(merged.get(name).unwrap(), base.get(name).unwrap());
    assert_eq!(merged.get("model.norm.weight").unwrap(), base.get("model.norm.weight").unwrap());

    // Killed once a checkpoint after step 3 is on disk, then the same command again.
    let out = tmp.path().join("killed");
    let state = tmp.path().join("killed.checkpoint/state.json");
    let mut child = tune(&m, &data, &out, &args).spawn().unwrap();
    let t0 = Instant::now();
    let step = loop {
        let s = std::fs::read_to_string(&state).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if let Some(n) = s.and_then(|v| v["state"]["step"].as_u64()).filter(|&n| n >= 3) {
            break n;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint after step 3 within 2 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!out.exists(), "a killed run leaves nothing at --out");
    let o = tune(&m, &data, &out, &args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming") || step == 8, "{}", stderr(&o));
    let (got_adapter, got_losses) = result(&out);
    assert_eq!(got_losses, want_losses);
    assert_eq!(got_adapter, want_adapter, "resumed after step {step}: the adapter differs");
}

#[test]
fn a_loss_that_is_not_finite_stops_the_run_and_keeps_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, data) = fixtures(tmp.path());
    let out = tmp.path().join("out");
    let o = tune(&m, &data, &out, &["--steps", "6", "--checkpoint-every", "1", "--warmup", "0", "--lr", "1e30"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success(), "a learning rate of 1e30 trained without trouble");
    assert!(e.contains("is not finite") || e.contains("training loss is") || e.contains("gradient norm is"), "{e}");
    assert!(!out.exists());
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("out.checkpoint/state.json")).unwrap()).unwrap();
    let kept = state["state"]["step"].as_u64().unwrap();
    assert!(kept >= 1, "the last good checkpoint is kept (after step {kept})");
    assert!(state["state"]["steps"].as_array().unwrap().iter().all(|s| s["loss"].as_f64().unwrap().is_finite()));
}

/// `--data alpaca-demo`: instructions in LLM-Pruner's template, prompts not scored, sequences of
/// several lengths right-padded; the dumped batches show the masking.
#[test]
fn instruction_data_masks_the_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, data) = fixtures(tmp.path());
    let dir = data.join("datasets/alpaca-demo");
    std::fs::create_dir_all(&dir).unwrap();
    let records: Vec<serde_json::Value> = (0..24)
        .map(|i| {
            let words = |n: usize, k: usize| {
                (0..n).map(|j| format!("t{}", 1 + (i * 7 + j * k) % 60)).collect::<Vec<_>>().join(" ")
            };
            let input = if i % 3 == 0 { String::new() } else { words(2, 3) };
            serde_json::json!({"instruction": words(3 + i % 4, 5), "input": input, "output": words(2 + i % 5, 11)})
        })
        .collect();
    std::fs::write(dir.join("alpaca_en_demo.json"), serde_json::to_string(&records).unwrap()).unwrap();
    let out = tmp.path().join("out");
    let dump = tmp.path().join("batches.safetensors");
    let mut cmd = tune(&m, &data, &out, &["--data", "alpaca-demo", "--steps", "3", "--seq-len", "64"]);
    cmd.arg("--dump-batches").arg(&dump);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, losses) = result(&out);
    assert!(losses.len() == 3 && losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let bytes = std::fs::read(&dump).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let labels: Vec<i64> =
        st.tensor("labels").unwrap().data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let len = st.tensor("labels").unwrap().shape()[1];
    for row in labels.chunks(len) {
        // Every row: masked prompt first, then scored response tokens, then unscored padding.
        let first = row.iter().position(|&l| l != -100).expect("a scored token");
        assert!(first >= 5, "the template's words are masked: {row:?}");
        let last = row.iter().rposition(|&l| l != -100).unwrap();
        assert!(row[first..=last].iter().all(|&l| l != -100), "{row:?}");
    }
    assert!(labels.chunks(len).any(|r| r[len - 1] == -100), "some rows are padded");
}
