//! `cargo xtask pipeline compare-scorers | compare-allocations | compare-recoveries | grid`:
//! the same pruning with each variant, side by side, from one cached capture per
//! calibration mode.
//!
//! - `compare-scorers --scorer A --scorer B …` (and `compare-allocations --allocation …`,
//!   `compare-recoveries --recovery …`): the cross product of the listed scorers, allocations
//!   and recoveries (each defaults to the paper's choice) at every `--target`.
//! - `grid`: the comparison of docs/variants.md: the paper's recipe, every scorer, every
//!   allocation and every recovery changed one at a time from it, the peers' own recipes
//!   (FLAP, LLM-Pruner, Wanda-sp), and recipes that combine the best of each.
//!
//! `--align N` passes `slimllm pipeline run --align N` to every run (run and table names end
//! in `-align<N>`), so that a comparison can be made of models block-quantized types can store.
//!
//! Dense calibration is the default: every layer's statistics come from the unpruned model,
//! so the first run captures and every later one reuses the capture (the table's `capture
//! ran` column shows it). `--calib-mode sequential` compares the paper's sequential recipe
//! instead, where only the capture below the first differing decision is shared.
//! Every row is a `slimllm pipeline run` whose perplexities are cached with the model, and,
//! with `--zeroshot-limit N`, a `slimllm eval zeroshot --limit N` of the pruned model,
//! kept next to the run's summary (rerunning the grid reuses it).

use std::path::Path;

use anyhow::{format_err, Context};
use clap::Parser;
use serde_json::{json, Value};

use crate::grid_rows;
use crate::summary::RunSummary;
use crate::{pipeline::slimllm, util};

/// Options of the comparison commands.
#[derive(Parser, Debug)]
#[command(name = "compare", about = "Prune with each variant from one cached capture and print a side-by-side table")]
pub struct CompareArgs {
    /// Scorers (repeat): `slimllm`, `magnitude`, `wanda-sp`, `flap`, `taylor`, `random`.
    #[arg(long = "scorer")]
    scorers: Vec<String>,
    /// Allocations (repeat): `cosine`, `uniform`, `flap-global`.
    #[arg(long = "allocation")]
    allocations: Vec<String>,
    /// Recoveries (repeat): `affine`, `none`, `flap-bias`, `lstsq`.
    #[arg(long = "recovery")]
    recoveries: Vec<String>,
    /// Ridge strengths ε of the `lstsq` recovery (repeat); every lstsq row runs once per value
    /// (default: slimllm's own default).
    #[arg(long = "lstsq-ridge")]
    ridges: Vec<f64>,
    /// Fractions of total parameters to remove (repeat).
    #[arg(long = "target", default_values_t = [0.2])]
    targets: Vec<f64>,
    /// GQA unit for every run.
    #[arg(long, default_value = "whole-group")]
    gqa: String,
    /// Calibration mode: `dense` (one capture for all) or `sequential` (the paper).
    #[arg(long, default_value = "dense")]
    calib_mode: String,
    /// `slimllm pipeline run --align N` for every run (kept sizes multiples of N, for
    /// block-quantized GGUF types); 1: none. Run and table names get `-align<N>`.
    #[arg(long, default_value_t = 1)]
    align: usize,
    /// Perplexity texts (comma-separated).
    #[arg(long, default_value = "ptb-valid,ptb-test")]
    eval: String,
    /// Evaluate only the first N perplexity windows, for quick grids.
    #[arg(long)]
    eval_windows: Option<usize>,
    /// Also score the seven zero-shot tasks on the first N documents of each.
    #[arg(long)]
    zeroshot_limit: Option<usize>,
    /// Cache root passed to `slimllm` (default: its own default).
    #[arg(long)]
    cache: Option<String>,
    /// Name of the table files under data/runs (default: the command's name and the mode).
    #[arg(long)]
    name: Option<String>,
}

