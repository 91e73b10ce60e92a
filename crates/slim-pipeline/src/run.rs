//! Running the stage graph: cache lookups, the sequential (or dense) per-layer pass,
//! surgery into a model directory, and perplexity before and after.

use crate::graph::Graph;
use crate::keys::{text_digest, ModelSource};
use crate::layers::{embed_windows, layer_plans, stream_layer, Layers, LazySource};
use crate::report::RunReport;
use crate::summary::{AllocSummary, LayerPlan};
use crate::{AllocationKind, PipelineConfig, RunOptions, Stage};
use anyhow::{ensure, Context, Result};
use burn_tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{de::DeserializeOwned, Serialize};
use slim_artifact::schema::{LayerImportance, TaylorStats};
use slim_artifact::Kind;
use slim_artifact::{Key, KeyDoc, Store};
use slim_capture::{calibration_documents, layer_importance, random_windows, sample_windows};
use slim_checkpoint::layout::Global;
use slim_checkpoint::{LayerSource, ModelConfig, WeightSource};
use slim_model::{Llama, Tokenizer};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a finished run hands back.
#[derive(Debug)]
pub struct PipelineOutcome {
    /// Per-stage account of what ran and what was reused.
    pub report: RunReport,
    /// Parameters of the dense model (tied embeddings counted once).
    pub params_before: u64,
    /// Parameters of the pruned model.
    pub params_after: u64,
    /// The pruned (and recovered) model directory, inside the cache.
    pub pruned_dir: PathBuf,
    /// Key of the surgery entry holding `pruned_dir`.
    pub pruned_key: Key,
    /// Content key of the dense model.
    pub model_key: Key,
    /// Per-layer plan: ratio, kept heads, KV heads and channels.
    pub layers: Vec<LayerPlan>,
    /// Layer importance (cosine similarity) of the dense model.
    pub importance: Vec<f64>,
    /// What the allocation solved.
    pub alloc: AllocSummary,
}

/// Looks `doc` up in the store, or computes and stores it; records the outcome. Entries of
/// the stage `force` names are recomputed and replace what the store held.
pub(crate) fn cached<T: Serialize + DeserializeOwned>(
    store: &Store,
    report: &mut RunReport,
    force: Option<Stage>,
    label: &str,
    doc: &KeyDoc,
    compute: impl FnOnce() -> Result<T>,
) -> Result<(T, Key)> {
    let t = Instant::now();
    let key = doc.key();
    let forced = force.is_some_and(|s| s.covers(label));
    if forced && store.lookup(doc.stage(), &key)?.is_some() {
        store.remove(doc.stage(), &key)?;
    }
    if let Some(entry) = store.lookup(doc.stage(), &key)? {
        let v = entry.get_bin::<T>("value")?;
        report.record(label, true, t.elapsed().as_secs_f64());
        report.used(doc.stage(), key);
        tracing::debug!("{label} {}: cache hit {key}", doc.stage());
        return Ok((v, key));
    }
    tracing::debug!("{label} {}: computing {key}", doc.stage());
    let (v, peak) = slim_mem::measure(compute);
    let v = v?;
    let mut w = store.begin(doc)?;
    w.set_producer(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), None);
    w.put_bin("value", &v)?;
    w.commit()?;
    report.record_ran(label, t.elapsed().as_secs_f64(), peak);
    report.used(doc.stage(), key);
    Ok((v, key))
}

