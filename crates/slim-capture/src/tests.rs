//! Statistics computed with burn against direct f64 computations on small random inputs,
//! and the calibration sampler's rules.

use crate::calib::{sample_windows, CalibConfig, CalibSource};
use crate::stats::{attn_stats, attn_stats_in, mean_row_cosine, mlp_stats};
use burn_tensor::{Tensor, TensorData};
use slim_checkpoint::synthetic::SplitMix;
use slim_model::{Cpu, HostTensor};

fn rand(rng: &mut SplitMix, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform()).collect()
}

fn t2(data: &[f32], r: usize, c: usize) -> Tensor<Cpu, 2> {
    Tensor::from_data(TensorData::new(data.to_vec(), [r, c]), &burn_flex::FlexDevice)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn attn_stats_match_direct_f64() {
    let (n, h, dh, d) = (23, 3, 4, 7);
    let mut rng = SplitMix(3);
    let z = rand(&mut rng, n * h * dh);
    let wo = rand(&mut rng, d * h * dh);
    let s = attn_stats(0, t2(&z, n, h * dh), &HostTensor::new(vec![d, h * dh], wo.clone()).unwrap(), h, dh).unwrap();
    // Y_h[t, k] = Σ_c Z[t, h·dh + c] · W_O[k, h·dh + c]
    let y = |hh: usize, t: usize, k: usize| -> f64 {
        (0..dh).map(|c| z[t * h * dh + hh * dh + c] as f64 * wo[k * h * dh + hh * dh + c] as f64).sum()
    };
    for hh in 0..h {
        for k in 0..d {
            let mean: f64 = (0..n).map(|t| y(hh, t, k)).sum::<f64>() / n as f64;
            assert!(close(s.head_mean[hh * d + k], mean, 1e-5));
            for g in 0..h {
                let mg: f64 = (0..n).map(|t| y(g, t, k)).sum::<f64>() / n as f64;
                let cov: f64 = (0..n).map(|t| (y(hh, t, k) - mean) * (y(g, t, k) - mg)).sum::<f64>() / n as f64;
                assert!(close(s.head_cov[(k * h + hh) * h + g], cov, 1e-4), "cov k={k} h={hh} g={g}");
            }
        }
    }
    for c in 0..h * dh {
        let m: f64 = (0..n).map(|t| z[t * h * dh + c] as f64).sum::<f64>() / n as f64;
        let sq: f64 = (0..n).map(|t| (z[t * h * dh + c] as f64).powi(2)).sum::<f64>() / n as f64;
        assert!(close(s.z_mean[c], m, 1e-5) && close(s.z_sq_mean[c], sq, 1e-5));
    }
}

/// The head covariances formed a few heads at a time (as for LLaMA-7B, whose `P` would be 2.1 GB
/// at once) are the values formed all at once, bit for bit: odd head counts, uneven chunks.
#[test]
fn attn_stats_in_head_chunks_equal_the_whole() {
    let mut rng = SplitMix(17);
    let (n, h, dh, d) = (37, 7, 3, 10);
    let z = rand(&mut rng, n * h * dh);
    let o = HostTensor::new(vec![d, h * dh], rand(&mut rng, d * h * dh)).unwrap();
    let whole = attn_stats_in(2, t2(&z, n, h * dh), &o, h, dh, usize::MAX).unwrap();
    let per_head = d * h * dh * 4;
    for heads in [1, 2, 3, 6] {
        let part = attn_stats_in(2, t2(&z, n, h * dh), &o, h, dh, heads * per_head).unwrap();
        assert_eq!(part, whole, "{heads} heads at a time");
    }
}

#[test]
fn attn_z_cov_matches_direct_f64() {
    // Channels with distinct offsets and scales, so that centering and layout both matter.
    let (n, h, dh, d) = (29, 3, 4, 5);
    let hd = h * dh;
    let mut rng = SplitMix(13);
    let z: Vec<f32> =
        (0..n * hd).map(|i| (1.0 + (i % hd) as f32 * 0.5) * rng.uniform() + (i % hd) as f32 - 4.0).collect();
    let wo = rand(&mut rng, d * hd);
    let s = attn_stats(1, t2(&z, n, hd), &HostTensor::new(vec![d, hd], wo).unwrap(), h, dh).unwrap();
    s.validate().unwrap();
    assert_eq!(s.z_cov.len(), hd * hd);
    let zz = |t: usize, c: usize| z[t * hd + c] as f64;
    let mean: Vec<f64> = (0..hd).map(|c| (0..n).map(|t| zz(t, c)).sum::<f64>() / n as f64).collect();
    for a in 0..hd {
        for b in 0..hd {
            let c: f64 = (0..n).map(|t| (zz(t, a) - mean[a]) * (zz(t, b) - mean[b])).sum::<f64>() / n as f64;
            let scale = ((s.z_cov[a * hd + a] * s.z_cov[b * hd + b]).sqrt()).max(1e-12);
            assert!((s.z_cov[a * hd + b] - c).abs() <= 1e-5 * scale, "z_cov[{a}, {b}]: {} vs {c}", s.z_cov[a * hd + b]);
        }
        // The diagonal is the variance the per-channel moments give.
        let var = s.z_sq_mean[a] - s.z_mean[a] * s.z_mean[a];
        assert!((s.z_cov[a * hd + a] - var).abs() <= 1e-4 * (1.0 + s.z_sq_mean[a]), "diag {a}");
    }
}

#[test]
fn mlp_stats_match_direct_f64() {
    let (n, d, m) = (19, 5, 11);
    let mut rng = SplitMix(5);
    let u = rand(&mut rng, n * d);
    let g = rand(&mut rng, n * m);
    let s = mlp_stats(2, t2(&u, n, d), t2(&g, n, m)).unwrap();
    for k in 0..d {
        let sq: f64 = (0..n).map(|t| (u[t * d + k] as f64).powi(2)).sum::<f64>() / n as f64;
        assert!(close(s.u_sq_mean[k], sq, 1e-5));
    }
    let mean: Vec<f64> = (0..m).map(|j| (0..n).map(|t| g[t * m + j] as f64).sum::<f64>() / n as f64).collect();
    for i in 0..m {
        assert!(close(s.g_mean[i], mean[i], 1e-5));
        for j in 0..m {
            let c: f64 = (0..n).map(|t| (g[t * m + i] as f64 - mean[i]) * (g[t * m + j] as f64 - mean[j])).sum::<f64>()
                / n as f64;
            assert!(close(f64::from(s.g_cov[i * m + j]), c, 1e-4));
        }
    }
}

#[test]
fn mean_row_cosine_matches_direct() {
    let (n, d) = (6, 9);
    let mut rng = SplitMix(9);
    let a = rand(&mut rng, n * d);
    let b = rand(&mut rng, n * d);
    let want: f64 = (0..n)
        .map(|t| {
            let (ra, rb) = (&a[t * d..(t + 1) * d], &b[t * d..(t + 1) * d]);
            let dot: f64 = ra.iter().zip(rb).map(|(x, y)| *x as f64 * *y as f64).sum();
            let na: f64 = ra.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = rb.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            dot / (na * nb)
        })
        .sum::<f64>()
        / n as f64;
    assert!(close(mean_row_cosine(t2(&a, n, d), t2(&b, n, d)).unwrap(), want, 1e-5));
}

#[test]
fn sampler_draws_distinct_long_documents_deterministically() {
    let docs: Vec<String> = (0..10).map(|i| if i % 3 == 0 { "short".into() } else { format!("doc{i}") }).collect();
    // A document "tokenizes" to 20 ids equal to its index, or 2 ids when short.
    let encode = |s: &str| -> anyhow::Result<Vec<u32>> {
        Ok(match s.strip_prefix("doc") {
            Some(i) => vec![i.parse().unwrap(); 20],
            None => vec![0; 2],
        })
    };
    let cfg = CalibConfig { source: CalibSource::BrownFiction, n_windows: 4, seq_len: 8, seed: 42 };
    let a = sample_windows(&docs, &cfg, &encode).unwrap();
    assert_eq!(a.len(), 32);
    assert_eq!(a, sample_windows(&docs, &cfg, &encode).unwrap());
    let firsts: Vec<u32> = a.chunks(8).map(|w| w[0]).collect();
    let mut uniq = firsts.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 4, "documents drawn twice: {firsts:?}");
    assert!(firsts.iter().all(|&i| i % 3 != 0), "a short document was used: {firsts:?}");
    let too_many = CalibConfig { n_windows: 7, ..cfg };
    assert!(sample_windows(&docs, &too_many, &encode).is_err(), "only 6 long documents exist");
}

