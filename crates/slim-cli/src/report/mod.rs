//! `slimllm report RUN_OR_RESULT… --out DIR`: a Markdown page with tables and SVG charts
//! from run summaries (`data/runs/<run>/summary.json`) and the `--out` results of
//! `slimllm bench`, `slimllm eval zeroshot` and `slimllm generate`: perplexity and zero-shot
//! accuracy against parameters kept, per-layer ratios and kept heads and channels, stage
//! timings, throughput, generations.

mod charts;
mod evals;
mod grid;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use slim_artifact::Kind;
use slim_pipeline::RunSummary;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Arguments of `slimllm report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run folders (holding `summary.json`) or result files (a run's `summary.json`, or the
    /// JSON that `slimllm bench`, `slimllm eval zeroshot` or `slimllm generate` writes with `--out`,
    /// or a variant grid's `data/runs/<name>.json` from `cargo xtask pipeline grid`).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Folder to write `report.md` and its charts into.
    #[arg(long)]
    out: PathBuf,
}

/// What the inputs hold, sorted by kind.
#[derive(Default)]
struct Inputs {
    runs: Vec<(String, RunSummary)>,
    bench: Vec<Value>,
    zeroshot: Vec<Value>,
    generations: Vec<Value>,
    grids: Vec<Value>,
}

fn read_inputs(paths: &[PathBuf]) -> Result<Inputs> {
    let mut inp = Inputs::default();
    for p in paths {
        let file = if p.is_dir() { p.join("summary.json") } else { p.clone() };
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        if v["kind"] == "slimllm-grid" {
            inp.grids.push(v);
        } else if v.get("params_after").is_some() && v.get("stages").is_some() {
            let s: RunSummary =
                serde_json::from_value(v).with_context(|| format!("reading {} as a run summary", file.display()))?;
            inp.runs.push((s.run.clone(), s));
        } else if let Some(rows) = v["results"].as_array() {
            inp.bench.extend(rows.iter().cloned());
        } else if v["results"].is_object() && v["n_samples"].is_object() {
            evals::add_zeroshot(&mut inp.zeroshot, v).with_context(|| format!("merging {}", file.display()))?;
        } else if v["generations"].is_array() {
            inp.generations.push(v);
        } else {
            bail!(
                "{}: neither a run summary, a variant grid, nor the result of `slimllm bench`, `eval zeroshot` or \
                `generate`",
                file.display()
            );
        }
    }
    Ok(inp)
}

pub fn run(a: ReportArgs) -> Result<()> {
    let inp = read_inputs(&a.inputs)?;
    let path = write_report(&inp, &a.out)?;
    println!("{}", path.display());
    Ok(())
}

/// Writes the report of the given run folders into `out`; used by `pipeline run --report`.
pub fn write_for_runs(runs: &[PathBuf], out: &Path) -> Result<PathBuf> {
    write_report(&read_inputs(runs)?, out)
}

fn write_report(inp: &Inputs, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut md = String::from("# slimllm report\n\n");
    if !inp.runs.is_empty() {
        md += &models_section(&inp.runs);
        let points = charts::ppl_points(&inp.runs);
        if !points.is_empty() {
            charts::ppl_vs_params(&points, &out.join("ppl_vs_params.svg"))?;
            md += "\n![perplexity against parameters kept](ppl_vs_params.svg)\n";
        }
        md += &stages_section(&inp.runs);
        for (name, s) in &inp.runs {
            md += &layers_section(name, s);
            let file = format!("layers-{}.svg", sanitize(name));
            if charts::layers(name, s, &out.join(&file))? {
                let _ = writeln!(md, "\n![per-layer plan of {name}]({file})");
            }
        }
    }
    if !inp.grids.is_empty() {
        md += &grid::grid_section(&inp.grids);
    }
    if !inp.zeroshot.is_empty() {
        md += &evals::zeroshot_section(&inp.zeroshot);
        let points = evals::accuracy_points(&inp.zeroshot);
        if !points.is_empty() {
            charts::accuracy_vs_params(&points, &out.join("zeroshot_vs_params.svg"))?;
            md += "\n![seven-task average against parameters](zeroshot_vs_params.svg)\n";
        }
    }
    if !inp.generations.is_empty() {
        md += &evals::generations_section(&inp.generations);
    }
    if !inp.bench.is_empty() {
        md += &bench_section(&inp.bench);
    }
    let path = out.join("report.md");
    slim_fs::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Parameters and perplexity before and after, one row per run.
fn models_section(runs: &[(String, RunSummary)]) -> String {
    let mut md = String::from(
        "## Models\n\n| run | scorer | recovery | GQA | calibration | parameters before → after | removed \
         | perplexity before → after |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (run, s) in runs {
        let c = &s.config;
        let ppl: Vec<String> = s
            .ppl
            .iter()
            .map(|(k, v)| format!("{k}: {:.2} → {:.2} ({} windows)", v.before.ppl, v.after.ppl, v.after.windows))
            .collect();
        let _ = writeln!(
            md,
            "| {run} | {} | {} | {} | {} | {} → {} | {:.3} % | {} |",
            c.scorer.name(),
            c.recovery.name(),
            c.gqa.name(),
            c.calib_mode.name(),
            s.params_before,
            s.params_after,
            100.0 * s.removed_fraction,
            if ppl.is_empty() { "not evaluated".into() } else { ppl.join("; ") }
        );
    }
    md
}

/// Seconds per stage, one row per run.
fn stages_section(runs: &[(String, RunSummary)]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for (_, s) in runs {
        for st in &s.stages {
            if !names.contains(&st.name.as_str()) {
                names.push(&st.name);
            }
        }
    }
    let mut md = format!(
        "\n## Stage timings (seconds; entries reused from the cache in parentheses)\n\n| run | {} |\n|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for (run, s) in runs {
        let cells: Vec<String> = names
            .iter()
            .map(|n| match s.stages.iter().find(|st| st.name == *n) {
                None => "-".into(),
                Some(st) if st.reused > 0 => format!("{:.1} ({})", st.seconds, st.reused),
                Some(st) => format!("{:.1}", st.seconds),
            })
            .collect();
        let _ = writeln!(md, "| {run} | {} |", cells.join(" | "));
    }
    md
}

/// The per-layer plan of one run, under a heading that states its allocation.
fn layers_section(run: &str, s: &RunSummary) -> String {
    let mut md = format!(
        "\n## Per-layer plan: {run}\n\n{}; {:.2} % of the parameters removed\n\n\
         | layer | importance (cos) | ratio | heads | KV heads | channels |\n|---|---|---|---|---|---|\n",
        s.alloc.describe(),
        100.0 * s.alloc.achieved()
    );
    for l in &s.layers {
        let cos = s.layer_importance.get(l.layer).copied().unwrap_or(f64::NAN);
        let _ =
            writeln!(md, "| {} | {cos:.4} | {:.3} | {} | {} | {} |", l.layer, l.ratio, l.heads, l.kv_heads, l.channels);
    }
    md
}

/// Throughput rows, models side by side.
fn bench_section(rows: &[Value]) -> String {
    let mut md = String::from(
        "\n## Throughput\n\n| model | measurement | batch × length | tokens/s (median) | spread (min–max s) \
         | repeats |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} × {} | {:.1} | {:.3}–{:.3} | {} |",
            r["model"].as_str().unwrap_or("?"),
            r["kind"].as_str().unwrap_or("prefill"),
            r["batch"],
            r["seq_len"],
            f(&r["tokens_per_s"]),
            f(&r["min_s"]),
            f(&r["max_s"]),
            r["repeats"]
        );
    }
    md
}

#[cfg(test)]
mod tests;
