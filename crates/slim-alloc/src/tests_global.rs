//! Tests of FLAP's global allocation: standardization, unit costs (FLAP's 512/3 on
//! LLaMA-7B), a two-layer case worked by hand, per-group rounds, the minimum rule, the
//! parameter count against the pruned shapes, and input errors.

use super::tests_uniform::{model, odd_gqa, odd_mha, smollm2};
use super::*;

/// Deterministic scores in (0, 1).
pub(crate) fn pseudo(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

pub(crate) fn scores_for(cfg: &ModelConfig, mode: GqaMode) -> Vec<LayerScores> {
    cfg.layers
        .iter()
        .enumerate()
        .map(|(l, s)| LayerScores {
            heads: pseudo(
                2 * l as u64,
                match effective_mode(s, mode) {
                    GqaMode::PerGroup => s.num_heads,
                    GqaMode::WholeGroup => s.num_kv_heads,
                },
            ),
            channels: pseudo(2 * l as u64 + 1, s.intermediate_size),
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn standardize_matches_the_formula() {
    // mean 3.5, Σ(s − mean)² = 21, unbiased variance 7.
    let z = standardize(&[1.0, 2.0, 4.0, 7.0]);
    for (z, s) in z.iter().zip([1.0, 2.0, 4.0, 7.0]) {
        assert!(close(*z, (s - 3.5) / 7f64.sqrt()), "{z}");
    }
    assert_eq!(standardize(&[5.0, 5.0, 5.0]), vec![0.0; 3], "std 0");
    assert_eq!(standardize(&[3.0]), vec![0.0], "n = 1");
    assert!(standardize(&[]).is_empty());
}

#[test]
fn unit_costs_match_flap_on_llama7b_and_count_gqa_biases() {
    // LLaMA-7B's shapes, two layers: a head costs 4·4096·128, a channel 3·4096 (512/3).
    let cfg = model(2, 4096, [32, 32, 128], [11008, 32000], false, false);
    let units = global_ranking(&cfg, &scores_for(&cfg, GqaMode::PerGroup), GqaMode::PerGroup).unwrap();
    assert_eq!(units.len(), 2 * (32 + 11008));
    for u in &units {
        match u.kind {
            UnitKind::Attention => assert_eq!(u.cost, 4 * 4096 * 128),
            UnitKind::Channel => assert_eq!(u.cost, 3 * 4096),
        }
    }
    assert_eq!(3 * 4 * 4096 * 128, 512 * 3 * 4096);
    // GQA with q/k/v biases: d = 40, d_h = 6, 2 groups of 5 query heads.
    let cfg = odd_gqa();
    let (d, dh) = (40, 6);
    for (mode, head) in [
        // One query head from each of the 2 groups: q rows, o columns, q bias.
        (GqaMode::PerGroup, 2 * (2 * d * dh + dh)),
        // A group: 5 × (q rows, o columns, q bias) + k and v rows and biases.
        (GqaMode::WholeGroup, 5 * (2 * d * dh + dh) + 2 * (d * dh + dh)),
    ] {
        let units = global_ranking(&cfg, &scores_for(&cfg, mode), mode).unwrap();
        assert!(units.iter().all(|u| u.cost == if u.kind == UnitKind::Attention { head } else { 3 * d }));
    }
}

/// Two MHA layers, d = 8, 2 heads of 4, 4 channels, 10-token untied vocabulary:
/// 2·(10·8) + 8 + 2·(256 + 96 + 16) = 904 parameters; a head costs 128, a channel 24.
fn hand_case() -> (ModelConfig, Vec<LayerScores>) {
    let cfg = model(2, 8, [2, 2, 4], [4, 10], false, false);
    let scores = vec![
        LayerScores { heads: vec![1.0, 3.0], channels: vec![0.0, 1.0, 5.0, 2.0] },
        LayerScores { heads: vec![2.0, 2.0], channels: vec![0.0, 0.0, 10.0, 10.0] },
    ];
    (cfg, scores)
}

#[test]
fn hand_computed_ranking_and_allocations() {
    use UnitKind::{Attention as A, Channel as C};
    let (cfg, scores) = hand_case();
    assert_eq!(cfg.num_params(), 904);
    // z: layer 0 heads ±1/√2; channels (s − 2)/√(14/3); layer 1 heads 0 (std 0);
    // channels ±√3/2.
    let (a, s0, b) = (0.5f64.sqrt(), (14.0f64 / 3.0).sqrt(), 0.75f64.sqrt());
    let want = [
        (0, C, 0, -2.0 / s0, false),
        (1, C, 0, -b, false),
        (1, C, 1, -b, false),
        (0, A, 0, -a, false),
        (0, C, 1, -1.0 / s0, false),
        (0, C, 3, 0.0, false),
        (1, A, 0, 0.0, false),
        (1, A, 1, 0.0, true),
        (0, A, 1, a, true),
        (1, C, 2, b, false),
        (1, C, 3, b, true),
        (0, C, 2, 3.0 / s0, true),
    ];
    let units = global_ranking(&cfg, &scores, GqaMode::WholeGroup).unwrap();
    assert_eq!(units.len(), want.len());
    for (u, &(layer, kind, index, z, protected)) in units.iter().zip(&want) {
        assert_eq!((u.layer, u.kind, u.index, u.protected), (layer, kind, index, protected));
        assert!(close(u.z, z), "{u:?} vs {z}");
        assert_eq!(u.cost, if kind == A { 128 } else { 24 });
    }
    let solve = |target, bias| {
        solve_global(
            &cfg,
            &scores,
            &GlobalConfig { recovery_adds_bias: bias, ..GlobalConfig::flap(target, GqaMode::PerGroup) },
        )
    };
    let whole = |groups, channels, clipped| PruneCounts {
        gqa: Some(GqaMode::WholeGroup),
        groups,
        heads: groups,
        kv_heads: groups,
        channels,
        heads_clipped: clipped,
        ..Default::default()
    };
    // 20 %, goal 723.2; steps 880, 856, 832, 704: 704 is closer than 832.
    let r = solve(0.2, false).unwrap();
    assert_eq!((r.params_before, r.params_after), (904, 704));
    assert_eq!(r.counts, vec![whole(1, 1, false), whole(0, 2, false)]);
    assert_eq!((r.ratios.clone(), r.selected.clone()), (vec![0.25, 0.5], vec![1, 0]));
    assert!(close(r.level, -a) && close(r.achieved, 200.0 / 904.0));
    // With the biases (+16 at a layer's first removal): 896, 888, 864, 736, 712; 712 is
    // 11.2 below the goal, 736 is 12.8 above.
    let r = solve(0.2, true).unwrap();
    assert_eq!(r.params_after, 712);
    assert_eq!(r.counts, vec![whole(1, 2, false), whole(0, 2, false)]);
    assert_eq!(r.selected, vec![0, 1], "equal ratios: lower layer first");
    assert!(close(r.level, -1.0 / s0));
    // 44 %, goal 506.24: … 656, 528, then the two protected heads are skipped, 504. Both
    // layers passed their last head: clipped.
    let r = solve(0.44, false).unwrap();
    assert_eq!(r.params_after, 504);
    assert_eq!(r.counts, vec![whole(1, 3, true), whole(1, 3, true)]);
    assert!(close(r.level, b));
    // Ties within a layer: attention before MLP, then by index. Layer 0's heads all have
    // z = 0 (std 0), its channels z = (s − 1)/√(2/3) = 0, −, +, 0.
    let tied = vec![LayerScores { heads: vec![2.0, 2.0], channels: vec![1.0, 0.0, 2.0, 1.0] }, scores[1].clone()];
    let order: Vec<(UnitKind, usize)> = global_ranking(&cfg, &tied, GqaMode::WholeGroup)
        .unwrap()
        .iter()
        .filter(|u| u.layer == 0)
        .map(|u| (u.kind, u.index))
        .collect();
    assert_eq!(order, vec![(C, 1), (A, 0), (A, 1), (C, 0), (C, 3), (C, 2)]);
    // Beyond the last removable unit: 1 − 504/904 = 0.4425.
    let err = solve(0.45, false).unwrap_err().to_string();
    assert!(err.contains("target 0.45 is unreachable: at most 0.4425"), "{err}");
}

#[test]
fn per_group_rounds_remove_one_head_from_every_group() {
    // One layer, 6 query heads in 2 groups of 3, d = 12, d_h = 2, q/k/v biases, 5 channels.
    let cfg = model(1, 12, [6, 2, 2], [5, 7], true, true);
    let heads = vec![0.3, 0.1, 0.9, 0.5, 0.8, 0.2];
    let channels = vec![1.0, 2.0, 3.0, 4.0, 100.0];
    let scores = vec![LayerScores { heads: heads.clone(), channels }];
    let z = standardize(&heads);
    // Rounds: mean over the groups of the 1st, 2nd, 3rd lowest z.
    let rounds = [(z[1] + z[5]) / 2.0, (z[0] + z[3]) / 2.0, (z[2] + z[4]) / 2.0];
    let units = global_ranking(&cfg, &scores, GqaMode::PerGroup).unwrap();
    let attn: Vec<&GlobalUnit> = units.iter().filter(|u| u.kind == UnitKind::Attention).collect();
    assert_eq!(attn.len(), 3);
    for (r, u) in attn.iter().enumerate() {
        assert_eq!((u.index, u.protected, u.cost), (r, r == 2, 2 * (2 * 12 * 2 + 2)));
        assert!(close(u.z, rounds[r]));
    }
    let before = cfg.num_params();
    for target in [0.05, 0.1, 0.2, 0.3] {
        let a = solve_global(&cfg, &scores, &GlobalConfig::flap(target, GqaMode::PerGroup)).unwrap();
        let c = &a.counts[0];
        assert_eq!(c.gqa, Some(GqaMode::PerGroup));
        assert!(c.heads_per_group <= 2);
        assert_eq!((c.heads, c.kv_heads, c.groups), (2 * c.heads_per_group, 0, 0));
        // Exactly the removed units' costs and the two biases.
        let removed = c.heads_per_group as u64 * 100 + c.channels as u64 * 36;
        assert_eq!(a.params_after, before - removed + 24, "target {target}");
    }
}

#[test]
fn minimum_rule_keeps_a_unit_of_each_kind() {
    for (cfg, mode) in
        [(odd_mha(), GqaMode::PerGroup), (odd_gqa(), GqaMode::PerGroup), (odd_gqa(), GqaMode::WholeGroup)]
    {
        let scores = scores_for(&cfg, mode);
        // The most that can go: all but one unit of each kind in every layer.
        let floor: Vec<PruneCounts> = cfg
            .layers
            .iter()
            .map(|s| {
                let (g, kv, m) = (s.num_heads / s.num_kv_heads, s.num_kv_heads, s.intermediate_size);
                let mode = effective_mode(s, mode);
                let c = PruneCounts { gqa: Some(mode), channels: m - 1, ..Default::default() };
                match mode {
                    GqaMode::PerGroup => PruneCounts { heads_per_group: g - 1, heads: (g - 1) * kv, ..c },
                    GqaMode::WholeGroup => PruneCounts { groups: kv - 1, heads: (kv - 1) * g, kv_heads: kv - 1, ..c },
                }
            })
            .collect();
        let min = apply_counts(&cfg, &floor, true).unwrap().num_params();
        let max = 1.0 - min as f64 / cfg.num_params() as f64;
        let err = solve_global(&cfg, &scores, &GlobalConfig::flap(max + 0.01, mode)).unwrap_err();
        assert!(err.to_string().contains(&format!("at most {max:.4}")), "{err}");
        let a = solve_global(&cfg, &scores, &GlobalConfig::flap(max - 1e-12, mode)).unwrap();
        assert_eq!(a.params_after, min);
        for (c, f) in a.counts.iter().zip(&floor) {
            assert_eq!(
                (c.heads, c.kv_heads, c.channels, c.heads_per_group, c.groups),
                (f.heads, f.kv_heads, f.channels, f.heads_per_group, f.groups)
            );
        }
    }
}

#[test]
fn params_after_is_the_pruned_shapes_count() {
    for cfg in [smollm2(), odd_gqa(), odd_mha()] {
        for mode in [GqaMode::PerGroup, GqaMode::WholeGroup] {
            let scores = scores_for(&cfg, mode);
            let units = global_ranking(&cfg, &scores, mode).unwrap();
            let max_cost = units.iter().map(|u| u.cost).max().unwrap() as f64;
            for target in [0.2, 0.5] {
                for bias in [false, true] {
                    let g = GlobalConfig { recovery_adds_bias: bias, ..GlobalConfig::flap(target, mode) };
                    let a = solve_global(&cfg, &scores, &g).unwrap();
                    let pruned = apply_counts(&cfg, &a.counts, bias).unwrap();
                    assert_eq!(a.params_after, pruned.num_params());
                    assert_eq!(a.params_before, cfg.num_params());
                    let goal = (1.0 - target) * a.params_before as f64;
                    assert!((a.params_after as f64 - goal).abs() <= max_cost, "{mode:?} {target}");
                    for (l, (s, c)) in pruned.layers.iter().zip(&a.counts).enumerate() {
                        assert!(s.num_heads >= 1 && s.num_kv_heads >= 1 && s.intermediate_size >= 1);
                        assert_eq!(a.ratios[l], c.channels as f64 / cfg.layers[l].intermediate_size as f64);
                        assert_eq!(c.gqa.is_some(), a.selected.contains(&l));
                        if c.gqa == Some(GqaMode::PerGroup) {
                            assert_eq!((c.heads, c.kv_heads), (c.heads_per_group * s.num_kv_heads, 0));
                        }
                    }
                    assert!(a.selected.windows(2).all(|w| a.ratios[w[0]] >= a.ratios[w[1]]));
                }
            }
        }
    }
}

#[test]
fn input_errors_name_the_layer() {
    let cfg = odd_gqa();
    let good = scores_for(&cfg, GqaMode::PerGroup);
    let g = GlobalConfig::flap(0.2, GqaMode::PerGroup);
    let err = |s: &[LayerScores], g: &GlobalConfig| solve_global(&cfg, s, g).unwrap_err().to_string();
    assert!(err(&good[..8], &g).contains("8 layer scores for 9 layers"));
    let mut s = good.clone();
    s[3].heads.pop();
    assert!(err(&s, &g).contains("layer 3: 9 head scores, expected 10 (one per query head"), "{}", err(&s, &g));
    // Whole-group wants one score per KV group.
    let wg = GlobalConfig::flap(0.2, GqaMode::WholeGroup);
    assert!(err(&good, &wg).contains("layer 0: 10 head scores, expected 2 (one per KV group"));
    let mut s = good.clone();
    s[5].channels.push(0.5);
    assert!(err(&s, &g).contains("layer 5: 38 channel scores, expected 37"));
    let mut s = good.clone();
    s[2].channels[7] = f64::NAN;
    assert!(err(&s, &g).contains("layer 2: channel score 7 is not finite (NaN)"));
    let mut s = good.clone();
    s[8].heads[0] = f64::INFINITY;
    assert!(err(&s, &g).contains("layer 8: head score 0 is not finite (inf)"));
    let mut s = good.clone();
    (s[1].heads[0], s[1].heads[1]) = (f64::MAX, -f64::MAX);
    assert!(err(&s, &g).contains("layer 1: the scores are too large"));
    for target in [0.0, 1.0, f64::NAN] {
        assert!(err(&good, &GlobalConfig::flap(target, GqaMode::PerGroup)).contains("strictly between 0 and 1"));
    }
}
