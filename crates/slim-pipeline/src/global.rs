//! The dense pre-pass of the FLAP-style global allocation: every layer's attention and MLP
//! statistics from the unpruned model (the same cache entries as dense calibration), scored
//! by the configured scorer into per-unit and per-channel importances, one layer at a time.
//!
//! A global ranking needs every layer's scores before any layer is pruned, so these come
//! from the dense model in both calibration modes (as FLAP's own statistics do); in
//! sequential mode the per-layer pass then captures again on the pruned prefix to choose
//! which units go.

use crate::graph::Graph;
use crate::layers::{embed_windows, stream_layer, LazySource};
use crate::report::RunReport;
use crate::run::{cached, timed};
use crate::RunOptions;
use anyhow::{Context, Result};
use burn_tensor::{backend::Backend, Tensor};
use slim_alloc::{effective_mode, LayerScores};
use slim_artifact::schema::{AttnStats, MlpStats, TaylorStats};
use slim_artifact::{Key, Store};
use slim_capture::{capture_attn, capture_mlp};
use slim_checkpoint::{layout::Proj, ModelConfig, WeightSource};
use slim_model::{Llama, TapSet};
use slim_score::{ChannelInputs, HeadInputs};
use std::cell::Cell;

/// What the pre-pass reads.
pub(crate) struct DenseInputs<'a, B: Backend> {
    pub graph: &'a Graph<'a>,
    pub store: &'a Store,
    pub opts: &'a RunOptions,
    pub calib: Key,
    pub taylor: Option<(&'a TaylorStats, Key)>,
    pub cfg: &'a ModelConfig,
    pub ids: &'a [u32],
    pub n_windows: usize,
    pub seq_len: usize,
    pub device: &'a B::Device,
}

/// Every layer's importances (cached as one `global-scores` entry) and the entry's key. The
/// dense weights are read one layer at a time from `src` (reading timed into `load_s`); the
/// calibration activations are carried from layer to layer once a capture has to run.
pub(crate) fn global_scores<B: Backend>(
    d: &DenseInputs<'_, B>,
    report: &mut RunReport,
    src: &LazySource<'_>,
    load_s: &Cell<f64>,
) -> Result<(Vec<LayerScores>, Key)> {
    let doc = d.graph.global_scores(d.calib, d.taylor.map(|t| t.1))?;
    let (graph, store, force) = (d.graph, d.store, d.opts.force);
    let mut inner = RunReport::default();
    let r = cached(store, report, force, "score", &doc, || {
        let src = src.get()?;
        let n_layers = d.cfg.num_layers();
        let mut model = Llama::<B>::empty(d.cfg.clone(), d.device)?;
        let mut x: Option<Tensor<B, 3>> = None; // input of layer l, once a capture needs it
        let mut out = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            let shape = &d.cfg.layers[l];
            let w = timed(load_s, || src.read_layer(d.cfg, l))?;
            model.load_layer(l, &w)?;
            let o_proj = w.get(&Proj::O.weight(l))?;
            let ca = graph.capture_attn_dense(l, d.calib)?;
            let (astats, _) = cached(store, &mut inner, force, "capture", &ca, || -> Result<AttnStats> {
                let xi = input(&mut model, &mut x, l, d, src, load_s)?;
                capture_attn(&model, l, xi, o_proj)
            })?;
            let cm = graph.capture_mlp_dense(l, d.calib)?;
            let (mstats, _) = cached(store, &mut inner, force, "capture", &cm, || -> Result<MlpStats> {
                let xi = input(&mut model, &mut x, l, d, src, load_s)?;
                Ok(capture_mlp(&model, l, xi)?.0)
            })?;
            if let Some(xi) = x.take() {
                x = Some(model.layer_forward(l, xi, TapSet::NONE).0);
            }
            model.unload_layer(l);
            let taylor = d.taylor.map(|t| &t.0.layers[l]);
            let heads = HeadInputs {
                stats: &astats,
                o_proj,
                kv_head_of: &shape.kv_head_of,
                num_kv_heads: shape.num_kv_heads,
                taylor,
            };
            let channels = ChannelInputs {
                stats: &mstats,
                gate: w.get(&Proj::Gate.weight(l))?,
                up: w.get(&Proj::Up.weight(l))?,
                down: w.get(&Proj::Down.weight(l))?,
                taylor,
            };
            let mode = effective_mode(shape, graph.cfg.gqa);
            out.push(LayerScores {
                heads: slim_score::unit_importance(graph.cfg.scorer, &heads, mode)
                    .with_context(|| format!("layer {l}: head importance"))?,
                channels: slim_score::channel_importance(graph.cfg.scorer, &channels)
                    .with_context(|| format!("layer {l}: channel importance"))?,
            });
        }
        Ok(out)
    })?;
    report.merge(&inner);
    Ok(r)
}

/// The input of dense layer `l` (loaded in `model`): the carried activations, or, the first
/// time a capture runs, the embedded windows through layers `0..l` read one at a time.
fn input<B: Backend>(
    model: &mut Llama<B>,
    x: &mut Option<Tensor<B, 3>>,
    l: usize,
    d: &DenseInputs<'_, B>,
    src: &WeightSource,
    load_s: &Cell<f64>,
) -> Result<Tensor<B, 3>> {
    if x.is_none() {
        let mut h = timed(load_s, || embed_windows::<B>(src, d.cfg, d.ids, d.n_windows, d.seq_len, d.device))?;
        for j in 0..l {
            h = stream_layer(model, src, j, h, load_s)?;
        }
        *x = Some(h);
    }
    Ok(x.clone().expect("set"))
}
