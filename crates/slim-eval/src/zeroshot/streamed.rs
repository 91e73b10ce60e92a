//! [`score_tasks`](super::score_tasks) with one decoder layer in memory at a time, for models larger than the
//! memory: the batches of a task are taken in groups whose hidden states fit
//! [`STREAM_ACTIVATION_BYTES`](crate::STREAM_ACTIVATION_BYTES), and each group goes through every layer, read from
//! the model's files and dropped after. A batch's keys and values are needed only while its layer runs, so each
//! layer builds its own cache for the contexts, copies it for the continuation chunks, and drops it: the memory is
//! one layer, the group's hidden states and one batch's logits, whatever the size of the model.

use super::{context_batches, host_rows, BatchPlan, Loglik, Progress, TokDoc, Unit};
use anyhow::{Context, Result};
use burn_tensor::{backend::Backend, Tensor};
use slim_checkpoint::layout::Global;
use slim_checkpoint::{ModelConfig, WeightSource};
use slim_model::{LayerKv, Llama};

/// The scores of [`super::score_tasks`] for the model stored in `src` (config `cfg`), equal to them to the bit
/// (the same batches go through the same operations; tested), with one decoder layer on `device` at a time.
pub fn score_tasks_streamed<B: Backend>(
    src: &WeightSource,
    cfg: &ModelConfig,
    tasks: &[(&str, &[TokDoc])],
    progress: &mut Progress,
    device: &B::Device,
) -> Result<Vec<Vec<Vec<Loglik>>>> {
    streamed::<B>(src, cfg, tasks, progress, device, crate::STREAM_ACTIVATION_BYTES)
}

pub(super) fn streamed<B: Backend>(
    src: &WeightSource,
    cfg: &ModelConfig,
    tasks: &[(&str, &[TokDoc])],
    progress: &mut Progress,
    device: &B::Device,
    activation_bytes: usize,
) -> Result<Vec<Vec<Vec<Loglik>>>> {
    let per_position = 4 * cfg.hidden_size;
    let mut out = Vec::with_capacity(tasks.len());
    for (name, docs) in tasks {
        progress.task(name);
        let mut scores: Vec<Vec<Option<Loglik>>> = docs.iter().map(|d| vec![None; d.requests]).collect();
        let batches: Vec<Vec<Unit>> = context_batches(docs);
        let plans = batches.iter().map(|units| BatchPlan::new(docs, units)).collect::<Result<Vec<_>>>()?;
        // Consecutive plans whose hidden states fit the budget (a plan larger than it is a group of its own).
        let mut start = 0;
        while start < plans.len() {
            let mut end = start + 1;
            let mut bytes = plans[start].hidden_positions() * per_position;
            while end < plans.len() && bytes + plans[end].hidden_positions() * per_position <= activation_bytes {
                bytes += plans[end].hidden_positions() * per_position;
                end += 1;
            }
            run_group::<B>(src, cfg, &plans[start..end], &mut scores, progress, name, device)
                .with_context(|| format!("{name}: the batches {start}..{end} (of {})", plans.len()))?;
            start = end;
        }
        out.push(scores.into_iter().map(super::collect).collect::<Result<Vec<_>>>().with_context(|| name.to_string())?);
    }
    Ok(out)
}

/// The hidden states of one plan: its contexts and each chunk (`None` for a chunk of width 0, which runs no pass).
struct Hidden<B: Backend> {
    context: Tensor<B, 3>,
    chunks: Vec<Option<Tensor<B, 3>>>,
}

/// Runs `plans` through the embedding, every layer and the lm_head, one piece of the model loaded at a time.
fn run_group<B: Backend>(
    src: &WeightSource,
    cfg: &ModelConfig,
    plans: &[BatchPlan<'_>],
    scores: &mut [Vec<Option<Loglik>>],
    progress: &mut Progress,
    name: &str,
    device: &B::Device,
) -> Result<()> {
    let requests: usize = plans.iter().map(BatchPlan::requests).sum();
    let steps = cfg.num_layers() + 2;
    // The group's requests, advanced step by step so that the bar moves while a group runs.
    let mut advanced = 0;
    let mut step = |done: usize, progress: &mut Progress| {
        let target = requests * done / steps;
        progress.advance(name, target - advanced);
        advanced = target;
    };
    let mut m = Llama::<B>::empty(cfg.clone(), device)?;
    m.load_embedding(src.read_global(cfg, Global::Embedding)?)?;
    let mut hidden = plans
        .iter()
        .map(|p| {
            let context = m.embed(m.ids_tensor(&p.ids, p.groups, p.context)?);
            let chunks = p
                .chunks
                .iter()
                .map(|c| match c.width {
                    0 => Ok(None),
                    w => Ok(Some(m.embed(m.ids_tensor(&c.ids, c.sel.len(), w)?))),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Hidden { context, chunks })
        })
        .collect::<Result<Vec<_>>>()?;
    m.unload_embedding();
    step(1, progress);
    for l in 0..cfg.num_layers() {
        m.load_layer(l, &src.read_layer(cfg, l)?)?;
        for (p, h) in plans.iter().zip(&mut hidden) {
            let mut kv = LayerKv::new(p.groups);
            h.context = m.layer_cached(l, h.context.clone(), &mut kv)?;
            for (c, hc) in p.chunks.iter().zip(&mut h.chunks) {
                if let Some(x) = hc.take() {
                    let mut kv = kv.select(&c.sel)?;
                    *hc = Some(m.layer_cached(l, x, &mut kv)?);
                }
            }
        }
        m.unload_layer(l);
        step(l + 2, progress);
    }
    let norm = src.read_global(cfg, Global::FinalNorm)?;
    m.load_output(&norm, &src.read_global(cfg, Global::output(cfg))?)?;
    for (p, h) in plans.iter().zip(hidden) {
        let (b, c, d) = (p.groups, p.context, cfg.hidden_size);
        let first = host_rows(m.logits(h.context.slice([0..b, c - 1..c, 0..d])))?;
        for (chunk, hc) in p.chunks.iter().zip(h.chunks) {
            let rest = match hc {
                Some(x) => host_rows(m.logits(x))?,
                None => Vec::new(),
            };
            p.finish_chunk(chunk, &first, &rest, scores);
        }
    }
    step(steps, progress);
    Ok(())
}
