//! Unit tests: the ratio formula against a direct computation, counts and clipping, the
//! parameter count, and the solver on SmolLM2-135M's shapes in both GQA modes.

#![allow(clippy::needless_range_loop)] // Index loops mirror the formulas.

use super::*;

const SMOLLM2: &str = r#"{"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30,
 "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
 "vocab_size": 49152, "tie_word_embeddings": true, "rms_norm_eps": 1e-5, "rope_theta": 100000,
 "max_position_embeddings": 8192, "hidden_act": "silu", "bos_token_id": 0, "eos_token_id": 0}"#;

fn smollm2() -> ModelConfig {
    ModelConfig::from_json_str(SMOLLM2).unwrap()
}

/// A plausible cosine profile: low in the first layers, rising, a dip at the last layer.
fn smollm2_cos() -> Vec<f64> {
    (0..30)
        .map(|l| {
            0.72 + 0.22 * (1.0 - (-(l as f64) / 6.0).exp()) + 0.01 * (l as f64).sin() - if l == 29 { 0.2 } else { 0.0 }
        })
        .collect()
}

fn assert_rel(a: f64, b: f64, tol: f64, what: &str) {
    let scale = a.abs().max(b.abs()).max(1e-300);
    assert!((a - b).abs() / scale <= tol, "{what}: {a} vs {b}");
}

#[test]
fn ratios_follow_the_formula() {
    let cos = [0.80, 0.95, 0.91, 0.70, 0.95, 0.88];
    let (k, alpha, r0) = (4, 10.0, 0.3);
    let r = layer_ratios(&cos, k, alpha, r0);
    // Top 4 by cos, ties by index: 1, 4, 2, 5.
    assert_eq!(selected_layers(&cos, k), vec![1, 4, 2, 5]);
    let z: f64 = [1, 4, 2, 5].iter().map(|&l| (alpha * cos[l]).exp()).sum();
    for l in 0..6 {
        let want = if [1, 4, 2, 5].contains(&l) { r0 * k as f64 * (alpha * cos[l]).exp() / z } else { 0.0 };
        assert!((r[l] - want).abs() <= 1e-12 * want.max(1.0), "layer {l}: {} vs {want}", r[l]);
    }
    let mean = r.iter().sum::<f64>() / k as f64;
    assert_rel(mean, r0, 1e-12, "mean ratio over the selected layers");
    // A large alpha does not overflow.
    let r = layer_ratios(&cos, k, 1e4, r0);
    assert!(r.iter().all(|x| x.is_finite()));
    assert_rel(r.iter().sum::<f64>(), r0 * k as f64, 1e-12, "sum at large alpha");
}

#[test]
fn counts_use_bankers_rounding() {
    let gqa = LayerShape::dense(9, 3, 1536);
    // Per-group: round(0.5·3) = round(1.5) = 2; channels round(768) = 768.
    let c = layer_prune_counts(0.5, &gqa, GqaMode::PerGroup).unwrap();
    assert_eq!((c.heads_per_group, c.heads, c.kv_heads, c.channels), (2, 6, 0, 768));
    // round(0.5) = 0 heads per group.
    let c = layer_prune_counts(1.0 / 6.0, &gqa, GqaMode::PerGroup).unwrap();
    assert_eq!((c.heads_per_group, c.heads), (0, 0));
    // Whole-group: round(0.5·3) = 2 groups = 6 heads, 2 KV heads.
    let c = layer_prune_counts(0.5, &gqa, GqaMode::WholeGroup).unwrap();
    assert_eq!((c.groups, c.heads, c.kv_heads), (2, 6, 2));
    // MHA is whole-group whatever was asked: round(0.25·32) = 8 heads and their KV heads.
    let mha = LayerShape::dense(32, 32, 11008);
    let c = layer_prune_counts(0.25, &mha, GqaMode::PerGroup).unwrap();
    assert_eq!((c.gqa, c.groups, c.heads, c.kv_heads, c.channels), (Some(GqaMode::WholeGroup), 8, 8, 8, 2752));
    assert_eq!(layer_prune_counts(0.0, &gqa, GqaMode::PerGroup).unwrap(), PruneCounts::default());
}

#[test]
fn clipping_keeps_a_head_and_a_channel() {
    let cfg = smollm2();
    let shape = &cfg.layers[0];
    let r = clip_ratios(&cfg, &[5.0; 30]);
    assert!(r.iter().all(|&x| x == 1535.0 / 1536.0));
    for mode in [GqaMode::PerGroup, GqaMode::WholeGroup] {
        let c = layer_prune_counts(r[0], shape, mode).unwrap();
        assert!(c.heads_clipped);
        assert_eq!(c.channels, 1535);
        let after = pruned_shape(shape, &c, true);
        assert_eq!(after.intermediate_size, 1);
        match mode {
            GqaMode::PerGroup => assert_eq!((after.num_heads, after.num_kv_heads), (3, 3)),
            GqaMode::WholeGroup => assert_eq!((after.num_heads, after.num_kv_heads), (3, 1)),
        }
    }
    assert!(layer_prune_counts(1.0, shape, GqaMode::PerGroup).is_err());
}

