//! The per-layer half of a run, one decoder layer at a time.
//!
//! Every per-layer key is known before any value ([`crate::graph::Graph::layer_docs`]), so a run
//! first asks the store what it holds:
//! - **decisions** ([`Layers::decide`]): when some layer's entries are missing, the layers up to
//!   the last such one are walked in order. Each layer's dense weights are read from the model's
//!   files ([`WeightSource`]), put on the device alone, captured, scored, recovered and sliced;
//!   the calibration activations are carried to the next layer (through the pruned layer in
//!   sequential mode, the dense one in dense mode) and the layer is dropped. Memory holds one
//!   layer's weights, its pruned copy and the activations, whatever the depth of the model.
//! - **surgery** ([`Layers::write_model`]): when the pruned model is not cached, it is written
//!   tensor by tensor in the dense model's dtype, each layer read and sliced again from the
//!   decisions the store now holds.
//! - a run whose every entry is cached reads no weight and slices nothing.

use crate::graph::{head_prune, LayerDocs, LayerPlanDocs};
use crate::report::RunReport;
use crate::run::{cached, layer_bar, timed};
use crate::summary::LayerPlan;
use crate::{CalibMode, PipelineConfig, Stage};
use anyhow::{format_err, Context, Result};
use burn_tensor::{backend::Backend, Tensor};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use slim_alloc::Allocation;
use slim_artifact::schema::{AttnStats, MlpStats, TaylorStats};
use slim_artifact::{KeyDoc, Store};
use slim_capture::{capture_attn, capture_mlp};
use slim_checkpoint::layout::{Global, Proj, TensorId};
use slim_checkpoint::{HostTensor, ModelConfig, WeightSource, Weights};
use slim_model::{LayerTaps, Llama, TapSet};
use slim_recover::Refit;
use slim_score::{ChannelInputs, HeadInputs};
use std::cell::{Cell, OnceCell};
use std::path::Path;
use std::time::Instant;

/// The kept heads of one layer, as cached (`score-attn` entries).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HeadDecision {
    pub kept: Vec<usize>,
    pub kv_kept: Vec<usize>,
}

/// A layer's kept heads and channels; `None` for a layer the allocation leaves untouched.
pub(crate) type Kept = Option<(HeadDecision, Vec<usize>)>;

/// The dense model's weights, opened on first need: a run that needs none opens no file.
pub(crate) struct LazySource<'a> {
    dir: &'a Path,
    src: OnceCell<WeightSource>,
}

impl<'a> LazySource<'a> {
    pub fn new(dir: &'a Path) -> Self {
        Self { dir, src: OnceCell::new() }
    }

    pub fn get(&self) -> Result<&WeightSource> {
        if self.src.get().is_none() {
            let s = WeightSource::open(self.dir)?;
            let _ = self.src.set(s);
        }
        Ok(self.src.get().expect("just set"))
    }
}

/// The calibration windows embedded: the input of layer 0, with only the embedding read.
///
/// # Shapes
/// ids: `n_windows·seq_len` → `[n_windows, seq_len, d]`
pub(crate) fn embed_windows<B: Backend>(
    src: &WeightSource,
    cfg: &ModelConfig,
    ids: &[u32],
    n_windows: usize,
    seq_len: usize,
    device: &B::Device,
) -> Result<Tensor<B, 3>> {
    let mut m = Llama::<B>::empty(cfg.clone(), device)?;
    m.load_embedding(src.read_global(cfg, Global::Embedding)?)?;
    Ok(m.embed(m.ids_tensor(ids, n_windows, seq_len)?))
}

/// Runs `x` through dense layer `l` of `model`, read from `src` for the call and dropped after.
pub(crate) fn stream_layer<B: Backend>(
    model: &mut Llama<B>,
    src: &WeightSource,
    l: usize,
    x: Tensor<B, 3>,
    load_s: &Cell<f64>,
) -> Result<Tensor<B, 3>> {
    let w = timed(load_s, || src.read_layer(model.config(), l))?;
    model.load_layer(l, &w)?;
    let y = model.layer_forward(l, x, TapSet::NONE).0;
    model.unload_layer(l);
    Ok(y)
}

/// What the per-layer passes share.
pub(crate) struct Layers<'a, B: Backend> {
    pub cfg: &'a PipelineConfig,
    pub store: &'a Store,
    pub force: Option<Stage>,
    pub dense: &'a ModelConfig,
    pub plan: &'a Allocation,
    pub docs: &'a LayerPlanDocs,
    pub taylor: Option<&'a TaylorStats>,
    pub ids: &'a [u32],
    pub n_windows: usize,
    pub seq_len: usize,
    pub device: &'a B::Device,
    pub progress: bool,
    pub src: &'a LazySource<'a>,
    /// Seconds spent reading weights (the run's `load` figure).
    pub load_s: &'a Cell<f64>,
}

