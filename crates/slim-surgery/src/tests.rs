//! Surgery that keeps everything reproduces the dense logits; slicing keeps the layout the
//! runtime expects; folding an affine equals applying it to the output.

use super::*;
use burn_tensor::Tensor;
use slim_checkpoint::synthetic::SyntheticSpec;
use slim_model::{Cpu, Llama};

fn logits(cfg: &ModelConfig, w: &Weights, ids: &[u32]) -> Vec<f32> {
    let m = Llama::<Cpu>::from_weights(cfg.clone(), w, &burn_flex::FlexDevice).unwrap();
    let t: Tensor<Cpu, 3> = m.forward(m.ids_tensor(ids, 1, ids.len()).unwrap());
    t.into_data().into_vec::<f32>().unwrap()
}

#[test]
fn keeping_everything_reproduces_dense_logits() {
    for spec in [SyntheticSpec::dense("llama", 2, 24, 6, 2, 8, 31, 40, 1), SyntheticSpec::dense("qwen2", 2, 20, 4, 4, 6, 17, 33, 2)] {
        let (cfg0, w0) = spec.build();
        let ids: Vec<u32> = (0..9).map(|i| (i * 5 % 33) as u32).collect();
        let want = logits(&cfg0, &w0, &ids);
        let (mut cfg, mut w) = (cfg0.clone(), w0.clone());
        for l in 0..cfg.num_layers() {
            let s = cfg.layers[l].clone();
            prune_attention(&mut cfg, &mut w, l, &(0..s.num_heads).collect::<Vec<_>>(), &(0..s.num_kv_heads).collect::<Vec<_>>(), None).unwrap();
            prune_mlp(&mut cfg, &mut w, l, &(0..s.intermediate_size).collect::<Vec<_>>(), None).unwrap();
        }
        let got = logits(&cfg, &w, &ids);
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err <= 1e-5, "max abs logit difference {err}");
    }
}

#[test]
fn pruned_layer_has_sorted_groups_and_loads() {
    let (mut cfg, mut w) = SyntheticSpec::dense("qwen2", 2, 24, 6, 3, 8, 31, 40, 3).build();
    // Per-group: drop head 1 (group 0), 3 (group 1), 4 (group 2).
    let s = prune_attention(&mut cfg, &mut w, 0, &[0, 2, 5], &[0, 1, 2], None).unwrap();
    assert_eq!(s.kv_head_of, vec![0, 1, 2]);
    // Whole-group: drop group 1 (heads 2, 3).
    let s = prune_attention(&mut cfg, &mut w, 1, &[0, 1, 4, 5], &[0, 2], None).unwrap();
    assert_eq!((s.num_heads, s.num_kv_heads, s.kv_head_of.clone()), (4, 2, vec![0, 0, 1, 1]));
    prune_mlp(&mut cfg, &mut w, 1, &[0, 3, 7, 30], None).unwrap();
    w.check_against(&cfg).unwrap();
    assert_eq!(w.get("model.layers.1.self_attn.k_proj.bias").unwrap().shape, vec![16]);
    assert!(prune_attention(&mut cfg, &mut w, 1, &[0, 1], &[1], None).is_err(), "head 0 reads a dropped KV head");
    assert!(prune_mlp(&mut cfg, &mut w, 0, &[], None).is_err());
}

#[test]
fn folded_affine_scales_rows_and_adds_bias() {
    let (mut cfg, mut w) = SyntheticSpec::dense("llama", 1, 6, 2, 2, 2, 5, 9, 4).build();
    let down = w.get("model.layers.0.mlp.down_proj.weight").unwrap().clone();
    let a = Affine { scale: vec![2.0, 1.0, 0.5, 1.0, 1.0, 3.0], bias: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6] };
    prune_mlp(&mut cfg, &mut w, 0, &[1, 4], Some(&a)).unwrap();
    let got = w.get("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(got.shape, vec![6, 2]);
    for k in 0..6 {
        assert_eq!(got.data[k * 2], down.data[k * 5 + 1] * a.scale[k] as f32);
        assert_eq!(got.data[k * 2 + 1], down.data[k * 5 + 4] * a.scale[k] as f32);
    }
    assert_eq!(w.get("model.layers.0.mlp.down_proj.bias").unwrap().data[2], 0.3);
    assert!(cfg.layers[0].down_proj_bias);
    // A second affine adds onto the existing bias.
    prune_mlp(&mut cfg, &mut w, 0, &[0, 1], Some(&Affine { scale: vec![1.0; 6], bias: vec![1.0; 6] })).unwrap();
    assert!((w.get("model.layers.0.mlp.down_proj.bias").unwrap().data[2] - 1.3).abs() < 1e-6);
}

#[test]
fn refitted_columns_replace_down_proj_and_their_bias_adds_on() {
    let (mut cfg, mut w) = SyntheticSpec::dense("llama", 1, 6, 2, 2, 2, 5, 9, 4).build();
    let new = HostTensor::new(vec![6, 2], (0..12).map(|i| i as f32 * 0.25).collect()).unwrap();
    let s = prune_mlp_columns(&mut cfg, &mut w, 0, &[1, 4], new.clone(), &[0.5; 6]).unwrap();
    assert_eq!((s.intermediate_size, s.down_proj_bias), (2, true));
    assert_eq!(w.get("model.layers.0.mlp.down_proj.weight").unwrap(), &new);
    assert_eq!(w.get("model.layers.0.mlp.down_proj.bias").unwrap().data, vec![0.5; 6]);
    w.check_against(&cfg).unwrap();
    // Gate and up are sliced exactly as by prune_mlp; a second refit adds to the bias.
    let (mut cfg2, mut w2) = SyntheticSpec::dense("llama", 1, 6, 2, 2, 2, 5, 9, 4).build();
    prune_mlp(&mut cfg2, &mut w2, 0, &[1, 4], None).unwrap();
    assert_eq!(w.get("model.layers.0.mlp.gate_proj.weight").unwrap(), w2.get("model.layers.0.mlp.gate_proj.weight").unwrap());
    prune_mlp_columns(&mut cfg, &mut w, 0, &[0, 1], new.clone(), &[1.0; 6]).unwrap();
    assert_eq!(w.get("model.layers.0.mlp.down_proj.bias").unwrap().data, vec![1.5; 6]);
    assert!(prune_mlp_columns(&mut cfg, &mut w, 0, &[0], new, &[0.0; 6]).is_err(), "shape mismatch is rejected");
}
