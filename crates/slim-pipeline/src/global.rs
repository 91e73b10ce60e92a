//! The dense pre-pass of the FLAP-style global allocation: every layer's attention and MLP
//! statistics from the unpruned model (the same cache entries as dense calibration), scored
//! by the configured scorer into per-unit and per-channel importances, one layer at a time.
//!
//! A global ranking needs every layer's scores before any layer is pruned, so these come
//! from the dense model in both calibration modes (as FLAP's own statistics do); in
//! sequential mode the per-layer pass then captures again on the pruned prefix to choose
//! which units go.

use crate::graph::Graph;
use crate::report::RunReport;
use crate::run::cached;
use crate::RunOptions;
use anyhow::{Context, Result};
use burn_tensor::{backend::Backend, Tensor};
use slim_alloc::{effective_mode, LayerScores};
use slim_artifact::schema::{AttnStats, MlpStats, TaylorStats};
use slim_artifact::{Key, Store};
use slim_capture::{capture_attn, capture_mlp};
use slim_checkpoint::{layout::Proj, ModelConfig, Weights};
use slim_model::{Llama, TapSet};
use slim_score::{ChannelInputs, HeadInputs};

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

/// Every layer's importances (cached as one `global-scores` entry) and the entry's key.
/// `weights` holds the dense weights once `load` has read them (on first need).
pub(crate) fn global_scores<B: Backend>(
    d: &DenseInputs<'_, B>,
    report: &mut RunReport,
    weights: &mut Option<Weights>,
    load: &dyn Fn() -> Result<Weights>,
) -> Result<(Vec<LayerScores>, Key)> {
    let doc = d.graph.global_scores(d.calib, d.taylor.map(|t| t.1))?;
    let (graph, store, force) = (d.graph, d.store, d.opts.force);
    let mut inner = RunReport::default();
    let r = cached(store, report, force, "score", &doc, || {
        if weights.is_none() {
            *weights = Some(load()?);
        }
        let w = weights.as_ref().expect("just loaded");
        let n_layers = d.cfg.num_layers();
        let mut model: Option<Llama<B>> = None;
        let mut x: Option<Tensor<B, 3>> = None; // input of layer l, once the model runs
        let mut out = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            let shape = &d.cfg.layers[l];
            let o_proj = w.get(&Proj::O.weight(l))?;
            let ca = graph.capture_attn_dense(l, d.calib)?;
            let (astats, _) = cached(store, &mut inner, force, "capture", &ca, || -> Result<AttnStats> {
                let (m, xi) = input(&mut model, &mut x, l, d, w)?;
                capture_attn(m, l, xi, o_proj)
            })?;
            let cm = graph.capture_mlp_dense(l, d.calib)?;
            let (mstats, _) = cached(store, &mut inner, force, "capture", &cm, || -> Result<MlpStats> {
                let (m, xi) = input(&mut model, &mut x, l, d, w)?;
                Ok(capture_mlp(m, l, xi)?.0)
            })?;
            if let (Some(m), Some(xi)) = (&model, x.take()) {
                x = Some(m.layer_forward(l, xi, TapSet::NONE).0);
            }
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

/// The dense model and the input of layer `l`, computed on first need.
fn input<'m, B: Backend>(
    model: &'m mut Option<Llama<B>>,
    x: &mut Option<Tensor<B, 3>>,
    l: usize,
    d: &DenseInputs<'_, B>,
    w: &Weights,
) -> Result<(&'m Llama<B>, Tensor<B, 3>)> {
    if model.is_none() {
        *model = Some(Llama::from_weights(d.cfg.clone(), w, d.device)?);
    }
    let m = model.as_ref().expect("built");
    if x.is_none() {
        *x = Some(slim_capture::layer_input(m, d.ids, d.n_windows, d.seq_len, l)?);
    }
    Ok((m, x.clone().expect("set")))
}