/// Runs `command` (`compare-scorers`, `compare-allocations`, `compare-recoveries`, `grid`);
/// `argv` are the arguments after it.
pub fn run(command: &str, argv: &[String]) -> anyhow::Result<()> {
    let a = CompareArgs::try_parse_from(std::iter::once(command.to_string()).chain(argv.iter().cloned()))
        .map_err(|e| format_err!("{e}"))?;
    let rows0 = match command {
        "grid" => grid_rows::grid(&a.calib_mode),
        _ => {
            let need = match command {
                "compare-scorers" => a.scorers.is_empty().then_some("--scorer"),
                "compare-allocations" => a.allocations.is_empty().then_some("--allocation"),
                "compare-recoveries" => a.recoveries.is_empty().then_some("--recovery"),
                other => anyhow::bail!("unknown comparison `{other}`"),
            };
            if let Some(flag) = need {
                anyhow::bail!("{command} needs at least one {flag}");
            }
            grid_rows::cross(&a.scorers, &a.allocations, &a.recoveries, &a.calib_mode)
        }
    };
    let rows = grid_rows::with_ridges(rows0, &a.ridges);
    let root = util::repo_root();
    let texts: Vec<&str> = a.eval.split(',').collect();
    let mut results = Vec::new();
    for &target in &a.targets {
        for row in &rows {
            let run = row.run_name(target, &a.gqa) + &align_suffix(a.align);
            let mut cmd = slimllm();
            cmd.args(["--quiet", "pipeline", "run", "--target", &target.to_string()]);
            cmd.args(["--scorer", &row.scorer, "--allocation", &row.allocation, "--recovery", &row.recovery]);
            cmd.args(["--gqa", &a.gqa, "--calib-mode", &row.mode, "--eval", &a.eval, "--run", &run]);
            if let Some(e) = row.ridge {
                cmd.args(["--lstsq-ridge", &e.to_string()]);
            }
            if a.align > 1 {
                cmd.args(["--align", &a.align.to_string()]);
            }
            if let Some(n) = a.eval_windows {
                cmd.args(["--eval-windows", &n.to_string()]);
            }
            if let Some(c) = &a.cache {
                cmd.args(["--cache", c]);
            }
            if let Err(e) = util::run(&mut cmd, &root) {
                // One failing recipe (an unreachable target, say) does not lose the others.
                eprintln!("{run}: {e:#}");
                results.push(
                    json!({"target": target, "label": row.label, "scorer": row.scorer, "allocation": row.allocation,
                                    "recovery": row.recovery, "mode": row.mode, "run": run, "error": format!("{e:#}")}),
                );
                continue;
            }
            let dir = root.join("data/runs").join(&run);
            let summary = RunSummary::read(&dir.join("summary.json"))?;
            let zs = match a.zeroshot_limit {
                Some(n) => Some(zeroshot(&root, &dir, &summary, n)?),
                None => None,
            };
            results.push(grid_rows::result(target, row, &summary, &texts, zs.as_ref()));
        }
    }
    let dense = dense_row(&root, &results, &texts, a.zeroshot_limit)?;
    let table = grid_rows::table(&results, &texts, a.zeroshot_limit.is_some(), &dense);
    println!("{table}");
    let name = a.name.clone().unwrap_or_else(|| format!("{command}-{}{}", a.calib_mode, align_suffix(a.align)));
    let out = root.join("data/runs").join(format!("{name}.md"));
    util::write_atomic(&out, table.as_bytes())?;
    let doc = json!({"kind": "slimllm-grid", "command": command, "calib_mode": a.calib_mode, "gqa": a.gqa,
                     "align": a.align,
                     "eval": texts, "eval_windows": a.eval_windows, "zeroshot_limit": a.zeroshot_limit,
                     "dense": dense, "rows": results});
    util::write_atomic(&out.with_extension("json"), serde_json::to_string_pretty(&doc)?.as_bytes())?;
    println!("written to {} and .json", out.display());
    Ok(())
}

/// `-align<N>` for an alignment above 1, else nothing (the names of unaligned runs stay).
fn align_suffix(align: usize) -> String {
    if align > 1 {
        format!("-align{align}")
    } else {
        String::new()
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The zero-shot result of a run's pruned model on the first `limit` documents of each
/// task: read from the run directory when an earlier grid wrote it for the same model.
/// The file name holds the pruned model's cache key, so a changed model is evaluated anew.
fn zeroshot(root: &Path, run_dir: &Path, summary: &RunSummary, limit: usize) -> anyhow::Result<Value> {
    let out = run_dir.join(format!("zeroshot-{limit}-{}.json", summary.cache_entry));
    zeroshot_of(root, &summary.pruned_model, &out, limit)
}

/// The seven tasks of the paper (LAMBADA is left out of the grid).
const PAPER_TASKS: &str = "boolq,piqa,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa";

fn zeroshot_of(root: &Path, model: &str, out: &Path, limit: usize) -> anyhow::Result<Value> {
    if let Ok(v) = read_json(out) {
        return Ok(v);
    }
    let mut cmd = slimllm();
    cmd.args([
        "--quiet",
        "eval",
        "zeroshot",
        "--model",
        model,
        "--tasks",
        PAPER_TASKS,
        "--limit",
        &limit.to_string(),
        "--out",
    ]);
    cmd.arg(out);
    util::run(&mut cmd, root)?;
    read_json(out)
}

/// The dense model's figures, from the first run's summary (and its own zero-shot run).
fn dense_row(root: &Path, results: &[Value], texts: &[&str], zs: Option<usize>) -> anyhow::Result<Value> {
    let Some(first) = results.first() else { return Ok(Value::Null) };
    let run = first["run"].as_str().context("the first result names no run")?;
    let summary = RunSummary::read(&root.join("data/runs").join(run).join("summary.json"))?;
    let ppl: serde_json::Map<String, Value> =
        texts.iter().map(|t| (t.to_string(), summary.ppl_of(t, false).into())).collect();
    let avg = match zs {
        Some(n) => {
            let out = root.join("data/runs").join(format!("dense-zeroshot-{n}.json"));
            zeroshot_of(root, &summary.model, &out, n)?["average"]["value"].clone()
        }
        None => Value::Null,
    };
    Ok(json!({"params": summary.params_before, "ppl": ppl, "zeroshot_average": avg}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_is_forwarded_only_when_set() {
        let parse = |argv: &[&str]| CompareArgs::try_parse_from(argv).unwrap();
        assert_eq!(parse(&["compare-allocations", "--allocation", "uniform"]).align, 1);
        assert_eq!(parse(&["compare-allocations", "--allocation", "uniform", "--align", "32"]).align, 32);
        assert_eq!((align_suffix(1), align_suffix(256)), (String::new(), "-align256".to_string()));
    }
}
