//! Zero-shot multiple choice with lm-eval 0.3 semantics.
//!
//! Each request's context and continuation are tokenized separately without special tokens (an empty context
//! becomes the end-of-text token), and the request's log-likelihood is the sum of the continuation tokens'
//! log-probabilities after `context ++ continuation`, as lm-eval's `loglikelihood` computes it. The choices of a
//! document that share their context are scored together: the context runs once into a KV cache, which is copied
//! for the choices, and the continuations run as right-padded batches of similar lengths (padding at the end cannot
//! change earlier positions under causal attention). Only the positions whose next token is scored go through the
//! lm_head.
//!
//! Metrics as lm-eval 0.3: acc is the argmax of the log-likelihoods (first maximum on ties), acc_norm the argmax of
//! the log-likelihood divided by the choice's length in characters (without the leading space), each with the
//! standard error of a mean (sample standard deviation / √n). LAMBADA: acc is 1 when every continuation token is
//! the model's argmax, and perplexity is exp(−mean log-likelihood) over documents.

use anyhow::{ensure, Context, Result};
use burn_tensor::{backend::Backend, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use slim_data::zeroshot::{McDoc, Task};
use slim_model::{Llama, Tokenizer};

use crate::ppl::token_nll;

/// The log-likelihood of one request and whether greedy decoding would produce its continuation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Loglik {
    /// Sum of the continuation tokens' log-probabilities (nats).
    pub ll: f64,
    /// Every continuation token is the argmax of its logits.
    pub greedy: bool,
}

/// The continuations that follow one context: (request index in the document, continuation ids).
pub type Continuations = Vec<(usize, Vec<u32>)>;

/// A document's requests as token ids, grouped by shared context.
#[derive(Clone, Debug)]
pub struct TokDoc {
    /// One group per distinct context: its ids and the continuations that follow it.
    pub groups: Vec<(Vec<u32>, Continuations)>,
    /// Requests in the document.
    pub requests: usize,
}

impl TokDoc {
    /// Tokens a shared-context pass feeds the model.
    pub fn tokens(&self) -> usize {
        self.groups.iter().map(|(c, conts)| c.len() + conts.iter().map(|(_, k)| k.len()).sum::<usize>()).sum()
    }
}

/// Tokenizes `doc` the way lm-eval 0.3 does; `eot` stands in for an empty context.
pub fn tokenize_doc(tok: &Tokenizer, doc: &McDoc, eot: u32) -> Result<TokDoc> {
    let mut groups: Vec<(String, Vec<u32>, Continuations)> = Vec::new();
    for (i, r) in doc.requests.iter().enumerate() {
        let cont = tok.encode_plain(&r.continuation)?;
        ensure!(
            !cont.is_empty(),
            "request {i} of document {}: the continuation `{}` has no token",
            doc.doc_id,
            r.continuation
        );
        match groups.iter_mut().find(|g| g.0 == r.context) {
            Some(g) => g.2.push((i, cont)),
            None => {
                let ctx = if r.context.is_empty() { vec![eot] } else { tok.encode_plain(&r.context)? };
                groups.push((r.context.clone(), ctx, vec![(i, cont)]));
            }
        }
    }
    Ok(TokDoc { groups: groups.into_iter().map(|g| (g.1, g.2)).collect(), requests: doc.requests.len() })
}

/// Scores every request of `doc` (one document alone; [`score_tasks`] batches many).
pub fn score_doc<B: Backend>(model: &Llama<B>, doc: &TokDoc) -> Result<Vec<Loglik>> {
    let mut out = vec![vec![None; doc.requests]];
    for group in 0..doc.groups.len() {
        score_units(model, std::slice::from_ref(doc), &[Unit { doc: 0, group }], &mut out)?;
    }
    collect(out.pop().expect("one document"))
}

/// One context group of one document.
#[derive(Clone, Copy)]
pub(crate) struct Unit {
    doc: usize,
    group: usize,
}

