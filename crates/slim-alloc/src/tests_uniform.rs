//! Tests of the uniform (LLM-Pruner) allocation: the range rule, ratios and counts against a
//! direct computation, and the solver against an exhaustive search over every step of the
//! parameter count, on SmolLM2's shapes and on odd multi-head and GQA shapes.

use super::*;

/// A dense config: `layers` layers of width `hidden`, `[heads, kv_heads, head_dim]`,
/// `[intermediate, vocab]`; `attention_bias` gives q/k/v biases.
pub(crate) fn model(
    layers: usize,
    hidden: usize,
    [heads, kv, head_dim]: [usize; 3],
    [ffn, vocab]: [usize; 2],
    tied: bool,
    attention_bias: bool,
) -> ModelConfig {
    ModelConfig::from_json_str(&format!(
        r#"{{"model_type": "llama", "hidden_size": {hidden}, "num_hidden_layers": {layers},
        "num_attention_heads": {heads}, "num_key_value_heads": {kv}, "head_dim": {head_dim},
        "intermediate_size": {ffn}, "vocab_size": {vocab}, "tie_word_embeddings": {tied},
        "attention_bias": {attention_bias}, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 256, "hidden_act": "silu"}}"#
    ))
    .unwrap()
}

pub(crate) fn smollm2() -> ModelConfig {
    model(30, 576, [9, 3, 64], [1536, 49152], true, false)
}

/// Multi-head attention, odd sizes, 5 layers (fewer than 7: LLM-Pruner's range is all).
pub(crate) fn odd_mha() -> ModelConfig {
    model(5, 24, [6, 6, 4], [29, 101], false, false)
}

/// GQA with 5 query heads per KV group, q/k/v biases, odd sizes, 9 layers.
pub(crate) fn odd_gqa() -> ModelConfig {
    model(9, 40, [10, 2, 6], [37, 97], false, true)
}

const MODES: [GqaMode; 2] = [GqaMode::PerGroup, GqaMode::WholeGroup];

#[test]
fn llm_pruner_range_scales_and_clamps() {
    let r = |n| UniformConfig::llm_pruner(0.2, n, GqaMode::PerGroup).layers();
    assert_eq!(r(32), 4..30, "LLaMA-7B: range(4, 30)");
    assert_eq!(r(30), 4..28);
    assert_eq!(r(7), 4..5);
    assert_eq!(r(6), 0..6);
    assert_eq!(r(1), 0..1);
    let u = UniformConfig::llm_pruner(0.3, 32, GqaMode::WholeGroup);
    assert_eq!((u.target, u.gqa, u.recovery_adds_bias), (0.3, GqaMode::WholeGroup, false));
}

#[test]
fn uniform_ratios_are_equal_on_the_range_and_counted_directly() {
    let cfg = smollm2();
    let (d, dh) = (576u64, 64u64);
    for (mode, bias) in [(GqaMode::PerGroup, true), (GqaMode::WholeGroup, false)] {
        let u = UniformConfig { recovery_adds_bias: bias, ..UniformConfig::llm_pruner(0.2, 30, mode) };
        let a = allocate_uniform(&cfg, &u, 0.3).unwrap();
        assert_eq!(a.selected, (4..28).collect::<Vec<_>>());
        assert_eq!(uniform_ratios(30, 4..28, 0.3), a.ratios);
        for l in 0..30 {
            let inside = (4..28).contains(&l);
            assert_eq!(a.ratios[l], if inside { 0.3 } else { 0.0 }, "layer {l}");
            if !inside {
                assert_eq!(a.counts[l], PruneCounts::default(), "layer {l}");
            }
        }
        // round(0.3·3) = 1 head per group (per-group: 3 query heads; whole-group: one group
        // of 3 query heads and its KV head), round(0.3·1536) = round(460.8) = 461 channels.
        let c = &a.counts[4];
        assert!(a.counts[4..28].iter().all(|x| x == c));
        assert_eq!((c.heads, c.channels), (3, 461));
        let per_layer = match mode {
            GqaMode::PerGroup => 3 * 2 * d * dh,
            GqaMode::WholeGroup => (3 * 2 + 2) * d * dh,
        } + 461 * 3 * d
            - if bias { 2 * d } else { 0 };
        assert_eq!(a.params_after, cfg.num_params() - 24 * per_layer);
        assert_eq!(apply_counts(&cfg, &a.counts, bias).unwrap().num_params(), a.params_after);
    }
    // Clipping as in SlimLLM's allocation.
    let u = UniformConfig::llm_pruner(0.2, 30, GqaMode::PerGroup);
    let a = allocate_uniform(&cfg, &u, 2.0).unwrap();
    assert!(a.ratios[4..28].iter().all(|&r| r == 1535.0 / 1536.0));
    assert!(a.counts[4..28].iter().all(|c| c.heads_clipped && c.heads == 6));
}

