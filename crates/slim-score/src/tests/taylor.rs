//! The Taylor scorer against a direct computation of LLM-Pruner's grouped sums, and its
//! selections in both GQA modes against "prune the lowest".

use super::*;
use slim_artifact::schema::TaylorLayer;

fn taylor_for(h: usize, n_kv: usize, m: usize, seed: u64) -> TaylorLayer {
    let mut rng = Rng(seed);
    let mut v = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.unit()).collect() };
    TaylorLayer {
        layer: 0,
        num_heads: h,
        num_kv_heads: n_kv,
        intermediate: m,
        q: v(h),
        k: v(n_kv),
        v: v(n_kv),
        o: v(h),
        gate: v(m),
        up: v(m),
        down: v(m),
    }
}

/// Indices of the `k` smallest values (ties: lower index first).
fn lowest(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]).then(a.cmp(&b)));
    let mut out = idx[..k].to_vec();
    out.sort_unstable();
    out
}

#[test]
fn taylor_head_units_sum_their_weights() {
    let case = attn_case(20, 6, 2, 5, 3, 41);
    let t = taylor_for(6, 2, 9, 7);
    let inputs = HeadInputs { taylor: Some(&t), ..case.inputs() };
    // Per-group: one query head removes its q rows and o columns only.
    let units = build_units(&case.kv_head_of, 2, GqaMode::PerGroup);
    let got = Taylor.unit_scores(&inputs, &units).unwrap();
    for hq in 0..6 {
        assert!((got[hq] - (t.q[hq] + t.o[hq])).abs() < 1e-12, "head {hq}");
    }
    // Whole-group: a KV group also removes its k and v rows.
    let units = build_units(&case.kv_head_of, 2, GqaMode::WholeGroup);
    let got = Taylor.unit_scores(&inputs, &units).unwrap();
    for k in 0..2 {
        let want: f64 = (0..6).filter(|&q| q / 3 == k).map(|q| t.q[q] + t.o[q]).sum::<f64>() + t.k[k] + t.v[k];
        assert!((got[k] - want).abs() < 1e-12, "group {k}: {} vs {want}", got[k]);
    }
    // Selection prunes the lowest: per group, the lowest head of each group.
    let sel = select_heads(ScorerKind::Taylor, &inputs, HeadPrune::PerGroup { heads_per_group: 1 }).unwrap();
    for k in 0..2 {
        let members: Vec<usize> = (3 * k..3 * k + 3).collect();
        let s: Vec<f64> = members.iter().map(|&q| t.q[q] + t.o[q]).collect();
        let low = members[lowest(&s, 1)[0]];
        assert!(!sel.kept.contains(&low) && sel.kept.iter().filter(|&&q| q / 3 == k).count() == 2, "group {k}");
    }
}

#[test]
fn taylor_channels_sum_gate_up_and_down() {
    let mc = mlp_case(16, 5, 11, 3);
    let t = taylor_for(2, 1, 11, 9);
    let inputs = ChannelInputs { taylor: Some(&t), ..mc.inputs() };
    let want: Vec<f64> = (0..11).map(|j| t.gate[j] + t.up[j] + t.down[j]).collect();
    let got = Taylor.channel_scores(&inputs).unwrap();
    for j in 0..11 {
        assert!((got[j] - want[j]).abs() < 1e-12, "channel {j}");
    }
    let sel = select_channels(ScorerKind::Taylor, &inputs, 4, KeepLowest::None).unwrap();
    let pruned: Vec<usize> = (0..11).filter(|j| !sel.kept.contains(j)).collect();
    assert_eq!(pruned, lowest(&want, 4));
}

#[test]
fn taylor_without_gradients_or_with_wrong_shapes_is_an_error() {
    let case = attn_case(10, 4, 2, 5, 3, 1);
    let err = select_heads(ScorerKind::Taylor, &case.inputs(), HeadPrune::PerGroup { heads_per_group: 1 }).unwrap_err();
    assert!(err.to_string().contains("Taylor capture"), "{err}");
    let t = taylor_for(6, 2, 9, 7);
    let inputs = HeadInputs { taylor: Some(&t), ..case.inputs() };
    let err = select_heads(ScorerKind::Taylor, &inputs, HeadPrune::PerGroup { heads_per_group: 1 }).unwrap_err();
    assert!(err.to_string().contains("6 query / 2 KV heads"), "{err}");
    let mc = mlp_case(16, 5, 11, 3);
    let inputs = ChannelInputs { taylor: Some(&t), ..mc.inputs() };
    assert!(select_channels(ScorerKind::Taylor, &inputs, 2, KeepLowest::None)
        .unwrap_err()
        .to_string()
        .contains("9 channels"));
}