/// Context tokens per batch (the contexts of a batch have equal lengths, so no padding), context groups per batch
/// (which bounds the first-token logits held at once: 256 × vocab floats), and continuation positions per
/// continuation chunk (which bounds the logits held at once: 1024 × vocab floats).
const CONTEXT_TOKENS: usize = 2048;
const MAX_GROUPS: usize = 256;
const CONTINUATION_POSITIONS: usize = 1024;
/// A continuation joins a chunk only if its length is at least this fraction of the chunk's longest, so that
/// little of a chunk is padding. On HellaSwag's 10,042 documents (SmolLM2 tokenizer; counted by replaying the rules in
/// Python) 0.8 pads 0.10 M positions
/// where one padded pass per batch padded 0.70 M (against 1.65 M real context and continuation positions).
const MIN_FILL: f64 = 0.8;

/// One batch of context groups as the model sees it: the contexts (`groups × context` ids, no padding) and, for
/// each chunk of similar-length continuations, the ids that run on copies of the contexts' cache.
pub(crate) struct BatchPlan<'a> {
    units: &'a [Unit],
    /// One row per request: its group in the batch, its index in the document, its continuation.
    rows: Vec<(usize, usize, &'a [u32])>,
    /// Context groups.
    pub(crate) groups: usize,
    /// Their common context length.
    pub(crate) context: usize,
    /// The contexts, `groups × context`.
    pub(crate) ids: Vec<u32>,
    pub(crate) chunks: Vec<ChunkPlan>,
}

/// Continuations that run together: all but their last tokens, right-padded to the longest (`width`).
pub(crate) struct ChunkPlan {
    /// Indexes into the plan's rows.
    members: Vec<usize>,
    /// Positions each row runs (0: only the first-token logits are needed, and no pass runs).
    pub(crate) width: usize,
    /// `members × width` ids.
    pub(crate) ids: Vec<u32>,
    /// For each member, its context group: the rows of the cache it continues.
    pub(crate) sel: Vec<usize>,
}

impl<'a> BatchPlan<'a> {
    /// The plan of `units` (all of whose contexts have the same length) of `docs`. Longest continuations come
    /// first; each chunk runs all but its rows' last tokens on its rows' cache, padded at the end to the chunk's
    /// longest (padding after a row's tokens cannot change them under causal attention).
    pub(crate) fn new(docs: &'a [TokDoc], units: &'a [Unit]) -> Result<Self> {
        let groups: Vec<_> = units.iter().map(|u| &docs[u.doc].groups[u.group]).collect();
        let c = groups[0].0.len();
        ensure!(groups.iter().all(|g| g.0.len() == c), "contexts of one batch must have one length");
        let ids: Vec<u32> = groups.iter().flat_map(|g| g.0.iter().copied()).collect();
        let rows: Vec<(usize, usize, &[u32])> =
            groups.iter().enumerate().flat_map(|(g, grp)| grp.1.iter().map(move |(r, k)| (g, *r, &k[..]))).collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rows[i].2.len()));
        let widths: Vec<usize> = order.iter().map(|&i| rows[i].2.len() - 1).collect();
        let chunks = continuation_chunks(&widths, CONTINUATION_POSITIONS, MIN_FILL)
            .into_iter()
            .map(|span| {
                let members = order[span.clone()].to_vec();
                let width = widths[span.start];
                let mut ids = Vec::with_capacity(members.len() * width);
                if width > 0 {
                    for &i in &members {
                        let k = rows[i].2;
                        ids.extend_from_slice(&k[..k.len() - 1]);
                        ids.extend(std::iter::repeat_n(k[0], width - (k.len() - 1)));
                    }
                }
                let sel = members.iter().map(|&i| rows[i].0).collect();
                ChunkPlan { members, width, ids, sel }
            })
            .collect();
        Ok(Self { units, rows, groups: groups.len(), context: c, ids, chunks })
    }

    /// Requests the plan scores.
    pub(crate) fn requests(&self) -> usize {
        self.rows.len()
    }

    /// Positions whose hidden states its passes hold: the contexts and every chunk.
    pub(crate) fn hidden_positions(&self) -> usize {
        self.groups * self.context + self.chunks.iter().map(|c| c.ids.len()).sum::<usize>()
    }

    /// Scores the rows of `chunk` from the first-token logits of every group (`first`, `groups × vocab`) and the
    /// chunk's logits (`rest`, `members × width × vocab`), storing each in `out[doc][request]`.
    pub(crate) fn finish_chunk(&self, chunk: &ChunkPlan, first: &[f32], rest: &[f32], out: &mut [Vec<Option<Loglik>>]) {
        let v = first.len() / self.groups;
        let w = chunk.width;
        let scored: Vec<Loglik> = chunk
            .members
            .par_iter()
            .enumerate()
            .map(|(m, &i)| {
                let (g, _, k) = self.rows[i];
                let row0 = &first[g * v..(g + 1) * v];
                let mut ll = -token_nll(row0, k[0] as usize);
                let mut greedy = argmax(row0) == k[0] as usize;
                for j in 1..k.len() {
                    let row = &rest[(m * w + j - 1) * v..(m * w + j) * v];
                    ll -= token_nll(row, k[j] as usize);
                    greedy &= argmax(row) == k[j] as usize;
                }
                Loglik { ll, greedy }
            })
            .collect();
        for (&i, s) in chunk.members.iter().zip(scored) {
            let (g, r, _) = self.rows[i];
            out[self.units[g].doc][r] = Some(s);
        }
    }
}

