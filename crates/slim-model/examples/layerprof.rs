//! Times each op of one SmolLM2-shaped decoder layer at batch 8 × 128 (a profiling aid, not a test).
use burn_tensor::{
    activation::{silu, softmax},
    Distribution, Tensor, TensorData,
};
use slim_model::Cpu;
use std::time::Instant;
type T2 = Tensor<Cpu, 2>;
type T4 = Tensor<Cpu, 4>;
fn main() {
    let d = burn_flex::FlexDevice;
    let (b, t, dm, hq, hk, dh, ff) = (8, 128, 576, 9, 3, 64, 1536);
    let n = b * t;
    let r = |s: [usize; 2]| -> T2 { Tensor::random(s, Distribution::Default, &d) };
    let (wq, wk, wv, wo, wg, wu, wd) =
        (r([dm, dm]), r([dm, hk * dh]), r([dm, hk * dh]), r([dm, dm]), r([dm, ff]), r([dm, ff]), r([ff, dm]));
    let nw: Tensor<Cpu, 1> = Tensor::random([dm], Distribution::Default, &d);
    let x = r([n, dm]);
    let cos: T4 = Tensor::random([1, 1, t, dh], Distribution::Default, &d);
    let sin: T4 = Tensor::random([1, 1, t, dh], Distribution::Default, &d);
    let kv: Tensor<Cpu, 1, burn_tensor::Int> =
        Tensor::from_data(TensorData::new(vec![0i32, 0, 0, 1, 1, 1, 2, 2, 2], [9]), &d);
    let mask: T4 = Tensor::random([1, 1, t, t], Distribution::Default, &d);
    let mut acc: Vec<(&str, f64)> = Vec::new();
    let reps = 5;
    for rep in 0..reps + 1 {
        let mut lap = Instant::now();
        let mut tick = |name: &'static str, acc: &mut Vec<(&str, f64)>| {
            let e = lap.elapsed().as_secs_f64();
            lap = Instant::now();
            if rep > 0 {
                match acc.iter_mut().find(|(k, _)| *k == name) {
                    Some(p) => p.1 += e,
                    None => acc.push((name, e)),
                }
            }
        };
        let var = x.clone().powi_scalar(2).mean_dim(1);
        let a = x.clone() * var.add_scalar(1e-5).sqrt().recip() * nw.clone().unsqueeze::<2>();
        let _ = a.clone().slice([0..1, 0..1]).into_scalar();
        tick("rms_norm", &mut acc);
        let q = a.clone().matmul(wq.clone());
        let k = a.clone().matmul(wk.clone());
        let v = a.clone().matmul(wv.clone());
        let _ = v.clone().slice([0..1, 0..1]).into_scalar();
        tick("qkv matmul", &mut acc);
        let heads = |y: T2, nh: usize| y.reshape([b, t, nh, dh]).swap_dims(1, 2);
        let (q, k, v) = (heads(q, hq), heads(k, hk), heads(v, hk));
        let rope = |x: T4| {
            let [b, h, t, dh] = x.dims();
            let half = dh / 2;
            let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
            let x2 = x.clone().slice([0..b, 0..h, 0..t, half..dh]);
            let rot = Tensor::cat(vec![x2.neg(), x1], 3);
            x * cos.clone() + rot * sin.clone()
        };
        let q = rope(q);
        let k = rope(k);
        let _ = k.clone().slice([0..1, 0..1, 0..1, 0..1]).into_scalar();
        tick("heads+rope", &mut acc);
        let (k, v) = (k.select(1, kv.clone()), v.select(1, kv.clone()));
        let _ = v.clone().slice([0..1, 0..1, 0..1, 0..1]).into_scalar();
        tick("kv select", &mut acc);
        let s = q.matmul(k.swap_dims(2, 3)).mul_scalar(0.125);
        let _ = s.clone().slice([0..1, 0..1, 0..1, 0..1]).into_scalar();
        tick("qk matmul", &mut acc);
        let s = s + mask.clone();
        let p = softmax(s, 3);
        let _ = p.clone().slice([0..1, 0..1, 0..1, 0..1]).into_scalar();
        tick("mask+softmax", &mut acc);
        let z = p.matmul(v);
        let _ = z.clone().slice([0..1, 0..1, 0..1, 0..1]).into_scalar();
        tick("pv matmul", &mut acc);
        let z = z.swap_dims(1, 2).reshape([n, hq * dh]);
        let _ = z.clone().slice([0..1, 0..1]).into_scalar();
        tick("merge heads", &mut acc);
        let h = x.clone() + z.matmul(wo.clone());
        let _ = h.clone().slice([0..1, 0..1]).into_scalar();
        tick("o matmul+res", &mut acc);
        let var = h.clone().powi_scalar(2).mean_dim(1);
        let u = h.clone() * var.add_scalar(1e-5).sqrt().recip() * nw.clone().unsqueeze::<2>();
        let _ = u.clone().slice([0..1, 0..1]).into_scalar();
        tick("rms_norm", &mut acc);
        let gg = u.clone().matmul(wg.clone());
        let uu = u.matmul(wu.clone());
        let _ = uu.clone().slice([0..1, 0..1]).into_scalar();
        tick("gate/up matmul", &mut acc);
        let g = silu(gg) * uu;
        let _ = g.clone().slice([0..1, 0..1]).into_scalar();
        tick("silu*mul", &mut acc);
        let y = h + g.matmul(wd.clone());
        let _ = y.slice([0..1, 0..1]).into_scalar();
        tick("down matmul+res", &mut acc);
    }
    let total: f64 = acc.iter().map(|p| p.1).sum();
    for (k, v) in &acc {
        println!("{k:20} {:8.2} ms  {:5.1} %", v * 1000.0 / reps as f64, 100.0 * v / total);
    }
    println!(
        "{:20} {:8.2} ms  (×30 layers = {:.0} ms)",
        "layer total",
        total * 1000.0 / reps as f64,
        total * 30000.0 / reps as f64
    );
}