#[test]
fn nan_or_inf_in_the_activations_is_an_error_naming_the_layer() {
    let mut rng = SplitMix(8);
    let (n, h, dh, d, m) = (6, 2, 3, 5, 4);
    let mut z = rand(&mut rng, n * h * dh);
    z[7] = f32::NAN;
    let o = HostTensor::new(vec![d, h * dh], rand(&mut rng, d * h * dh)).unwrap();
    let err = attn_stats(3, t2(&z, n, h * dh), &o, h, dh).unwrap_err().to_string();
    assert!(err.contains("layer 3") && err.contains("NaN or Inf"), "{err}");
    let u = rand(&mut rng, n * d);
    let mut g = rand(&mut rng, n * m);
    g[2] = f32::INFINITY;
    let err = mlp_stats(5, t2(&u, n, d), t2(&g, n, m)).unwrap_err().to_string();
    assert!(err.contains("layer 5") && err.contains("MLP"), "{err}");
}

#[test]
fn taylor_capture_sums_each_heads_rows_and_columns() {
    use slim_checkpoint::synthetic::SyntheticSpec;
    // Uneven layers: a pruned MHA-like layer 0 and a GQA layer 1.
    let mut spec = SyntheticSpec::dense("llama", 2, 16, 4, 2, 4, 11, 29, 3);
    spec.layers[0] = slim_checkpoint::LayerShape {
        num_heads: 2,
        num_kv_heads: 2,
        kv_head_of: vec![0, 1],
        intermediate_size: 7,
        o_proj_bias: true,
        down_proj_bias: true,
    };
    let (cfg, w) = spec.build();
    let mut rng = SplitMix(5);
    let ids: Vec<u32> = (0..3 * 6).map(|_| rng.below(29) as u32).collect();
    let stats = crate::taylor_stats::<Cpu>(&cfg, &w, &ids, 3, 6, &burn_flex::FlexDevice, &mut |_| {}).unwrap();
    let sums = slim_model::taylor_sums::<Cpu>(
        cfg.clone(),
        &w,
        &ids,
        3,
        6,
        crate::TAYLOR_CHUNK,
        &burn_flex::FlexDevice,
        &mut |_| {},
    )
    .unwrap();
    assert!((stats.loss - sums.loss).abs() < 1e-6);
    let dh = cfg.head_dim;
    for (l, (t, s)) in stats.layers.iter().zip(&sums.layers).enumerate() {
        let shape = &cfg.layers[l];
        let (h, k, m) = (shape.num_heads, shape.num_kv_heads, shape.intermediate_size);
        assert_eq!((t.num_heads, t.num_kv_heads, t.intermediate), (h, k, m));
        let head = |v: &[f64], i: usize| v[i * dh..(i + 1) * dh].iter().sum::<f64>();
        for q in 0..h {
            assert!(
                close(t.q[q], head(&s.qkv_rows, q), 1e-9) && close(t.o[q], head(&s.o_cols, q), 1e-9),
                "layer {l} head {q}"
            );
        }
        for kv in 0..k {
            assert!(
                close(t.k[kv], head(&s.qkv_rows, h + kv), 1e-9) && close(t.v[kv], head(&s.qkv_rows, h + k + kv), 1e-9),
                "layer {l} kv {kv}"
            );
        }
        assert_eq!(
            (&t.gate[..], &t.up[..], &t.down[..]),
            (&s.gate_up_rows[..m], &s.gate_up_rows[m..], &s.down_cols[..])
        );
        assert!(t.q.iter().chain(&t.gate).all(|&x| x > 0.0), "layer {l}: every structure has some gradient");
    }
}
