//! Tokenizers built from llama.cpp's vocab-only GGUF test files must reproduce llama.cpp's own
//! expected token ids (`models/ggml-vocab-*.gguf.inp` / `.out`, as test-tokenizer-0 reads them).
//! llama.cpp's test tokenizes with `add_special = false, parse_special = false`, so no BOS is added here.

use slim_gguf::{build_tokenizer_json, GgufFile};
use tokenizers::Tokenizer;

use crate::downloaded;

/// Builds the tokenizer for `ggml-vocab-<name>.gguf` and checks every case; returns (passed, total).
fn run(name: &str) -> (usize, usize) {
    let gguf = downloaded(&format!("llama-vocab/ggml-vocab-{name}.gguf"), "llama-vocab");
    let inp = std::fs::read_to_string(gguf.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(gguf.with_extension("gguf.out")).unwrap();
    let file = GgufFile::open(&gguf).unwrap();
    let json = build_tokenizer_json(&file).unwrap();
    let tok = Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();

    // Same splitting as test-tokenizer-0.cpp: inputs separated by "\n__ggml_vocab_test__\n".
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                inputs.push(&rest[..i]);
                rest = &rest[i + sep.len()..];
            }
            None => {
                inputs.push(rest);
                break;
            }
        }
    }
    let expected: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(inputs.len(), expected.len(), "{name}: inputs and outputs differ in count");

    let mut passed = 0;
    for (text, want) in inputs.iter().zip(&expected) {
        let got = tok.encode(*text, false).unwrap().get_ids().to_vec();
        if &got == want {
            passed += 1;
        } else {
            eprintln!("{name}: {text:?}\n  got      {got:?}\n  expected {want:?}");
        }
    }
    eprintln!("{name}: {passed}/{} llama.cpp vocab cases pass", expected.len());
    (passed, expected.len())
}

#[test]
fn gpt2_matches_llama_cpp() {
    let (passed, total) = run("gpt-2");
    assert_eq!(passed, total);
    assert_eq!(total, 46);
}

#[test]
fn qwen2_matches_llama_cpp() {
    let (passed, total) = run("qwen2");
    assert_eq!(passed, total);
    assert_eq!(total, 46);
}
