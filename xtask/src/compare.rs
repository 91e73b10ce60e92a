//! `cargo xtask pipeline compare-scorers --scorer slimllm --scorer magnitude [...]`: the
//! same pruning with each scorer, side by side, from one cached capture.
//!
//! Dense calibration is the default: every layer's statistics come from the unpruned model,
//! so the first scorer's run captures and every later one reuses the capture (the table's
//! `capture ran` column shows it). `--calib-mode sequential` compares the paper's recipe
//! instead, where only the capture below the first differing decision is shared.

use std::path::Path;

use anyhow::{format_err, Context};
use clap::Parser;
use serde_json::Value;

use crate::{pipeline::slimllm, util};

/// Options of `compare-scorers`.
#[derive(Parser, Debug)]
#[command(
    name = "compare-scorers",
    about = "Prune with each scorer from one cached capture and print a side-by-side table"
)]
pub struct CompareArgs {
    /// A scorer to compare (repeat the flag): `slimllm`, `magnitude`, `wanda-sp`, `flap`, `random`.
    #[arg(long = "scorer", required = true)]
    scorers: Vec<String>,
    /// Fractions of total parameters to remove (repeat the flag).
    #[arg(long = "target", default_values_t = [0.2])]
    targets: Vec<f64>,
    /// Output-projection recovery for every run.
    #[arg(long, default_value = "affine")]
    recovery: String,
    /// GQA unit for every run.
    #[arg(long, default_value = "whole-group")]
    gqa: String,
    /// Calibration mode: `dense` (one capture for all) or `sequential` (the paper).
    #[arg(long, default_value = "dense")]
    calib_mode: String,
    /// Perplexity texts (comma-separated).
    #[arg(long, default_value = "ptb-valid")]
    eval: String,
    /// Evaluate only the first N windows, for quick grids.
    #[arg(long)]
    eval_windows: Option<usize>,
    /// Cache root passed to `slimllm` (default: its own default).
    #[arg(long)]
    cache: Option<String>,
}

/// Runs the comparison; `argv` are the arguments after `compare-scorers`.
pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let a = CompareArgs::try_parse_from(
        std::iter::once("compare-scorers".to_string()).chain(argv.iter().cloned()),
    )
    .map_err(|e| format_err!("{e}"))?;
    let root = util::repo_root();
    let texts: Vec<&str> = a.eval.split(',').collect();
    let mut rows = Vec::new();
    for &target in &a.targets {
        for scorer in &a.scorers {
            let run = format!(
                "compare-{}-{}pct-{}-{}-{}",
                scorer,
                (target * 100.0).round(),
                a.recovery,
                a.gqa,
                a.calib_mode
            );
            let mut cmd = slimllm();
            cmd.args([
                "--quiet",
                "pipeline",
                "run",
                "--target",
                &target.to_string(),
                "--scorer",
                scorer,
            ]);
            cmd.args([
                "--recovery",
                &a.recovery,
                "--gqa",
                &a.gqa,
                "--calib-mode",
                &a.calib_mode,
                "--eval",
                &a.eval,
                "--run",
                &run,
            ]);
            if let Some(n) = a.eval_windows {
                cmd.args(["--eval-windows", &n.to_string()]);
            }
            if let Some(c) = &a.cache {
                cmd.args(["--cache", c]);
            }
            util::run(&mut cmd, &root)?;
            let summary = read_summary(&root.join("data/runs").join(&run).join("summary.json"))?;
            rows.push(row(target, scorer, &summary, &texts));
        }
    }
    let mut header = vec!["target", "scorer", "params after", "removed %"];
    let ppl_heads: Vec<String> = texts.iter().map(|t| format!("{t} PPL")).collect();
    header.extend(ppl_heads.iter().map(String::as_str));
    header.extend(["pruning s", "capture ran", "capture reused"]);
    let mut table = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for r in &rows {
        table += &format!("| {} |\n", r.join(" | "));
    }
    let dense: Vec<String> = texts
        .iter()
        .map(|t| format!("{t} {}", rows_dense(&root, &a, t)))
        .collect();
    println!("{table}\ndense model: {}", dense.join(", "));
    let out = root
        .join("data/runs")
        .join(format!("compare-scorers-{}.md", a.calib_mode));
    util::write_atomic(
        &out,
        format!("{table}\ndense model: {}\n", dense.join(", ")).as_bytes(),
    )?;
    println!("written to {}", out.display());
    Ok(())
}

fn read_summary(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn row(target: f64, scorer: &str, s: &Value, texts: &[&str]) -> Vec<String> {
    let stage = |name: &str, field: &str| {
        s["stages"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == name))
            .map_or(0, |x| x[field].as_u64().unwrap_or(0))
    };
    let mut r = vec![
        format!("{:.0} %", target * 100.0),
        scorer.to_string(),
        s["params_after"].to_string(),
        format!(
            "{:.3}",
            100.0 * s["removed_fraction"].as_f64().unwrap_or(f64::NAN)
        ),
    ];
    for t in texts {
        r.push(format!(
            "{:.2}",
            s["ppl"][*t]["after"]["ppl"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    r.push(format!(
        "{:.1}",
        s["pruning_seconds"].as_f64().unwrap_or(f64::NAN)
    ));
    r.push(stage("capture", "ran").to_string());
    r.push(stage("capture", "reused").to_string());
    r
}

/// The dense model's perplexity on `text`, from the first comparison run's summary.
fn rows_dense(root: &Path, a: &CompareArgs, text: &str) -> String {
    let run = format!(
        "compare-{}-{}pct-{}-{}-{}",
        a.scorers[0],
        (a.targets[0] * 100.0).round(),
        a.recovery,
        a.gqa,
        a.calib_mode
    );
    read_summary(&root.join("data/runs").join(run).join("summary.json"))
        .ok()
        .and_then(|s| s["ppl"][text]["before"]["ppl"].as_f64())
        .map_or_else(|| "?".into(), |p| format!("{p:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_scorers_and_targets() {
        let argv: Vec<String> = [
            "--scorer",
            "slimllm",
            "--scorer",
            "magnitude",
            "--target",
            "0.2",
            "--target",
            "0.5",
        ]
        .map(String::from)
        .to_vec();
        let a = CompareArgs::try_parse_from(std::iter::once("x".to_string()).chain(argv)).unwrap();
        assert_eq!(a.scorers, ["slimllm", "magnitude"]);
        assert_eq!(a.targets, [0.2, 0.5]);
        assert_eq!(a.calib_mode, "dense");
        assert!(
            CompareArgs::try_parse_from(["x"]).is_err(),
            "a scorer is required"
        );
    }

    #[test]
    fn a_row_reads_the_summary_fields() {
        let s: Value = serde_json::json!({
            "params_after": 107611776u64, "removed_fraction": 0.2, "pruning_seconds": 12.5,
            "ppl": {"ptb-valid": {"after": {"ppl": 196.234}, "before": {"ppl": 99.0}}},
            "stages": [{"name": "capture", "ran": 0, "reused": 53}],
        });
        let r = row(0.2, "magnitude", &s, &["ptb-valid"]);
        assert_eq!(
            r,
            [
                "20 %",
                "magnitude",
                "107611776",
                "20.000",
                "196.23",
                "12.5",
                "0",
                "53"
            ]
        );
    }
}
