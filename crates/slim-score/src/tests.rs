//! Unit tests: every statistic-based formula is checked against a direct computation on raw
//! random activations, and the greedy search against a brute-force reimplementation of the
//! same loop on those activations.

#![allow(clippy::needless_range_loop)] // Index loops mirror the formulas.

mod taylor;
mod variants;

use super::*;
use slim_artifact::schema::{AttnStats, MlpStats};

/// Seeded generator with `unit()` (0, 1) and `normal()` draws.
use slim_checkpoint::synthetic::SplitMix as Rng;

/// Column-major-free helper: an `n × c` matrix as rows.
type Rows = Vec<Vec<f64>>;

fn col(a: &Rows, k: usize) -> Vec<f64> {
    a.iter().map(|r| r[k]).collect()
}

fn pearson_abs(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / n;
    let va = a.iter().map(|x| (x - ma).powi(2)).sum::<f64>() / n;
    let vb = b.iter().map(|y| (y - mb).powi(2)).sum::<f64>() / n;
    (cov / (va * vb).sqrt()).abs()
}

fn sum_rows(parts: &[&Rows]) -> Rows {
    let mut out = parts[0].clone();
    for p in &parts[1..] {
        for (o, r) in out.iter_mut().zip(p.iter()) {
            for (x, y) in o.iter_mut().zip(r) {
                *x += y;
            }
        }
    }
    out
}

/// `Σ_k |ρ_k(a, b)|`.
fn sum_abs_corr(a: &Rows, b: &Rows) -> f64 {
    (0..a[0].len()).map(|k| pearson_abs(&col(a, k), &col(b, k))).sum()
}

struct AttnCase {
    /// Per head `Z_h`, `n × d_h`: the o_proj input channels `h·d_h..(h+1)·d_h`.
    z: Vec<Rows>,
    /// Per head `Y_h`, `n × d`.
    y: Vec<Rows>,
    stats: AttnStats,
    o_proj: HostTensor,
    kv_head_of: Vec<usize>,
    n_kv: usize,
}

fn attn_case(n: usize, h: usize, n_kv: usize, d: usize, dh: usize, seed: u64) -> AttnCase {
    let mut rng = Rng(seed);
    let w: Vec<f32> = (0..d * h * dh).map(|_| rng.normal() as f32).collect();
    let o_proj = HostTensor::new(vec![d, h * dh], w).unwrap();
    // A shared component correlates the heads, so that the greedy search has work to do.
    let shared: Rows = (0..n).map(|_| (0..dh).map(|_| rng.normal()).collect()).collect();
    let mut z: Vec<Rows> = Vec::new();
    for hh in 0..h {
        let scale = 0.3 + 0.4 * hh as f64;
        let mix = rng.unit();
        z.push(
            (0..n)
                .map(|t| (0..dh).map(|c| scale * rng.normal() + mix * shared[t][c] + 0.2 * c as f64).collect())
                .collect(),
        );
    }
    let y: Vec<Rows> = (0..h)
        .map(|hh| {
            (0..n)
                .map(|t| {
                    (0..d)
                        .map(|k| (0..dh).map(|c| z[hh][t][c] * o_proj.data[k * h * dh + hh * dh + c] as f64).sum())
                        .collect()
                })
                .collect()
        })
        .collect();
    let nf = n as f64;
    let mut head_mean = vec![0.0; h * d];
    for hh in 0..h {
        for k in 0..d {
            head_mean[hh * d + k] = col(&y[hh], k).iter().sum::<f64>() / nf;
        }
    }
    let mut head_cov = vec![0.0; d * h * h];
    for k in 0..d {
        for a in 0..h {
            for b in 0..h {
                let (ma, mb) = (head_mean[a * d + k], head_mean[b * d + k]);
                head_cov[k * h * h + a * h + b] =
                    (0..n).map(|t| (y[a][t][k] - ma) * (y[b][t][k] - mb)).sum::<f64>() / nf;
            }
        }
    }
    let mut z_mean = vec![0.0; h * dh];
    let mut z_sq_mean = vec![0.0; h * dh];
    for hh in 0..h {
        for c in 0..dh {
            z_mean[hh * dh + c] = (0..n).map(|t| z[hh][t][c]).sum::<f64>() / nf;
            z_sq_mean[hh * dh + c] = (0..n).map(|t| z[hh][t][c].powi(2)).sum::<f64>() / nf;
        }
    }
    let hd = h * dh;
    let zc = |i: usize, t: usize| z[i / dh][t][i % dh] - z_mean[i];
    let z_cov: Vec<f64> =
        (0..hd * hd).map(|ij| (0..n).map(|t| zc(ij / hd, t) * zc(ij % hd, t)).sum::<f64>() / nf).collect();
    let stats = AttnStats {
        layer: 0,
        n_tokens: n,
        num_heads: h,
        head_dim: dh,
        hidden: d,
        head_mean,
        head_cov,
        z_mean,
        z_sq_mean,
        z_cov,
    };
    let g = h / n_kv;
    AttnCase { z, y, stats, o_proj, kv_head_of: (0..h).map(|q| q / g).collect(), n_kv }
}

