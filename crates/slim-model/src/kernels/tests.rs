//! Each fused kernel and each burn-op composition against a direct f64 computation of its
//! formula, on odd sizes; attention with an uneven query-head → KV-head map and more keys
//! than queries (the KV-cache case).

use super::{cpu, ops, AttnDims};
use crate::rope::RopeTables;
use crate::Cpu;
use burn_tensor::{Int, Tensor, TensorData};
use slim_checkpoint::synthetic::SplitMix;

type Dev = burn_flex::FlexDevice;

fn randn(n: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut r = SplitMix(seed);
    (0..n).map(|_| (r.normal() * scale) as f32).collect()
}

fn t2(v: &[f32], shape: [usize; 2]) -> Tensor<Cpu, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Dev::default())
}

fn host(t: Tensor<Cpu, 2>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// Largest |a - b| / (|b| + floor) over the pairs.
fn max_rel(a: &[f32], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&a, &b)| (a as f64 - b).abs() / (b.abs() + floor)).fold(0.0, f64::max)
}

#[test]
fn exp_matches_f64_over_its_range() {
    let mut worst = 0f64;
    for i in 0..=1_750_000 {
        let x = -87.0 + i as f32 * 1e-4;
        let want = (x as f64).exp();
        worst = worst.max((cpu::exp_f32(x) as f64 - want).abs() / want);
    }
    assert!(worst < 3e-7, "max relative error {worst:e}");
    assert!(cpu::exp_f32(f32::NAN).is_nan());
    assert_eq!(cpu::exp_f32(0.0), 1.0);
}

/// One task, and many rayon tasks (the kernels split rows into tasks of at least 16,384 floats, each writing an
/// output that is not zeroed first).
#[test]
fn rms_norm_matches_f64() {
    for n in [7, 3001] {
        rms_norm_case(n);
    }
}

fn rms_norm_case(n: usize) {
    let (d, eps) = (13, 1e-5);
    let (x, w) = (randn(n * d, 2.0, 1), randn(d, 1.0, 2));
    let want: Vec<f64> = x
        .chunks(d)
        .flat_map(|r| {
            let s = (r.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64 + eps).sqrt();
            r.iter().zip(&w).map(move |(&v, &g)| v as f64 / s * g as f64).collect::<Vec<_>>()
        })
        .collect();
    let wt: Tensor<Cpu, 1> = Tensor::from_data(TensorData::new(w.clone(), [d]), &Dev::default());
    assert!(max_rel(&cpu::rms_norm(&x, &w, eps as f32), &want, 1e-3) < 1e-6);
    assert!(max_rel(&host(ops::rms_norm(t2(&x, [n, d]), &wt, eps)), &want, 1e-3) < 1e-6);
    assert!(max_rel(&host(super::rms_norm(t2(&x, [n, d]), &wt, eps)), &want, 1e-3) < 1e-6);
}

#[test]
fn silu_mul_matches_f64() {
    for n in [5, 1501] {
        silu_mul_case(n);
    }
}

fn silu_mul_case(n: usize) {
    let f = 33;
    let (g, u) = (randn(n * f, 6.0, 3), randn(n * f, 1.0, 4));
    let want: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| g as f64 / (1.0 + (-g as f64).exp()) * u as f64).collect();
    // The fused layout: each row is [gate | up].
    let gu: Vec<f32> = g.chunks(f).zip(u.chunks(f)).flat_map(|(g, u)| g.iter().chain(u).copied()).collect();
    assert!(max_rel(&cpu::silu_mul(&gu, f), &want, 1e-3) < 1e-6);
    assert!(max_rel(&host(ops::silu_mul(t2(&gu, [n, 2 * f]))), &want, 1e-3) < 1e-6);
    assert!(max_rel(&host(super::silu_mul(t2(&gu, [n, 2 * f]))), &want, 1e-3) < 1e-6);
}

