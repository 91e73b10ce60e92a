//! Crash safety of `slimllm export`: killed with SIGKILL at random moments, it leaves either no
//! file under the `--out` name or the complete file (the kill came after the rename), never a
//! partial one; a rerun then writes the file, byte for byte the uninterrupted one. Half the kills
//! come once the temporary file holds a random fraction of the final size, half at a random time.
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

/// The size of the export's temporary file (`.model.gguf.tmp-…`) in `dir`, if one is there.
fn temp_size(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".model.gguf.tmp-"))
        .find_map(|e| e.metadata().ok().map(|m| m.len()))
}

/// How a round chooses its moment to kill.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// Once the temporary file holds this fraction of the final size: always mid-write (or mid-fsync).
    Written(f64),
    /// After this fraction of an uninterrupted export's time: anywhere, start-up and after the rename included.
    Timed(f64),
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
    let t = Instant::now();
    assert!(export(&model, &reference).status().unwrap().success());
    let full = t.elapsed();
    let want = std::fs::read(&reference).unwrap();

    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("model.gguf");
    let mut rng = SplitMix(13);
    // Kills timed from a measured export alone can all land after the rename on a machine whose speed changes
    // under load (CI saw 10 of 10); half the rounds therefore kill on observed progress.
    let (mut mid_write, mut before_rename) = (0, 0);
    for round in 0..10 {
        let moment = if round % 2 == 0 { Moment::Written(0.02 + 0.96 * rng.unit()) } else { Moment::Timed(rng.unit()) };
        let _ = std::fs::remove_file(&out);
        let mut child = export(&model, &out).spawn().unwrap();
        let started = Instant::now();
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            let due = match moment {
                Moment::Written(f) => temp_size(&out_dir).is_some_and(|n| n as f64 >= f * want.len() as f64),
                Moment::Timed(f) => started.elapsed() >= full.mul_f64(f),
            };
            if due {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        };
        let _ = child.kill();
        let _ = child.wait();
        if matches!(moment, Moment::Written(_)) && !finished {
            mid_write += 1;
        }
        match std::fs::read(&out) {
            Ok(bytes) => {
                assert!(
                    bytes == want,
                    "round {round} ({moment:?}): a file under the final name differs from the reference"
                )
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "round {round}");
                assert!(!finished, "round {round} ({moment:?}): the export finished but wrote nothing");
                before_rename += 1;
            }
        }
        assert!(export(&model, &out).status().unwrap().success(), "round {round}: the rerun failed");
        assert!(std::fs::read(&out).unwrap() == want, "round {round}: the rerun's file differs");
    }
    assert!(mid_write > 0, "no export was caught writing in 5 rounds (an uninterrupted one takes {full:?})");
    assert!(before_rename > 0, "no kill landed before the rename in 10 rounds");
    eprintln!(
        "{before_rename} of 10 kills landed before the rename ({mid_write} seen mid-write); \
         every rerun gave the reference"
    );
}
