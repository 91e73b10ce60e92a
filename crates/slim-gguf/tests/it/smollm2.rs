//! The real SmolLM2-135M-Instruct GGUF (Q4_1 linears, Q8_0 embedding): tokenizer, config and an import
//! whose values are checked against the `gguf` Python package.

use std::time::Instant;

use safetensors::SafeTensors;
use slim_gguf::{build_config_json, build_tokenizer_json, import_gguf, GgufFile};
use tokenizers::Tokenizer;

use crate::downloaded;

fn gguf_path() -> std::path::PathBuf {
    downloaded("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m")
}

#[test]
fn tokenizer_hello_world() {
    let file = GgufFile::open(&gguf_path()).unwrap();
    let tok = Tokenizer::from_bytes(serde_json::to_vec(&build_tokenizer_json(&file).unwrap()).unwrap()).unwrap();
    // add_bos_token is false in this GGUF, so encoding with special tokens adds nothing either.
    let ids = tok.encode("Hello world 2024", true).unwrap().get_ids().to_vec();
    assert_eq!(ids, [19556, 905, 216, 34, 32, 34, 36]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello world 2024");
    assert_eq!(tok.get_vocab_size(true), 49152);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.encode("<|im_start|>user", false).unwrap().get_ids()[0], 1);
}

#[test]
fn config() {
    let file = GgufFile::open(&gguf_path()).unwrap();
    let c = build_config_json(&file).unwrap();
    let expected = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "max_position_embeddings": 8192,
        "vocab_size": 49152, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "torch_dtype": "float32",
    });
    assert_eq!(c, expected);
}

/// Reads `n` f32 values of `name` starting at element `start`.
fn values(st: &SafeTensors<'_>, name: &str, start: usize, n: usize) -> Vec<u32> {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    t.data()[4 * start..4 * (start + n)].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn import() {
    let out = std::env::temp_dir().join(format!("slim-gguf-import-{}", std::process::id()));
    let t0 = Instant::now();
    let summary = import_gguf(&gguf_path(), &out, slim_gguf::Existing::Refuse).unwrap();
    eprintln!("imported SmolLM2-135M in {:.2?}", t0.elapsed());
    assert_eq!(summary.architecture, "llama");
    assert_eq!(summary.n_tensors, 272);
    assert_eq!(summary.n_params, 134_515_008);
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!((tc["bos_token"].as_str(), tc["eos_token"].as_str()), (Some("<|im_start|>"), Some("<|im_end|>")));
    assert!(tc["chat_template"].as_str().unwrap().contains("<|im_start|>"));

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 272);
    assert!(st.tensor("lm_head.weight").is_err(), "tied: no lm_head");
    assert_eq!(st.tensor("model.embed_tokens.weight").unwrap().shape(), [49152, 576]);
    assert_eq!(st.tensor("model.layers.0.self_attn.k_proj.weight").unwrap().shape(), [192, 576]);
    assert_eq!(st.tensor("model.layers.29.mlp.down_proj.weight").unwrap().shape(), [576, 1536]);

    // Expected bits from the `gguf` Python package 0.19.0:
    // `gguf.quants.dequantize(t.data, t.tensor_type)` reshaped to the reversed dims, with q/k
    // unpermuted as `w.reshape(n_head, d_h/2, 2, in).swapaxes(1, 2)` (n_head 9 for q, 3 for k).
    assert_eq!(values(&st, "model.norm.weight", 0, 4), [0x3fe10000, 0x3fe90000, 0x3fe40000, 0x3fcd0000]);
    assert_eq!(values(&st, "model.embed_tokens.weight", 19556 * 576, 4), [0xbd51d000, 0x3d233000, 0x0, 0x3daed800]);
    let q = "model.layers.0.self_attn.q_proj.weight";
    assert_eq!(values(&st, q, 576, 4), [0xbe230000, 0x3ecbc000, 0xbca30000, 0xbfa30000]);
    assert_eq!(values(&st, q, 100 * 576, 4), [0xbda84000, 0xbda84000, 0xbee40000, 0xbe68e000]);
    let k = "model.layers.0.self_attn.k_proj.weight";
    assert_eq!(values(&st, k, 32 * 576, 4), [0x3d680000, 0x3d680000, 0xbe020000, 0x3e180000]);
    assert_eq!(values(&st, k, 191 * 576, 4), [0x3c820000, 0xbede5000, 0x3c820000, 0xbf3bf800]);
    let down = "model.layers.29.mlp.down_proj.weight";
    assert_eq!(values(&st, down, 576 * 1536 - 4, 4), [0x3d680000, 0x3e500000, 0xbdb80000, 0x3d680000]);
    drop(bytes);
    std::fs::remove_dir_all(&out).unwrap();
}