/// Scores `units` (all of whose contexts have the same length) of `docs` in one context pass and one
/// continuation pass per chunk of similar-length continuations, storing each request's result in
/// `out[doc][request]`.
fn score_units<B: Backend>(
    model: &Llama<B>,
    docs: &[TokDoc],
    units: &[Unit],
    out: &mut [Vec<Option<Loglik>>],
) -> Result<()> {
    let plan = BatchPlan::new(docs, units)?;
    let (b, c) = (plan.groups, plan.context);
    let mut cache = model.new_cache(b);
    let h = model.hidden_cached(model.ids_tensor(&plan.ids, b, c)?, &mut cache)?;
    let d = h.dims()[2];
    // Row g predicts the first token of each continuation of group g.
    let first = host_rows(model.logits(h.slice([0..b, c - 1..c, 0..d])))?;
    for chunk in &plan.chunks {
        let rest = if chunk.width > 0 {
            let mut cache = cache.select(&chunk.sel)?;
            let h = model.hidden_cached(model.ids_tensor(&chunk.ids, chunk.sel.len(), chunk.width)?, &mut cache)?;
            host_rows(model.logits(h))?
        } else {
            Vec::new()
        };
        plan.finish_chunk(chunk, &first, &rest, out);
    }
    Ok(())
}

/// Splits `widths` (sorted longest first) into consecutive chunks: a chunk of width w (its first) takes the
/// following widths while they are at least `min_fill · w` and the chunk holds at most `max_positions` padded
/// positions (a single row may exceed it); the zero widths at the end form one chunk.
fn continuation_chunks(widths: &[usize], max_positions: usize, min_fill: f64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < widths.len() {
        let w = widths[i];
        let mut j = i + 1;
        if w == 0 {
            j = widths.len();
        } else {
            while j < widths.len() && (j + 1 - i) * w <= max_positions && widths[j] as f64 >= min_fill * w as f64 {
                j += 1;
            }
        }
        out.push(i..j);
        i = j;
    }
    out
}

pub(crate) fn collect(scores: Vec<Option<Loglik>>) -> Result<Vec<Loglik>> {
    scores.into_iter().enumerate().map(|(i, s)| s.with_context(|| format!("request {i} was not scored"))).collect()
}