/// Every value of the parameter count as a function of `r > 0`: `r` between consecutive
/// rounding points of all layers' head and channel counts, and at the clip limit.
fn all_steps(cfg: &ModelConfig, u: &UniformConfig) -> Vec<u64> {
    let cap = cfg.layers[u.layers()].iter().map(ratio_cap).fold(0.0, f64::max);
    let mut points = vec![0.0, cap];
    for s in &cfg.layers[u.layers()] {
        let units = match effective_mode(s, u.gqa) {
            GqaMode::PerGroup => s.num_heads / s.num_kv_heads,
            GqaMode::WholeGroup => s.num_kv_heads,
        };
        for n in [units, s.intermediate_size] {
            points.extend((0..n).map(|k| (k as f64 + 0.5) / n as f64).filter(|&x| x < cap));
        }
    }
    points.sort_by(f64::total_cmp);
    points.dedup();
    let mut rs: Vec<f64> = points.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    rs.push(cap);
    rs.iter().map(|&r| allocate_uniform(cfg, u, r).unwrap().params_after).collect()
}

/// The solver returns the step closest to the goal (at or below it on a tie), found by
/// exhaustive search, and that step is within half a jump of the step function.
fn check_solver(cfg: &ModelConfig, u: &UniformConfig) -> Allocation {
    let a = solve_uniform(cfg, u).unwrap();
    let before = cfg.num_params();
    let goal = (1.0 - u.target) * before as f64;
    let steps = all_steps(cfg, u);
    assert!(steps.windows(2).all(|w| w[1] <= w[0]), "non-increasing");
    let dist = |p: u64| (p as f64 - goal).abs();
    let best = steps.iter().copied().min_by(|&x, &y| dist(x).total_cmp(&dist(y)).then(x.cmp(&y))).unwrap();
    let what = format!("{:?} target {} range {:?}", u.gqa, u.target, u.layers());
    assert_eq!(a.params_after, best, "{what}");
    let jump = steps.windows(2).map(|w| w[0] - w[1]).max().unwrap();
    assert!(dist(a.params_after) <= 0.5 * jump as f64, "{what}");
    // The returned allocation is the one for its ratio, with one ratio on the range.
    assert_eq!(a, allocate_uniform(cfg, u, a.level).unwrap());
    let r = a.ratios[u.first];
    assert!(r > 0.0 && a.ratios[u.layers()].iter().all(|&x| x == r));
    assert_eq!(a.params_after, apply_counts(cfg, &a.counts, u.recovery_adds_bias).unwrap().num_params());
    a
}

#[test]
fn uniform_solver_hits_smollm2_targets_in_both_modes() {
    let cfg = smollm2();
    let before = cfg.num_params() as f64;
    for target in [0.2, 0.5] {
        for mode in MODES {
            for bias in [false, true] {
                let u = UniformConfig { recovery_adds_bias: bias, ..UniformConfig::llm_pruner(target, 30, mode) };
                let a = check_solver(&cfg, &u);
                // One unit of granularity: a head unit (per-group: one query head in each of
                // the 3 groups; whole-group: one group and its KV head) in all 24 layers.
                let unit = match mode {
                    GqaMode::PerGroup => 3 * 2 * 576 * 64,
                    GqaMode::WholeGroup => 8 * 576 * 64,
                };
                assert!(
                    (a.achieved - target).abs() * before <= (24 * unit) as f64,
                    "{mode:?} {target}: achieved {}",
                    a.achieved
                );
            }
        }
    }
}

#[test]
fn uniform_solver_on_odd_mha_and_gqa_shapes() {
    for (cfg, targets) in [(odd_mha(), [0.1, 0.4]), (odd_gqa(), [0.1, 0.2])] {
        for target in targets {
            for mode in MODES {
                let u = UniformConfig {
                    recovery_adds_bias: true,
                    ..UniformConfig::llm_pruner(target, cfg.num_layers(), mode)
                };
                let a = check_solver(&cfg, &u);
                for (l, c) in a.counts.iter().enumerate() {
                    let s = &cfg.layers[l];
                    if s.num_heads == s.num_kv_heads && u.layers().contains(&l) {
                        assert_eq!(c.gqa, Some(GqaMode::WholeGroup), "MHA is whole-group");
                        assert_eq!(c.heads, c.kv_heads);
                    }
                }
            }
        }
    }
    // Fewer than 7 layers: every layer is pruned.
    let a = solve_uniform(&odd_mha(), &UniformConfig::llm_pruner(0.3, 5, GqaMode::PerGroup)).unwrap();
    assert_eq!(a.selected, vec![0, 1, 2, 3, 4]);
}

#[test]
fn uniform_errors() {
    let cfg = smollm2();
    let base = UniformConfig::llm_pruner(0.2, 30, GqaMode::PerGroup);
    for (first, end) in [(5, 5), (6, 5), (0, 31)] {
        let u = UniformConfig { first, end, ..base.clone() };
        let err = solve_uniform(&cfg, &u).unwrap_err().to_string();
        assert!(err.contains("must be non-empty and lie in 0..30"), "{err}");
        assert!(allocate_uniform(&cfg, &u, 0.1).is_err());
    }
    for target in [0.0, 1.0, f64::NAN] {
        let u = UniformConfig { target, ..base.clone() };
        let err = solve_uniform(&cfg, &u).unwrap_err().to_string();
        assert!(err.contains("strictly between 0 and 1"), "{err}");
    }
    let u = UniformConfig { target: 0.8, ..base.clone() };
    let err = solve_uniform(&cfg, &u).unwrap_err().to_string();
    assert!(
        err.contains("target 0.8 is unreachable: at most 0.") && err.contains("uniform pruning of layers 4..28"),
        "{err}"
    );
    assert!(allocate_uniform(&cfg, &base, -0.1).is_err());
    assert!(allocate_uniform(&cfg, &base, f64::NAN).is_err());
}
