//! The layer-by-layer backward pass against (a) one autodiff graph over the whole model and
//! (b) central finite differences of the f64 reference forward pass, on tiny seeded models.

use super::*;
use crate::tests::reference_logits;
use crate::Cpu;
use slim_checkpoint::synthetic::{SplitMix, SyntheticSpec};
use slim_checkpoint::{LayerShape, Weights};

type Dev = burn_flex::FlexDevice;

fn ids_for(cfg: &ModelConfig, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix(seed);
    (0..n).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect()
}

/// The per-layer sums from one graph over the whole model (all layer weights tracked).
fn whole_graph_sums(cfg: &ModelConfig, w: &Weights, ids: &[u32], nw: usize, sl: usize) -> Vec<LayerTaylorSums> {
    let dev = Dev::default();
    let mut m = Llama::<Autodiff<Cpu>>::from_weights(cfg.clone(), w, &dev).unwrap();
    for l in 0..cfg.num_layers() {
        for t in m.layer_weights_mut(l) {
            *t = t.clone().require_grad();
        }
    }
    let v = cfg.vocab_size;
    let logits = m.forward(m.ids_tensor(ids, nw, sl).unwrap()).slice([0..nw, 0..sl - 1, 0..v]);
    let targets: Vec<i32> = (0..nw).flat_map(|r| ids[r * sl + 1..(r + 1) * sl].iter().map(|&t| t as i32)).collect();
    let targets = Tensor::<Autodiff<Cpu>, 3, Int>::from_data(TensorData::new(targets, [nw, sl - 1, 1]), &dev);
    let loss = log_softmax(logits, 2).gather(2, targets).sum().mul_scalar(-1.0 / (nw * (sl - 1)) as f64);
    let grads = loss.backward();
    (0..cfg.num_layers())
        .map(|l| {
            let [q, o, gu, d] = m.layer_weights(l).map(|t| (t.grad(&grads).unwrap(), t.clone().inner()));
            LayerTaylorSums {
                qkv_rows: host_sum(q.0 * q.1, 0).unwrap(),
                o_cols: host_sum(o.0 * o.1, 1).unwrap(),
                gate_up_rows: host_sum(gu.0 * gu.1, 0).unwrap(),
                down_cols: host_sum(d.0 * d.1, 1).unwrap(),
            }
        })
        .collect()
}

fn assert_close(a: &[f64], b: &[f64], rel: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "{what}: all zero");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= rel * scale, "{what}[{i}]: {x} vs {y} (scale {scale})");
    }
}

fn check_layered_equals_whole(spec: &SyntheticSpec, nw: usize, sl: usize) {
    let (cfg, w) = spec.build();
    let ids = ids_for(&cfg, nw * sl, spec.seed ^ 0x51);
    let want = whole_graph_sums(&cfg, &w, &ids, nw, sl);
    for chunk in [1, 2, nw] {
        let mut seen = Vec::new();
        let got =
            taylor_sums::<Cpu>(cfg.clone(), &w, &ids, nw, sl, chunk, &Dev::default(), &mut |l| seen.push(l)).unwrap();
        assert_eq!(seen, (0..cfg.num_layers()).rev().collect::<Vec<_>>(), "layers run top down");
        for (l, (g, w)) in got.layers.iter().zip(&want).enumerate() {
            let what = format!("chunk {chunk}, layer {l}");
            assert_close(&g.qkv_rows, &w.qkv_rows, 1e-4, &format!("{what} qkv"));
            assert_close(&g.o_cols, &w.o_cols, 1e-4, &format!("{what} o"));
            assert_close(&g.gate_up_rows, &w.gate_up_rows, 1e-4, &format!("{what} gate/up"));
            assert_close(&g.down_cols, &w.down_cols, 1e-4, &format!("{what} down"));
        }
    }
}

#[test]
fn layered_backward_equals_one_graph_gqa() {
    check_layered_equals_whole(&SyntheticSpec::dense("llama", 3, 30, 6, 2, 10, 43, 61, 11), 3, 7);
}

#[test]
fn layered_backward_equals_one_graph_uneven_mha_with_biases() {
    let mut spec = SyntheticSpec::dense("qwen2", 3, 24, 6, 3, 8, 40, 50, 17);
    spec.layers[0] = LayerShape {
        num_heads: 3,
        num_kv_heads: 3,
        kv_head_of: vec![0, 1, 2],
        intermediate_size: 13,
        o_proj_bias: true,
        down_proj_bias: true,
    };
    spec.layers[2] = LayerShape {
        num_heads: 4,
        num_kv_heads: 2,
        kv_head_of: vec![0, 0, 1, 1],
        intermediate_size: 40,
        o_proj_bias: false,
        down_proj_bias: true,
    };
    check_layered_equals_whole(&spec, 5, 6);
}

