//! LoRA gradients against finite differences and against one autodiff graph, the merged
//! model against the adapted one, PEFT's format, the optimizer, and resuming, on tiny
//! seeded models (MHA and GQA, uneven layers, biases).

use crate::adapter::Adapter;
use crate::data::{self, Example};
use crate::grad::{self, Batch, IGNORE};
use crate::optim::{clip_grad_norm, linear_schedule, AdamW, AdamWConfig};
use crate::train::{attach, fresh_state, Loop, Observer, TrainState, TuneData, TuneSettings};
use crate::LoraSpec;
use burn_autodiff::Autodiff;
use slim_checkpoint::layout::Proj;
use slim_checkpoint::synthetic::{SplitMix, SyntheticSpec};
use slim_checkpoint::{LayerShape, ModelConfig, Weights};
use slim_model::burn_tensor::{activation::log_softmax, Int, Tensor, TensorData};
use slim_model::{Cpu, Llama};

type Ad = Autodiff<Cpu>;
type Dev = burn_flex::FlexDevice;

fn gqa() -> SyntheticSpec {
    SyntheticSpec::dense("llama", 2, 24, 4, 2, 6, 20, 40, 5)
}

fn uneven_qwen() -> SyntheticSpec {
    let mut spec = SyntheticSpec::dense("qwen2", 3, 18, 3, 3, 6, 22, 37, 9);
    spec.layers[1] = LayerShape {
        num_heads: 2,
        num_kv_heads: 2,
        kv_head_of: vec![0, 1],
        intermediate_size: 7,
        o_proj_bias: true,
        down_proj_bias: true,
    };
    spec
}

/// An adapter with every tensor random (B too, so that A gets a gradient).
fn random_adapter(cfg: &ModelConfig, rank: usize, seed: u64) -> Adapter {
    random_adapter_on(cfg, rank, seed, Proj::ALL.to_vec())
}

fn random_adapter_on(cfg: &ModelConfig, rank: usize, seed: u64, targets: Vec<Proj>) -> Adapter {
    let spec = LoraSpec { rank, alpha: 2.0 * rank as f64, dropout: 0.0, targets };
    let mut a = Adapter::init(cfg, &spec, seed).unwrap();
    let mut rng = SplitMix(seed ^ 77);
    for t in a.tensors_mut() {
        t.data.iter_mut().for_each(|v| *v = 0.3 * rng.uniform());
    }
    a
}

fn batch(cfg: &ModelConfig, rows: usize, len: usize, seed: u64) -> Batch {
    let mut rng = SplitMix(seed);
    let ids: Vec<u32> = (0..rows * len).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    // The first two labels of every row are not scored, as a masked prompt.
    let labels = ids.iter().enumerate().map(|(i, &t)| if i % len < 2 { IGNORE } else { t as i32 }).collect();
    Batch { ids, labels, rows, len }
}

fn model_with(cfg: &ModelConfig, w: &Weights, adapter: &Adapter) -> Llama<Ad> {
    let dev = Dev::default();
    let mut m = Llama::<Ad>::from_weights(cfg.clone(), w, &dev).unwrap();
    attach(&mut m, adapter, &dev);
    m
}

/// Host gradients of `Σ NLL / denom` in the order of `Adapter::tensors`.
fn layered_grads(m: &mut Llama<Ad>, b: &Batch, denom: f64) -> (f64, Vec<Vec<f32>>) {
    let mut sums = None;
    let nll = grad::accumulate::<Cpu>(m, b, denom, None, None, &mut sums).unwrap();
    let g =
        sums.unwrap().into_iter().flatten().map(|t| slim_model::tensor_to_host::<Cpu, 2>(t).unwrap().data).collect();
    (nll, g)
}

fn loss_of(cfg: &ModelConfig, w: &Weights, adapter: &Adapter, b: &Batch) -> f64 {
    let m = model_with(cfg, w, adapter);
    let (s, n) = grad::nll::<Cpu>(&m, b).unwrap();
    s / n as f64
}

