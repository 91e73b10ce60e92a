//! Tests of the recovery variants (FLAP bias, ridge least squares) against direct f64
//! computations on raw activations: the FLAP bias from raw means, the refit against the
//! normal equations of the regression on the raw tokens, and every refit's error against
//! the raw mean squared error.

use super::*;

use super::ridge::{assert_close, assert_f32_close, direct_ridge, raw_refit_mse, Rows};

const CASES: [(usize, &[usize], u64); 3] =
    [(13, &[0, 1, 4, 7, 8, 12], 4), (11, &[10, 2], 5), (13, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 6)];

#[test]
fn flap_bias_matches_raw_means() {
    // Attention: raw Z and W_O, the statistics from Y_h = Z_h W_O^(h)ᵀ.
    let (n, h, dh, d) = (30, 5, 3, 6);
    let mut rng = Rng(71);
    let z: Rows = (0..n).map(|_| (0..h * dh).map(|c| rng.normal() + 0.2 * c as f64 - 1.0).collect()).collect();
    let wo = HostTensor::new(vec![d, h * dh], (0..d * h * dh).map(|_| rng.normal() as f32).collect()).unwrap();
    let wo_at = |k: usize, j: usize| wo.data[k * h * dh + j] as f64;
    let mut head_mean = vec![0.0; h * d];
    for a in 0..h {
        for k in 0..d {
            head_mean[a * d + k] =
                z.iter().map(|r| (0..dh).map(|c| r[a * dh + c] * wo_at(k, a * dh + c)).sum::<f64>()).sum::<f64>()
                    / n as f64;
        }
    }
    let stats = AttnStats {
        layer: 2,
        n_tokens: n,
        num_heads: h,
        head_dim: dh,
        hidden: d,
        head_mean,
        head_cov: vec![0.0; d * h * h],
        z_mean: vec![0.0; h * dh],
        z_sq_mean: vec![0.0; h * dh],
        z_cov: vec![0.0; h * dh * h * dh],
    };
    let kept = [0, 3];
    let a = recover_attention(RecoveryKind::FlapBias, &stats, &kept).unwrap().unwrap();
    for k in 0..d {
        let direct: f64 = (0..h * dh)
            .filter(|j| !kept.contains(&(j / dh)))
            .map(|j| wo_at(k, j) * z.iter().map(|r| r[j]).sum::<f64>() / n as f64)
            .sum();
        assert_rel(a.bias[k], direct, 1e-9, &format!("o_proj bias {k}"));
        assert_eq!(a.scale[k], 1.0);
    }

    // MLP: raw G and W_d; FLAP sits between the affine fit and no recovery.
    for (m, kept, seed) in CASES {
        let (g, down, stats) = mlp_case(40, 7, m, seed);
        let a = recover_mlp(RecoveryKind::FlapBias, &stats, &down, kept).unwrap().unwrap();
        for k in 0..7 {
            let direct: f64 = (0..m)
                .filter(|j| !kept.contains(j))
                .map(|j| down.data[k * m + j] as f64 * g.iter().map(|r| r[j]).sum::<f64>() / 40.0)
                .sum();
            assert_rel(a.bias[k], direct, MLP_TOL, &format!("down_proj bias {k}, seed {seed}"));
            assert_eq!(a.scale[k], 1.0);
        }
        let flap = raw_refit_mse(&g, &down, kept, &Refit::Affine(a.clone()));
        assert_rel(mlp_reconstruction_error(&stats, &down, kept, &a).unwrap(), flap, MLP_TOL, "flap error");
        let none = raw_refit_mse(&g, &down, kept, &Refit::None);
        let affine = raw_refit_mse(&g, &down, kept, &Refit::Affine(mlp_affine(&stats, &down, kept).unwrap()));
        assert!(
            affine <= flap * (1.0 + MLP_TOL) && flap <= none * (1.0 + MLP_TOL),
            "affine {affine}, flap {flap}, none {none}"
        );
    }
}