pub(crate) fn host_rows<B: Backend>(t: Tensor<B, 3>) -> Result<Vec<f32>> {
    t.into_data().into_vec::<f32>().map_err(|e| anyhow::format_err!("reading logits: {e:?}"))
}

/// Index of the first maximum.
fn argmax(xs: &[f32]) -> usize {
    xs.iter().enumerate().fold(0, |best, (i, &x)| if x > xs[best] { i } else { best })
}

/// Index of the first maximum of `xs`, as numpy's argmax.
fn argmax_f64(xs: &[f64]) -> usize {
    xs.iter().enumerate().fold(0, |best, (i, &x)| if x > xs[best] { i } else { best })
}

/// A task's metrics, named as lm-eval names them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskScore {
    /// Documents scored.
    pub n: usize,
    /// Accuracy (LAMBADA: greedy last-word accuracy).
    pub acc: f64,
    /// Its standard error.
    pub acc_stderr: Option<f64>,
    /// Length-normalized accuracy, for the tasks that report it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<f64>,
    /// Its standard error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm_stderr: Option<f64>,
    /// LAMBADA's perplexity of the last word.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppl: Option<f64>,
}

/// Whether the document was answered right: (acc, acc_norm).
pub fn doc_correct(doc: &McDoc, lls: &[Loglik]) -> (bool, bool) {
    let ll: Vec<f64> = lls.iter().map(|l| l.ll).collect();
    let norm: Vec<f64> = ll.iter().zip(&doc.choices).map(|(l, c)| l / c.chars().count().max(1) as f64).collect();
    (argmax_f64(&ll) == doc.gold, argmax_f64(&norm) == doc.gold)
}

/// Mean and standard error (sample standard deviation / √n) of 0/1 outcomes.
pub fn mean_stderr(hits: &[bool]) -> (f64, Option<f64>) {
    let n = hits.len() as f64;
    let p = hits.iter().filter(|&&h| h).count() as f64 / n;
    let se = (hits.len() > 1).then(|| (p * (1.0 - p) / (n - 1.0)).sqrt());
    (p, se)
}

/// The metrics of `task` from its documents and their requests' scores.
pub fn aggregate(task: Task, docs: &[McDoc], scores: &[Vec<Loglik>]) -> Result<TaskScore> {
    ensure!(docs.len() == scores.len() && !docs.is_empty(), "{} documents but {} scored", docs.len(), scores.len());
    if task == Task::Lambada {
        let hits: Vec<bool> = scores.iter().map(|s| s[0].greedy).collect();
        let (acc, acc_stderr) = mean_stderr(&hits);
        let mean_ll = scores.iter().map(|s| s[0].ll).sum::<f64>() / docs.len() as f64;
        return Ok(TaskScore {
            n: docs.len(),
            acc,
            acc_stderr,
            acc_norm: None,
            acc_norm_stderr: None,
            ppl: Some((-mean_ll).exp()),
        });
    }
    let (hits, norm_hits): (Vec<bool>, Vec<bool>) = docs.iter().zip(scores).map(|(d, s)| doc_correct(d, s)).unzip();
    let (acc, acc_stderr) = mean_stderr(&hits);
    let (acc_norm, acc_norm_stderr) = if task.has_acc_norm() {
        let (m, se) = mean_stderr(&norm_hits);
        (Some(m), se)
    } else {
        (None, None)
    };
    Ok(TaskScore { n: docs.len(), acc, acc_stderr, acc_norm, acc_norm_stderr, ppl: None })
}

