//! What `check-backend` computes on one backend: the same seeded synthetic models and inputs on
//! every backend, so that two [`Observed`] can be compared value by value.

use anyhow::{Context, Result};
use serde::Serialize;
use slim_artifact::schema::GqaMode;
use slim_artifact::Store;
use slim_capture::{CalibConfig, CalibSource};
use slim_checkpoint::synthetic::SyntheticSpec;
use slim_eval::zeroshot::{score_doc, Loglik, TokDoc};
use slim_eval::{generate, GenConfig};
use slim_model::burn_tensor::backend::Backend;
use slim_model::{tensor_to_host, BackendRun, LayerShape, Llama, SplitMix};
use slim_pipeline::{run_pipeline, LayerPlan, ModelSource, PipelineConfig, RunOptions};
use slim_tune::grad::{self, Batch, Dropout, IGNORE};
use slim_tune::{Adapter, LoraSpec};
use std::path::Path;
use std::time::Instant;

/// Vocabulary of the fixtures: odd, so that no size is a power of two.
const VOCAB: usize = 263;
/// Batch × length of the logits check.
const BATCH: usize = 3;
const LEN: usize = 19;
/// Greedy tokens generated (the KV-cache path).
const GREEDY: usize = 12;

/// One seeded synthetic model of the check.
pub struct Fixture {
    /// Name in the report.
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    spec: SyntheticSpec,
}

/// An uneven pruned layer: `kv_head_of[h]` is query head h's KV head.
fn pruned(kv_head_of: Vec<usize>, kv: usize, ffn: usize) -> LayerShape {
    LayerShape {
        num_heads: kv_head_of.len(),
        num_kv_heads: kv,
        kv_head_of,
        intermediate_size: ffn,
        o_proj_bias: true,
        down_proj_bias: true,
    }
}

/// The models every backend runs: MHA and GQA, dense and pruned (uneven GQA groups, a dropped
/// KV head, odd FFN widths, o_proj/down_proj biases), llama (tied) and qwen2 (q/k/v biases, untied).
pub fn fixtures() -> Vec<Fixture> {
    let pruned_layers = || {
        vec![
            LayerShape::dense(6, 2, 96),
            pruned(vec![0, 1, 1, 1], 2, 45),
            pruned(vec![0, 0, 1], 2, 31),
            pruned(vec![0, 0], 1, 17),
        ]
    };
    let mut llama_pruned = SyntheticSpec::dense("llama", 4, 64, 6, 2, 16, 96, VOCAB, 11);
    llama_pruned.layers = pruned_layers();
    let mut qwen2_pruned = SyntheticSpec::dense("qwen2", 4, 64, 6, 2, 16, 96, VOCAB, 12);
    qwen2_pruned.layers = pruned_layers();
    vec![
        Fixture { name: "llama-mha", about: "dense MHA, 6 heads of 12, tied", spec: mha() },
        Fixture {
            name: "llama-gqa",
            about: "dense GQA 8:2, head_dim 14, FFN 130",
            spec: SyntheticSpec::dense("llama", 3, 88, 8, 2, 14, 130, VOCAB, 7),
        },
        Fixture { name: "llama-pruned", about: "uneven GQA groups, o/down biases", spec: llama_pruned },
        Fixture { name: "qwen2-pruned", about: "qwen2 q/k/v biases, untied, uneven", spec: qwen2_pruned },
    ]
}

fn mha() -> SyntheticSpec {
    SyntheticSpec::dense("llama", 3, 72, 6, 6, 12, 100, VOCAB, 5)
}

/// The model the pipeline check prunes (the process tests' 6-layer GQA model).
fn pipeline_spec() -> SyntheticSpec {
    SyntheticSpec::dense("llama", 6, 96, 8, 4, 12, 256, 301, 3)
}

