//! Tests of the baseline scorers (Wanda-sp, FLAP, random): scores against direct f64
//! computations on raw activations `Z` and `G`, and selections in both GQA modes against
//! an independent "prune the lowest" rule.

use super::*;

/// Per-channel metric of an output projection from its raw input columns and its weight.
#[derive(Clone, Copy, Debug)]
enum Metric {
    /// `(1/r) Σ_i |W_ij| · sqrt(mean_n x_nj²)`.
    Wanda,
    /// `Σ_n (x_nj − x̄_j)²/(n − 1) · Σ_i W_ij²`.
    Flap,
}

/// `metric` of column j, with `x` the raw input column and `w(i)` the weight column.
fn raw_metric(metric: Metric, x: &[f64], w: &[f64]) -> f64 {
    let n = x.len() as f64;
    match metric {
        Metric::Wanda => {
            let rms = (x.iter().map(|v| v * v).sum::<f64>() / n).sqrt();
            w.iter().map(|a| a.abs()).sum::<f64>() / w.len() as f64 * rms
        }
        Metric::Flap => {
            let mean = x.iter().sum::<f64>() / n;
            let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            var * w.iter().map(|a| a * a).sum::<f64>()
        }
    }
}

/// Direct unit scores of an attention case: per channel of `Z`, then summed per unit
/// (FLAP squares each channel first).
fn raw_unit_scores(case: &AttnCase, metric: Metric, units: &Units) -> Vec<f64> {
    let (d, dh) = (case.stats.hidden, case.stats.head_dim);
    let cols = case.o_proj.shape[1];
    let head = |h: usize| -> f64 {
        (0..dh)
            .map(|c| {
                let x = col(&case.z[h], c);
                let w: Vec<f64> = (0..d).map(|i| case.o_proj.data[i * cols + h * dh + c] as f64).collect();
                let s = raw_metric(metric, &x, &w);
                match metric {
                    Metric::Wanda => s,
                    Metric::Flap => s * s,
                }
            })
            .sum()
    };
    units.members.iter().map(|m| m.iter().map(|&h| head(h)).sum()).collect()
}

/// Direct channel scores of an MLP case from raw `G` and `W_d`.
fn raw_channel_scores(mc: &MlpCase, metric: Metric) -> Vec<f64> {
    let (d, m) = (mc.stats.hidden, mc.stats.intermediate);
    (0..m)
        .map(|j| {
            let w: Vec<f64> = (0..d).map(|i| mc.down.data[i * m + j] as f64).collect();
            raw_metric(metric, &col(&mc.g, j), &w)
        })
        .collect()
}

/// The selection "prune the lowest" gives for `scores`, worked out independently:
/// (kept query heads, kept KV heads).
fn lowest_pruned(scores: &[f64], units: &Units, prune: HeadPrune) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].partial_cmp(&scores[b]).unwrap().then(a.cmp(&b)));
    let mut pruned = vec![false; scores.len()];
    match prune {
        HeadPrune::PerGroup { heads_per_group: p } => {
            let classes = units.class.iter().max().unwrap() + 1;
            for c in 0..classes {
                for &u in order.iter().filter(|&&u| units.class[u] == c).take(p) {
                    pruned[u] = true;
                }
            }
        }
        HeadPrune::WholeGroup { groups: p } => order.iter().take(p).for_each(|&u| pruned[u] = true),
    }
    let kept_units: Vec<usize> = (0..scores.len()).filter(|&u| !pruned[u]).collect();
    let mut kept: Vec<usize> = kept_units.iter().flat_map(|&u| units.members[u].clone()).collect();
    kept.sort_unstable();
    let kv = match prune {
        HeadPrune::PerGroup { .. } => (0..=*units.class.iter().max().unwrap()).collect(),
        HeadPrune::WholeGroup { .. } => kept_units,
    };
    (kept, kv)
}

/// Every prune count of a layer, in both modes.
fn prunes(h: usize, n_kv: usize) -> Vec<HeadPrune> {
    let g = h / n_kv;
    let per = (1..g).map(|p| HeadPrune::PerGroup { heads_per_group: p });
    let whole = (1..n_kv).map(|q| HeadPrune::WholeGroup { groups: q });
    per.chain(whole).collect()
}

const SHAPES: [(usize, usize); 5] = [(6, 2), (6, 3), (8, 2), (5, 5), (5, 1)];

