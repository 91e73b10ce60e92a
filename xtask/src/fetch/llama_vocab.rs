//! llama.cpp's tokenizer test vocabularies, from the PyPI sdist `llama-cpp-python==0.3.36` (it vendors llama.cpp).
//!
//! We keep `vendor/llama.cpp/models/ggml-vocab-{gpt-2,qwen2}.gguf` with their `.gguf.inp` / `.gguf.out` pairs
//! (input texts and the token ids llama.cpp produces) in `data/downloads/llama-vocab/`.
//!
//! Getting the sdist with pip: `pip download` of an sdist always prepares its metadata, and with build isolation that
//! means installing the build backend's requirements (scikit-build-core asks for cmake and ninja, which pip may try to
//! build from source: many minutes). Instead we make a throwaway venv holding `scikit-build-core` and the `cmake`
//! wheel,
//! and run its pip with `--no-build-isolation`: metadata preparation then takes seconds.

use std::process::Command;

use super::{rel, Ctx};
use crate::util::{self, HashKind, Marker};

const PIP: &str = "llama-cpp-python==0.3.36";
const SDIST: &str = "llama_cpp_python-0.3.36.tar.gz";
/// Computed once from the sdist downloaded from PyPI (2025-11), 76,589,250 bytes.
const SDIST_SHA256: &str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";
const MODELS_DIR: &str = "llama_cpp_python-0.3.36/vendor/llama.cpp/models";
const VOCABS: [&str; 2] = ["ggml-vocab-gpt-2.gguf", "ggml-vocab-qwen2.gguf"];

/// Fetches the vocab files into `data/downloads/llama-vocab/`.
pub fn fetch(ctx: &Ctx) -> anyhow::Result<()> {
    let out = ctx.root.join("data/downloads/llama-vocab");
    let marker_text = format!("sha256 {SDIST_SHA256}  {SDIST}");
    let members: Vec<String> =
        VOCABS.iter().flat_map(|v| ["", ".inp", ".out"].map(|ext| format!("{v}{ext}"))).collect();
    if !ctx.force && Marker::new(&out, marker_text.clone()).is_done() && members.iter().all(|m| out.join(m).is_file()) {
        eprintln!("{}: up to date", rel(ctx, &out));
        return Ok(());
    }
    let downloads = ctx.root.join("data/downloads");
    util::mkdir(&downloads)?;
    let scratch = util::scratch_dir(&downloads, "llama-vocab")?;
    let venv = scratch.join("venv");
    util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv), &ctx.root)?;
    let pip = venv.join("bin/pip");
    util::run(Command::new(&pip).args(["install", "--quiet", "scikit-build-core", "cmake"]), &ctx.root)?;
    let sdist_dir = scratch.join("sdist");
    util::run(
        Command::new(&pip)
            .args(["download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:", "-d"])
            .arg(&sdist_dir)
            .arg(PIP),
        &ctx.root,
    )?;
    let sdist = sdist_dir.join(SDIST);
    util::verify(&sdist, HashKind::Sha256, SDIST_SHA256)?;
    let extract = scratch.join("extract");
    util::mkdir(&extract)?;
    let mut tar = Command::new("tar");
    tar.arg("xzf").arg(&sdist).arg("-C").arg(&extract);
    tar.args(members.iter().map(|m| format!("{MODELS_DIR}/{m}")));
    util::run(&mut tar, &ctx.root)?;
    let result = scratch.join("out");
    util::rename(&extract.join(MODELS_DIR), &result)?;
    for m in &members {
        anyhow::ensure!(result.join(m).is_file(), "{m} missing from {SDIST}");
    }
    Marker::new(&result, marker_text).write()?;
    util::replace_dir(&result, &out)?;
    util::remove(&scratch)?;
    eprintln!("wrote {}/{{{}}}", rel(ctx, &out), members.join(","));
    Ok(())
}
