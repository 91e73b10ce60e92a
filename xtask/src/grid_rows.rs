//! The rows of the variant comparisons ([`crate::compare`]) and their table.

use crate::summary::RunSummary;
use serde_json::{json, Value};

/// One pruning recipe.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What the row stands for in the table.
    pub label: String,
    pub scorer: String,
    pub allocation: String,
    pub recovery: String,
    /// Calibration mode.
    pub mode: String,
    /// The `lstsq` ridge strength ε, when not slimllm's default.
    pub ridge: Option<f64>,
}

impl Row {
    fn new(label: &str, scorer: &str, allocation: &str, recovery: &str, mode: &str) -> Self {
        Row {
            label: label.into(),
            scorer: scorer.into(),
            allocation: allocation.into(),
            recovery: recovery.into(),
            mode: mode.into(),
            ridge: None,
        }
    }

    /// The run directory name under data/runs.
    pub fn run_name(&self, target: f64, gqa: &str) -> String {
        let ridge = self.ridge.map_or_else(String::new, |e| format!("-ridge{e}"));
        format!(
            "cmp-{}-{}-{}{ridge}-{}-{}-{}pct",
            self.scorer,
            self.allocation,
            self.recovery,
            gqa,
            self.mode,
            (target * 100.0).round()
        )
    }

    /// The recovery as the table shows it (with ε for a chosen lstsq ridge).
    pub fn recovery_label(&self) -> String {
        match self.ridge {
            Some(e) => format!("{} (ε = {e})", self.recovery),
            None => self.recovery.clone(),
        }
    }
}

/// Every `lstsq` row once per ridge strength in `ridges` (none: the rows as they are).
pub fn with_ridges(rows: Vec<Row>, ridges: &[f64]) -> Vec<Row> {
    rows.into_iter()
        .flat_map(|r| {
            if r.recovery == "lstsq" && !ridges.is_empty() {
                ridges.iter().map(|&e| Row { ridge: Some(e), ..r.clone() }).collect()
            } else {
                vec![r]
            }
        })
        .collect()
}

/// The cross product of the given lists (an empty list is the paper's choice).
pub fn cross(scorers: &[String], allocations: &[String], recoveries: &[String], mode: &str) -> Vec<Row> {
    let or = |v: &[String], d: &str| if v.is_empty() { vec![d.to_string()] } else { v.to_vec() };
    let mut rows = Vec::new();
    for s in or(scorers, "slimllm") {
        for a in or(allocations, "cosine") {
            for r in or(recoveries, "affine") {
                rows.push(Row::new("", &s, &a, &r, mode));
            }
        }
    }
    rows
}

/// The grid of docs/variants.md, in `mode` (the two paper rows always run sequential).
pub fn grid(mode: &str) -> Vec<Row> {
    let m = mode;
    vec![
        Row::new("SlimLLM (paper's choices)", "slimllm", "cosine", "affine", m),
        Row::new("scorer: magnitude", "magnitude", "cosine", "affine", m),
        Row::new("scorer: wanda-sp", "wanda-sp", "cosine", "affine", m),
        Row::new("scorer: flap", "flap", "cosine", "affine", m),
        Row::new("scorer: taylor", "taylor", "cosine", "affine", m),
        Row::new("scorer: random", "random", "cosine", "affine", m),
        Row::new("allocation: uniform", "slimllm", "uniform", "affine", m),
        Row::new("allocation: flap-global", "slimllm", "flap-global", "affine", m),
        Row::new("recovery: none", "slimllm", "cosine", "none", m),
        Row::new("recovery: flap-bias", "slimllm", "cosine", "flap-bias", m),
        Row::new("recovery: lstsq", "slimllm", "cosine", "lstsq", m),
        Row::new("FLAP's recipe", "flap", "flap-global", "flap-bias", m),
        Row::new("LLM-Pruner's recipe (no LoRA)", "taylor", "uniform", "none", m),
        Row::new("Wanda-sp's recipe", "wanda-sp", "uniform", "none", m),
        Row::new("flap + flap-global + lstsq", "flap", "flap-global", "lstsq", m),
        Row::new("slimllm + flap-global + lstsq", "slimllm", "flap-global", "lstsq", m),
        Row::new("SlimLLM, paper recipe (sequential)", "slimllm", "cosine", "affine", "sequential"),
        Row::new("SlimLLM + lstsq (sequential)", "slimllm", "cosine", "lstsq", "sequential"),
    ]
}

/// One result of the table: the row, the summary's figures and the zero-shot average.
pub fn result(target: f64, row: &Row, s: &RunSummary, texts: &[&str], zs: Option<&Value>) -> Value {
    let (_, capture_ran, capture_reused) = s.stage("capture");
    let ppl: serde_json::Map<String, Value> = texts.iter().map(|t| (t.to_string(), s.ppl_of(t, true).into())).collect();
    json!({
        "target": target, "label": row.label, "scorer": row.scorer, "allocation": row.allocation,
        "recovery": row.recovery_label(), "mode": row.mode, "lstsq_ridge": row.ridge, "run": s.run,
        "params_after": s.params_after, "removed_fraction": s.removed_fraction, "ppl": ppl,
        "pruning_seconds": s.pruning_seconds, "capture_ran": capture_ran, "capture_reused": capture_reused,
        "zeroshot_average": zs.map_or(Value::Null, |z| z["average"]["value"].clone()),
        "zeroshot": zs.map_or(Value::Null, |z| z["results"].clone()),
    })
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map_or_else(|| "–".into(), |x| format!("{x:.digits$}"))
}

