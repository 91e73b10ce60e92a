//! Writes tiny seeded model directories that exercise `slimllm export` in a real engine: a pruned
//! llama model (uneven GQA groups, a dropped KV head, odd FFN widths, o_proj/down_proj biases), the
//! same as qwen2 (q/k/v biases, qwen2 pre-tokenizer) and a dense llama one, each with a byte-level
//! BPE tokenizer (every byte a token, two merges) so that any text, PTB included, tokenizes.
//!
//! `cargo run --release -p slim-cli --example export_fixture -- DIR` writes DIR/{llama-pruned,
//! qwen2-pruned, llama-dense}; tools/llamacpp/ci-check.sh runs llama.cpp on their exports.

use slim_checkpoint::synthetic::SyntheticSpec;
use slim_checkpoint::LayerShape;

/// Embedding rows: the byte-level tokenizer's 257 tokens and 2 merges
/// ([`slim_checkpoint::synthetic::BYTE_BPE_VOCAB`]), one unused row.
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
        let arch = slim_checkpoint::Arch::from_model_type(model_type)?;
        slim_checkpoint::synthetic::write_byte_level_tokenizer(&out, arch)?;
        println!("{}", out.display());
    }
    Ok(())
}
