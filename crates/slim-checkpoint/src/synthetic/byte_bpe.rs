//! A self-contained byte-level BPE tokenizer (GPT-2's byte-to-character map, every byte a token,
//! two merges) for model directories of random weights: any text tokenizes, with ids below
//! [`BYTE_BPE_VOCAB`], so `eval ppl`, `generate` and llama.cpp's export checks run on them.
//!
//! Used by `slimllm synth-model` and by the export fixtures of
//! `crates/slim-cli/examples/export_fixture.rs`.

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use crate::tokenizer_json::QWEN2_REGEX;
use crate::Arch;

/// Ids the tokenizer uses: `<|endoftext|>` (0), the 256 bytes (1..=256) and two merges (`Ġt`,
/// `he`: 257, 258). A model needs at least this `vocab_size`.
pub const BYTE_BPE_VOCAB: usize = 259;

/// The `tokenizer.json` and `tokenizer_config.json` of the byte-level tokenizer, with the
/// pre-tokenizer of `arch`'s family: SmolLM2's (single digits, then GPT-2's regex) for llama,
/// Qwen2's regex and NFC normalizer for qwen2.
pub fn byte_level_tokenizer(arch: Arch) -> (Value, Value) {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<|endoftext|>".into(), json!(0));
    for (i, c) in byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), json!(i + 1));
    }
    vocab.insert("Ġt".into(), json!(257));
    vocab.insert("he".into(), json!(258));
    let byte_level =
        |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let (normalizer, pre) = match arch {
        Arch::Qwen2 => {
            let split = json!({"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated",
                               "invert": false});
            (json!({"type": "NFC"}), json!({"type": "Sequence", "pretokenizers": [split, byte_level(false)]}))
        }
        Arch::Llama => {
            let digits = json!({"type": "Digits", "individual_digits": true});
            (json!(null), json!({"type": "Sequence", "pretokenizers": [digits, byte_level(true)]}))
        }
    };
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": normalizer, "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": [["Ġ", "t"], ["h", "e"]]},
    });
    let cfg = json!({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
                     "eos_token": "<|endoftext|>", "add_bos_token": false, "add_eos_token": false});
    (tok, cfg)
}

/// Writes `dir/tokenizer.json` and `dir/tokenizer_config.json` of [`byte_level_tokenizer`]
/// (compact JSON, each file atomically).
pub fn write_byte_level_tokenizer(dir: &Path, arch: Arch) -> Result<()> {
    let (tok, cfg) = byte_level_tokenizer(arch);
    slim_fs::write_atomic(&dir.join("tokenizer.json"), tok.to_string().as_bytes())?;
    slim_fs::write_atomic(&dir.join("tokenizer_config.json"), cfg.to_string().as_bytes())?;
    Ok(())
}

/// GPT-2's byte-to-character map (`bytes_to_unicode`).
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xa1..=0xac).chain(0xae..=0xff).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut by_byte = vec![' '; 256];
    for (b, c) in bs.iter().zip(&cs) {
        by_byte[*b as usize] = char::from_u32(*c).expect("a valid char");
    }
    by_byte
}