fn check_finite_differences(spec: &SyntheticSpec) {
    let (cfg, w) = spec.build();
    let adapter = random_adapter(&cfg, 3, spec.seed);
    let b = batch(&cfg, 2, 6, spec.seed ^ 3);
    let mut m = model_with(&cfg, &w, &adapter);
    let (nll, grads) = layered_grads(&mut m, &b, b.scored() as f64);
    let base = loss_of(&cfg, &w, &adapter, &b);
    assert!((nll / b.scored() as f64 - base).abs() < 1e-5 * base, "loss {nll} vs {base}");
    // A few entries of every tensor, by central differences of the f32 forward pass.
    let eps = 1e-2f32;
    let mut rng = SplitMix(1);
    let (mut worst, mut checked) = (0f64, 0);
    for (ti, g) in grads.iter().enumerate() {
        let scale = g.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
        assert!(scale > 0.0, "tensor {ti} has an all-zero gradient");
        for _ in 0..3 {
            let j = rng.below(g.len() as u64) as usize;
            let (mut plus, mut minus) = (adapter.clone(), adapter.clone());
            plus.tensors_mut()[ti].data[j] += eps;
            minus.tensors_mut()[ti].data[j] -= eps;
            let fd = (loss_of(&cfg, &w, &plus, &b) - loss_of(&cfg, &w, &minus, &b)) / (2.0 * eps as f64);
            let err = (fd - g[j] as f64).abs() / scale;
            worst = worst.max(err);
            checked += 1;
            assert!(err < 2e-2, "tensor {ti}[{j}]: finite difference {fd} vs gradient {} (scale {scale})", g[j]);
        }
    }
    assert!(checked >= 3 * 14, "checked {checked} entries (worst relative error {worst:.2e})");
}

#[test]
fn lora_gradients_match_finite_differences_gqa() {
    check_finite_differences(&gqa());
}

#[test]
fn lora_gradients_match_finite_differences_uneven_qwen2_with_biases() {
    check_finite_differences(&uneven_qwen());
}

/// The layer-by-layer gradients equal those of one graph over the whole model.
#[test]
fn layered_gradients_equal_one_graph() {
    for spec in [gqa(), uneven_qwen()] {
        let (cfg, w) = spec.build();
        let adapter = random_adapter(&cfg, 2, 4);
        let b = batch(&cfg, 3, 5, 8);
        let denom = b.scored() as f64;
        let mut m = model_with(&cfg, &w, &adapter);
        let (_, got) = layered_grads(&mut m, &b, denom);
        // One graph: every adapter tensor tracked, the loss of all rows at once.
        let dev = Dev::default();
        let mut whole = model_with(&cfg, &w, &adapter);
        for l in 0..cfg.num_layers() {
            for lw in whole.lora_mut(l).unwrap().weights.iter_mut().flatten() {
                lw.a_t = lw.a_t.clone().require_grad();
                lw.b_t = lw.b_t.clone().require_grad();
            }
        }
        let (rows, len, v) = (b.rows, b.len, cfg.vocab_size);
        let logits = whole.forward(whole.ids_tensor(&b.ids, rows, len).unwrap()).slice([0..rows, 0..len - 1, 0..v]);
        let (t, wt): (Vec<i32>, Vec<f32>) = (0..rows)
            .flat_map(|r| b.labels[r * len + 1..(r + 1) * len].to_vec())
            .map(|l| (l.max(0), if l == IGNORE { 0.0 } else { 1.0 }))
            .unzip();
        let t = Tensor::<Ad, 3, Int>::from_data(TensorData::new(t, [rows, len - 1, 1]), &dev);
        let wt = Tensor::<Ad, 3>::from_data(TensorData::new(wt, [rows, len - 1, 1]), &dev);
        let loss = (log_softmax(logits, 2).gather(2, t) * wt).sum().mul_scalar(-1.0 / denom);
        let grads = loss.backward();
        let mut want = Vec::new();
        for l in 0..cfg.num_layers() {
            for g in crate::adapter::layer_grads::<Cpu>(whole.lora(l).unwrap(), &grads, l).unwrap() {
                want.push(slim_model::tensor_to_host::<Cpu, 2>(g).unwrap().data);
            }
        }
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (x, y) in g.iter().zip(w) {
                assert!((x - y).abs() <= 1e-4 * scale, "tensor {i}: {x} vs {y} (scale {scale})");
            }
        }
    }
}