/// Runs the whole pipeline on `model_dir` with backend `B`.
pub fn run_pipeline<B: Backend>(
    model: &ModelSource,
    cfg: &PipelineConfig,
    store: &Store,
    data_root: &Path,
    device: &B::Device,
    opts: &RunOptions,
) -> Result<PipelineOutcome> {
    let (progress, force) = (opts.progress, opts.force);
    let mut report = RunReport::default();
    let t = Instant::now();
    let (model_dir, mkey) = (model.dir(), model.key());
    let calib_docs = calibration_documents(cfg.calib.source, data_root)?;
    let graph = Graph { cfg, model: mkey, calib_text: calib_docs.as_deref().map(text_digest) };
    report.record("hash", false, t.elapsed().as_secs_f64());
    let dense_cfg = ModelConfig::load(model_dir)?;
    let n_layers = dense_cfg.num_layers();
    cfg.check_model(&dense_cfg)?;

    // Calibration windows.
    let calib_doc = graph.calib()?;
    let (ids, calib_key) = cached(store, &mut report, force, "calib", &calib_doc, || match &calib_docs {
        None => Ok(random_windows(&cfg.calib, dense_cfg.vocab_size)),
        Some(docs) => {
            let tok = Tokenizer::load(model_dir)?;
            sample_windows(docs, &cfg.calib, &|s| tok.encode(s))
        }
    })?;
    let (nw, sl) = (cfg.calib.n_windows, cfg.calib.seq_len);
    ensure!(ids.len() == nw * sl, "calibration entry holds {} tokens, expected {nw}×{sl}", ids.len());

    // The dense weights, read one layer at a time and only when an entry is computed: a full
    // cache hit reads none. The Taylor capture reads each layer twice (forward, then backward).
    let src = LazySource::new(model_dir);
    // Seconds spent reading weights and building models, reported as the `load` stage
    // (it is also inside the times of the stages that needed it).
    let load_s = Cell::new(0.0);

    // Layer importance (dense pass), streamed layer by layer.
    let imp_doc = graph.importance(calib_key)?;
    let (importance, imp_key) = cached(store, &mut report, force, "capture", &imp_doc, || {
        let src = src.get()?;
        let x0 = timed(&load_s, || embed_windows::<B>(src, &dense_cfg, &ids, nw, sl, device))?;
        let mut model = Llama::<B>::empty(dense_cfg.clone(), device)?;
        let bar = layer_bar(progress, n_layers as u64, "importance");
        let r: LayerImportance =
            layer_importance(x0, n_layers, &mut |l, x| stream_layer(&mut model, src, l, x, &load_s), &mut |_| {
                bar.inc(1)
            })?;
        bar.finish_and_clear();
        Ok(r)
    })?;

    // Taylor capture: gradients of the dense model, for the `taylor` scorer only.
    let taylor = match graph.taylor(calib_key)? {
        Some(d) => {
            let (t, key) = cached(store, &mut report, force, "capture", &d, || -> Result<TaylorStats> {
                // One layer read at a time, twice: forward, then backward from the top; the reads
                // count in the `load` stage, as the other passes' do.
                let src = TimedSource { src: src.get()?, seconds: &load_s };
                let bar = layer_bar(progress, n_layers as u64, "gradients");
                let t = slim_capture::taylor_stats::<B>(&dense_cfg, &src, &ids, nw, sl, device, &mut |_| bar.inc(1))?;
                bar.finish_and_clear();
                tracing::info!("Taylor capture: calibration loss {:.4}", t.loss);
                Ok(t)
            })?;
            t.validate().map_err(|e| anyhow::format_err!("Taylor capture {key}: {e}"))?;
            ensure!(
                t.layers.len() == n_layers,
                "Taylor capture {key} holds {} layers, the model {n_layers}",
                t.layers.len()
            );
            Some((t, key))
        }
        None => None,
    };
    let taylor_key = taylor.as_ref().map(|t| t.1);

    // Allocation.
    let (plan, alloc_key, alloc_info) = match cfg.allocation {
        AllocationKind::Cosine => {
            let a = graph.alloc_config(n_layers)?;
            let d = graph.alloc(&a, imp_key)?;
            let (p, k) =
                cached(store, &mut report, force, "alloc", &d, || slim_alloc::solve(&dense_cfg, &importance.cos, &a))?;
            let info = AllocSummary::Cosine {
                r0: p.level,
                pruned_layers: a.num_selected,
                alpha: a.alpha,
                achieved: p.achieved,
            };
            (p, k, info)
        }
        AllocationKind::Uniform => {
            let u = graph.uniform_config(n_layers);
            let d = graph.alloc_uniform(&u)?;
            let (p, k) = cached(store, &mut report, force, "alloc", &d, || slim_alloc::solve_uniform(&dense_cfg, &u))?;
            let info = AllocSummary::Uniform { ratio: p.level, layers: [u.first, u.end], achieved: p.achieved };
            (p, k, info)
        }
        AllocationKind::FlapGlobal => {
            let g = graph.global_config();
            let inputs = crate::global::DenseInputs::<B> {
                graph: &graph,
                store,
                opts,
                calib: calib_key,
                taylor: taylor.as_ref().map(|(t, k)| (t, *k)),
                cfg: &dense_cfg,
                ids: &ids,
                n_windows: nw,
                seq_len: sl,
                device,
            };
            let (scores, skey) = crate::global::global_scores(&inputs, &mut report, &src, &load_s)?;
            let d = graph.alloc_global(&g, skey)?;
            let (p, k) =
                cached(store, &mut report, force, "alloc", &d, || slim_alloc::solve_global(&dense_cfg, &scores, &g))?;
            let info = AllocSummary::FlapGlobal {
                z_threshold: p.level,
                touched_layers: p.selected.len(),
                achieved: p.achieved,
            };
            (p, k, info)
        }
    };
    tracing::info!(
        "allocation ({}): {} → {} parameters ({:.2} % removed)",
        cfg.allocation.name(),
        plan.params_before,
        plan.params_after,
        100.0 * plan.achieved
    );

    // Per-layer passes: every key first, then only what the store lacks (crate::layers).
    // Opening the source reads the files' headers only (the dtype the pruned model is stored in).
    let docs = graph.layer_docs(&plan.counts, calib_key, taylor_key, alloc_key, src.get()?.model_dtype())?;
    let layers = Layers::<B> {
        cfg,
        store,
        force,
        dense: &dense_cfg,
        plan: &plan,
        docs: &docs,
        taylor: taylor.as_ref().map(|t| &t.0),
        ids: &ids,
        n_windows: nw,
        seq_len: sl,
        device,
        progress,
        src: &src,
        load_s: &load_s,
    };
    let decided = layers.last_to_compute()?;
    if let Some(last) = decided {
        layers.decide(&mut report, last)?;
    }

    // Surgery output: the pruned model directory.
    let sg_doc = &docs.surgery;
    let t = Instant::now();
    if force == Some(Stage::Surgery) && store.lookup("surgery", &sg_doc.key())?.is_some() {
        store.remove("surgery", &sg_doc.key())?;
    }
    let mut hit = store.lookup("surgery", &sg_doc.key())?;
    if let Some(e) = &hit {
        // The model files are read by path, not through the store's checked reads: check
        // them (sizes, and contents of files touched since the commit) before trusting them.
        if let Err(err) = e.check_dir("model", opts.verify_reused) {
            tracing::warn!("surgery entry {} is damaged ({err}); removing it and rebuilding it", sg_doc.key());
            store.remove("surgery", &sg_doc.key())?;
            hit = None;
        }
    }
    let pruned_dir = match hit {
        Some(e) => {
            report.record("surgery", true, t.elapsed().as_secs_f64());
            e.path_of("model")?
        }
        None => {
            let mut wr = store.begin(sg_doc)?;
            let dir = wr.dir_path("model")?;
            let (written, peak) = slim_mem::measure(|| layers.write_model(&dir, model_dir));
            written?;
            let key = wr.commit()?;
            report.record_ran("surgery", t.elapsed().as_secs_f64(), peak);
            store.lookup("surgery", &key)?.context("surgery entry just committed")?.path_of("model")?
        }
    };
    report.used("surgery", sg_doc.key());
    if load_s.get() > 0.0 {
        report.record("load", false, load_s.get());
    }
    let after_cfg = ModelConfig::load(&pruned_dir)?;
    let decisions = layer_plans(&plan, &after_cfg, layers.kept(&mut report, decided)?);
    Ok(PipelineOutcome {
        report,
        params_before: dense_cfg.num_params(),
        params_after: after_cfg.num_params(),
        pruned_dir,
        pruned_key: sg_doc.key(),
        model_key: mkey,
        layers: decisions,
        importance: importance.cos,
        alloc: alloc_info,
    })
}