#[test]
fn lstsq_matches_normal_equations_on_raw_tokens() {
    for (m, kept, seed) in CASES {
        let (g, down, stats) = mlp_case(40, 7, m, seed);
        for (eps, prior) in
            [(0.0, RidgePrior::Zero), (1e-2, RidgePrior::Zero), (1e-2, RidgePrior::Kept), (0.5, RidgePrior::Kept)]
        {
            let cfg = LstsqConfig { ridge_rel: eps, prior };
            let fit = mlp_lstsq(&stats, &down, kept, &cfg).unwrap();
            assert_eq!(fit.weight.shape, [7, kept.len()]);
            let (ws, bs) = direct_ridge(&g, &down, kept, eps, prior);
            for k in 0..7 {
                let scale = ws[k].iter().fold(0.0f64, |s, v| s.max(v.abs()));
                for i in 0..kept.len() {
                    // Without a ridge the solve amplifies the f32 rounding of the stored
                    // covariance by the conditioning of Σ[K,K]: 1e-5 of the row's scale.
                    assert_close(
                        fit.weight.data[k * kept.len() + i],
                        ws[k][i],
                        scale,
                        1e-5,
                        &format!("W'[{k},{i}], ε={eps}, {prior:?}, seed {seed}"),
                    );
                }
                // The bias is exact for the stored (f32) weight: b = W μ − W' μ_K.
                let w_mu: f64 = (0..m).map(|j| down.data[k * m + j] as f64 * stats.g_mean[j]).sum();
                let wk_mu: f64 = kept
                    .iter()
                    .enumerate()
                    .map(|(i, &j)| fit.weight.data[k * kept.len() + i] as f64 * stats.g_mean[j])
                    .sum();
                assert_rel(fit.bias[k], w_mu - wk_mu, 1e-12, "bias from stored weight");
                assert!(
                    (fit.bias[k] - bs[k]).abs() <= 1e-5 * (1.0 + bs[k].abs()),
                    "b[{k}]: {} vs {}",
                    fit.bias[k],
                    bs[k]
                );
            }
            let refit = Refit::Columns(fit);
            assert_rel(
                mlp_refit_error(&stats, &down, kept, &refit).unwrap(),
                raw_refit_mse(&g, &down, kept, &refit),
                MLP_TOL,
                "lstsq error",
            );
        }
    }
}

#[test]
fn lstsq_keeping_everything_without_ridge_is_the_identity() {
    let (_, down, stats) = mlp_case(40, 7, 13, 7);
    let all: Vec<usize> = (0..13).collect();
    let fit = mlp_lstsq(&stats, &down, &all, &LstsqConfig { ridge_rel: 0.0, prior: RidgePrior::Zero }).unwrap();
    for (i, (&got, &want)) in fit.weight.data.iter().zip(&down.data).enumerate() {
        assert_f32_close(got, want as f64, want.abs() as f64, &format!("W'[{}, {}]", i / 13, i % 13));
    }
    for k in 0..7 {
        let scale: f64 = (0..13).map(|j| (down.data[k * 13 + j] as f64 * stats.g_mean[j]).abs()).sum();
        assert!(fit.bias[k].abs() <= 1e-9 * scale, "bias {k}: {}", fit.bias[k]);
    }
    assert!(mlp_refit_error(&stats, &down, &all, &Refit::Columns(fit)).unwrap() < 1e-18);
}