/// The CPU backend's hand-written layer backward gives autodiff's gradients (of the adapters and
/// of the layer's input), with dropout masks, on GQA, MHA with biases and uneven pruned layers,
/// with adapters on every projection and on some (one of a stacked group, the other absent).
#[test]
fn the_layer_backward_by_hand_equals_autodiff() {
    let dev = Dev::default();
    let some = vec![Proj::K, Proj::O, Proj::Up];
    for (spec, targets) in [(gqa(), Proj::ALL.to_vec()), (uneven_qwen(), Proj::ALL.to_vec()), (gqa(), some)] {
        let (cfg, w) = spec.build();
        let n_tensors = 2 * targets.len();
        let adapter = random_adapter_on(&cfg, 3, 11, targets);
        let mut m = model_with(&cfg, &w, &adapter);
        let (rows, len, d) = (2, 7, cfg.hidden_size);
        let mut rng = SplitMix(spec.seed ^ 5);
        let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform()).collect() };
        for l in 0..cfg.num_layers() {
            let x = Tensor::<Ad, 3>::from_data(TensorData::new(rand(rows * len * d), [rows, len, d]), &dev);
            let dy = Tensor::<Ad, 3>::from_data(TensorData::new(rand(rows * len * d), [rows, len, d]), &dev);
            // Dropout masks of 0 and 1/(1-p) on every adapter's input.
            let masks: Vec<Option<Tensor<Ad, 2>>> = Proj::ALL
                .iter()
                .map(|p| {
                    let [_, inp] = p.dims(&cfg, l).unwrap();
                    let v: Vec<f32> =
                        rand(rows * len * inp).iter().map(|u| if *u < -0.6 { 0.0 } else { 1.25 }).collect();
                    Some(Tensor::from_data(TensorData::new(v, [rows * len, inp]), &dev))
                })
                .collect();
            m.lora_mut(l).unwrap().dropout = std::array::from_fn(|i| masks[i].clone());
            let (dx, got) = m.lora_layer_grad(l, &x, &dy).expect("the CPU backend takes the path by hand");
            // Autodiff through burn's ops: the adapters and the input tracked.
            for lw in m.lora_mut(l).unwrap().weights.iter_mut().flatten() {
                lw.a_t = lw.a_t.clone().require_grad();
                lw.b_t = lw.b_t.clone().require_grad();
            }
            let xin = x.clone().require_grad();
            let y = m.layer_forward(l, xin.clone(), slim_model::TapSet::NONE).0;
            let grads = (y * dy.clone()).sum().backward();
            let want = crate::adapter::layer_grads::<Cpu>(m.lora(l).unwrap(), &grads, l).unwrap();
            let want_dx = xin.grad(&grads).unwrap();
            let host = |t: Tensor<Cpu, 2>| slim_model::tensor_to_host::<Cpu, 2>(t).unwrap().data;
            let close = |a: &[f32], b: &[f32], what: String| {
                assert_eq!(a.len(), b.len(), "{what}");
                let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(scale > 0.0 && diff <= 2e-5 * scale, "{what}: {diff} of {scale}");
            };
            assert_eq!(got.len(), n_tensors);
            for (i, (g, w)) in got.into_iter().zip(want).enumerate() {
                close(&host(g.inner()), &host(w), format!("layer {l}, tensor {i}"));
            }
            let dx = slim_model::tensor_to_host::<Cpu, 3>(dx.inner()).unwrap().data;
            let want_dx = slim_model::tensor_to_host::<Cpu, 3>(want_dx).unwrap().data;
            close(&dx, &want_dx, format!("layer {l}, input"));
            // Back to an untracked adapter for the next layer's check.
            attach(&mut m, &adapter, &dev);
        }
    }
}