#[test]
fn params_after_counts_by_hand() {
    let cfg = smollm2();
    assert_eq!(cfg.num_params(), 134_515_008, "SmolLM2-135M parameter count");
    let mut ratios = vec![0.0; 30];
    ratios[7] = 0.5;
    let (d, dh) = (576u64, 64u64);
    // Per-group: 6 query heads (q rows + o columns), 768 channels, plus two d-biases.
    let per_group = cfg.num_params() - 6 * 2 * d * dh - 768 * 3 * d + 2 * d;
    assert_eq!(params_after(&cfg, &ratios, GqaMode::PerGroup, true).unwrap(), per_group);
    assert_eq!(params_after(&cfg, &ratios, GqaMode::PerGroup, false).unwrap(), per_group - 2 * d);
    // Whole-group: also 2 KV heads' k and v rows.
    let whole = per_group - 2 * 2 * d * dh;
    assert_eq!(params_after(&cfg, &ratios, GqaMode::WholeGroup, true).unwrap(), whole);
    assert!(params_after(&cfg, &ratios[..29], GqaMode::PerGroup, true).is_err());
}

#[test]
fn params_are_monotone_in_r0() {
    let cfg = smollm2();
    let cos = smollm2_cos();
    for mode in [GqaMode::PerGroup, GqaMode::WholeGroup] {
        let alloc = AllocConfig { gqa: mode, ..AllocConfig::paper_defaults(0.2, 30) };
        let mut prev = u64::MAX;
        for i in 1..=400 {
            let r0 = i as f64 * 0.005;
            let a = allocate(&cfg, &cos, &alloc, r0).unwrap();
            assert!(a.params_after <= prev, "{mode:?}: params rose at r0 = {r0}");
            prev = a.params_after;
        }
    }
}

#[test]
fn solver_hits_smollm2_targets() {
    let cfg = smollm2();
    let cos = smollm2_cos();
    let before = cfg.num_params() as f64;
    for target in [0.2, 0.5] {
        for mode in [GqaMode::PerGroup, GqaMode::WholeGroup] {
            let alloc = AllocConfig { gqa: mode, ..AllocConfig::paper_defaults(target, 30) };
            let a = solve(&cfg, &cos, &alloc).unwrap();
            eprintln!(
                "SmolLM2 target {target} {mode:?}: r0 = {:.6}, achieved = {:.6}, params {} -> {}",
                a.level, a.achieved, a.params_before, a.params_after
            );
            // The granularity of r0: where a head count flips in one layer, the parameter
            // count jumps by a head unit (per-group: one query head in each of the 3 groups,
            // 3·2·d·d_h; whole-group: one group, (2·3 + 2)·d·d_h) while the channels barely move.
            let step = match mode {
                GqaMode::PerGroup => 3 * 2 * 576 * 64,
                GqaMode::WholeGroup => 8 * 576 * 64,
            };
            assert!((a.achieved - target).abs() * before <= step as f64, "{mode:?} {target}: achieved {}", a.achieved);
            let pruned: Vec<usize> = (0..30).filter(|&l| a.ratios[l] > 0.0).collect();
            assert_eq!(pruned.len(), 26);
            let mut sel = a.selected.clone();
            sel.sort_unstable();
            assert_eq!(pruned, sel);
            for (l, c) in a.counts.iter().enumerate() {
                let after = pruned_shape(&cfg.layers[l], c, true);
                assert!(after.num_heads >= 1 && after.intermediate_size >= 1);
                if mode == GqaMode::PerGroup {
                    assert_eq!(after.num_kv_heads, 3);
                }
            }
            // The neighbouring steps are no closer.
            for r0 in [a.level * (1.0 - 1e-3), a.level * (1.0 + 1e-3)] {
                let b = allocate(&cfg, &cos, &alloc, r0).unwrap();
                let goal = (1.0 - target) * before;
                assert!((b.params_after as f64 - goal).abs() >= (a.params_after as f64 - goal).abs() - 0.5);
            }
        }
    }
}

#[test]
fn paper_defaults_and_unreachable_targets() {
    let a = AllocConfig::paper_defaults(0.2, 30);
    assert_eq!((a.num_selected, a.alpha), (26, 10.0));
    let a = AllocConfig::paper_defaults(0.5, 32);
    assert_eq!((a.num_selected, a.alpha), (28, 7.0));
    let cfg = smollm2();
    let cos = smollm2_cos();
    for target in [0.0, 1.0, -0.1, f64::NAN] {
        let err = solve(&cfg, &cos, &AllocConfig::paper_defaults(target, 30)).unwrap_err();
        assert!(err.to_string().contains("strictly between 0 and 1"), "{err}");
    }
    let err = solve(&cfg, &cos, &AllocConfig::paper_defaults(0.9, 30)).unwrap_err().to_string();
    assert!(err.contains("target 0.9 is unreachable: at most 0."), "{err}");
    let bad = AllocConfig { num_selected: 31, ..AllocConfig::paper_defaults(0.2, 30) };
    assert!(solve(&cfg, &cos, &bad).is_err());
}
