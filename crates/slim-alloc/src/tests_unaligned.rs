//! The unaligned allocations pinned bit for bit: every allocation (SlimLLM's cosine, uniform,
//! FLAP's global) on three shapes, both GQA modes and two targets, as its parameter count,
//! level and a hash of its whole `Debug` text (which prints every float exactly), in
//! `golden/unaligned.txt`. The file was written by the code before alignment existed
//! (`align` = 1 must change nothing); `SLIMLLM_BLESS=1` rewrites it.

use super::tests_global::scores_for;
use super::tests_uniform::{odd_gqa, odd_mha, smollm2};
use super::*;

/// FNV-1a, 64 bits.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// A cosine profile for `n` layers: rising, with a dip at the last layer.
fn cos_profile(n: usize) -> Vec<f64> {
    (0..n)
        .map(|l| {
            0.72 + 0.22 * (1.0 - (-(l as f64) / 6.0).exp()) + 0.01 * (l as f64).sin()
                - if l + 1 == n { 0.2 } else { 0.0 }
        })
        .collect()
}

fn line(label: &str, a: &Result<Allocation>) -> String {
    match a {
        Ok(a) => format!(
            "{label}: params_after {} level {:?} achieved {:?} fnv {:016x}\n",
            a.params_after,
            a.level,
            a.achieved,
            fnv(&format!("{a:?}"))
        ),
        Err(e) => format!("{label}: error {e}\n"),
    }
}

pub(crate) fn render() -> String {
    let mut out = String::new();
    for (name, cfg) in [("smollm2", smollm2()), ("odd-gqa", odd_gqa()), ("odd-mha", odd_mha())] {
        let n = cfg.num_layers();
        let cos = cos_profile(n);
        for mode in [GqaMode::PerGroup, GqaMode::WholeGroup] {
            for target in [0.2, 0.5] {
                let a = AllocConfig { gqa: mode, ..AllocConfig::paper_defaults(target, n) };
                out += &line(&format!("cosine {name} {mode:?} {target}"), &solve(&cfg, &cos, &a));
                let u = UniformConfig { recovery_adds_bias: true, ..UniformConfig::llm_pruner(target, n, mode) };
                out += &line(&format!("uniform {name} {mode:?} {target}"), &solve_uniform(&cfg, &u));
                let g = GlobalConfig::flap(target, mode);
                let s = scores_for(&cfg, mode);
                out += &line(&format!("global {name} {mode:?} {target}"), &solve_global(&cfg, &s, &g));
            }
        }
    }
    out
}

#[test]
fn unaligned_allocations_are_pinned_bit_for_bit() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/golden/unaligned.txt");
    let got = render();
    if std::env::var_os("SLIMLLM_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "an unaligned allocation changed (SLIMLLM_BLESS=1 rewrites src/golden/unaligned.txt)");
}