impl AttnCase {
    fn inputs(&self) -> HeadInputs<'_> {
        HeadInputs {
            stats: &self.stats,
            o_proj: &self.o_proj,
            kv_head_of: &self.kv_head_of,
            num_kv_heads: self.n_kv,
            taylor: None,
        }
    }
    fn dense(&self) -> Rows {
        sum_rows(&self.y.iter().collect::<Vec<_>>())
    }
    /// Raw contribution of each unit of a mode, and its swap class.
    fn raw_units(&self, mode: GqaMode) -> (Vec<Rows>, Vec<usize>, Vec<Vec<usize>>) {
        let units = build_units(&self.kv_head_of, self.n_kv, mode);
        let ys = units.members.iter().map(|m| sum_rows(&m.iter().map(|&hh| &self.y[hh]).collect::<Vec<_>>())).collect();
        (ys, units.class, units.members)
    }
}

/// The reference loop of spec §3.5–§3.6, on raw activations: returns (kept units sorted, swaps made).
fn brute_select(ys: &[Rows], class: &[usize], dense: &Rows, prune: HeadPrune) -> (Vec<usize>, usize) {
    let u = ys.len();
    let f = |set: &[usize]| -> f64 {
        let parts: Vec<&Rows> = set.iter().map(|&a| &ys[a]).collect();
        sum_abs_corr(&sum_rows(&parts), dense)
    };
    let r: Vec<f64> = (0..u).map(|a| f(&(0..u).filter(|&b| b != a).collect::<Vec<_>>())).collect();
    let mut order: Vec<usize> = (0..u).collect();
    order.sort_by(|&a, &b| r[b].total_cmp(&r[a]));
    let mut pruned_flag = vec![false; u];
    match prune {
        HeadPrune::WholeGroup { groups } => order.iter().take(groups).for_each(|&a| pruned_flag[a] = true),
        HeadPrune::PerGroup { heads_per_group } => {
            let mut taken = std::collections::HashMap::new();
            for &a in &order {
                let t = taken.entry(class[a]).or_insert(0);
                if *t < heads_per_group {
                    *t += 1;
                    pruned_flag[a] = true;
                }
            }
        }
    }
    let mut kept: Vec<usize> = order.iter().copied().filter(|&a| !pruned_flag[a]).collect();
    let pruned: Vec<usize> = order.iter().copied().filter(|&a| pruned_flag[a]).collect();
    let mut best = f(&kept);
    let mut best_set = kept.clone();
    let mut swaps = 0;
    for &p in &pruned {
        for j in 0..kept.len() {
            if class[kept[j]] != class[p] {
                continue;
            }
            let mut cand = kept.clone();
            cand[j] = p;
            let v = f(&cand);
            if v > best {
                best = v;
                best_set = cand;
            }
        }
        if best_set != kept {
            swaps += 1;
        }
        kept = best_set.clone();
    }
    kept.sort_unstable();
    (kept, swaps)
}