/// The pipeline check's settings: the paper's recipe at 30 % on random calibration.
fn pipeline_config() -> PipelineConfig {
    let mut cfg = PipelineConfig::paper(0.3, GqaMode::WholeGroup);
    cfg.calib = CalibConfig { source: CalibSource::Random, n_windows: 16, seq_len: 64, seed: 42 };
    cfg.pruned_layers = Some(5);
    cfg
}

/// `n` seeded token ids below `vocab`.
fn ids(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = SplitMix(seed);
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}

/// Three multiple-choice documents as token ids: shared contexts of odd lengths, 4 continuations of
/// 1 to 4 tokens each, one document with two contexts.
fn zeroshot_docs() -> Vec<TokDoc> {
    let mut rng = SplitMix(99);
    let mut take = |n: usize| (0..n).map(|_| rng.below(VOCAB as u64) as u32).collect::<Vec<u32>>();
    let mut docs = Vec::new();
    for (d, ctx_lens) in [vec![5], vec![9], vec![7, 3]].into_iter().enumerate() {
        let mut groups = Vec::new();
        let mut r = 0;
        for c in ctx_lens {
            let ctx = take(c);
            let conts = (0..4).map(|k| (r + k, take(1 + (k + d) % 4))).collect();
            r += 4;
            groups.push((ctx, conts));
        }
        docs.push(TokDoc { groups, requests: r });
    }
    docs
}

/// What one fixture gave on one backend.
#[derive(Clone, Debug, Serialize)]
pub struct ModelObs {
    /// Fixture name.
    pub name: String,
    /// Logits of a seeded `BATCH × LEN` batch, row-major.
    #[serde(skip)]
    pub logits: Vec<f32>,
    /// Greedy continuation of a seeded 7-token prompt (KV cache).
    pub greedy: Vec<u32>,
    /// Log-likelihoods of the zero-shot requests, document after document.
    pub loglik: Vec<Loglik>,
    /// Σ NLL of one LoRA training micro-batch (the tuning stage's gradient pass).
    pub lora_nll: f64,
    /// The adapters' gradients of that micro-batch, every tensor flattened in order.
    #[serde(skip)]
    pub lora_grads: Vec<f32>,
    /// Seconds for all of the above.
    pub seconds: f64,
}

/// What the pipeline check gave on one backend.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineObs {
    /// Per-layer decisions.
    pub layers: Vec<LayerPlan>,
    /// Parameters after pruning.
    pub params_after: u64,
    /// Logits of the pruned (and refitted) model on this backend, on the seeded batch.
    #[serde(skip)]
    pub logits: Vec<f32>,
    /// Seconds of the pipeline run.
    pub seconds: f64,
}

/// Everything one backend gave.
#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    /// One per fixture.
    pub models: Vec<ModelObs>,
    /// The pipeline check, unless skipped.
    pub pipeline: Option<PipelineObs>,
}

/// Runs the checks' computations on a backend (a [`BackendRun`] for [`slim_model::dispatch`]).
pub struct Probe<'a> {
    /// Also run the pipeline check, with the synthetic model written under this folder.
    pub pipeline_dir: Option<&'a Path>,
}

impl BackendRun for Probe<'_> {
    type Output = Observed;
    fn run<B: Backend>(self, device: B::Device) -> Result<Observed> {
        let models = fixtures()
            .iter()
            .map(|f| observe_model::<B>(f, &device).with_context(|| format!("fixture {}", f.name)))
            .collect::<Result<Vec<_>>>()?;
        let pipeline = match self.pipeline_dir {
            Some(dir) => Some(observe_pipeline::<B>(dir, &device).context("pipeline check")?),
            None => None,
        };
        Ok(Observed { models, pipeline })
    }
}

fn logits_of<B: Backend>(model: &Llama<B>) -> Result<Vec<f32>> {
    let vocab = model.config().vocab_size;
    let x = ids(1, BATCH * LEN, vocab);
    Ok(tensor_to_host(model.forward(model.ids_tensor(&x, BATCH, LEN)?))?.data)
}