/// Mean next-token loss from the f64 reference forward pass.
fn reference_loss(cfg: &ModelConfig, w: &Weights, ids: &[u32], nw: usize, sl: usize) -> f64 {
    let mut total = 0.0;
    for r in 0..nw {
        let seq = &ids[r * sl..(r + 1) * sl];
        let logits = reference_logits(cfg, w, seq);
        for (i, row) in logits.iter().enumerate().take(sl - 1) {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            total += lse - row[seq[i + 1] as usize];
        }
    }
    total / (nw * (sl - 1)) as f64
}

/// `Σ_j |∂ℒ/∂W_ij · W_ij|` per row `i` of `name` (`[rows, cols]`), the gradient by central
/// finite differences of the f64 loss.
fn finite_difference_row_sums(
    cfg: &ModelConfig,
    w: &Weights,
    name: &str,
    ids: &[u32],
    nw: usize,
    sl: usize,
    by_col: bool,
) -> Vec<f64> {
    let t = w.get(name).unwrap().clone();
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut out = vec![0.0; if by_col { cols } else { rows }];
    let eps = 1e-3;
    for i in 0..rows {
        for j in 0..cols {
            let mut plus = w.clone();
            let mut minus = w.clone();
            let (mut tp, mut tm) = (t.clone(), t.clone());
            tp.data[i * cols + j] += eps as f32;
            tm.data[i * cols + j] -= eps as f32;
            let h = (tp.data[i * cols + j] - tm.data[i * cols + j]) as f64; // the step actually taken in f32
            plus.insert(name, tp);
            minus.insert(name, tm);
            let g = (reference_loss(cfg, &plus, ids, nw, sl) - reference_loss(cfg, &minus, ids, nw, sl)) / h;
            out[if by_col { j } else { i }] += (g * t.data[i * cols + j] as f64).abs();
        }
    }
    out
}

#[test]
fn gradients_match_finite_differences_of_the_f64_loss() {
    // The lowest layer: its gradient passes through every layer above, RoPE and attention.
    let (cfg, w) = SyntheticSpec::dense("llama", 2, 12, 4, 2, 4, 9, 23, 29).build();
    let (nw, sl) = (2, 5);
    let ids = ids_for(&cfg, nw * sl, 3);
    let got = taylor_sums::<Cpu>(cfg.clone(), &w, &ids, nw, sl, 1, &Dev::default(), &mut |_| {}).unwrap();
    assert!((got.loss - reference_loss(&cfg, &w, &ids, nw, sl)).abs() < 1e-5, "loss {}", got.loss);
    let l0 = &got.layers[0];
    let (qw, kw) = (4 * 4, 2 * 4);
    let k_rows = finite_difference_row_sums(&cfg, &w, "model.layers.0.self_attn.k_proj.weight", &ids, nw, sl, false);
    assert_close(&l0.qkv_rows[qw..qw + kw], &k_rows, 2e-3, "k_proj rows");
    let down_cols = finite_difference_row_sums(&cfg, &w, "model.layers.0.mlp.down_proj.weight", &ids, nw, sl, true);
    assert_close(&l0.down_cols, &down_cols, 2e-3, "down_proj columns");
    let o_cols = finite_difference_row_sums(&cfg, &w, "model.layers.1.self_attn.o_proj.weight", &ids, nw, sl, true);
    assert_close(&got.layers[1].o_cols, &o_cols, 2e-3, "o_proj columns");
}

/// Read from the model's files one layer at a time, the sums equal those from the weights in memory to the bit.
#[test]
fn sums_from_the_files_equal_sums_from_memory_to_the_bit() {
    let (cfg, w) = SyntheticSpec::dense("qwen2", 3, 16, 4, 2, 4, 11, 29, 8).build();
    let dir = tempfile::tempdir().unwrap();
    slim_checkpoint::save_model_dir(dir.path(), &cfg, &w, dir.path()).unwrap();
    let src = slim_checkpoint::WeightSource::open(dir.path()).unwrap();
    let ids = ids_for(&cfg, 3 * 6, 9);
    let from_files = taylor_sums::<Cpu>(cfg.clone(), &src, &ids, 3, 6, 2, &Dev::default(), &mut |_| {}).unwrap();
    let from_memory = taylor_sums::<Cpu>(cfg.clone(), &w, &ids, 3, 6, 2, &Dev::default(), &mut |_| {}).unwrap();
    assert_eq!(from_files.loss.to_bits(), from_memory.loss.to_bits());
    assert_eq!(from_files.layers, from_memory.layers);
}