/// Merging `W + (α/r)·B·A` gives the logits of the model with the adapter attached.
#[test]
fn merged_weights_equal_the_adapted_model() {
    let (cfg, w) = uneven_qwen().build();
    let adapter = random_adapter(&cfg, 4, 2);
    let b = batch(&cfg, 2, 7, 1);
    let dev = Dev::default();
    let adapted = model_with(&cfg, &w, &adapter);
    let mut merged_w = w.clone();
    for l in 0..cfg.num_layers() {
        adapter.merge_layer::<Cpu>(l, &mut merged_w, &dev).unwrap();
    }
    let merged = Llama::<Cpu>::from_weights(cfg.clone(), &merged_w, &dev).unwrap();
    let a = adapted.forward(adapted.ids_tensor(&b.ids, 2, 7).unwrap()).inner().into_data().to_vec::<f32>().unwrap();
    let m = merged.forward(merged.ids_tensor(&b.ids, 2, 7).unwrap()).into_data().to_vec::<f32>().unwrap();
    let base = Llama::<Cpu>::from_weights(cfg.clone(), &w, &dev).unwrap();
    let o = base.forward(base.ids_tensor(&b.ids, 2, 7).unwrap()).into_data().to_vec::<f32>().unwrap();
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = a.iter().zip(&m).fold(0f32, |d, (x, y)| d.max((x - y).abs()));
    let moved = a.iter().zip(&o).fold(0f32, |d, (x, y)| d.max((x - y).abs()));
    assert!(diff <= 1e-5 * scale.max(1.0), "merged vs adapted: {diff}");
    assert!(moved > 1e-2, "the adapter changes the logits ({moved})");
}

/// A fresh adapter (B = 0) leaves the model as it is; PEFT's files read back bit for bit.
#[test]
fn fresh_adapter_is_identity_and_peft_files_round_trip() {
    let (cfg, w) = gqa().build();
    let spec = LoraSpec { rank: 2, alpha: 16.0, dropout: 0.05, targets: vec![Proj::Q, Proj::V, Proj::Down] };
    let adapter = Adapter::init(&cfg, &spec, 3).unwrap();
    let b = batch(&cfg, 1, 6, 2);
    let dev = Dev::default();
    // The same backend without adapters (the fused CPU kernels round differently).
    let base = Llama::<Ad>::from_weights(cfg.clone(), &w, &dev).unwrap();
    let adapted = model_with(&cfg, &w, &adapter);
    let x = base.forward(base.ids_tensor(&b.ids, 1, 6).unwrap()).inner().into_data().to_vec::<f32>().unwrap();
    let y = adapted.forward(adapted.ids_tensor(&b.ids, 1, 6).unwrap()).inner().into_data().to_vec::<f32>().unwrap();
    assert_eq!(x, y);
    // A is in ±1/√in, not all zero.
    let a = &adapter.layers[0][0].as_ref().unwrap().a_t;
    let bound = 1.0 / (cfg.hidden_size as f32).sqrt();
    assert!(a.data.iter().all(|v| v.abs() <= bound) && a.data.iter().any(|&v| v != 0.0));
    let dir = tempfile::tempdir().unwrap();
    let random = {
        let mut r = adapter.clone();
        let mut rng = SplitMix(9);
        r.tensors_mut().into_iter().for_each(|t| t.data.iter_mut().for_each(|v| *v = rng.uniform()));
        r
    };
    random.save_peft(dir.path(), Some("base")).unwrap();
    let back = Adapter::load_peft(dir.path(), &cfg).unwrap();
    assert_eq!(back, random);
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg_json["target_modules"], serde_json::json!(["q_proj", "v_proj", "down_proj"]));
    assert_eq!(cfg_json["r"], 2);
    // PEFT's layout: A is [r, in].
    let bytes = std::fs::read(dir.path().join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let q = st.tensor("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight").unwrap();
    assert_eq!(q.shape(), [2, cfg.hidden_size]);
    let d = st.tensor("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight").unwrap();
    assert_eq!(d.shape(), [cfg.hidden_size, 2]);
    // Another model's shapes are refused by name.
    let (other, _) = uneven_qwen().build();
    let err = format!("{:#}", Adapter::load_peft(dir.path(), &other).unwrap_err());
    assert!(err.contains("lora_A.weight") || err.contains("no tensor"), "{err}");
}

