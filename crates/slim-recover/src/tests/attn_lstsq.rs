//! The least-squares refit of o_proj against direct f64 computations on raw attention
//! outputs `Z`: the ridge normal equations of the raw tokens, an exactly linear target, and
//! every o_proj refit's error against the raw mean squared error and against slicing.

use super::ridge::{assert_f32_close, direct_ridge, raw_refit_mse, Rows};
use super::*;

/// `AttnStats` of raw `z` (`n × H·d_h`) and `wo` (`[d, H·d_h]`), every moment in f64.
fn stats_of(z: &Rows, wo: &HostTensor, h: usize, dh: usize) -> AttnStats {
    let (n, hd, d) = (z.len(), h * dh, wo.shape[0]);
    let nf = n as f64;
    let w = |k: usize, j: usize| wo.data[k * hd + j] as f64;
    // y[a][t][k] = Σ_c Z[t, a·d_h + c] · W_O[k, a·d_h + c]
    let y: Vec<Rows> = (0..h)
        .map(|a| {
            z.iter().map(|r| (0..d).map(|k| (a * dh..(a + 1) * dh).map(|j| r[j] * w(k, j)).sum()).collect()).collect()
        })
        .collect();
    let mut head_mean = vec![0.0; h * d];
    for a in 0..h {
        for k in 0..d {
            head_mean[a * d + k] = y[a].iter().map(|r| r[k]).sum::<f64>() / nf;
        }
    }
    let mut head_cov = vec![0.0; d * h * h];
    for k in 0..d {
        for a in 0..h {
            for b in 0..h {
                head_cov[(k * h + a) * h + b] = (0..n)
                    .map(|t| (y[a][t][k] - head_mean[a * d + k]) * (y[b][t][k] - head_mean[b * d + k]))
                    .sum::<f64>()
                    / nf;
            }
        }
    }
    let z_mean: Vec<f64> = (0..hd).map(|j| z.iter().map(|r| r[j]).sum::<f64>() / nf).collect();
    let z_sq_mean = (0..hd).map(|j| z.iter().map(|r| r[j] * r[j]).sum::<f64>() / nf).collect();
    let mut z_cov = vec![0.0; hd * hd];
    for i in 0..hd {
        for j in 0..hd {
            z_cov[i * hd + j] = z.iter().map(|r| (r[i] - z_mean[i]) * (r[j] - z_mean[j])).sum::<f64>() / nf;
        }
    }
    AttnStats {
        layer: 4,
        n_tokens: n,
        num_heads: h,
        head_dim: dh,
        hidden: d,
        head_mean,
        head_cov,
        z_mean,
        z_sq_mean,
        z_cov,
    }
}

/// Correlated raw `Z` (three latent factors plus noise, channel offsets), a random o_proj
/// and their statistics.
fn raw_case(n: usize, h: usize, dh: usize, d: usize, seed: u64) -> (Rows, HostTensor, AttnStats) {
    let hd = h * dh;
    let mut rng = Rng(seed);
    let mix: Rows = (0..hd).map(|_| (0..3).map(|_| rng.normal()).collect()).collect();
    let z: Rows = (0..n)
        .map(|_| {
            let lat: Vec<f64> = (0..3).map(|_| rng.normal()).collect();
            (0..hd)
                .map(|j| 0.5 * rng.normal() + (0..3).map(|l| mix[j][l] * lat[l]).sum::<f64>() + 0.1 * j as f64 - 0.4)
                .collect()
        })
        .collect();
    let wo = HostTensor::new(vec![d, hd], (0..d * hd).map(|_| rng.normal() as f32).collect()).unwrap();
    let stats = stats_of(&z, &wo, h, dh);
    (z, wo, stats)
}

fn columns(heads: &[usize], dh: usize) -> Vec<usize> {
    heads.iter().flat_map(|&a| a * dh..(a + 1) * dh).collect()
}

