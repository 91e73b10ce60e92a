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

fn same_weights(a: &Weights, b: &Weights) -> bool {
    let mut names: Vec<&str> = a.names().collect();
    names.sort_unstable();
    let mut other: Vec<&str> = b.names().collect();
    other.sort_unstable();
    names == other && names.iter().all(|n| a.get(n).unwrap() == b.get(n).unwrap())
}

#[test]
fn keeping_everything_reproduces_dense_logits() {
    for spec in [
        SyntheticSpec::dense("llama", 2, 24, 6, 2, 8, 31, 40, 1),
        SyntheticSpec::dense("qwen2", 2, 20, 4, 4, 6, 17, 33, 2),
    ] {
        let (cfg0, w0) = spec.build();
        let ids: Vec<u32> = (0..9).map(|i| (i * 5 % 33) as u32).collect();
        let want = logits(&cfg0, &w0, &ids);
        let (mut cfg, mut w) = (cfg0.clone(), w0.clone());
        for l in 0..cfg.num_layers() {
            let s = cfg.layers[l].clone();
            prune_attention(
                &mut cfg,
                &mut w,
                l,
                &(0..s.num_heads).collect::<Vec<_>>(),
                &(0..s.num_kv_heads).collect::<Vec<_>>(),
                None,
            )
            .unwrap();
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
    assert_eq!(
        w.get("model.layers.0.mlp.gate_proj.weight").unwrap(),
        w2.get("model.layers.0.mlp.gate_proj.weight").unwrap()
    );
    prune_mlp_columns(&mut cfg, &mut w, 0, &[0, 1], new.clone(), &[1.0; 6]).unwrap();
    assert_eq!(w.get("model.layers.0.mlp.down_proj.bias").unwrap().data, vec![1.5; 6]);
    assert!(prune_mlp_columns(&mut cfg, &mut w, 0, &[0], new, &[0.0; 6]).is_err(), "shape mismatch is rejected");
}

#[test]
fn refitted_columns_replace_o_proj_and_set_its_bias() {
    let spec = SyntheticSpec::dense("qwen2", 2, 24, 6, 3, 8, 31, 40, 3);
    let (heads, kv) = ([0, 2, 5], [0, 1, 2]);
    let (mut cfg, mut w) = spec.build();
    let new = HostTensor::new(vec![24, 24], (0..24 * 24).map(|i| (i % 17) as f32 * 0.125 - 1.0).collect()).unwrap();
    let bias: Vec<f64> = (0..24).map(|k| k as f64 * 0.25 - 2.0).collect();
    assert!(!cfg.layers[1].o_proj_bias);
    let s = prune_attention_columns(&mut cfg, &mut w, 1, &heads, &kv, new.clone(), &bias).unwrap();
    assert_eq!((s.num_heads, s.num_kv_heads, s.o_proj_bias, s.kv_head_of.clone()), (3, 3, true, vec![0, 1, 2]));
    assert_eq!(cfg.layers[1], s);
    assert_eq!(w.get("model.layers.1.self_attn.o_proj.weight").unwrap(), &new);
    let b = w.get("model.layers.1.self_attn.o_proj.bias").unwrap();
    assert_eq!((b.shape.clone(), b.data.clone()), (vec![24], bias.iter().map(|&x| x as f32).collect::<Vec<_>>()));
    w.check_against(&cfg).unwrap();
    assert!(logits(&cfg, &w, &[1, 7, 3]).iter().all(|x| x.is_finite()));
    // q/k/v are sliced exactly as by prune_attention; a second refit adds to the bias.
    let (mut cfg2, mut w2) = spec.build();
    prune_attention(&mut cfg2, &mut w2, 1, &heads, &kv, None).unwrap();
    for name in ["q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias"] {
        let n = format!("model.layers.1.self_attn.{name}");
        assert_eq!(w.get(&n).unwrap(), w2.get(&n).unwrap(), "{name}");
    }
    let one = HostTensor::new(vec![24, 16], vec![1.0; 24 * 16]).unwrap();
    prune_attention_columns(&mut cfg, &mut w, 1, &[0, 2], &[0, 2], one.clone(), &[1.0; 24]).unwrap();
    let b = &w.get("model.layers.1.self_attn.o_proj.bias").unwrap().data;
    assert!((0..24).all(|k| b[k] == (bias[k] + 1.0) as f32), "{b:?}");
    // Rejected before anything changes: wrong shape, bias length, non-finite values.
    let before = (cfg.clone(), w.clone());
    assert!(prune_attention_columns(&mut cfg, &mut w, 0, &[0], &[0], one.clone(), &[0.0; 24])
        .unwrap_err()
        .to_string()
        .contains("expected [24, 8]"));
    assert!(prune_attention_columns(&mut cfg, &mut w, 0, &[0, 1], &[0], one.clone(), &[0.0; 23])
        .unwrap_err()
        .to_string()
        .contains("23 entries"));
    assert!(prune_attention_columns(&mut cfg, &mut w, 0, &[0, 1], &[0], one, &[f64::NAN; 24])
        .unwrap_err()
        .to_string()
        .contains("not finite"));
    assert!(cfg == before.0 && same_weights(&w, &before.1), "a rejected refit changed the model");
}

#[test]
fn column_refit_matches_folded_affine_and_all_heads_reproduce_dense() {
    let spec = SyntheticSpec::dense("llama", 2, 24, 6, 2, 8, 31, 40, 1);
    let (heads, kv) = ([1, 2, 4], [0, 1]);
    let a = Affine {
        scale: (0..24).map(|k| 0.5 + k as f64 / 8.0).collect(),
        bias: (0..24).map(|k| 0.1 * k as f64).collect(),
    };
    let (mut cfg, mut w) = spec.build();
    let o = w
        .get("model.layers.0.self_attn.o_proj.weight")
        .unwrap()
        .select_cols(&(8..24).chain(32..40).collect::<Vec<_>>())
        .unwrap();
    let mut scaled = o.clone();
    for (k, row) in scaled.data.chunks_mut(24).enumerate() {
        row.iter_mut().for_each(|x| *x *= a.scale[k] as f32);
    }
    prune_attention_columns(&mut cfg, &mut w, 0, &heads, &kv, scaled, &a.bias).unwrap();
    let (mut cfg2, mut w2) = spec.build();
    prune_attention(&mut cfg2, &mut w2, 0, &heads, &kv, Some(&a)).unwrap();
    assert!(cfg == cfg2 && same_weights(&w, &w2), "column refit differs from the folded affine");
    // Every head kept, the dense o_proj and a zero bias: the dense logits.
    let (cfg0, w0) = spec.build();
    let (mut cfg, mut w) = (cfg0.clone(), w0.clone());
    let dense_o = w0.get("model.layers.1.self_attn.o_proj.weight").unwrap().clone();
    prune_attention_columns(&mut cfg, &mut w, 1, &[0, 1, 2, 3, 4, 5], &[0, 1], dense_o, &[0.0; 24]).unwrap();
    let ids = [3, 1, 4, 1, 5, 9, 2, 6];
    let (got, want) = (logits(&cfg, &w, &ids), logits(&cfg0, &w0, &ids));
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err <= 1e-5, "max abs logit difference {err}");
}