impl<B: Backend> Layers<'_, B> {
    /// Whether the entry `doc` (of the run's stage `label`) will be reused: cached and not forced.
    fn reusable(&self, label: &str, doc: &KeyDoc) -> Result<bool> {
        if self.force.is_some_and(|s| s.covers(label)) {
            return Ok(false);
        }
        Ok(self.store.lookup(doc.stage(), &doc.key())?.is_some())
    }

    /// The last layer with an entry to compute, or `None` when every per-layer entry is reused.
    pub fn last_to_compute(&self) -> Result<Option<usize>> {
        let mut last = None;
        for (l, d) in self.docs.layers.iter().enumerate() {
            if let Some(d) = d {
                for (label, doc) in d.all() {
                    if !self.reusable(label, doc)? {
                        last = Some(l);
                        break;
                    }
                }
            }
        }
        Ok(last)
    }

    /// Computes the missing per-layer entries of layers `0..=last` (see the module docs).
    pub fn decide(&self, report: &mut RunReport, last: usize) -> Result<()> {
        let (store, force) = (self.store, self.force);
        let src = self.src.get()?;
        let sequential = self.cfg.calib_mode == CalibMode::Sequential;
        let mut model = Llama::<B>::empty(self.dense.clone(), self.device)?;
        let mut x = timed(self.load_s, || {
            embed_windows::<B>(src, self.dense, self.ids, self.n_windows, self.seq_len, self.device)
        })?;
        let mut cur = self.dense.clone();
        let bar = layer_bar(self.progress, last as u64 + 1, "layers");
        for l in 0..=last {
            let Some(d) = &self.docs.layers[l] else {
                x = stream_layer(&mut model, src, l, x, self.load_s)?;
                bar.inc(1);
                continue;
            };
            let heap = slim_mem::Scope::start();
            let mut lw = timed(self.load_s, || src.read_layer(self.dense, l))?;
            model.load_layer(l, &lw)?;
            // The device holds the MLP for the captures: its host copy (a LLaMA-7B layer: 541 MB in
            // f32) is read again when the channels are scored.
            let mlp_names = mlp_tensors(&lw, l);
            for n in &mlp_names {
                lw.take(n)?;
            }
            let counts = &self.plan.counts[l];
            let (astats, _) = cached(store, report, force, "capture", &d.capture_attn, || -> Result<AttnStats> {
                capture_attn(&model, l, x.clone(), lw.get(&Proj::O.weight(l))?)
            })?;
            let shape = self.dense.layers[l].clone();
            let (heads, _) = cached(store, report, force, "score", &d.score_attn, || {
                let inputs = HeadInputs {
                    stats: &astats,
                    o_proj: lw.get(&Proj::O.weight(l))?,
                    kv_head_of: &shape.kv_head_of,
                    num_kv_heads: shape.num_kv_heads,
                    taylor: self.taylor.map(|t| &t.layers[l]),
                };
                let s = slim_score::select_heads(self.cfg.scorer, &inputs, head_prune(counts, self.cfg.gqa))?;
                Ok(HeadDecision { kept: s.kept, kv_kept: s.kv_kept })
            })?;
            let (attn, _) = cached(store, report, force, "recover", &d.recover_attn, || -> Result<Refit> {
                let o = lw.get(&Proj::O.weight(l))?;
                slim_recover::refit_attention(self.cfg.recovery, &astats, o, &heads.kept, &self.cfg.lstsq)
            })?;
            drop(astats);
            let t = Instant::now();
            let (done, peak) = slim_mem::measure(|| -> Result<()> {
                apply_attention(&mut cur, &mut lw, l, &heads, attn)?;
                if sequential {
                    model.replace_attention(l, cur.layers[l].clone(), &lw)?;
                }
                Ok(())
            });
            done?;
            report.record_ran("surgery", t.elapsed().as_secs_f64(), peak);
            // Sequential mode: the output of the pruned attention, so that moving past this layer
            // runs only its (pruned) MLP.
            let mut after_attn: Option<Tensor<B, 3>> = None;
            let (mstats, _) = cached(store, report, force, "capture", &d.capture_mlp, || -> Result<MlpStats> {
                let (stats, h) = capture_mlp(&model, l, x.clone())?;
                after_attn = sequential.then_some(h);
                Ok(stats)
            })?;
            if sequential {
                // Moving on runs the pruned layer, loaded after the MLP's surgery: the device copy
                // of the dense MLP is not needed while the channels are scored and refitted.
                model.unload_layer(l);
            }
            timed(self.load_s, || -> Result<()> {
                for n in mlp_names {
                    let t = src.read(&n)?;
                    lw.insert(n, t);
                }
                Ok(())
            })?;
            let (channels, _) = cached(store, report, force, "score", &d.score_mlp, || {
                let inputs = ChannelInputs {
                    stats: &mstats,
                    gate: lw.get(&Proj::Gate.weight(l))?,
                    up: lw.get(&Proj::Up.weight(l))?,
                    down: lw.get(&Proj::Down.weight(l))?,
                    taylor: self.taylor.map(|t| &t.layers[l]),
                };
                Ok(slim_score::select_channels(self.cfg.scorer, &inputs, counts.channels, self.cfg.keep_lowest)?.kept)
            })?;
            let (mlp, _) = cached(store, report, force, "recover", &d.recover_mlp, || -> Result<Refit> {
                let down = lw.get(&Proj::Down.weight(l))?;
                slim_recover::refit_mlp(self.cfg.recovery, &mstats, down, &channels, &self.cfg.lstsq)
            })?;
            drop(mstats);
            let t = Instant::now();
            let (done, peak) = slim_mem::measure(|| apply_mlp(&mut cur, &mut lw, l, &channels, mlp));
            done?;
            report.record_ran("surgery", t.elapsed().as_secs_f64(), peak);
            if l < last {
                x = if sequential {
                    model.replace_layer(l, cur.layers[l].clone(), &lw)?;
                    match after_attn.take() {
                        Some(h) => model.mlp_block(l, h, TapSet::NONE, &mut LayerTaps::empty()),
                        None => model.layer_forward(l, x, TapSet::NONE).0,
                    }
                } else {
                    model.layer_forward(l, x, TapSet::NONE).0 // the dense layer, still loaded
                };
            }
            model.unload_layer(l);
            let heap = heap.end().map(|b| format!(", heap peak {}", slim_mem::human(b))).unwrap_or_default();
            let (s, p) = (&cur.layers[l], &shape);
            tracing::info!(
                "layer {l:>3}: ratio {:.3}, heads {}→{}, kv heads {}→{}, channels {}→{}{heap}",
                self.plan.ratios[l],
                p.num_heads,
                s.num_heads,
                p.num_kv_heads,
                s.num_kv_heads,
                p.intermediate_size,
                s.intermediate_size
            );
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// A cached entry's value; the entries are all in the store once [`Layers::decide`] ran.
    fn entry<T: DeserializeOwned>(&self, report: &mut RunReport, label: &str, doc: &KeyDoc) -> Result<T> {
        let t = Instant::now();
        let v = self
            .store
            .lookup(doc.stage(), &doc.key())?
            .ok_or_else(|| {
                format_err!(
                    "cache entry {} {} was removed during the run (a concurrent `cache gc`?)",
                    doc.stage(),
                    doc.key()
                )
            })?
            .get_bin::<T>("value")?;
        report.record(label, true, t.elapsed().as_secs_f64());
        report.used(doc.stage(), doc.key());
        Ok(v)
    }

    /// Records a cached entry as reused without reading it.
    fn reuse(&self, report: &mut RunReport, label: &str, doc: &KeyDoc) {
        report.record(label, true, 0.0);
        report.used(doc.stage(), doc.key());
    }

    /// The kept heads and channels of every layer (`None` for untouched layers), reading only the
    /// small score entries. The entries of layers past `decided` (those [`Layers::decide`] did not
    /// walk) are recorded as reused.
    pub fn kept(&self, report: &mut RunReport, decided: Option<usize>) -> Result<Vec<Kept>> {
        let mut out = Vec::with_capacity(self.docs.layers.len());
        let mut scratch = RunReport::default();
        for (l, d) in self.docs.layers.iter().enumerate() {
            let Some(d) = d else {
                out.push(None);
                continue;
            };
            let r = if decided.is_some_and(|last| l <= last) { &mut scratch } else { &mut *report };
            for (label, doc) in [
                ("capture", &d.capture_attn),
                ("recover", &d.recover_attn),
                ("capture", &d.capture_mlp),
                ("recover", &d.recover_mlp),
            ] {
                self.reuse(r, label, doc);
            }
            out.push(Some((self.entry(r, "score", &d.score_attn)?, self.entry(r, "score", &d.score_mlp)?)));
        }
        Ok(out)
    }

    /// The decisions of layer `l` as read from the store.
    fn decision(&self, report: &mut RunReport, d: &LayerDocs) -> Result<(HeadDecision, Refit, Vec<usize>, Refit)> {
        Ok((
            self.entry(report, "score", &d.score_attn)?,
            self.entry(report, "recover", &d.recover_attn)?,
            self.entry(report, "score", &d.score_mlp)?,
            self.entry(report, "recover", &d.recover_mlp)?,
        ))
    }

    /// The pruned model's config: each layer's shape from its decisions, nothing sliced.
    fn pruned_config(&self) -> Result<ModelConfig> {
        let mut report = RunReport::default(); // bookkeeping reads, not stages
        let report = &mut report;
        let mut cfg = self.dense.clone();
        for (l, d) in self.docs.layers.iter().enumerate() {
            let Some(d) = d else { continue };
            let (heads, attn, channels, mlp) = self.decision(report, d)?;
            let old = &self.dense.layers[l];
            let s = slim_surgery::attention_shape(
                old,
                l,
                &heads.kept,
                &heads.kv_kept,
                old.o_proj_bias || adds_bias(&attn),
            )?;
            cfg.layers[l] = slim_surgery::mlp_shape(&s, l, &channels, old.down_proj_bias || adds_bias(&mlp))?;
        }
        Ok(cfg)
    }

    /// Writes the pruned model into `dir` one tensor at a time: the globals copied from the dense
    /// model, each layer read and sliced by its cached decisions when its first tensor is due.
    pub fn write_model(&self, dir: &Path, side_files_from: &Path) -> Result<ModelConfig> {
        let src = self.src.get()?;
        let cfg = self.pruned_config()?;
        let mut layer: Option<(usize, Weights)> = None;
        let mut sub = RunReport::default(); // bookkeeping reads, not stages
        let mut tensor = |name: &str| -> Result<HostTensor> {
            let l = match TensorId::from_hf_name(name) {
                Some(TensorId::Norm { layer, .. } | TensorId::Proj { layer, .. }) => layer,
                _ => return timed(self.load_s, || src.read(name)),
            };
            if layer.as_ref().is_none_or(|(have, _)| *have != l) {
                layer = None; // drop the previous layer first
                let mut w = timed(self.load_s, || src.read_layer(self.dense, l))?;
                if let Some(d) = &self.docs.layers[l] {
                    let (heads, attn, channels, mlp) = self.decision(&mut sub, d)?;
                    let mut c = self.dense.clone();
                    apply_attention(&mut c, &mut w, l, &heads, attn)?;
                    apply_mlp(&mut c, &mut w, l, &channels, mlp)?;
                }
                layer = Some((l, w));
            }
            let (_, w) = layer.as_mut().expect("just set");
            w.take(name).with_context(|| format!("slicing layer {l}"))
        };
        slim_checkpoint::save_model_dir_with(dir, &cfg, side_files_from, src.model_dtype(), &mut tensor)?;
        Ok(cfg)
    }
}

/// The names of layer `l`'s MLP tensors in `w`: its weights, and its biases where it has them.
fn mlp_tensors(w: &Weights, l: usize) -> Vec<String> {
    [Proj::Gate, Proj::Up, Proj::Down]
        .into_iter()
        .flat_map(|p| [p.weight(l), p.bias(l)])
        .filter(|n| w.contains(n))
        .collect()
}

/// Whether a refit gives its projection a bias.
fn adds_bias(r: &Refit) -> bool {
    !matches!(r, Refit::None)
}

/// Slices layer `l`'s attention to `heads` and installs the refit.
fn apply_attention(cfg: &mut ModelConfig, w: &mut Weights, l: usize, heads: &HeadDecision, r: Refit) -> Result<()> {
    let (h, kv) = (&heads.kept, &heads.kv_kept);
    match r {
        Refit::None => slim_surgery::prune_attention(cfg, w, l, h, kv, None)?,
        Refit::Affine(a) => slim_surgery::prune_attention(cfg, w, l, h, kv, Some(&a))?,
        Refit::Columns(c) => slim_surgery::prune_attention_columns(cfg, w, l, h, kv, c.weight, &c.bias)?,
    };
    Ok(())
}

/// Slices layer `l`'s MLP to `channels` and installs the refit.
fn apply_mlp(cfg: &mut ModelConfig, w: &mut Weights, l: usize, channels: &[usize], r: Refit) -> Result<()> {
    match r {
        Refit::None => slim_surgery::prune_mlp(cfg, w, l, channels, None)?,
        Refit::Affine(a) => slim_surgery::prune_mlp(cfg, w, l, channels, Some(&a))?,
        Refit::Columns(c) => slim_surgery::prune_mlp_columns(cfg, w, l, channels, c.weight, &c.bias)?,
    };
    Ok(())
}

/// The per-layer plan of the summary, from the pruned config and the kept heads.
pub(crate) fn layer_plans(plan: &Allocation, pruned: &ModelConfig, kept: Vec<Kept>) -> Vec<LayerPlan> {
    kept.into_iter()
        .enumerate()
        .map(|(l, k)| {
            let s = &pruned.layers[l];
            let heads = k.map(|(h, _)| h);
            LayerPlan {
                layer: l,
                ratio: plan.ratios[l],
                heads: s.num_heads,
                kv_heads: s.num_kv_heads,
                channels: s.intermediate_size,
                kept_heads: heads.as_ref().map(|h| h.kept.clone()),
                kept_kv_heads: heads.map(|h| h.kv_kept),
            }
        })
        .collect()
}