/// Tolerance of channel scores from statistics against the same scores on raw activations: the
/// capture stores the MLP covariance as the f32 it computes (relative rounding up to 6e-8 an
/// entry), so scores match the raw f64 ones to about 1e-8, not to f64 rounding.
pub(crate) const MLP_TOL: f64 = 1e-6;

fn assert_rel(a: f64, b: f64, tol: f64, what: &str) {
    let scale = a.abs().max(b.abs()).max(1e-300);
    assert!((a - b).abs() / scale <= tol, "{what}: {a} vs {b} (rel {:e})", (a - b).abs() / scale);
}

#[test]
fn std_round_ties_even_matches_python() {
    let cases = [
        (0.5, 0.0),
        (1.5, 2.0),
        (2.5, 2.0),
        (3.5, 4.0),
        (2.4999, 2.0),
        (2.5000001, 3.0),
        (0.13, 0.0),
        (15.36, 15.0),
        (7.0, 7.0),
    ];
    for (x, want) in cases {
        assert_eq!(f64::round_ties_even(x), want, "round({x})");
    }
    // Python: round(0.01*250) == 2, round(0.01*350) == 4, round(0.01*11008) == 110.
    assert_eq!(KeepLowest::paper().count(250), 2);
    assert_eq!(KeepLowest::paper().count(350), 4);
    assert_eq!(KeepLowest::paper().count(11008), 110);
    assert_eq!(KeepLowest::paper().count(1536), 15);
    assert_eq!(KeepLowest::None.count(1536), 0);
}

#[test]
fn scorer_kind_serde_names() {
    assert_eq!(serde_json::to_string(&ScorerKind::SlimLlm).unwrap(), "\"slimllm\"");
    assert_eq!(serde_json::to_string(&ScorerKind::Magnitude).unwrap(), "\"magnitude\"");
    assert_eq!(serde_json::from_str::<ScorerKind>("\"slimllm\"").unwrap(), ScorerKind::SlimLlm);
}

#[test]
fn head_scores_match_raw_pearson() {
    for (h, n_kv) in [(6, 2), (6, 3), (5, 5), (5, 1)] {
        let case = attn_case(40, h, n_kv, 7, 4, 11 + h as u64 + n_kv as u64);
        let dense = case.dense();
        for mode in [GqaMode::PerGroup, GqaMode::WholeGroup] {
            let units = build_units(&case.kv_head_of, n_kv, mode);
            let scores = SlimLlm.unit_scores(&case.inputs(), &units).unwrap();
            let (ys, _, _) = case.raw_units(mode);
            for a in 0..ys.len() {
                let rest: Vec<&Rows> = (0..ys.len()).filter(|&b| b != a).map(|b| &ys[b]).collect();
                if rest.is_empty() {
                    assert_eq!(scores[a], 0.0, "removing the only unit leaves a constant output");
                    continue;
                }
                let direct = sum_abs_corr(&sum_rows(&rest), &dense);
                assert_rel(scores[a], direct, 1e-9, &format!("R of unit {a}, H={h}, n_kv={n_kv}, {mode:?}"));
            }
            // F(S) on a few subsets.
            for set in [vec![0], vec![0, ys.len() - 1], (1..ys.len()).collect::<Vec<_>>()] {
                if set.is_empty() {
                    continue;
                }
                let f = attn_unit_objective(&case.stats, &units, &set);
                let parts: Vec<&Rows> = set.iter().map(|&a| &ys[a]).collect();
                assert_rel(
                    f,
                    sum_abs_corr(&sum_rows(&parts), &dense),
                    1e-9,
                    &format!("F({set:?}), H={h}, n_kv={n_kv}, {mode:?}"),
                );
            }
        }
    }
}