#[test]
fn attention_lstsq_matches_normal_equations_on_raw_tokens() {
    let cases: [(usize, usize, &[usize], u64); 3] = [(4, 3, &[0, 2], 1), (5, 2, &[4, 1, 3], 2), (3, 4, &[0, 1, 2], 3)];
    let d = 6;
    for (h, dh, kept, seed) in cases {
        let (z, wo, stats) = raw_case(60, h, dh, d, seed);
        let cols = columns(kept, dh);
        for (eps, prior) in
            [(0.0, RidgePrior::Zero), (1e-2, RidgePrior::Zero), (1e-2, RidgePrior::Kept), (0.5, RidgePrior::Kept)]
        {
            let cfg = LstsqConfig { ridge_rel: eps, prior };
            let fit = attention_lstsq(&stats, &wo, kept, &cfg).unwrap();
            assert_eq!(fit.weight.shape, [d, cols.len()]);
            let (ws, bs) = direct_ridge(&z, &wo, &cols, eps, prior);
            for k in 0..d {
                let scale = ws[k].iter().fold(0.0f64, |s, v| s.max(v.abs()));
                for i in 0..cols.len() {
                    assert_f32_close(
                        fit.weight.data[k * cols.len() + i],
                        ws[k][i],
                        scale,
                        &format!("W'[{k},{i}], ε={eps}, {prior:?}, heads {kept:?}"),
                    );
                }
                assert!(
                    (fit.bias[k] - bs[k]).abs() <= 1e-5 * (1.0 + bs[k].abs()),
                    "b[{k}]: {} vs {}",
                    fit.bias[k],
                    bs[k]
                );
            }
            let refit = Refit::Columns(fit);
            assert_rel(
                attention_refit_error(&stats, &wo, kept, &refit).unwrap(),
                raw_refit_mse(&z, &wo, &cols, &refit),
                1e-9,
                "o_proj lstsq error",
            );
            assert_eq!(refit_attention(RecoveryKind::Lstsq, &stats, &wo, kept, &cfg).unwrap(), refit);
        }
    }
}

#[test]
fn attention_lstsq_reproduces_an_exactly_linear_target() {
    // Heads 1 and 3 are an exact affine function of heads 2 and 0 (z_P = M z_K + c), so the
    // dense output is exactly W'z_K + b with W' = W[:,K] + W[:,P] M and b = W[:,P] c.
    let (n, h, dh, d) = (200, 4, 3, 6);
    let kept = [2, 0];
    let (kc, pc) = (columns(&kept, dh), columns(&[1, 3], dh));
    let mut rng = Rng(21);
    let (zk, _, _) = raw_case(n, 2, dh, d, 22);
    let m: Rows = (0..pc.len()).map(|_| (0..kc.len()).map(|_| rng.normal()).collect()).collect();
    let c: Vec<f64> = (0..pc.len()).map(|_| rng.normal()).collect();
    let z: Rows = zk
        .iter()
        .map(|xk| {
            let mut r = vec![0.0; h * dh];
            for (i, &j) in kc.iter().enumerate() {
                r[j] = xk[i];
            }
            for (p, &j) in pc.iter().enumerate() {
                r[j] = (0..kc.len()).map(|i| m[p][i] * xk[i]).sum::<f64>() + c[p];
            }
            r
        })
        .collect();
    let wo = HostTensor::new(vec![d, h * dh], (0..d * h * dh).map(|_| rng.normal() as f32).collect()).unwrap();
    let w = |k: usize, j: usize| wo.data[k * h * dh + j] as f64;
    let stats = stats_of(&z, &wo, h, dh);
    let none = attention_refit_error(&stats, &wo, &kept, &Refit::None).unwrap();
    assert!(none > 1e-2, "slicing must lose something: {none}");
    for prior in [RidgePrior::Zero, RidgePrior::Kept] {
        let cfg = LstsqConfig { ridge_rel: 1e-12, prior };
        let fit = attention_lstsq(&stats, &wo, &kept, &cfg).unwrap();
        for k in 0..d {
            let want: Vec<f64> = (0..kc.len())
                .map(|i| w(k, kc[i]) + (0..pc.len()).map(|p| w(k, pc[p]) * m[p][i]).sum::<f64>())
                .collect();
            let scale = want.iter().fold(0.0f64, |s, v| s.max(v.abs()));
            for (i, &v) in want.iter().enumerate() {
                let got = fit.weight.data[k * kc.len() + i];
                assert_f32_close(got, v, scale, &format!("W'[{k},{i}], {prior:?}"));
            }
            let b: f64 = (0..pc.len()).map(|p| w(k, pc[p]) * c[p]).sum();
            assert!((fit.bias[k] - b).abs() <= 1e-5 * (1.0 + b.abs()), "b[{k}]: {} vs {b}", fit.bias[k]);
        }
        let refit = Refit::Columns(fit);
        let e = attention_refit_error(&stats, &wo, &kept, &refit).unwrap();
        let raw = raw_refit_mse(&z, &wo, &kc, &refit);
        assert!(e <= 1e-9 * none && raw <= 1e-9 * none, "{prior:?}: error {e} (raw {raw}) against {none} unrecovered");
    }
}