#[test]
fn head_scores_match_raw_activations() {
    for (kind, metric) in [(ScorerKind::WandaSp, Metric::Wanda), (ScorerKind::Flap, Metric::Flap)] {
        let mut checked = 0;
        for (i, &(h, n_kv)) in SHAPES.iter().enumerate() {
            let case = attn_case(40, h, n_kv, 7, 4, 300 + i as u64);
            for prune in prunes(h, n_kv) {
                let units = build_units(&case.kv_head_of, n_kv, prune.mode());
                let want = raw_unit_scores(&case, metric, &units);
                let sel = select_heads(kind, &case.inputs(), prune).unwrap();
                for (u, (&got, &w)) in sel.scores.iter().zip(&want).enumerate() {
                    assert_rel(got, w, 1e-9, &format!("{kind:?} unit {u}, H={h}, n_kv={n_kv}, {prune:?}"));
                }
                let (kept, kv_kept) = lowest_pruned(&want, &units, prune);
                assert_eq!(sel.kept, kept, "{kind:?}, H={h}, n_kv={n_kv}, {prune:?}");
                assert_eq!(sel.kv_kept, kv_kept, "{kind:?}, H={h}, n_kv={n_kv}, {prune:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 18, "{kind:?}: selections checked");
    }
}

#[test]
fn channel_scores_match_raw_activations() {
    for (kind, metric) in [(ScorerKind::WandaSp, Metric::Wanda), (ScorerKind::Flap, Metric::Flap)] {
        for (n, d, m, seed) in [(40, 7, 13, 31u64), (25, 5, 11, 32)] {
            let mc = mlp_case(n, d, m, seed);
            let want = raw_channel_scores(&mc, metric);
            for keep in [KeepLowest::None, KeepLowest::Fraction(0.2)] {
                let sel = select_channels(kind, &mc.inputs(), 4, keep).unwrap();
                for j in 0..m {
                    assert_rel(sel.scores[j], want[j], MLP_TOL, &format!("{kind:?} channel {j}, seed {seed}"));
                }
                let mut pi: Vec<usize> = (0..m).collect();
                pi.sort_by(|&a, &b| want[a].partial_cmp(&want[b]).unwrap().then(a.cmp(&b)));
                let pm = keep.count(m);
                let mut kept: Vec<usize> = pi[..pm].iter().chain(&pi[pm + 4..]).copied().collect();
                kept.sort_unstable();
                assert_eq!(sel.kept, kept, "{kind:?}, {keep:?}, seed {seed}");
            }
        }
    }
}

#[test]
fn flap_head_ranking_is_the_standardized_ranking() {
    // FLAP's AL-AM: z-score the squared metric across the layer's channels, average per head.
    let case = attn_case(40, 8, 2, 7, 4, 41);
    let units = build_units(&case.kv_head_of, 2, GqaMode::PerGroup);
    let ours = Flap.unit_scores(&case.inputs(), &units).unwrap();
    let per_channel: Vec<f64> = (0..8)
        .flat_map(|h| (0..4).map(move |c| (h, c)))
        .map(|(h, c)| {
            let x = col(&case.z[h], c);
            let w: Vec<f64> = (0..7).map(|i| case.o_proj.data[i * 32 + h * 4 + c] as f64).collect();
            raw_metric(Metric::Flap, &x, &w).powi(2)
        })
        .collect();
    let mean = per_channel.iter().sum::<f64>() / 32.0;
    let std = (per_channel.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 31.0).sqrt();
    let head_z: Vec<f64> =
        (0..8).map(|h| per_channel[h * 4..(h + 1) * 4].iter().map(|v| (v - mean) / std).sum::<f64>() / 4.0).collect();
    let rank = |s: &[f64]| {
        let mut o: Vec<usize> = (0..s.len()).collect();
        o.sort_by(|&a, &b| s[a].partial_cmp(&s[b]).unwrap());
        o
    };
    assert_eq!(rank(&ours), rank(&head_z));
}

#[test]
fn random_is_seeded_by_seed_and_layer() {
    let case = attn_case(10, 16, 4, 3, 2, 51);
    let mut case1 = attn_case(10, 16, 4, 3, 2, 51);
    case1.stats.layer = 1;
    for prune in [HeadPrune::PerGroup { heads_per_group: 2 }, HeadPrune::WholeGroup { groups: 2 }] {
        let a = select_heads(ScorerKind::Random, &case.inputs(), prune).unwrap();
        let b = select_heads(ScorerKind::Random, &case.inputs(), prune).unwrap();
        assert_eq!(a, b, "same seed and layer, {prune:?}");
        let c = select_heads_with(&Random::new(RANDOM_SEED), &case.inputs(), prune).unwrap();
        assert_eq!(a, c, "ScorerKind::Random uses RANDOM_SEED");
        let units = build_units(&case.kv_head_of, 4, prune.mode());
        assert_eq!(lowest_pruned(&a.scores, &units, prune), (a.kept.clone(), a.kv_kept.clone()));
        assert!(a.scores.iter().all(|&s| s > 0.0 && s < 1.0));
        let other_layer = select_heads(ScorerKind::Random, &case1.inputs(), prune).unwrap();
        assert_ne!(a.scores, other_layer.scores, "layer changes the draws, {prune:?}");
        let other_seed = select_heads_with(&Random::new(7), &case.inputs(), prune).unwrap();
        assert_ne!(a.scores, other_seed.scores, "seed changes the draws, {prune:?}");
        if let HeadPrune::PerGroup { .. } = prune {
            // 6^4 possible selections: these differ.
            assert_ne!(a.kept, other_layer.kept, "layer changes the selection");
            assert_ne!(a.kept, other_seed.kept, "seed changes the selection");
            for k in 0..4 {
                assert_eq!(a.kept.iter().filter(|&&q| q / 4 == k).count(), 2, "group {k} keeps g − p");
            }
        } else {
            assert_eq!(a.kv_kept.len(), 2);
            for &k in &a.kv_kept {
                assert!((4 * k..4 * k + 4).all(|q| a.kept.contains(&q)), "group {k} kept whole");
            }
        }
    }
    let mc = mlp_case(20, 5, 40, 52);
    let mut mc1 = mlp_case(20, 5, 40, 52);
    mc1.stats.layer = 1;
    let a = select_channels(ScorerKind::Random, &mc.inputs(), 20, KeepLowest::None).unwrap();
    assert_eq!(a, select_channels(ScorerKind::Random, &mc.inputs(), 20, KeepLowest::None).unwrap());
    let b = select_channels(ScorerKind::Random, &mc1.inputs(), 20, KeepLowest::None).unwrap();
    assert_ne!(a.kept, b.kept, "layer changes the channel selection");
    let c = select_channels_with(&Random::new(8), &mc.inputs(), 20, KeepLowest::None).unwrap();
    assert_ne!(a.kept, c.kept, "seed changes the channel selection");
    // The draws ignore the statistics: other activations, same layer, same selection.
    let mc2 = mlp_case(20, 5, 40, 53);
    assert_eq!(a, select_channels(ScorerKind::Random, &mc2.inputs(), 20, KeepLowest::None).unwrap());
}

#[test]
fn variant_serde_names() {
    for (kind, name) in
        [(ScorerKind::WandaSp, "\"wanda-sp\""), (ScorerKind::Flap, "\"flap\""), (ScorerKind::Random, "\"random\"")]
    {
        assert_eq!(serde_json::to_string(&kind).unwrap(), name);
        assert_eq!(serde_json::from_str::<ScorerKind>(name).unwrap(), kind);
    }
}

#[test]
fn bad_statistics_are_errors() {
    let prune = HeadPrune::PerGroup { heads_per_group: 1 };
    let mut case = attn_case(10, 4, 2, 5, 3, 61);
    case.stats.z_sq_mean[3] = f64::NAN;
    let err = select_heads(ScorerKind::WandaSp, &case.inputs(), prune).unwrap_err();
    assert!(err.to_string().contains("z_sq_mean") && err.to_string().contains("index 3"), "{err}");
    let err = select_heads(ScorerKind::Flap, &case.inputs(), prune).unwrap_err();
    assert!(err.to_string().contains("z_sq_mean"), "{err}");
    let mut case = attn_case(10, 4, 2, 5, 3, 62);
    case.stats.n_tokens = 1;
    let err = select_heads(ScorerKind::Flap, &case.inputs(), prune).unwrap_err();
    assert!(err.to_string().contains("at least 2 calibration tokens"), "{err}");
    let mut mc = mlp_case(10, 3, 6, 63);
    mc.stats.g_cov[2 * 6 + 2] = f32::INFINITY;
    for kind in [ScorerKind::WandaSp, ScorerKind::Flap] {
        let err = select_channels(kind, &mc.inputs(), 2, KeepLowest::None).unwrap_err();
        assert!(err.to_string().contains("g_cov"), "{kind:?}: {err}");
    }
}
