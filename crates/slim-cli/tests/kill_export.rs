//! Crash safety of `slimllm export`: killed with SIGKILL at random moments while it writes, it
//! leaves either no file under the `--out` name or the complete file (the kill came after the
//! rename), never a partial one; a rerun then writes the file, byte for byte the uninterrupted one.
//! The model is a seeded synthetic one big enough (44 M parameters, 176 MB in f32) for the
//! writes to take a while, with SmolLM2's tokenizer (`cargo xtask fetch smollm2-135m`).

#![cfg(unix)]

use slim_checkpoint::synthetic::{SplitMix, SyntheticSpec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn smollm2() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/models/smollm2-135m");
    assert!(p.join("tokenizer.json").is_file(), "{} is missing: run `cargo xtask fetch smollm2-135m`", p.display());
    p
}

fn export(model: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slimllm"));
    c.args(["--quiet", "export", "--model"]).arg(model).arg("--out").arg(out).args(["--type", "f32", "--force"]);
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    c
}

#[test]
fn a_killed_export_leaves_nothing_or_the_whole_file_under_the_final_name() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let (cfg, w) = SyntheticSpec::dense("llama", 6, 512, 8, 4, 64, 1400, 49152, 5).build();
    slim_checkpoint::save_model_dir(&model, &cfg, &w, &model).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(smollm2().join(f), model.join(f)).unwrap();
    }
    let reference = tmp.path().join("reference.gguf");
    // The shorter of two exports: the first reads the model cold, and kills timed from it could all land after a
    // warm export has finished.
    let mut full = std::time::Duration::MAX;
    for _ in 0..2 {
        let t = Instant::now();
        assert!(export(&model, &reference).status().unwrap().success());
        full = full.min(t.elapsed());
    }
    let want = std::fs::read(&reference).unwrap();

    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("model.gguf");
    let mut rng = SplitMix(13);
    let mut partial_kills = 0;
    for round in 0..10 {
        let _ = std::fs::remove_file(&out);
        let mut child = export(&model, &out).spawn().unwrap();
        std::thread::sleep(full.mul_f64(0.02 + 0.8 * rng.unit()));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        match std::fs::read(&out) {
            Ok(bytes) => {
                assert!(bytes == want, "round {round}: a file under the final name differs from the reference")
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "round {round}");
                assert!(!finished, "round {round}: the export finished but wrote nothing");
                partial_kills += 1;
            }
        }
        assert!(export(&model, &out).status().unwrap().success(), "round {round}: the rerun failed");
        assert!(std::fs::read(&out).unwrap() == want, "round {round}: the rerun's file differs");
    }
    assert!(partial_kills > 0, "no kill landed before the rename in 10 rounds of a {full:?} export");
    eprintln!("{partial_kills} of 10 kills landed before the rename; every rerun gave the reference file");
}