#[test]
fn attention_lstsq_error_is_lowest_and_never_above_slicing() {
    let mut rng = Rng(31);
    let (h, dh, d) = (5, 2, 6);
    let mut checked = 0;
    for seed in 0..12u64 {
        let (z, wo, stats) = raw_case(40, h, dh, d, 300 + seed);
        let kept: Vec<usize> = (0..h).filter(|_| rng.unit() < 0.6).collect();
        if kept.is_empty() {
            continue;
        }
        let cols = columns(&kept, dh);
        let plain = LstsqConfig { ridge_rel: 0.0, prior: RidgePrior::Zero };
        let kinds = [RecoveryKind::None, RecoveryKind::Affine, RecoveryKind::FlapBias, RecoveryKind::Lstsq];
        let refits = kinds.map(|kind| refit_attention(kind, &stats, &wo, &kept, &plain).unwrap());
        let err: Vec<f64> = refits.iter().map(|r| attention_refit_error(&stats, &wo, &kept, r).unwrap()).collect();
        for (r, &e) in refits.iter().zip(&err) {
            assert_rel(e, raw_refit_mse(&z, &wo, &cols, r), 1e-9, &format!("{r:?}"));
            // The z_cov path agrees with the head_cov path of the affine recoveries.
            let affine = match r {
                Refit::None => identity_affine(d),
                Refit::Affine(a) => a.clone(),
                Refit::Columns(_) => continue,
            };
            let by_heads = attention_reconstruction_error(&stats, &kept, &affine).unwrap();
            assert_rel(e, by_heads, 1e-9, &format!("head_cov error of {r:?}"));
        }
        let [none, affine, flap, lstsq] = [err[0], err[1], err[2], err[3]];
        let slack = 1e-12 * none;
        assert!(
            lstsq <= affine + slack && affine <= flap + slack && flap <= none + slack,
            "lstsq {lstsq}, affine {affine}, flap {flap}, none {none}"
        );
        if kept.len() < h {
            assert!(lstsq < none, "the refit must improve on slicing: {lstsq} vs {none}");
        }
        for eps in [1e-2, 1.0, 1e3] {
            let cfg = LstsqConfig { ridge_rel: eps, prior: RidgePrior::Kept };
            let fit = Refit::Columns(attention_lstsq(&stats, &wo, &kept, &cfg).unwrap());
            let e = attention_refit_error(&stats, &wo, &kept, &fit).unwrap();
            assert!(e <= none + slack && e >= lstsq - slack, "ε={eps}: {e} vs none {none}, lstsq {lstsq}");
        }
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn attention_dispatch_and_errors() {
    let (_, wo, stats) = raw_case(30, 4, 2, 5, 41);
    let kept = [0, 3];
    let cfg = LstsqConfig::standard();
    let refit = |kind| refit_attention(kind, &stats, &wo, &kept, &cfg).unwrap();
    assert_eq!(refit(RecoveryKind::None), Refit::None);
    assert_eq!(refit(RecoveryKind::Affine), Refit::Affine(attention_affine(&stats, &kept).unwrap()));
    assert_eq!(refit(RecoveryKind::FlapBias), Refit::Affine(attention_flap_bias(&stats, &kept).unwrap()));
    assert_eq!(refit(RecoveryKind::Lstsq), Refit::Columns(attention_lstsq(&stats, &wo, &kept, &cfg).unwrap()));
    let err = recover_attention(RecoveryKind::Lstsq, &stats, &kept).unwrap_err();
    assert!(err.to_string().contains("call refit_attention"), "{err}");

    let msg = |r: Result<ColumnRefit>| format!("{:#}", r.unwrap_err());
    let bad_wo = HostTensor::new(vec![5, 6], vec![0.0; 30]).unwrap();
    let e = msg(attention_lstsq(&stats, &bad_wo, &kept, &cfg));
    assert!(e.contains("o_proj has shape") && e.contains("layer 4"), "{e}");
    let e = msg(attention_lstsq(&stats, &wo, &[4], &cfg));
    assert!(e.contains("out of range") && e.contains("layer 4"), "{e}");
    let e = msg(attention_lstsq(&stats, &wo, &[1, 1], &cfg));
    assert!(e.contains("twice"), "{e}");
    let mut short = stats.clone();
    short.z_cov.pop();
    let e = msg(attention_lstsq(&short, &wo, &kept, &cfg));
    assert!(e.contains("z_cov has 63 values, expected 64"), "{e}");
    let mut nan = stats.clone();
    nan.z_cov[9] = f64::NAN;
    let e = msg(attention_lstsq(&nan, &wo, &kept, &cfg));
    assert!(e.contains("non-finite") && e.contains("o_proj"), "{e}");
    // Head 1 a copy of head 0: keeping both is singular without a ridge, fine with one.
    let (mut z, wo, _) = raw_case(30, 4, 2, 5, 42);
    for r in &mut z {
        r[2] = r[0];
        r[3] = r[1];
    }
    let dup = stats_of(&z, &wo, 4, 2);
    let plain = LstsqConfig { ridge_rel: 0.0, prior: RidgePrior::Zero };
    let e = msg(attention_lstsq(&dup, &wo, &[0, 1], &plain));
    assert!(e.contains("singular"), "{e}");
    assert!(attention_lstsq(&dup, &wo, &[0, 1], &cfg).is_ok());
    let e = attention_refit_error(&dup, &wo, &[], &Refit::None).unwrap_err();
    assert!(e.to_string().contains("no head kept"), "{e}");
}
