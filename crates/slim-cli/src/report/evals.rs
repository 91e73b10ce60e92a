//! The report's zero-shot and generation sections, from `slimllm eval zeroshot --out` and
//! `slimllm generate --out` results.

use super::f;
use serde_json::Value;
use slim_data::zeroshot::{PaperMetric, Task};
use std::fmt::Write as _;
use std::path::Path;

/// A short name for a model directory: the run name for `…/runs/<run>/model`, else the folder name.
pub(super) fn model_name(path: &str) -> String {
    let p = Path::new(path);
    let last = p.file_name().map_or(path.to_string(), |n| n.to_string_lossy().into_owned());
    match p.parent().and_then(Path::file_name) {
        Some(run) if last == "model" => run.to_string_lossy().into_owned(),
        _ => last,
    }
}

/// Adds one `slimllm eval zeroshot` result to `results`, merged into an earlier result of the same model and
/// `--limit` (tasks evaluated one invocation at a time make one row): the union of their tasks, seconds and tokens
/// summed, and the seven-task average computed once all seven are there. A task present in both is an error.
pub(super) fn add_zeroshot(results: &mut Vec<Value>, v: Value) -> anyhow::Result<()> {
    let key = |r: &Value| (r["config"]["model"].clone(), r["config"]["limit"].clone());
    let Some(into) = results.iter_mut().find(|r| key(r) == key(&v)) else {
        results.push(v);
        return Ok(());
    };
    anyhow::ensure!(
        into["config"]["params"] == v["config"]["params"],
        "{}: {} parameters here, {} in an earlier result of the same model",
        v["config"]["model"],
        v["config"]["params"],
        into["config"]["params"]
    );
    for (section, obj) in [("results", &v["results"]), ("n_samples", &v["n_samples"])] {
        for (task, val) in obj.as_object().into_iter().flatten() {
            anyhow::ensure!(
                into[section].get(task).is_none(),
                "{}: task {task} is in two results of this model (limit {})",
                v["config"]["model"],
                v["config"]["limit"]
            );
            into[section][task] = val.clone();
        }
    }
    for k in ["seconds", "tokens"] {
        if let (Some(a), Some(b)) = (into["config"][k].as_f64(), v["config"][k].as_f64()) {
            into["config"][k] = (a + b).into();
        }
    }
    into["average"] = crate::zeroshot::paper_average(&into["results"]);
    Ok(())
}

/// `(label, parameters in millions, seven-task average in %, is the dense model)` of each result
/// that holds all seven tasks; the label names the documents scored ("full sets" or "first N"),
/// since one model is often evaluated on both.
pub(super) fn accuracy_points(results: &[Value]) -> Vec<(String, f64, f64, bool)> {
    let dense_params = results.iter().filter_map(|r| r["config"]["params"].as_f64()).fold(0.0, f64::max);
    results
        .iter()
        .filter_map(|r| {
            let avg = r["average"]["value"].as_f64()?;
            let params = r["config"]["params"].as_f64()?;
            let name = model_name(r["config"]["model"].as_str().unwrap_or("?"));
            let docs = match r["config"]["limit"].as_u64() {
                Some(l) => format!("first {l}"),
                None => "full sets".into(),
            };
            Some((format!("{name} ({docs})"), params / 1e6, 100.0 * avg, params == dense_params))
        })
        .collect()
}

/// One row per result: the metric the paper reports for each task (%), the average, LAMBADA.
/// Full-set rows come first, then by `--limit`; within each, larger models first.
pub(super) fn zeroshot_section(results: &[Value]) -> String {
    let mut results: Vec<&Value> = results.iter().collect();
    results.sort_by(|a, b| {
        let key = |r: &Value| {
            let limit = r["config"]["limit"].as_u64();
            (limit.is_some(), limit, -f(&r["config"]["params"]))
        };
        key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut md = String::from(
        "\n## Zero-shot accuracy (%, lm-eval 0.3 semantics; acc_norm where marked *)\n\n| model | parameters | ",
    );
    for t in Task::PAPER {
        let star = if t.paper_metric() == Some(PaperMetric::AccNorm) { "*" } else { "" };
        let _ = write!(md, "{t}{star} | ");
    }
    md += "average | LAMBADA acc | LAMBADA ppl | documents per task |\n|---|---|";
    md += &"---|".repeat(Task::PAPER.len() + 4);
    md += "\n";
    for r in results {
        let res = &r["results"];
        let cell = |t: Task| {
            let key = t.paper_metric().map_or("acc", PaperMetric::key);
            res[t.name()][key].as_f64().map_or("-".into(), |v| {
                let se = res[t.name()][format!("{key}_stderr")].as_f64().unwrap_or(f64::NAN);
                format!("{:.2} ± {:.2}", 100.0 * v, 100.0 * se)
            })
        };
        let cells: Vec<String> = Task::PAPER.iter().map(|&t| cell(t)).collect();
        let avg = r["average"]["value"].as_f64().map_or("-".into(), |v| format!("**{:.2}**", 100.0 * v));
        let lam = &res["lambada"];
        let lam_acc = lam["acc"].as_f64().map_or("-".into(), |v| format!("{:.2}", 100.0 * v));
        let lam_ppl = lam["ppl"].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
        let mut ns: Vec<u64> =
            r["n_samples"].as_object().into_iter().flatten().filter_map(|(_, n)| n.as_u64()).collect();
        ns.dedup();
        let docs = match r["config"]["limit"].as_u64() {
            Some(l) => format!("first {l}"),
            None => "all".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {:.2} M | {} | {avg} | {lam_acc} | {lam_ppl} | {docs} |",
            model_name(r["config"]["model"].as_str().unwrap_or("?")),
            f(&r["config"]["params"]) / 1e6,
            cells.join(" | ")
        );
    }
    md
}

/// Each model's completions of its prompts.
pub(super) fn generations_section(results: &[Value]) -> String {
    let mut md = String::from("\n## Generations\n");
    for r in results {
        let c = &r["config"];
        let how = if c["temperature"].as_f64() == Some(0.0) {
            "greedy".to_string()
        } else {
            format!("T = {}, top-p = {}, seed {}", c["temperature"], c["top_p"], c["seed"])
        };
        let _ = writeln!(
            md,
            "\n### {} ({:.2} M parameters; {how}, at most {} new tokens{})\n",
            model_name(r["model"].as_str().unwrap_or("?")),
            f(&r["params"]) / 1e6,
            c["max_new"],
            if c["chat"].as_bool() == Some(true) { ", chat template" } else { "" }
        );
        for g in r["generations"].as_array().into_iter().flatten() {
            let quote = |s: &str| s.replace('\n', "⏎").replace('|', "\\|");
            let _ = writeln!(
                md,
                "- **{}** → {}",
                quote(g["prompt"].as_str().unwrap_or("")),
                quote(g["completion"].as_str().unwrap_or(""))
            );
        }
    }
    md
}