/// Scores the documents of several tasks, given as (name, tokenized documents), advancing `progress` by each
/// batch's requests. Within a task, context groups of equal token length are batched
/// together (longest first), up to [`CONTEXT_TOKENS`] context tokens and [`MAX_GROUPS`] groups per batch; their
/// continuations run in chunks of similar length ([`continuation_chunks`]); the result of each request does not
/// depend on the batching (tested).
pub fn score_tasks<B: Backend>(
    model: &Llama<B>,
    tasks: &[(&str, &[TokDoc])],
    progress: &mut Progress,
) -> Result<Vec<Vec<Vec<Loglik>>>> {
    let mut out = Vec::with_capacity(tasks.len());
    for (name, docs) in tasks {
        progress.task(name);
        let mut scores: Vec<Vec<Option<Loglik>>> = docs.iter().map(|d| vec![None; d.requests]).collect();
        for batch in context_batches(docs) {
            let c = docs[batch[0].doc].groups[batch[0].group].0.len();
            let rows = batch.iter().map(|u| docs[u.doc].groups[u.group].1.len()).sum();
            score_units(model, docs, &batch, &mut scores).with_context(|| {
                format!("{name}: the batch starting at document {} (context of {c} tokens)", batch[0].doc)
            })?;
            progress.advance(name, rows);
        }
        out.push(scores.into_iter().map(collect).collect::<Result<Vec<_>>>().with_context(|| name.to_string())?);
    }
    Ok(out)
}

/// The context groups of `docs` in the batches [`score_tasks`] runs: sorted by context length (longest first), a
/// batch holds groups of one context length, up to [`CONTEXT_TOKENS`] tokens and [`MAX_GROUPS`] groups (a single
/// longer context is a batch of its own).
pub(crate) fn context_batches(docs: &[TokDoc]) -> Vec<Vec<Unit>> {
    let mut units: Vec<Unit> = docs
        .iter()
        .enumerate()
        .flat_map(|(d, doc)| (0..doc.groups.len()).map(move |g| Unit { doc: d, group: g }))
        .collect();
    let ctx_len = |u: &Unit| docs[u.doc].groups[u.group].0.len();
    units.sort_by_key(|u| std::cmp::Reverse(ctx_len(u)));
    let mut out = Vec::new();
    let mut start = 0;
    while start < units.len() {
        let c = ctx_len(&units[start]);
        let mut end = start;
        while end < units.len()
            && ctx_len(&units[end]) == c
            && (end == start || ((end + 1 - start) * c <= CONTEXT_TOKENS && end + 1 - start <= MAX_GROUPS))
        {
            end += 1;
        }
        out.push(units[start..end].to_vec());
        start = end;
    }
    out
}

/// The shape of one batch that [`score_tasks`] runs, for estimating its memory before a model is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchShape {
    /// Context groups: the sequences of the context pass, whose KV cache lives through the batch and whose last
    /// position's logits are read back.
    pub groups: usize,
    /// Their common context length in tokens.
    pub context: usize,
    /// The continuation chunks as (rows, width): each row continues a copy of its group's cache by `width`
    /// positions, and the logits of all `rows × width` positions are read back. Chunks of width 0 run no pass and
    /// are left out.
    pub chunks: Vec<(usize, usize)>,
}

/// Every batch [`score_tasks`] would run over `docs`, in order, without running anything.
pub fn batch_shapes(docs: &[TokDoc]) -> Vec<BatchShape> {
    context_batches(docs)
        .into_iter()
        .map(|batch| {
            let groups: Vec<_> = batch.iter().map(|u| &docs[u.doc].groups[u.group]).collect();
            let mut widths: Vec<usize> =
                groups.iter().flat_map(|g| g.1.iter().map(|(_, k)| k.len().saturating_sub(1))).collect();
            widths.sort_by_key(|&w| std::cmp::Reverse(w));
            let chunks = continuation_chunks(&widths, CONTINUATION_POSITIONS, MIN_FILL)
                .into_iter()
                .map(|span| (span.len(), widths[span.start]))
                .filter(|&(_, w)| w > 0)
                .collect();
            BatchShape { groups: groups.len(), context: groups[0].0.len(), chunks }
        })
        .collect()
}

mod progress;
mod streamed;
pub use progress::Progress;
pub use streamed::score_tasks_streamed;

#[cfg(test)]
mod tests;
