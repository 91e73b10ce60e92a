//! What loading a model's weights costs, and the part of it spent checking that every value is
//! finite: `cargo run --release -p slim-checkpoint --example load_cost -- data/models/smollm2-135m`.
//!
//! Prints the median of 5 full loads, of 5 finiteness passes over the loaded values (memory-bound),
//! and of 5 passes over one 4096-value block repeated to the same count (in cache, as the loader
//! runs it: each block is checked right after it is converted).

use std::path::PathBuf;
use std::time::Instant;

use slim_checkpoint::layout::Global;
use slim_checkpoint::weights::first_non_finite;
use slim_checkpoint::Weights;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "data/models/smollm2-135m".to_owned()));
    let mut loads = Vec::new();
    let mut w = Weights::new();
    for _ in 0..5 {
        let t = Instant::now();
        w = Weights::load(&dir)?;
        loads.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut checks = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut bad = 0;
        for name in w.names() {
            bad += usize::from(first_non_finite(&w.get(name)?.data).is_some());
        }
        checks.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(bad == 0, "{bad} tensors with non-finite values");
    }
    let n = w.num_values();
    let block = &w.get(Global::Embedding.hf_name())?.data[..4096];
    let mut hot = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut bad = 0;
        for _ in 0..n / 4096 {
            bad += usize::from(first_non_finite(std::hint::black_box(block)).is_some());
        }
        hot.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(bad == 0, "non-finite values in the first block");
    }
    let (load, check, hot) = (median(loads), median(checks), median(hot));
    println!(
        "{}: {n} values; load {load:.1} ms (median of 5); finiteness check as a separate pass {check:.1} ms \
         ({:.1} GB/s), in cache {hot:.1} ms",
        dir.display(),
        4.0 * n as f64 / (check * 1e-3) / 1e9
    );
    Ok(())
}