/// At an offset: a few positions (one task), and sequences of 701 positions (tasks starting inside a sequence).
#[test]
fn rope_matches_f64_at_an_offset() {
    for len in [5, 701] {
        rope_case(len);
    }
}

fn rope_case(len: usize) {
    let (batch, heads, dh, start, theta) = (2, 3, 8, 11, 10_000.0);
    let width = heads * dh;
    let x = randn(batch * len * width, 1.0, 5);
    let mut want = vec![0f64; x.len()];
    for r in 0..batch * len {
        let pos = (start + r % len) as f32;
        for h in 0..heads {
            let at = r * width + h * dh;
            for j in 0..dh / 2 {
                // The angle as HF rounds it (inverse frequency and product in f32: at position 700 that is an error
                // of about 4e-5 against the exact angle), then everything else in f64.
                let a = (pos * (1.0 / f64::powf(theta, (2 * j) as f64 / dh as f64)) as f32) as f64;
                let (x1, x2) = (x[at + j] as f64, x[at + j + dh / 2] as f64);
                want[at + j] = x1 * a.cos() - x2 * a.sin();
                want[at + j + dh / 2] = x2 * a.cos() + x1 * a.sin();
            }
        }
    }
    let tables = RopeTables::<Cpu>::new(start, len, dh, theta, &Dev::default());
    let xs = t2(&x, [batch * len, width]);
    assert!(max_rel(&cpu::rope(&x, width, len, tables.cos_host(), tables.sin_host()), &want, 1e-2) < 1e-5);
    assert!(max_rel(&host(ops::rope(xs.clone(), &tables)), &want, 1e-2) < 1e-5);
    assert!(max_rel(&host(super::rope(xs, &tables)), &want, 1e-2) < 1e-5);
    // The same columns read in place from rows with other columns on both sides (as inside the fused q/k/v
    // product), on the fused kernel and through the burn ops' slice.
    let (pre, post) = (3, 2 * dh + 1);
    let stride = pre + width + post;
    let wide: Vec<f32> = (0..batch * len)
        .flat_map(|r| (0..stride).map(move |c| (r, c)))
        .map(|(r, c)| if (pre..pre + width).contains(&c) { x[r * width + c - pre] } else { 1e3 + c as f32 })
        .collect();
    let (cos, sin) = (tables.cos_host(), tables.sin_host());
    assert!(max_rel(&cpu::rope_cols(&wide, stride, pre, width, len, cos, sin), &want, 1e-2) < 1e-5);
    let wides = t2(&wide, [batch * len, stride]);
    assert!(max_rel(&host(super::rope_columns(&wides, pre..pre + width, &tables)), &want, 1e-2) < 1e-5);
}

/// Shapes on both sides of the kernel's query blocks: a few queries after a prefix, a prompt of
/// three blocks (the last partial) after a prefix, one decoded query.
#[test]
fn grouped_causal_attention_matches_f64() {
    for (batch, tq, tk) in [(2, 5, 7), (1, 150, 170), (2, 1, 9)] {
        check_attention(batch, tq, tk, 6);
    }
}

