//! Times the burn ops of one forward pass in isolation (a profiling aid, not a test).
#![allow(clippy::single_range_in_vec_init)] // burn's `slice` takes one range per dimension
use burn_tensor::{activation::softmax, Distribution, Tensor};
use slim_model::Cpu;
use std::time::Instant;
fn time<F: FnMut() -> f32>(name: &str, mut f: F) {
    f();
    let t = Instant::now();
    let n = 3;
    for _ in 0..n {
        std::hint::black_box(f());
    }
    println!("{name:40} {:8.2} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
}
fn main() {
    let d = burn_flex::FlexDevice;
    let x: Tensor<Cpu, 2> = Tensor::random([1024, 576], Distribution::Default, &d);
    let w1: Tensor<Cpu, 2> = Tensor::random([576, 1536], Distribution::Default, &d);
    let wl: Tensor<Cpu, 2> = Tensor::random([576, 49152], Distribution::Default, &d);
    let q: Tensor<Cpu, 4> = Tensor::random([8, 9, 128, 64], Distribution::Default, &d);
    let k: Tensor<Cpu, 4> = Tensor::random([8, 9, 128, 64], Distribution::Default, &d);
    time("matmul 1024x576 @ 576x1536", || x.clone().matmul(w1.clone()).slice([0..1, 0..1]).into_scalar());
    time("matmul 1024x576 @ 576x49152", || x.clone().matmul(wl.clone()).slice([0..1, 0..1]).into_scalar());
    time("q @ k^T (8,9,128,64)", || {
        q.clone().matmul(k.clone().swap_dims(2, 3)).slice([0..1, 0..1, 0..1, 0..1]).into_scalar()
    });
    let s: Tensor<Cpu, 4> = Tensor::random([8, 9, 128, 128], Distribution::Default, &d);
    time("softmax (8,9,128,128)", || softmax(s.clone(), 3).slice([0..1, 0..1, 0..1, 0..1]).into_scalar());
    time("reshape+swap (1024,576)->(8,9,128,64)", || {
        x.clone().reshape([8, 128, 9, 64]).swap_dims(1, 2).reshape([8 * 9 * 128 * 64]).slice([0..1]).into_scalar()
    });
    let big: Tensor<Cpu, 2> = Tensor::random([1024, 49152], Distribution::Default, &d);
    time("log_softmax (1024,49152)", || {
        burn_tensor::activation::log_softmax(big.clone(), 1).slice([0..1, 0..1]).into_scalar()
    });
    time("silu*mul (1024,1536)", || {
        (burn_tensor::activation::silu(x.clone().matmul(w1.clone())) * x.clone().matmul(w1.clone()))
            .slice([0..1, 0..1])
            .into_scalar()
    });
}
