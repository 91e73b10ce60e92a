//! Dequantization against fixtures made by the `gguf` Python package (tests/data/gen_dequant_fixtures.py).

use std::path::PathBuf;

use slim_gguf::{dequantize, GgmlType};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Decodes `<TYPE>.q.bin` and compares bit for bit with `<TYPE>.f32.bin` (any NaN matches any NaN).
fn check(ty: GgmlType, name: &str) {
    let q = fixture(&format!("{name}.q.bin"));
    let expected: Vec<f32> = fixture(&format!("{name}.f32.bin"))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let got = dequantize(ty, &q, expected.len()).unwrap();
    assert_eq!(got.len(), expected.len());
    let mut mismatches = 0;
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        let same = g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan());
        if !same {
            if mismatches < 5 {
                eprintln!("{name}[{i}]: got {g:e} ({:#x}), expected {e:e} ({:#x})", g.to_bits(), e.to_bits());
            }
            mismatches += 1;
        }
    }
    assert_eq!(mismatches, 0, "{name}: {mismatches} of {} values differ", expected.len());
}

#[test]
fn q4_0() {
    check(GgmlType::Q4_0, "Q4_0");
}

#[test]
fn q4_1() {
    check(GgmlType::Q4_1, "Q4_1");
}

#[test]
fn q5_0() {
    check(GgmlType::Q5_0, "Q5_0");
}

#[test]
fn q8_0() {
    check(GgmlType::Q8_0, "Q8_0");
}

#[test]
fn q4_k() {
    check(GgmlType::Q4_K, "Q4_K");
}

#[test]
fn q6_k() {
    check(GgmlType::Q6_K, "Q6_K");
}

#[test]
fn f16() {
    check(GgmlType::F16, "F16");
}

#[test]
fn bf16() {
    check(GgmlType::BF16, "BF16");
}

#[test]
fn f32() {
    check(GgmlType::F32, "F32");
}

/// Blocks sliced out of the real SmolLM2 and Qwen2.5-Coder GGUFs (committed, a few hundred bytes each).
#[test]
fn real_blocks() {
    check(GgmlType::Q4_1, "Q4_1.real");
    check(GgmlType::Q8_0, "Q8_0.real");
    check(GgmlType::Q5_0, "Q5_0.real");
    check(GgmlType::Q4_K, "Q4_K.real");
    check(GgmlType::Q6_K, "Q6_K.real");
}

#[test]
fn unsupported_type_is_an_error() {
    let e = dequantize(GgmlType::Q5_K, &[0u8; 176], 256).unwrap_err().to_string();
    assert!(e.contains("Q5_K (type id 13)"), "{e}");
}