/// The Markdown table of `results`, with the dense model's line below it.
pub fn table(results: &[Value], texts: &[&str], zeroshot: bool, dense: &Value) -> String {
    let mut header: Vec<String> =
        ["target", "recipe", "scorer", "allocation", "recovery", "calibration", "params after", "removed %"]
            .map(String::from)
            .to_vec();
    header.extend(texts.iter().map(|t| format!("{t} PPL")));
    if zeroshot {
        header.push("zero-shot avg".into());
    }
    header.extend(["pruning s", "capture ran", "capture reused"].map(String::from));
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for r in results {
        if let Some(e) = r["error"].as_str() {
            out += &format!(
                "| {:.0} % | {} | {} | {} | {} | {} | failed: {} |\n",
                r["target"].as_f64().unwrap_or(f64::NAN) * 100.0,
                r["label"].as_str().unwrap_or_default(),
                r["scorer"].as_str().unwrap_or_default(),
                r["allocation"].as_str().unwrap_or_default(),
                r["recovery"].as_str().unwrap_or_default(),
                r["mode"].as_str().unwrap_or_default(),
                e.lines().next().unwrap_or_default()
            );
            continue;
        }
        let mut cells = vec![
            format!("{:.0} %", r["target"].as_f64().unwrap_or(f64::NAN) * 100.0),
            r["label"].as_str().unwrap_or_default().to_string(),
            r["scorer"].as_str().unwrap_or_default().to_string(),
            r["allocation"].as_str().unwrap_or_default().to_string(),
            r["recovery"].as_str().unwrap_or_default().to_string(),
            r["mode"].as_str().unwrap_or_default().to_string(),
            r["params_after"].to_string(),
            format!("{:.3}", 100.0 * r["removed_fraction"].as_f64().unwrap_or(f64::NAN)),
        ];
        cells.extend(texts.iter().map(|t| num(&r["ppl"][*t], 2)));
        if zeroshot {
            cells.push(r["zeroshot_average"].as_f64().map_or_else(|| "–".into(), |x| format!("{:.2}", 100.0 * x)));
        }
        cells.push(num(&r["pruning_seconds"], 1));
        cells.push(r["capture_ran"].to_string());
        cells.push(r["capture_reused"].to_string());
        out += &format!("| {} |\n", cells.join(" | "));
    }
    if !dense.is_null() {
        let ppl: Vec<String> = texts.iter().map(|t| format!("{t} {}", num(&dense["ppl"][*t], 2))).collect();
        out += &format!("\ndense model: {} parameters, {}", dense["params"], ppl.join(", "));
        if let Some(z) = dense["zeroshot_average"].as_f64() {
            out += &format!(", zero-shot average {:.2}", 100.0 * z);
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_defaults_to_the_paper_and_names_runs_uniquely() {
        let rows = cross(&["slimllm".into(), "taylor".into()], &[], &["affine".into(), "lstsq".into()], "dense");
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.allocation == "cosine" && r.mode == "dense"));
        let names: std::collections::BTreeSet<String> =
            grid("dense").iter().flat_map(|r| [0.2, 0.5].map(|t| r.run_name(t, "whole-group"))).collect();
        assert_eq!(names.len(), 2 * grid("dense").len(), "every grid run has its own directory");
        assert_eq!(rows[3].run_name(0.5, "whole-group"), "cmp-taylor-cosine-lstsq-whole-group-dense-50pct");
        let swept = with_ridges(rows, &[0.1, 10.0]);
        assert_eq!(swept.len(), 6, "each lstsq row once per ridge");
        assert_eq!(swept[4].run_name(0.2, "whole-group"), "cmp-taylor-cosine-lstsq-ridge0.1-whole-group-dense-20pct");
        assert_eq!(swept[5].recovery_label(), "lstsq (ε = 10)");
    }

    #[test]
    fn the_table_reads_the_summary_fields() {
        let s: RunSummary = serde_json::from_value(json!({"run": "r", "model": "m", "params_before": 134515008u64,
            "params_after": 107611776u64, "removed_fraction": 0.2, "pruning_seconds": 12.5,
            "ppl": {"ptb-valid": {"after": {"ppl": 196.234}, "before": {"ppl": 99.0}}},
            "stages": [{"name": "capture", "seconds": 3.0, "ran": 0, "reused": 53}],
            "pruned_model": "data/runs/r/model", "cache_entry": "0123456789abcdef0123456789abcdef"}))
        .unwrap();
        let row = Row::new("x", "magnitude", "cosine", "affine", "dense");
        let zs = json!({"average": {"value": 0.4123}, "results": {}});
        let r = result(0.2, &row, &s, &["ptb-valid"], Some(&zs));
        let t = table(
            &[r],
            &["ptb-valid"],
            true,
            &json!({"params": 134515008u64, "ppl": {"ptb-valid": 99.0}, "zeroshot_average": 0.45}),
        );
        let row =
            "| 20 % | x | magnitude | cosine | affine | dense | 107611776 | 20.000 | 196.23 | 41.23 | 12.5 | 0 | 53 |";
        assert!(t.contains(row), "{t}");
        assert!(t.contains("dense model: 134515008 parameters, ptb-valid 99.00, zero-shot average 45.00"), "{t}");
    }
}
