//! Writes tiny seeded model directories that exercise `slimllm export` in a real engine: a pruned
//! llama model (uneven GQA groups, a dropped KV head, odd FFN widths, o_proj/down_proj biases), the
//! same as qwen2 (q/k/v biases, qwen2 pre-tokenizer) and a dense llama one, each with a byte-level
//! BPE tokenizer (every byte a token, two merges) so that any text, PTB included, tokenizes.
//!
//! `cargo run --release -p slim-cli --example export_fixture -- DIR` writes DIR/{llama-pruned,
//! qwen2-pruned, llama-dense}; tools/llamacpp/ci-check.sh runs llama.cpp on their exports.

use std::path::Path;

use serde_json::json;
use slim_checkpoint::synthetic::SyntheticSpec;
use slim_checkpoint::LayerShape;

/// Embedding rows: 257 tokens and 2 merges used, one unused row.
const VOCAB: usize = 260;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os().nth(1).ok_or_else(|| anyhow::format_err!("usage: export_fixture DIR"))?;
    let dir = std::path::PathBuf::from(dir);
    for (name, model_type, pruned) in
        [("llama-pruned", "llama", true), ("qwen2-pruned", "qwen2", true), ("llama-dense", "llama", false)]
    {
        let mut spec = SyntheticSpec::dense(model_type, 4, 64, 6, 2, 16, 96, VOCAB, 11);
        if pruned {
            let layer = |kv_head_of: Vec<usize>, kv: usize, ffn: usize| LayerShape {
                num_heads: kv_head_of.len(),
                num_kv_heads: kv,
                kv_head_of,
                intermediate_size: ffn,
                o_proj_bias: true,
                down_proj_bias: true,
            };
            spec.layers = vec![
                LayerShape::dense(6, 2, 96),
                layer(vec![0, 1, 1, 1], 2, 45),
                layer(vec![0, 0, 1], 2, 31),
                layer(vec![0, 0], 1, 17),
            ];
        }
        let (cfg, w) = spec.build();
        let out = dir.join(name);
        slim_checkpoint::save_model_dir(&out, &cfg, &w, &out)?;
        write_tokenizer(&out, model_type == "qwen2")?;
        println!("{}", out.display());
    }
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

fn write_tokenizer(dir: &Path, qwen2: bool) -> anyhow::Result<()> {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<|endoftext|>".into(), json!(0));
    for (i, c) in byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), json!(i + 1));
    }
    vocab.insert("Ġt".into(), json!(257));
    vocab.insert("he".into(), json!(258));
    let byte_level =
        |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let (normalizer, pre) = if qwen2 {
        let split = json!({"type": "Split", "pattern": {"Regex": slim_gguf::QWEN2_REGEX}, "behavior": "Isolated",
                           "invert": false});
        (json!({"type": "NFC"}), json!({"type": "Sequence", "pretokenizers": [split, byte_level(false)]}))
    } else {
        let digits = json!({"type": "Digits", "individual_digits": true});
        (json!(null), json!({"type": "Sequence", "pretokenizers": [digits, byte_level(true)]}))
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
    std::fs::write(dir.join("tokenizer.json"), tok.to_string())?;
    let cfg = json!({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
                     "eos_token": "<|endoftext|>", "add_bos_token": false, "add_eos_token": false});
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string())?;
    Ok(())
}