#[test]
fn adamw_schedule_and_clipping_follow_torch() {
    // torch.optim.AdamW(lr=0.1) on p = [1, -2] with grads [0.5, 0.25], two steps (values from
    // the update rule written out by hand in f64).
    let mut p = vec![1.0f32, -2.0];
    let mut opt = AdamW::new(AdamWConfig::default(), &[2]);
    let g = vec![vec![0.5f32, 0.25]];
    opt.update(&mut [p.as_mut_slice()], &g, 0.1);
    // Step 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + eps) ≈ lr·sign(g).
    assert!((p[0] - 0.9).abs() < 1e-5 && (p[1] + 2.1).abs() < 1e-5, "{p:?}");
    opt.update(&mut [p.as_mut_slice()], &g, 0.1);
    assert!((p[0] - 0.8).abs() < 1e-5 && (p[1] + 2.2).abs() < 1e-5, "{p:?}");
    assert_eq!(opt.step, 2);
    assert_eq!(linear_schedule(1e-4, 0, 100, 1000), 0.0);
    assert!((linear_schedule(1e-4, 50, 100, 1000) - 5e-5).abs() < 1e-18);
    assert!((linear_schedule(1e-4, 100, 100, 1000) - 1e-4).abs() < 1e-18);
    assert!((linear_schedule(1e-4, 550, 100, 1000) - 5e-5).abs() < 1e-18);
    assert_eq!(linear_schedule(1e-4, 1000, 100, 1000), 0.0);
    let mut grads = vec![vec![3.0f32], vec![4.0f32]];
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert!((norm - 5.0).abs() < 1e-6);
    assert!((grads[0][0] - 0.6).abs() < 1e-6 && (grads[1][0] - 0.8).abs() < 1e-6);
    let mut small = vec![vec![0.3f32]];
    clip_grad_norm(&mut small, 1.0);
    assert_eq!(small[0][0], 0.3);
}

#[test]
fn splits_and_epoch_orders_are_seeded_permutations() {
    let ex: Vec<Example> = (0..10u32).map(|i| Example::plain(&[i, i + 1])).collect();
    let (t, v) = data::split(ex.clone(), 3, 42).unwrap();
    assert_eq!((t.len(), v.len()), (7, 3));
    let (t2, v2) = data::split(ex.clone(), 3, 42).unwrap();
    assert_eq!((t, v), (t2, v2));
    assert!(data::split(ex, 10, 42).is_err());
    let a = data::epoch_order(50, 0, 1);
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..50).collect::<Vec<_>>());
    assert_ne!(a, data::epoch_order(50, 1, 1));
    // LLM-Pruner's instruction examples: cut to the cutoff, EOS added when there is room, the
    // prompt's labels masked.
    let e = Example::masked(&[5, 6], &[5, 6, 7, 8], 8, Some(2));
    assert_eq!((e.ids.as_slice(), e.labels.as_slice()), (&[5, 6, 7, 8, 2][..], &[IGNORE, IGNORE, 7, 8, 2][..]));
    let e = Example::masked(&[5, 6], &[5, 6, 7, 8], 3, Some(2));
    assert_eq!((e.ids.as_slice(), e.labels.as_slice()), (&[5, 6, 7][..], &[IGNORE, IGNORE, 7][..]));
    let e = Example::masked(&[5, 6, 7, 8], &[5, 6, 7, 8], 3, None);
    assert_eq!(e.labels, [IGNORE; 3]);
    let b = data::collate(&[&Example::plain(&[1, 2, 3]), &Example::plain(&[4])], 0);
    assert_eq!((b.rows, b.len), (2, 3));
    assert_eq!(b.ids, [1, 2, 3, 4, 0, 0]);
    assert_eq!(b.labels, [1, 2, 3, 4, IGNORE, IGNORE]);
    assert_eq!(b.scored(), 2);
}

struct Keep {
    every: Vec<(TrainState, Adapter)>,
}

impl Observer for Keep {
    fn checkpoint(&mut self, state: &TrainState, adapter: &Adapter) -> anyhow::Result<()> {
        self.every.push((state.clone(), adapter.clone()));
        Ok(())
    }
}