/// Runs `f`, adding its wall time to `acc`.
/// A [`WeightSource`] whose reads add their seconds to `seconds`.
struct TimedSource<'a> {
    src: &'a WeightSource,
    seconds: &'a Cell<f64>,
}

impl LayerSource for TimedSource<'_> {
    fn layer(&self, cfg: &ModelConfig, l: usize) -> Result<slim_checkpoint::Weights> {
        timed(self.seconds, || self.src.read_layer(cfg, l))
    }

    fn global(&self, cfg: &ModelConfig, g: Global) -> Result<slim_checkpoint::HostTensor> {
        timed(self.seconds, || self.src.read_global(cfg, g))
    }
}

pub(crate) fn timed<T>(acc: &Cell<f64>, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    acc.set(acc.get() + t.elapsed().as_secs_f64());
    v
}

pub(crate) fn layer_bar(progress: bool, n: u64, msg: &'static str) -> ProgressBar {
    let bar = if progress { ProgressBar::new(n) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} layers, {per_sec}, ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(msg);
    bar
}

/// A perplexity text, loaded and digested before any long work (so that a missing text
/// fails before the pruning, and another text under the same name gets its own entries).
#[derive(Clone, Debug)]
pub struct EvalInput {
    /// Which text.
    pub data: slim_data::EvalText,
    /// The prepared text ([`slim_data::EvalText::load`]).
    pub text: String,
    /// [`text_digest`] of `text`.
    pub digest: String,
}

impl EvalInput {
    /// Loads `data` from `data_root`.
    pub fn load(data: slim_data::EvalText, data_root: &Path) -> Result<EvalInput> {
        let text = data.load(data_root)?;
        let digest = text_digest(&[&text]);
        Ok(EvalInput { data, text, digest })
    }
}

/// Perplexity of a model directory on a text, as a cached `eval` entry.
#[allow(clippy::too_many_arguments)]
pub fn eval_ppl_cached<B: Backend>(
    store: &Store,
    report: &mut RunReport,
    model_dir: &Path,
    model_key: Key,
    input: &EvalInput,
    ppl: &slim_eval::PplConfig,
    device: &B::Device,
) -> Result<slim_eval::PplResult> {
    let d = crate::graph::eval_doc(model_key, input.data, Some(&input.digest), ppl.seq_len, ppl.max_windows)?;
    Ok(cached(store, report, None, "eval", &d, || {
        let ids = Tokenizer::load(model_dir)?.encode(&input.text)?;
        // One layer in memory at a time; the same result to the bit as the whole model's.
        let src = WeightSource::open(model_dir)?;
        slim_eval::perplexity_streamed::<B>(&src, &ModelConfig::load(model_dir)?, &ids, ppl, device)
    })?
    .0)
}
