//! burn-flex matmul against a direct `gemm` call on the forward pass's shapes (a profiling aid).
use burn_tensor::{Distribution, Tensor};
use slim_model::Cpu;
use std::time::Instant;
fn main() {
    let d = burn_flex::FlexDevice;
    for &(m, k, n) in &[(1024usize, 576usize, 1536usize), (1024, 576, 3072), (1024, 1536, 576), (1024, 576, 49152)] {
        let x: Tensor<Cpu, 2> = Tensor::random([m, k], Distribution::Default, &d);
        let w: Tensor<Cpu, 2> = Tensor::random([k, n], Distribution::Default, &d);
        let (a, b) = (x.to_data().into_vec::<f32>().unwrap(), w.to_data().into_vec::<f32>().unwrap());
        let mut c = vec![0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let (mut t_burn, mut t_gemm, mut t_fresh) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..10 {
            let t = Instant::now();
            let y = x.clone().matmul(w.clone());
            std::hint::black_box(&y);
            t_burn = t_burn.min(t.elapsed().as_secs_f64());
            drop(y);
            let t = Instant::now();
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                )
            };
            t_gemm = t_gemm.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let mut c2 = vec![0f32; m * n];
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c2.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                )
            };
            std::hint::black_box(&c2);
            t_fresh = t_fresh.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{m}x{k}x{n}: burn {:.1}  gemm {:.1}  gemm+fresh output {:.1} GFLOP/s",
            flop / t_burn / 1e9,
            flop / t_gemm / 1e9,
            flop / t_fresh / 1e9
        );
    }
}
