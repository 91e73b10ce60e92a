//! The variant grid of `cargo xtask pipeline grid | compare-…` (`data/runs/<name>.json`,
//! `"kind": "slimllm-grid"`) as report tables, one per target, best perplexity first.

use serde_json::Value;
use std::fmt::Write as _;

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map_or_else(|| "–".into(), |x| format!("{x:.digits$}"))
}

/// A Markdown section with one table per target.
pub(crate) fn grid_section(grids: &[Value]) -> String {
    let mut md = String::new();
    for g in grids {
        let texts: Vec<String> = g["eval"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let zs = g["zeroshot_limit"].as_u64();
        let _ = writeln!(
            md,
            "\n## Variant grid ({}, {} calibration by default)\n",
            g["command"].as_str().unwrap_or("grid"),
            g["calib_mode"].as_str().unwrap_or("?")
        );
        let dense = &g["dense"];
        if !dense.is_null() {
            let ppl: Vec<String> = texts.iter().map(|t| format!("{t} {}", num(&dense["ppl"][t], 2))).collect();
            let windows = g["eval_windows"]
                .as_u64()
                .map_or_else(|| "all windows".to_string(), |n| format!("the first {n} windows"));
            let _ = writeln!(
                md,
                "Perplexity on {windows} of each text. Dense model: {} parameters, perplexity {}.",
                dense["params"],
                ppl.join(", ")
            );
        }
        let rows = g["rows"].as_array().cloned().unwrap_or_default();
        let mut targets: Vec<f64> = rows.iter().filter_map(|r| r["target"].as_f64()).collect();
        targets.dedup();
        for t in targets {
            let mut rs: Vec<&Value> = rows.iter().filter(|r| r["target"].as_f64() == Some(t)).collect();
            let first = texts.first().cloned().unwrap_or_default();
            rs.sort_by(|a, b| {
                a["ppl"][&first]
                    .as_f64()
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&b["ppl"][&first].as_f64().unwrap_or(f64::INFINITY))
            });
            let mut head = vec![
                "recipe".to_string(),
                "scorer".into(),
                "allocation".into(),
                "recovery".into(),
                "calibration".into(),
                "removed %".into(),
            ];
            head.extend(texts.iter().map(|t| format!("{t} PPL")));
            if let Some(n) = zs {
                head.push(format!("zero-shot avg (first {n})"));
            }
            let _ = writeln!(
                md,
                "\n### {:.0} % of the parameters removed\n\n| {} |\n|{}",
                100.0 * t,
                head.join(" | "),
                "---|".repeat(head.len())
            );
            for r in rs {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                let mut cells = vec![s("label"), s("scorer"), s("allocation"), s("recovery"), s("mode")];
                if let Some(e) = r["error"].as_str() {
                    cells.push(format!("failed: {}", e.lines().next().unwrap_or_default()));
                } else {
                    cells.push(format!("{:.2}", 100.0 * r["removed_fraction"].as_f64().unwrap_or(f64::NAN)));
                    cells.extend(texts.iter().map(|t| num(&r["ppl"][t], 2)));
                    if zs.is_some() {
                        cells.push(
                            r["zeroshot_average"].as_f64().map_or_else(|| "–".into(), |x| format!("{:.2}", 100.0 * x)),
                        );
                    }
                }
                let _ = writeln!(md, "| {} |", cells.join(" | "));
            }
        }
    }
    md
}