/// The fused kernel, with and without its probabilities, burn's ops and the dispatched attention
/// against an f64 reference.
fn check_attention(batch: usize, tq: usize, tk: usize, dh: usize) {
    let kv_head_of = [0usize, 0, 2, 1, 2]; // uneven groups, not sorted
    let (hq, hk) = (kv_head_of.len(), 3);
    let q = randn(batch * tq * hq * dh, 1.5, 6);
    let k = randn(batch * tk * hk * dh, 1.5, 7);
    let v = randn(batch * tk * hk * dh, 1.0, 8);
    let scale = 1.0 / (dh as f64).sqrt();
    let mut want = vec![0f64; q.len()];
    let mut want_probs = vec![0f64; batch * hq * tq * tk];
    for b in 0..batch {
        for (h, &j) in kv_head_of.iter().enumerate() {
            for i in 0..tq {
                let qi = &q[(b * tq + i) * hq * dh + h * dh..][..dh];
                let seen = i + tk - tq + 1;
                let s: Vec<f64> = (0..seen)
                    .map(|p| {
                        let kp = &k[(b * tk + p) * hk * dh + j * dh..][..dh];
                        qi.iter().zip(kp).map(|(&a, &c)| a as f64 * c as f64).sum::<f64>() * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for p in 0..seen {
                    want_probs[((b * hq + h) * tq + i) * tk + p] = e[p] / z;
                }
                for c in 0..dh {
                    want[(b * tq + i) * hq * dh + h * dh + c] =
                        (0..seen).map(|p| e[p] / z * v[(b * tk + p) * hk * dh + j * dh + c] as f64).sum();
                }
            }
        }
    }
    let d = AttnDims { batch, q_len: tq, kv_len: tk, head_dim: dh };
    let got = cpu::causal_attention(&q, &k, &v, &kv_head_of, d, scale as f32);
    let shape = format!("{batch}×{tq} queries, {tk} keys");
    // Outputs average up to 170 values of about 1: absolute errors near f32's rounding of 1, hence the floor.
    assert!(max_rel(&got, &want, 0.1) < 1e-5, "fused kernel, {shape}");
    let (with_probs, probs) = cpu::attend(&q, &k, &v, &kv_head_of, d, scale as f32, true);
    assert_eq!(with_probs, got, "{shape}: the same output with the probabilities kept");
    let worst = probs.iter().zip(&want_probs).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-6, "{shape}: probabilities off by {worst:e}");
    let zeros_match = probs.iter().zip(&want_probs).all(|(&a, &b)| (b == 0.0) == (a == 0.0));
    assert!(zeros_match, "{shape}: zeros above the diagonal, and only there");
    let idx: Tensor<Cpu, 1, Int> = Tensor::from_data(
        TensorData::new(kv_head_of.iter().map(|&j| j as i32).collect::<Vec<_>>(), [hq]),
        &Dev::default(),
    );
    let (qt, kt, vt) = (t2(&q, [batch * tq, hq * dh]), t2(&k, [batch * tk, hk * dh]), t2(&v, [batch * tk, hk * dh]));
    let ops_out = host(ops::attention(qt.clone(), kt.clone(), vt.clone(), &kv_head_of, &idx, d));
    assert!(max_rel(&ops_out, &want, 0.1) < 1e-5, "burn ops, {shape}");
    let dispatched = host(super::attention(qt, kt, vt, &kv_head_of, &idx, d));
    assert!(max_rel(&dispatched, &want, 0.1) < 1e-5, "dispatched, {shape}");
}

#[test]
fn linear_with_and_without_bias_matches_f64() {
    let (n, inp, out) = (9, 17, 11);
    let (x, wt, b) = (randn(n * inp, 1.0, 9), randn(inp * out, 1.0, 10), randn(out, 1.0, 11));
    for bias in [None, Some(&b)] {
        let want: Vec<f64> = (0..n * out)
            .map(|e| {
                let (r, c) = (e / out, e % out);
                (0..inp).map(|i| x[r * inp + i] as f64 * wt[i * out + c] as f64).sum::<f64>()
                    + bias.map_or(0.0, |b| b[c] as f64)
            })
            .collect();
        let bt = bias.map(|b| Tensor::<Cpu, 1>::from_data(TensorData::new(b.clone(), [out]), &Dev::default()));
        let (xt, wtt) = (t2(&x, [n, inp]), t2(&wt, [inp, out]));
        assert!(max_rel(&cpu::linear(&x, &wt, bias.map(|b| b.as_slice()), inp), &want, 1e-2) < 1e-5);
        assert!(max_rel(&host(ops::linear(xt.clone(), &wtt, bt.as_ref())), &want, 1e-2) < 1e-5);
        assert!(max_rel(&host(super::linear(xt, &wtt, bt.as_ref())), &want, 1e-2) < 1e-5);
    }
}
