//! Running the stage graph: cache lookups, the sequential (or dense) per-layer pass,
//! surgery into a model directory, and perplexity before and after.

use crate::graph::{head_prune, Graph};
use crate::keys::{text_digest, ModelSource};
use crate::report::RunReport;
use crate::summary::{AllocSummary, LayerPlan};
use crate::{AllocationKind, CalibMode, PipelineConfig, RunOptions, Stage};
use anyhow::{ensure, Context, Result};
use burn_tensor::{backend::Backend, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use slim_artifact::schema::{AttnStats, LayerImportance, MlpStats, TaylorStats};
use slim_artifact::Kind;
use slim_artifact::{Key, KeyDoc, Store};
use slim_capture::{
    calibration_documents, capture_attn, capture_mlp, layer_importance, random_windows, sample_windows,
};
use slim_checkpoint::{layout::Proj, ModelConfig, Weights};
use slim_model::{LayerTaps, Llama, TapSet, Tokenizer};
use slim_recover::Refit;
use slim_score::{ChannelInputs, HeadInputs};
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

/// The layer decisions of one layer, as cached.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct HeadDecision {
    kept: Vec<usize>,
    kv_kept: Vec<usize>,
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
    let v = compute()?;
    let mut w = store.begin(doc)?;
    w.set_producer(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), None);
    w.put_bin("value", &v)?;
    w.commit()?;
    report.record(label, false, t.elapsed().as_secs_f64());
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

    // The dense model, loaded lazily: a full cache hit never needs it.
    let mut weights: Option<Weights> = None;
    // Seconds spent reading weights and building models, reported as the `load` stage
    // (it is also inside the times of the stages that needed it).
    let load_s = Cell::new(0.0);
    let load_weights =
        |weights: &mut Option<Weights>| -> Result<Weights> { Ok(dense_weights(weights, model_dir, &load_s)?.clone()) };

    // Layer importance (dense pass).
    let imp_doc = graph.importance(calib_key)?;
    // The dense model the importance pass builds is kept: it is where both calibration
    // modes start (nothing is pruned yet), so the per-layer pass need not build it again.
    let mut built: Option<Llama<B>> = None;
    let (importance, imp_key) = cached(store, &mut report, force, "capture", &imp_doc, || {
        let w = dense_weights(&mut weights, model_dir, &load_s)?;
        let model = timed(&load_s, || Llama::<B>::from_weights(dense_cfg.clone(), w, device))?;
        let bar = layer_bar(progress, n_layers as u64, "importance");
        let r: LayerImportance = layer_importance(&model, &ids, nw, sl, &mut |_| bar.inc(1))?;
        bar.finish_and_clear();
        built = Some(model);
        Ok(r)
    })?;

    // Taylor capture: gradients of the dense model, for the `taylor` scorer only.
    let taylor = match graph.taylor(calib_key)? {
        Some(d) => {
            let (t, key) = cached(store, &mut report, force, "capture", &d, || -> Result<TaylorStats> {
                let w = dense_weights(&mut weights, model_dir, &load_s)?;
                let bar = layer_bar(progress, n_layers as u64, "gradients");
                let t = slim_capture::taylor_stats::<B>(&dense_cfg, w, &ids, nw, sl, device, &mut |_| bar.inc(1))?;
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
            let (scores, skey) = crate::global::global_scores(&inputs, &mut report, &mut weights, &|| {
                timed(&load_s, || Weights::load(model_dir))
            })?;
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

    // Per-layer pass.
    let mut cur_cfg = dense_cfg.clone();
    let mut cur_w: Option<Weights> = None; // pruned so far; loaded on first need
    let (mut model, mut dense_model): (Option<Llama<B>>, Option<Llama<B>>) = match cfg.calib_mode {
        CalibMode::Sequential => (built.take(), None), // runtime of cur_w, for sequential capture
        CalibMode::Dense => (None, built.take()),      // the unpruned model, for dense capture
    };
    let mut x: Option<Tensor<B, 3>> = None; // input of the current layer (sequential)
    let mut xd: Option<Tensor<B, 3>> = None; // input of the current layer (dense model)
    let mut chain = graph.chain_start(calib_key)?;
    let mut decisions = Vec::with_capacity(n_layers);
    let bar = layer_bar(progress, n_layers as u64, "layers");
    for l in 0..n_layers {
        let counts = &plan.counts[l];
        let ratio = plan.ratios[l];
        let untouched = counts.heads == 0 && counts.channels == 0;
        if untouched {
            let s = &cur_cfg.layers[l];
            decisions.push(LayerPlan {
                layer: l,
                ratio,
                heads: s.num_heads,
                kv_heads: s.num_kv_heads,
                channels: s.intermediate_size,
                kept_heads: None,
                kept_kv_heads: None,
            });
            if let (Some(m), Some(xi)) = (&model, x.take()) {
                x = Some(m.layer_forward(l, xi, TapSet::NONE).0);
            }
            if let (Some(m), Some(xi)) = (&dense_model, xd.take()) {
                xd = Some(m.layer_forward(l, xi, TapSet::NONE).0);
            }
            bar.inc(1);
            continue;
        }
        let w_now = match &mut cur_w {
            Some(w) => w,
            // Sequential mode never needs the dense weights again: move them instead of copying.
            None if cfg.calib_mode == CalibMode::Sequential => cur_w.insert(match weights.take() {
                Some(w) => w,
                None => timed(&load_s, || Weights::load(model_dir))?,
            }),
            None => cur_w.insert(load_weights(&mut weights)?),
        };
        // Attention statistics.
        let ca_doc = graph.capture_attn(l, chain, calib_key)?;
        let (astats, ca_key) = cached(store, &mut report, force, "capture", &ca_doc, || -> Result<AttnStats> {
            let (m, xi) = layer_input(
                cfg.calib_mode,
                l,
                &mut model,
                &mut dense_model,
                &mut x,
                &mut xd,
                &cur_cfg,
                w_now,
                &dense_cfg,
                &mut weights,
                model_dir,
                &ids,
                nw,
                sl,
                device,
                &load_s,
            )?;
            capture_attn(m, l, xi, w_now.get(&Proj::O.weight(l))?)
        })?;
        let shape = cur_cfg.layers[l].clone();
        let sa_doc = graph.score_attn(counts, ca_key, taylor_key)?;
        let (heads, sa_key) = cached(store, &mut report, force, "score", &sa_doc, || {
            let o = w_now.get(&Proj::O.weight(l))?;
            let inputs = HeadInputs {
                stats: &astats,
                o_proj: o,
                kv_head_of: &shape.kv_head_of,
                num_kv_heads: shape.num_kv_heads,
                taylor: taylor.as_ref().map(|t| &t.0.layers[l]),
            };
            let s = slim_score::select_heads(cfg.scorer, &inputs, head_prune(counts, cfg.gqa))?;
            Ok(HeadDecision { kept: s.kept, kv_kept: s.kv_kept })
        })?;
        let ra_doc = graph.recover_attn(ca_key, sa_key)?;
        let (attn_refit, ra_key) = cached(store, &mut report, force, "recover", &ra_doc, || -> Result<Refit> {
            let o = w_now.get(&Proj::O.weight(l))?;
            slim_recover::refit_attention(cfg.recovery, &astats, o, &heads.kept, &cfg.lstsq)
        })?;
        let t = Instant::now();
        match attn_refit {
            Refit::None => slim_surgery::prune_attention(&mut cur_cfg, w_now, l, &heads.kept, &heads.kv_kept, None)?,
            Refit::Affine(a) => {
                slim_surgery::prune_attention(&mut cur_cfg, w_now, l, &heads.kept, &heads.kv_kept, Some(&a))?
            }
            Refit::Columns(c) => slim_surgery::prune_attention_columns(
                &mut cur_cfg,
                w_now,
                l,
                &heads.kept,
                &heads.kv_kept,
                c.weight,
                &c.bias,
            )?,
        };
        if let Some(m) = &mut model {
            m.replace_layer(l, cur_cfg.layers[l].clone(), w_now)?;
        }
        report.record("surgery", false, t.elapsed().as_secs_f64());

        // MLP statistics (sequential: after this layer's attention was pruned).
        let cm_doc = graph.capture_mlp(l, chain, calib_key, ra_key)?;
        // Sequential mode: the output of this layer's pruned attention, kept so that moving
        // the input past this layer only runs its (pruned) MLP.
        let mut after_attn: Option<Tensor<B, 3>> = None;
        let (mstats, cm_key) = cached(store, &mut report, force, "capture", &cm_doc, || -> Result<MlpStats> {
            let (m, xi) = layer_input(
                cfg.calib_mode,
                l,
                &mut model,
                &mut dense_model,
                &mut x,
                &mut xd,
                &cur_cfg,
                w_now,
                &dense_cfg,
                &mut weights,
                model_dir,
                &ids,
                nw,
                sl,
                device,
                &load_s,
            )?;
            let (stats, h) = capture_mlp(m, l, xi)?;
            if cfg.calib_mode == CalibMode::Sequential {
                after_attn = Some(h);
            }
            Ok(stats)
        })?;
        let sm_doc = graph.score_mlp(counts, cm_key, taylor_key)?;
        let (channels, sm_key) = cached(store, &mut report, force, "score", &sm_doc, || {
            let inputs = ChannelInputs {
                stats: &mstats,
                gate: w_now.get(&Proj::Gate.weight(l))?,
                up: w_now.get(&Proj::Up.weight(l))?,
                down: w_now.get(&Proj::Down.weight(l))?,
                taylor: taylor.as_ref().map(|t| &t.0.layers[l]),
            };
            Ok(slim_score::select_channels(cfg.scorer, &inputs, counts.channels, cfg.keep_lowest)?.kept)
        })?;
        let rm_doc = graph.recover_mlp(cm_key, sm_key)?;
        let (mlp_refit, rm_key) = cached(store, &mut report, force, "recover", &rm_doc, || -> Result<Refit> {
            slim_recover::refit_mlp(cfg.recovery, &mstats, w_now.get(&Proj::Down.weight(l))?, &channels, &cfg.lstsq)
        })?;
        let t = Instant::now();
        match mlp_refit {
            Refit::None => slim_surgery::prune_mlp(&mut cur_cfg, w_now, l, &channels, None)?,
            Refit::Affine(a) => slim_surgery::prune_mlp(&mut cur_cfg, w_now, l, &channels, Some(&a))?,
            Refit::Columns(c) => slim_surgery::prune_mlp_columns(&mut cur_cfg, w_now, l, &channels, c.weight, &c.bias)?,
        };
        if let Some(m) = &mut model {
            m.replace_layer(l, cur_cfg.layers[l].clone(), w_now)?;
        }
        report.record("surgery", false, t.elapsed().as_secs_f64());
        // Advance the layer inputs past this layer.
        if let (Some(m), Some(xi)) = (&model, x.take()) {
            x = Some(match after_attn.take() {
                Some(h) => m.mlp_block(l, h, TapSet::NONE, &mut LayerTaps::empty()),
                None => m.layer_forward(l, xi, TapSet::NONE).0,
            });
        }
        if let (Some(m), Some(xi)) = (&dense_model, xd.take()) {
            xd = Some(m.layer_forward(l, xi, TapSet::NONE).0);
        }
        chain = graph.chain_next(l, chain, ra_key, rm_key)?;
        let s = &cur_cfg.layers[l];
        tracing::info!(
            "layer {l:>3}: ratio {ratio:.3}, heads {}→{}, kv heads {}→{}, channels {}→{}",
            shape.num_heads,
            s.num_heads,
            shape.num_kv_heads,
            s.num_kv_heads,
            shape.intermediate_size,
            s.intermediate_size
        );
        decisions.push(LayerPlan {
            layer: l,
            ratio,
            heads: s.num_heads,
            kv_heads: s.num_kv_heads,
            channels: s.intermediate_size,
            kept_heads: Some(heads.kept),
            kept_kv_heads: Some(heads.kv_kept),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Surgery output: the pruned model directory.
    let sg_doc = graph.surgery(n_layers, chain, alloc_key)?;
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
            let w = match cur_w {
                Some(w) => w,
                None => load_weights(&mut weights)?,
            };
            let mut wr = store.begin(&sg_doc)?;
            let dir = wr.dir_path("model")?;
            slim_checkpoint::save_model_dir(&dir, &cur_cfg, &w, model_dir)?;
            let key = wr.commit()?;
            report.record("surgery", false, t.elapsed().as_secs_f64());
            store.lookup("surgery", &key)?.context("surgery entry just committed")?.path_of("model")?
        }
    };
    report.used("surgery", sg_doc.key());
    if load_s.get() > 0.0 {
        report.record("load", false, load_s.get());
    }
    let after_cfg = ModelConfig::load(&pruned_dir)?;
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

/// The model and input to capture layer `l` from, built on first need: in sequential mode
/// the partly pruned model fed by the pruned prefix, in dense mode the unpruned model.
#[allow(clippy::too_many_arguments)]
fn layer_input<'m, B: Backend>(
    mode: CalibMode,
    l: usize,
    model: &'m mut Option<Llama<B>>,
    dense_model: &'m mut Option<Llama<B>>,
    x: &mut Option<Tensor<B, 3>>,
    xd: &mut Option<Tensor<B, 3>>,
    cur_cfg: &ModelConfig,
    cur_w: &Weights,
    dense_cfg: &ModelConfig,
    dense_w: &mut Option<Weights>,
    model_dir: &Path,
    ids: &[u32],
    nw: usize,
    sl: usize,
    device: &B::Device,
    load_s: &Cell<f64>,
) -> Result<(&'m Llama<B>, Tensor<B, 3>)> {
    let (m, xi) = match mode {
        CalibMode::Sequential => {
            if model.is_none() {
                *model = Some(timed(load_s, || Llama::from_weights(cur_cfg.clone(), cur_w, device))?);
            }
            (model.as_ref().expect("built"), x)
        }
        CalibMode::Dense => {
            if dense_model.is_none() {
                if dense_w.is_none() {
                    *dense_w = Some(timed(load_s, || Weights::load(model_dir))?);
                }
                *dense_model = Some(timed(load_s, || {
                    Llama::from_weights(dense_cfg.clone(), dense_w.as_ref().expect("loaded"), device)
                })?);
            }
            (dense_model.as_ref().expect("built"), xd)
        }
    };
    if xi.is_none() {
        *xi = Some(slim_capture::layer_input(m, ids, nw, sl, l)?);
    }
    Ok((m, xi.clone().expect("set")))
}

/// The dense weights, read on first need (the reading timed into `load_s`).
fn dense_weights<'w>(weights: &'w mut Option<Weights>, model_dir: &Path, load_s: &Cell<f64>) -> Result<&'w Weights> {
    if weights.is_none() {
        *weights = Some(timed(load_s, || Weights::load(model_dir))?);
    }
    Ok(weights.as_ref().expect("just loaded"))
}

/// Runs `f`, adding its wall time to `acc`.
fn timed<T>(acc: &Cell<f64>, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    acc.set(acc.get() + t.elapsed().as_secs_f64());
    v
}

fn layer_bar(progress: bool, n: u64, msg: &'static str) -> ProgressBar {
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
        let m = Llama::<B>::load(model_dir, device)?;
        slim_eval::perplexity(&m, &ids, ppl)
    })?
    .0)
}