#[test]
fn lstsq_error_is_lowest_and_refit_error_matches_raw() {
    let mut rng = Rng(81);
    let mut checked = 0;
    for seed in 0..12u64 {
        let (g, down, stats) = mlp_case(40, 6, 11, 400 + seed);
        let kept: Vec<usize> = (0..11).filter(|_| rng.unit() < 0.6).collect();
        if kept.is_empty() {
            continue;
        }
        let refits =
            [RecoveryKind::None, RecoveryKind::Affine, RecoveryKind::FlapBias, RecoveryKind::Lstsq].map(|kind| {
                refit_mlp(kind, &stats, &down, &kept, &LstsqConfig { ridge_rel: 0.0, prior: RidgePrior::Zero }).unwrap()
            });
        let err: Vec<f64> = refits.iter().map(|r| mlp_refit_error(&stats, &down, &kept, r).unwrap()).collect();
        for (r, &e) in refits.iter().zip(&err) {
            assert_rel(e, raw_refit_mse(&g, &down, &kept, r), MLP_TOL, &format!("error of {r:?}"));
        }
        let [none, affine, flap, lstsq] = [err[0], err[1], err[2], err[3]];
        let slack = 1e-12 * none;
        assert!(
            lstsq <= affine + slack && affine <= flap + slack && flap <= none + slack,
            "lstsq {lstsq}, affine {affine}, flap {flap}, none {none}"
        );
        // The default prior never does worse than slicing, however large the ridge.
        for eps in [1e-2, 1.0, 1e3] {
            let fit =
                mlp_lstsq(&stats, &down, &kept, &LstsqConfig { ridge_rel: eps, prior: RidgePrior::Kept }).unwrap();
            let e = mlp_refit_error(&stats, &down, &kept, &Refit::Columns(fit)).unwrap();
            assert!(e <= none + slack && e >= lstsq - slack, "ε={eps}: {e} vs none {none}, lstsq {lstsq}");
        }
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn variant_dispatch_and_errors() {
    let (_, down, stats) = mlp_case(30, 5, 9, 91);
    let kept = [0, 2, 3, 7];
    let cfg = LstsqConfig::standard();
    assert_eq!(refit_mlp(RecoveryKind::None, &stats, &down, &kept, &cfg).unwrap(), Refit::None);
    assert_eq!(
        refit_mlp(RecoveryKind::Affine, &stats, &down, &kept, &cfg).unwrap(),
        Refit::Affine(mlp_affine(&stats, &down, &kept).unwrap())
    );
    assert_eq!(
        refit_mlp(RecoveryKind::FlapBias, &stats, &down, &kept, &cfg).unwrap(),
        Refit::Affine(mlp_flap_bias(&stats, &down, &kept).unwrap())
    );
    assert_eq!(
        refit_mlp(RecoveryKind::Lstsq, &stats, &down, &kept, &cfg).unwrap(),
        Refit::Columns(mlp_lstsq(&stats, &down, &kept, &cfg).unwrap())
    );
    let err = recover_mlp(RecoveryKind::Lstsq, &stats, &down, &kept).unwrap_err();
    assert!(err.to_string().contains("call refit_mlp"), "{err}");

    let (_, astats) = attn_case(10, 4, 3, 92);
    assert!(attention_flap_bias(&astats, &[4]).unwrap_err().to_string().contains("out of range"));

    // A duplicated channel makes Σ[K,K] singular: plain least squares fails, a ridge does not.
    let (_, down, mut stats) = mlp_case(30, 5, 9, 93);
    let m = 9;
    for j in 0..m {
        stats.g_cov[4 * m + j] = stats.g_cov[3 * m + j];
    }
    for j in 0..m {
        stats.g_cov[j * m + 4] = stats.g_cov[j * m + 3];
    }
    let plain = LstsqConfig { ridge_rel: 0.0, prior: RidgePrior::Zero };
    let err = mlp_lstsq(&stats, &down, &[1, 3, 4], &plain).unwrap_err();
    assert!(format!("{err:#}").contains("singular") && format!("{err:#}").contains("layer 3"), "{err:#}");
    assert!(mlp_lstsq(&stats, &down, &[1, 3, 4], &cfg).is_ok());

    stats.g_cov[5] = f32::NAN;
    let err = mlp_lstsq(&stats, &down, &[1, 3], &cfg).unwrap_err();
    assert!(format!("{err:#}").contains("non-finite"), "{err:#}");
    let (_, down, stats) = mlp_case(30, 5, 9, 94);
    let err = mlp_lstsq(&stats, &down, &[1, 3], &LstsqConfig { ridge_rel: -1.0, prior: RidgePrior::Kept }).unwrap_err();
    assert!(format!("{err:#}").contains("ridge_rel"), "{err:#}");
}

#[test]
fn variant_serde() {
    for (kind, name) in [(RecoveryKind::FlapBias, "\"flap-bias\""), (RecoveryKind::Lstsq, "\"lstsq\"")] {
        assert_eq!(serde_json::to_string(&kind).unwrap(), name);
        assert_eq!(serde_json::from_str::<RecoveryKind>(name).unwrap(), kind);
    }
    assert_eq!(serde_json::to_string(&LstsqConfig::standard()).unwrap(), r#"{"ridge_rel":1.0,"prior":"kept"}"#);
    let refit = Refit::Columns(ColumnRefit {
        weight: HostTensor::new(vec![2, 1], vec![0.5, -1.5]).unwrap(),
        bias: vec![0.25, 2.0],
    });
    let json = serde_json::to_string(&refit).unwrap();
    assert_eq!(serde_json::from_str::<Refit>(&json).unwrap(), refit);
    let bad = json.replace("[2,1]", "[3,1]");
    assert!(serde_json::from_str::<Refit>(&bad).unwrap_err().to_string().contains("needs 3 values"));
}

#[test]
fn lstsq_with_fewer_tokens_than_kept_channels() {
    // n = 60 tokens, |K| = 160 kept channels: Σ[K,K] has rank ≤ 59, as for a 7B MLP
    // calibrated on 4,096 tokens.
    let (n, d, m) = (60, 24, 200);
    let (g, down, stats) = mlp_case(n, d, m, 95);
    let kept: Vec<usize> = (0..m).filter(|j| j % 5 != 0).collect();
    let plain = LstsqConfig { ridge_rel: 0.0, prior: RidgePrior::Zero };
    let err = mlp_lstsq(&stats, &down, &kept, &plain).unwrap_err();
    assert!(format!("{err:#}").contains("singular"), "{err:#}");
    let none = mlp_refit_error(&stats, &down, &kept, &Refit::None).unwrap();
    for cfg in [LstsqConfig::standard(), LstsqConfig { ridge_rel: 1e-6, prior: RidgePrior::Zero }] {
        let fit = Refit::Columns(mlp_lstsq(&stats, &down, &kept, &cfg).unwrap());
        let e = mlp_refit_error(&stats, &down, &kept, &fit).unwrap();
        // Near-interpolation: compare on the scale of the unrecovered error.
        let raw = raw_refit_mse(&g, &down, &kept, &fit);
        assert!((e - raw).abs() <= 1e-9 * none, "{cfg:?}: error {e} vs raw {raw}");
        assert!(e < 0.1 * none, "{cfg:?}: error {e} against {none} unrecovered");
    }
}