/// Training lowers the loss; stopping after a checkpoint and resuming from it gives the
/// uninterrupted run's adapter bit for bit (dropout on); a checkpoint on disk reads back whole.
#[test]
fn training_lowers_the_loss_and_resumes_exactly() {
    let (cfg, w) = gqa().build();
    let mut rng = SplitMix(3);
    // A learnable text: a short cycle of tokens.
    let ids: Vec<u32> = (0..40 * 8).map(|i| [3u32, 7, 11, 5, 2][i % 5] + (rng.below(2) as u32)).collect();
    let ex = data::windows(&ids, 8);
    let (train, val) = data::split(ex, 8, 1).unwrap();
    let d = TuneData { train: &train, val: &val, pad: 0 };
    let mut settings = TuneSettings::paper(6);
    settings.lora = LoraSpec { rank: 2, alpha: 4.0, dropout: 0.1, targets: Proj::ALL.to_vec() };
    settings.lr = 5e-2;
    settings.warmup = 1;
    settings.batch = 4;
    settings.micro_batch = 2;
    let lp = Loop { val_every: 3, checkpoint_every: 2 };
    let dev = Dev::default();
    let run = |from: Option<(TrainState, Adapter)>, stop: u64| {
        let (state, mut adapter) = from.unwrap_or_else(|| {
            let a = Adapter::init(&cfg, &settings.lora, 7).unwrap();
            (fresh_state(&settings, &a), a)
        });
        let mut s = settings.clone();
        s.steps = settings.steps;
        let mut state = state;
        state.settings = s;
        let mut m = Llama::<Ad>::from_weights(cfg.clone(), &w, &dev).unwrap();
        let mut obs = Keep { every: vec![] };
        // Stop early by running a loop whose observer errors after `stop` steps.
        struct Stop<'a>(&'a mut Keep, u64);
        impl Observer for Stop<'_> {
            fn checkpoint(&mut self, st: &TrainState, a: &Adapter) -> anyhow::Result<()> {
                self.0.checkpoint(st, a)?;
                anyhow::ensure!(st.step < self.1, "killed");
                Ok(())
            }
        }
        let r = lp.run::<Cpu>(&mut m, &mut adapter, &d, state, &mut Stop(&mut obs, stop));
        (r, adapter, obs)
    };
    let (full, full_adapter, _) = run(None, u64::MAX);
    let full = full.unwrap();
    assert_eq!(full.steps.len(), 6);
    assert!(full.val.len() >= 3, "validated at 0, 3 and 6: {:?}", full.val);
    let (v0, v1) = (full.val[0].loss, full.val.last().unwrap().loss);
    assert!(v1 < v0 - 0.05, "validation loss {v0} -> {v1}");
    // Killed after the checkpoint of step 4, resumed from it.
    let (killed, _, obs) = run(None, 4);
    assert!(killed.is_err());
    let ck = obs.every.last().unwrap().clone();
    assert_eq!(ck.0.step, 4);
    // Through the files, as a real resume reads it.
    let dir = tempfile::tempdir().unwrap();
    let ckdir = dir.path().join("ckpt");
    crate::checkpoint::save(&ckdir, "inputs", &ck.0, &ck.1).unwrap();
    let (state, adapter) = crate::checkpoint::load(&ckdir, "inputs", &ck.0, &cfg).unwrap().unwrap();
    assert_eq!(state, ck.0);
    assert!(crate::checkpoint::load(&ckdir, "other", &ck.0, &cfg).is_err());
    let (resumed, resumed_adapter, _) = run(Some((state, adapter)), u64::MAX);
    let resumed = resumed.unwrap();
    let key = |v: &[crate::StepLog]| v.iter().map(|s| (s.step, s.loss, s.grad_norm, s.lr)).collect::<Vec<_>>();
    assert_eq!(key(&resumed.steps), key(&full.steps));
    assert_eq!(resumed_adapter, full_adapter);
}

#[test]
fn bad_settings_are_refused_by_name() {
    let mut s = TuneSettings::paper(10);
    s.lora.rank = 0;
    assert!(format!("{}", s.validate().unwrap_err()).contains("--rank"));
    let mut s = TuneSettings::paper(10);
    s.lr = -1e-4;
    assert!(format!("{}", s.validate().unwrap_err()).contains("--lr"));
    let mut s = TuneSettings::paper(10);
    s.micro_batch = 3;
    assert!(format!("{}", s.validate().unwrap_err()).contains("--micro-batch"));
}