#[test]
fn greedy_matches_brute_force_on_raw_activations() {
    let mut total_swaps = 0;
    let mut checked = 0;
    for seed in 0..6u64 {
        for (h, n_kv) in [(6, 2), (6, 3), (5, 5), (5, 1), (8, 2)] {
            let case = attn_case(40, h, n_kv, 7, 4, 100 * seed + h as u64 + n_kv as u64);
            let dense = case.dense();
            let g = h / n_kv;
            let mut prunes = Vec::new();
            for p in 1..g {
                prunes.push(HeadPrune::PerGroup { heads_per_group: p });
            }
            for q in 1..n_kv {
                prunes.push(HeadPrune::WholeGroup { groups: q });
            }
            for prune in prunes {
                let sel = select_heads(ScorerKind::SlimLlm, &case.inputs(), prune).unwrap();
                let (ys, class, members) = case.raw_units(prune.mode());
                let (kept_units, swaps) = brute_select(&ys, &class, &dense, prune);
                total_swaps += swaps;
                checked += 1;
                let mut want: Vec<usize> = kept_units.iter().flat_map(|&u| members[u].clone()).collect();
                want.sort_unstable();
                assert_eq!(sel.kept, want, "H={h}, n_kv={n_kv}, seed {seed}, {prune:?}");
                match prune {
                    HeadPrune::PerGroup { heads_per_group } => {
                        assert_eq!(sel.kv_kept, (0..n_kv).collect::<Vec<_>>());
                        for k in 0..n_kv {
                            let in_group = sel.kept.iter().filter(|&&q| case.kv_head_of[q] == k).count();
                            assert_eq!(in_group, g - heads_per_group, "group {k} keeps g − p heads");
                        }
                    }
                    HeadPrune::WholeGroup { groups } => {
                        assert_eq!(sel.kv_kept, kept_units);
                        assert_eq!(sel.kv_kept.len(), n_kv - groups);
                        for k in 0..n_kv {
                            let in_group = sel.kept.iter().filter(|&&q| case.kv_head_of[q] == k).count();
                            assert!(in_group == 0 || in_group == g, "group {k} kept partly");
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 50);
    assert!(total_swaps > 0, "the greedy search never swapped: the test data exercise nothing");
}

#[test]
fn mha_and_mqa_reduce_to_the_paper() {
    // The paper's algorithm: units are single query heads, any swap allowed, P = round(r·H).
    for seed in 0..4u64 {
        let h = 5;
        for (n_kv, prune) in [(5, HeadPrune::WholeGroup { groups: 2 }), (1, HeadPrune::PerGroup { heads_per_group: 2 })]
        {
            let case = attn_case(40, h, n_kv, 7, 4, 7 + seed);
            let sel = select_heads(ScorerKind::SlimLlm, &case.inputs(), prune).unwrap();
            let (kept, _) = brute_select(&case.y, &[0; 5], &case.dense(), HeadPrune::WholeGroup { groups: 2 });
            assert_eq!(sel.kept, kept, "n_kv={n_kv}");
            let kv_want: Vec<usize> = if n_kv == h { kept.clone() } else { vec![0] };
            assert_eq!(sel.kv_kept, kv_want);
        }
    }
    // Per-group pruning of an MHA layer can only prune nothing.
    let case = attn_case(40, 5, 5, 7, 4, 3);
    assert_eq!(
        select_heads(ScorerKind::SlimLlm, &case.inputs(), HeadPrune::PerGroup { heads_per_group: 0 }).unwrap().kept,
        (0..5).collect::<Vec<_>>()
    );
    let err =
        select_heads(ScorerKind::SlimLlm, &case.inputs(), HeadPrune::PerGroup { heads_per_group: 1 }).unwrap_err();
    assert!(err.to_string().contains("use whole-group pruning"), "{err}");
}

#[test]
fn constant_output_dimension_contributes_zero() {
    let mut case = attn_case(40, 4, 2, 5, 3, 5);
    let (h, d) = (4, 5);
    // Make dimension 2 constant: every covariance at k = 2 is zero.
    for v in &mut case.stats.head_cov[2 * h * h..3 * h * h] {
        *v = 0.0;
    }
    let units = build_units(&case.kv_head_of, 2, GqaMode::PerGroup);
    let scores = SlimLlm.unit_scores(&case.inputs(), &units).unwrap();
    assert!(scores.iter().all(|s| s.is_finite()));
    for (a, &s) in scores.iter().enumerate() {
        assert!(s <= (d - 1) as f64 + 1e-12, "unit {a}: {s} counts the constant dimension");
    }
}

#[test]
fn magnitude_heads_and_channels() {
    let case = attn_case(20, 6, 3, 7, 4, 9);
    let (d, dh) = (7, 4);
    let norm = |hh: usize| -> f64 {
        (0..d)
            .flat_map(|i| (0..dh).map(move |c| (i, c)))
            .map(|(i, c)| (case.o_proj.data[i * 24 + hh * dh + c] as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let sel = select_heads(ScorerKind::Magnitude, &case.inputs(), HeadPrune::PerGroup { heads_per_group: 1 }).unwrap();
    for hh in 0..6 {
        assert_rel(sel.scores[hh], norm(hh), 1e-12, "head norm");
    }
    for k in 0..3 {
        let (a, b) = (2 * k, 2 * k + 1);
        let drop = if norm(a) <= norm(b) { a } else { b };
        assert!(!sel.kept.contains(&drop));
    }
    let sel = select_heads(ScorerKind::Magnitude, &case.inputs(), HeadPrune::WholeGroup { groups: 1 }).unwrap();
    let gs: Vec<f64> = (0..3).map(|k| norm(2 * k) + norm(2 * k + 1)).collect();
    for k in 0..3 {
        assert_rel(sel.scores[k], gs[k], 1e-12, "group norm");
    }
    let weakest = (0..3).min_by(|&a, &b| gs[a].total_cmp(&gs[b])).unwrap();
    assert!(!sel.kv_kept.contains(&weakest));

    let mc = mlp_case(40, 7, 13, 4);
    let sel = select_channels(ScorerKind::Magnitude, &mc.inputs(), 3, KeepLowest::None).unwrap();
    for j in 0..13 {
        let direct = (0..7).map(|i| (mc.down.data[i * 13 + j] as f64).powi(2)).sum::<f64>().sqrt();
        assert_rel(sel.scores[j], direct, 1e-12, "down column norm");
    }
    let mut order: Vec<usize> = (0..13).collect();
    order.sort_by(|&a, &b| sel.scores[a].total_cmp(&sel.scores[b]));
    let mut want: Vec<usize> = order[3..].to_vec();
    want.sort_unstable();
    assert_eq!(sel.kept, want);
}

struct MlpCase {
    u: Rows,
    g: Rows,
    gate: HostTensor,
    up: HostTensor,
    down: HostTensor,
    stats: MlpStats,
}

impl MlpCase {
    fn inputs(&self) -> ChannelInputs<'_> {
        ChannelInputs { stats: &self.stats, gate: &self.gate, up: &self.up, down: &self.down, taylor: None }
    }
}

fn mlp_case(n: usize, d: usize, m: usize, seed: u64) -> MlpCase {
    let mut rng = Rng(seed);
    let mut tensor = |r: usize, c: usize, s: f64| {
        HostTensor::new(vec![r, c], (0..r * c).map(|_| (s * rng.normal()) as f32).collect()).unwrap()
    };
    let gate = tensor(m, d, 0.5);
    let up = tensor(m, d, 0.5);
    let down = tensor(d, m, 0.5);
    let u: Rows = (0..n).map(|_| (0..d).map(|k| (1.0 + 0.3 * k as f64) * rng.normal() + 0.1).collect()).collect();
    let dot = |w: &HostTensor, j: usize, x: &[f64]| -> f64 { (0..d).map(|k| w.data[j * d + k] as f64 * x[k]).sum() };
    let g: Rows = u
        .iter()
        .map(|x| {
            (0..m)
                .map(|j| {
                    let a = dot(&gate, j, x);
                    a / (1.0 + (-a).exp()) * dot(&up, j, x)
                })
                .collect()
        })
        .collect();
    let nf = n as f64;
    let u_sq_mean = (0..d).map(|k| u.iter().map(|r| r[k] * r[k]).sum::<f64>() / nf).collect();
    let g_mean: Vec<f64> = (0..m).map(|j| g.iter().map(|r| r[j]).sum::<f64>() / nf).collect();
    let mut g_cov = vec![0.0; m * m];
    for a in 0..m {
        for b in 0..m {
            g_cov[a * m + b] = g.iter().map(|r| (r[a] - g_mean[a]) * (r[b] - g_mean[b])).sum::<f64>() / nf;
        }
    }
    // Rounded to f32, as the capture stores it.
    let g_cov = g_cov.iter().map(|&x| x as f32).collect();
    let stats = MlpStats { layer: 0, n_tokens: n, hidden: d, intermediate: m, u_sq_mean, g_mean, g_cov };
    MlpCase { u, g, gate, up, down, stats }
}

/// Cyclic Jacobi eigendecomposition of a small symmetric matrix: (eigenvalues, eigenvectors as columns).
fn jacobi_eigh(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .filter(|(i, j)| i != j)
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

#[test]
fn channel_scores_match_raw_computation() {
    for (n, d, m, seed) in [(40, 7, 13, 1u64), (40, 5, 11, 2), (25, 7, 13, 3)] {
        let mc = mlp_case(n, d, m, seed);
        let scores = SlimLlm.channel_scores(&mc.inputs()).unwrap();
        // Direct: Y = G W_dᵀ, centered scatter, Jacobi eigenvectors.
        let y: Rows =
            mc.g.iter()
                .map(|gr| (0..d).map(|k| (0..m).map(|j| gr[j] * mc.down.data[k * m + j] as f64).sum()).collect())
                .collect();
        let ym: Vec<f64> = (0..d).map(|k| col(&y, k).iter().sum::<f64>() / n as f64).collect();
        let c: Vec<Vec<f64>> =
            (0..d).map(|a| (0..d).map(|b| y.iter().map(|r| (r[a] - ym[a]) * (r[b] - ym[b])).sum()).collect()).collect();
        let (lam, v) = jacobi_eigh(c);
        let mean_lam = lam.iter().map(|l| l.abs()).sum::<f64>() / d as f64;
        let w: Vec<f64> = lam.iter().map(|l| 1.0 / (1.0 + (-l.abs() / mean_lam).exp())).collect();
        let xn: Vec<f64> = (0..d).map(|k| col(&mc.u, k).iter().map(|x| x * x).sum::<f64>().sqrt()).collect();
        for j in 0..m {
            let gn = col(&mc.g, j).iter().map(|x| x * x).sum::<f64>().sqrt();
            let ig = (0..d).map(|k| (mc.gate.data[j * d + k] as f64 * xn[k]).powi(2)).sum::<f64>().sqrt();
            let iu = (0..d).map(|k| (mc.up.data[j * d + k] as f64 * xn[k]).powi(2)).sum::<f64>().sqrt();
            let id = (0..d)
                .map(|e| {
                    let p: f64 = (0..d).map(|k| mc.down.data[k * m + j] as f64 * v[k][e]).sum();
                    (p.abs() * w[e]).powi(2)
                })
                .sum::<f64>()
                .sqrt();
            assert_rel(scores[j], ig + iu + gn * id, MLP_TOL, &format!("channel {j}, case seed {seed}"));
        }
    }
}

/// A scorer with fixed channel scores, for the selection rule alone.
struct Fixed(Vec<f64>);

impl Scorer for Fixed {
    fn unit_scores(&self, _: &HeadInputs<'_>, _: &Units) -> Result<Vec<f64>> {
        unreachable!("Fixed only scores channels")
    }
    fn prune_highest(&self) -> bool {
        false
    }
    fn channel_scores(&self, _: &ChannelInputs<'_>) -> Result<Vec<f64>> {
        Ok(self.0.clone())
    }
}

#[test]
fn keep_lowest_rule() {
    let mc = mlp_case(10, 3, 13, 8);
    // Scores: channel j has score (j·7) mod 13, so π = argsort is the inverse permutation.
    let s: Vec<f64> = (0..13).map(|j| ((j * 7) % 13) as f64).collect();
    let mut pi: Vec<usize> = (0..13).collect();
    pi.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
    let check = |keep: KeepLowest, n_prune: usize, pm: usize| {
        let sel = select_channels_with(&Fixed(s.clone()), &mc.inputs(), n_prune, keep).unwrap();
        let end = (pm + n_prune).min(13);
        let mut want: Vec<usize> = pi[..pm].iter().chain(&pi[end..]).copied().collect();
        want.sort_unstable();
        assert_eq!(sel.kept, want, "{keep:?}, prune {n_prune}");
    };
    check(KeepLowest::None, 4, 0);
    check(KeepLowest::Fraction(0.1), 4, 1); // round(1.3) = 1
    check(KeepLowest::Fraction(0.25), 4, 3); // round(3.25) = 3
    check(KeepLowest::Fraction(0.5), 4, 6); // round(6.5) = 6 (half to even)
    check(KeepLowest::Fraction(0.5), 10, 6); // cut to m − P_m, as the reference slice
    check(KeepLowest::paper(), 4, 0); // round(0.13) = 0
    let err = select_channels_with(&Fixed(s.clone()), &mc.inputs(), 13, KeepLowest::None).unwrap_err();
    assert!(err.to_string().contains("at least one must remain"));
}

#[test]
fn shape_mismatch_is_an_error() {
    let case = attn_case(10, 4, 2, 5, 3, 1);
    let bad = HostTensor::new(vec![5, 11], vec![0.0; 55]).unwrap();
    let inputs = HeadInputs { o_proj: &bad, ..case.inputs() };
    let err = select_heads(ScorerKind::SlimLlm, &inputs, HeadPrune::PerGroup { heads_per_group: 1 }).unwrap_err();
    assert!(err.to_string().contains("o_proj has shape"), "{err}");
    let kv = [0, 1, 0, 1];
    let inputs = HeadInputs { kv_head_of: &kv, ..case.inputs() };
    assert!(select_heads(ScorerKind::SlimLlm, &inputs, HeadPrune::PerGroup { heads_per_group: 1 }).is_err());
}

#[test]
fn channel_selection_at_smollm2_size_keeps_the_requested_count() {
    // d = 576, m = 1536: two products and one 576×576 eigendecomposition.
    let (d, m) = (576, 1536);
    let mut rng = Rng(21);
    let mut tensor = |r: usize, c: usize| {
        HostTensor::new(vec![r, c], (0..r * c).map(|_| (0.05 * rng.normal()) as f32).collect()).unwrap()
    };
    let (gate, up, down) = (tensor(m, d), tensor(m, d), tensor(d, m));
    let g_cov: Vec<f32> = (0..m * m).map(|i| (-((i / m) as f32 - (i % m) as f32).abs() / 8.0).exp()).collect();
    let stats = MlpStats {
        layer: 0,
        n_tokens: 4096,
        hidden: d,
        intermediate: m,
        u_sq_mean: vec![1.0; d],
        g_mean: vec![0.1; m],
        g_cov,
    };
    let inputs = ChannelInputs { stats: &stats, gate: &gate, up: &up, down: &down, taylor: None };
    let sel = select_channels(ScorerKind::SlimLlm, &inputs, 300, KeepLowest::paper()).unwrap();
    assert_eq!(sel.kept.len(), m - 300);
    assert!(sel.kept.windows(2).all(|w| w[0] < w[1]));
    assert!(sel.scores.iter().all(|x| x.is_finite() && *x > 0.0));
}