fn observe_model<B: Backend>(f: &Fixture, device: &B::Device) -> Result<ModelObs> {
    let t = Instant::now();
    let (cfg, w) = f.spec.build();
    let model = Llama::<B>::from_weights(cfg, &w, device)?;
    let logits = logits_of(&model)?;
    let greedy = generate(&model, &ids(2, 7, VOCAB), &GenConfig::greedy(GREEDY))?;
    let mut loglik = Vec::new();
    for doc in zeroshot_docs() {
        loglik.extend(score_doc(&model, &doc)?);
    }
    drop(model);
    let (lora_nll, lora_grads) = lora_step::<B>(f, device).context("LoRA gradient pass")?;
    Ok(ModelObs {
        name: f.name.to_string(),
        logits,
        greedy,
        loglik,
        lora_nll,
        lora_grads,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// One micro-batch of the tuning stage on this backend: rank-4 adapters on the seven
/// projections with every tensor seeded (B too, so that A has a gradient), dropout 0.05 (its
/// masks are drawn on the host, the same on every backend), the first two labels of each row
/// masked; returns Σ NLL and the gradients.
fn lora_step<B: Backend>(f: &Fixture, device: &B::Device) -> Result<(f64, Vec<f32>)> {
    let (cfg, w) = f.spec.build();
    let mut model = Llama::<burn_autodiff::Autodiff<B>>::from_weights(cfg.clone(), &w, device)?;
    let mut adapter = Adapter::init(&cfg, &LoraSpec::paper(), 17)?;
    let mut rng = SplitMix(18);
    for t in adapter.tensors_mut() {
        t.data.iter_mut().for_each(|v| *v = 0.1 * rng.uniform());
    }
    slim_tune::train::attach(&mut model, &adapter, device);
    let (rows, len) = (2, LEN);
    let ids = ids(3, rows * len, cfg.vocab_size);
    let labels = ids.iter().enumerate().map(|(i, &t)| if i % len < 2 { IGNORE } else { t as i32 }).collect();
    let batch = Batch { ids, labels, rows, len };
    let dropout = Dropout { p: 0.05, seed: 42, micro_batch: 3 };
    let mut sums = None;
    let nll = grad::accumulate::<B>(&mut model, &batch, batch.scored() as f64, Some(dropout), None, &mut sums)?;
    let mut grads = Vec::new();
    for t in sums.into_iter().flatten().flatten() {
        grads.extend(tensor_to_host::<B, 2>(t)?.data);
    }
    Ok((nll, grads))
}

fn observe_pipeline<B: Backend>(dir: &Path, device: &B::Device) -> Result<PipelineObs> {
    let model_dir = dir.join("model");
    if !model_dir.join("config.json").is_file() {
        let (cfg, w) = pipeline_spec().build();
        slim_checkpoint::save_model_dir(&model_dir, &cfg, &w, &model_dir)?;
        // Hashed into the model's key, never parsed: random calibration does not tokenize.
        slim_fs::write_atomic(&model_dir.join("tokenizer.json"), b"{}")?;
    }
    // A store of this backend's own, so that nothing computed on another backend is reused.
    let store_dir = tempfile::tempdir_in(dir).context("creating a cache folder for the pipeline check")?;
    let store = Store::open(store_dir.path())?;
    let t = Instant::now();
    let source = ModelSource::open(&model_dir)?;
    let opts = RunOptions { progress: false, force: None, verify_reused: false };
    let out = run_pipeline::<B>(&source, &pipeline_config(), &store, dir, device, &opts)?;
    let seconds = t.elapsed().as_secs_f64();
    let pruned = Llama::<B>::load(&out.pruned_dir, device)?;
    let logits = logits_of(&pruned)?;
    Ok(PipelineObs { layers: out.layers, params_after: out.params_after, logits, seconds })
}
