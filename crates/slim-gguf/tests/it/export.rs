//! `export_gguf` on tiny seeded models (dense and pruned, llama and qwen2, uneven GQA groups,
//! recovery biases): the GGUF's metadata and tensors as llama.cpp's `deci` loader expects them,
//! and `import_gguf` of the export giving back the directory (f32: bit for bit).

use std::path::Path;

use serde_json::{json, Value};
use slim_checkpoint::synthetic::SyntheticSpec;
use slim_checkpoint::{save_model_dir, LayerShape, ModelConfig, Weights};
use slim_gguf::{dequantize, encode, export_gguf, import_gguf, Existing, GgmlType, GgufFile, MetaArray, MetaValue};

const VOCAB: usize = 40;

/// A byte-level BPE tokenizer.json (smollm pre-tokenizer) of `VOCAB - 2` tokens: ids 38 and 39
/// are unused rows of the embedding, exported as `[PAD38]`, `[PAD39]`.
fn write_tokenizer(dir: &Path) {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<|endoftext|>".into(), json!(0));
    for i in 1..VOCAB - 2 {
        vocab.insert(format!("{}", (b'a' + (i as u8 % 26)) as char).repeat(1 + i / 26), json!(i));
    }
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
        "post_processor": null, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "vocab": vocab, "merges": [["a", "a"]]},
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let cfg = json!({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": false,
                     "chat_template": "{{ messages }}"});
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
}

/// Layers of a pruned GQA model over 3 KV heads of 3 query heads each: uneven groups, a dropped
/// KV head, odd FFN widths, recovery biases on some layers.
fn pruned_layers() -> Vec<LayerShape> {
    let layer = |kv_head_of: Vec<usize>, kv: usize, ffn: usize, bias: bool| LayerShape {
        num_heads: kv_head_of.len(),
        num_kv_heads: kv,
        kv_head_of,
        intermediate_size: ffn,
        o_proj_bias: bias,
        down_proj_bias: bias,
    };
    vec![
        layer(vec![0, 0, 0, 1, 1, 1, 2, 2, 2], 3, 45, false), // dense
        layer(vec![0, 1, 1, 1, 2, 2], 3, 31, true),           // groups 1, 3, 2
        layer(vec![0, 0, 1], 2, 17, true),                    // a KV head dropped
    ]
}

fn model(dir: &Path, model_type: &'static str, pruned: bool) -> (ModelConfig, Weights) {
    let mut spec = SyntheticSpec::dense(model_type, 3, 24, 9, 3, 6, 45, VOCAB, 7);
    if pruned {
        spec.layers = pruned_layers();
    }
    let (cfg, w) = spec.build();
    save_model_dir(dir, &cfg, &w, dir).unwrap();
    write_tokenizer(dir);
    (ModelConfig::load(dir).unwrap(), w)
}

fn u32s(f: &GgufFile, key: &str) -> Vec<u32> {
    match f.get_array(key).unwrap() {
        MetaArray::U32(v) => v.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn pruned_export_is_deci_with_per_layer_arrays_and_padded_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let (cfg, w) = model(&dir, "llama", true);
    let out = tmp.path().join("m.gguf");
    let s = export_gguf(&dir, &out, GgmlType::F32, false).unwrap();
    assert_eq!(s.architecture, "deci");
    // Layer 1: groups 1, 3, 2 → 3 × 3 slots (3 dummies); layer 2: groups 2, 1 → 2 × 2 (1 dummy).
    assert_eq!(s.padded_heads, 4);
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "deci");
    assert_eq!(u32s(&f, "deci.attention.head_count"), [9, 9, 4]);
    assert_eq!(u32s(&f, "deci.attention.head_count_kv"), [3, 3, 2]);
    assert_eq!(u32s(&f, "deci.feed_forward_length"), [45, 31, 17]);
    for key in ["deci.attention.key_length", "deci.attention.value_length", "deci.rope.dimension_count"] {
        assert_eq!(f.get(key), Some(&MetaValue::U32(6)), "{key}");
    }
    assert!(matches!(f.get("deci.attention.layer_norm_rms_epsilon"), Some(MetaValue::F32(_))));
    assert!(matches!(f.get("deci.rope.freq_base"), Some(MetaValue::F32(_))));
    // Tied: no output.weight; biases of layers 1 and 2 present and F32.
    assert!(f.tensor_info("output.weight").is_err());
    for name in ["blk.1.attn_output.bias", "blk.2.ffn_down.bias"] {
        assert_eq!(f.tensor_info(name).unwrap().ggml_type, GgmlType::F32, "{name}");
    }
    assert!(f.tensor_info("blk.0.attn_output.bias").is_err());
    // Layer 2's o_proj: [d, 4 slots × 6]: KV head 0 holds heads 0, 1; KV head 1 holds head 2 and a dummy.
    let o = f.tensor_f32("blk.2.attn_output.weight").unwrap();
    assert_eq!(f.tensor_info("blk.2.attn_output.weight").unwrap().dims, [24, 24]);
    let src = &w.get("model.layers.2.self_attn.o_proj.weight").unwrap().data; // [24, 18]
    for r in 0..24 {
        assert_eq!(&o[r * 24..r * 24 + 12], &src[r * 18..r * 18 + 12], "heads 0, 1 of KV head 0, row {r}");
        assert_eq!(&o[r * 24 + 12..r * 24 + 18], &src[r * 18 + 12..r * 18 + 18], "head 2 (KV head 1), row {r}");
        assert!(o[r * 24 + 18..r * 24 + 24].iter().all(|&x| x == 0.0), "dummy slot, row {r}");
    }
    // The dummy's q rows are zero (in any rotary order).
    let q = f.tensor_f32("blk.2.attn_q.weight").unwrap();
    assert!(q[3 * 6 * 24..].iter().all(|&x| x == 0.0));
    assert!(q[2 * 6 * 24..3 * 6 * 24].iter().any(|&x| x != 0.0));
    assert_eq!(cfg.num_params(), s.n_params);
    // Tokenizer: padded to the embedding rows, the special token a control token.
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), VOCAB);
    assert_eq!(tokens[VOCAB - 1], format!("[PAD{}]", VOCAB - 1));
    match f.get_array("tokenizer.ggml.token_type").unwrap() {
        MetaArray::I32(t) => assert_eq!((t[0], t[1], t[VOCAB - 1]), (3, 1, 5)),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(f.get("tokenizer.ggml.bos_token_id"), Some(&MetaValue::U32(1)));
    assert_eq!(f.get_str("tokenizer.chat_template").unwrap(), "{{ messages }}");
}

#[test]
fn f32_export_then_import_gives_the_directory_back_bit_for_bit() {
    for (model_type, pruned) in [("llama", true), ("qwen2", true), ("llama", false), ("qwen2", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let (cfg, _) = model(&dir, model_type, pruned);
        let out = tmp.path().join("m.gguf");
        let s = export_gguf(&dir, &out, GgmlType::F32, false).unwrap();
        let want_arch = if pruned { "deci" } else { model_type };
        assert_eq!(s.architecture, want_arch);
        let back = tmp.path().join("back");
        import_gguf(&out, &back, Existing::Refuse).unwrap();
        let what = format!("{model_type}, pruned {pruned}");
        let (a, b) = (Weights::load(&dir).unwrap(), Weights::load(&back).unwrap());
        assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>(), "{what}: tensor names");
        for name in a.names() {
            let (x, y) = (a.get(name).unwrap(), b.get(name).unwrap());
            assert_eq!(x.shape, y.shape, "{what}: {name}");
            let bits = |t: &slim_checkpoint::HostTensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert!(bits(x) == bits(y), "{what}: {name} differs");
        }
        let back_cfg = ModelConfig::load(&back).unwrap();
        assert_eq!(back_cfg.layers, cfg.layers, "{what}: layer shapes");
        assert_eq!((back_cfg.arch, back_cfg.head_dim, back_cfg.qkv_bias), (cfg.arch, cfg.head_dim, cfg.qkv_bias));
        let tok = |d: &Path| -> Value {
            serde_json::from_str(&std::fs::read_to_string(d.join("tokenizer.json")).unwrap()).unwrap()
        };
        let (a, b) = (tok(&dir), tok(&back));
        assert_eq!(a["model"]["merges"], b["model"]["merges"], "{what}: merges");
        for (t, id) in a["model"]["vocab"].as_object().unwrap() {
            assert_eq!(&b["model"]["vocab"][t], id, "{what}: token {t}");
        }
    }
}

#[test]
fn quantized_encodings_decode_to_the_values() {
    let mut rng = slim_checkpoint::synthetic::SplitMix(3);
    let x: Vec<f32> = (0..256).map(|_| rng.uniform() * 3.0).collect();
    for (ty, tol) in [(GgmlType::F16, 1e-3f32), (GgmlType::BF16, 8e-3), (GgmlType::Q8_0, 1.0 / 127.0)] {
        let back = dequantize(ty, &encode(&x, 64, ty).unwrap(), x.len()).unwrap();
        for (block, (a, b)) in x.chunks(32).zip(back.chunks(32)).enumerate() {
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() <= tol * scale, "{ty:?} block {block}: {u} vs {v}");
            }
        }
    }
    assert_eq!(dequantize(GgmlType::F32, &encode(&x, 64, GgmlType::F32).unwrap(), x.len()).unwrap(), x);
    // ggml's q8_0 of a block whose largest magnitude is 127: d = 1, q = round(x) (half away from zero).
    let mut block = vec![0f32; 32];
    block[..4].copy_from_slice(&[127.0, -2.5, 2.5, 0.49]);
    let q = encode(&block, 32, GgmlType::Q8_0).unwrap();
    assert_eq!(&q[..2], &half::f16::from_f32(1.0).to_le_bytes());
    assert_eq!(&q[2..6], &[127u8, (-3i8) as u8, 3, 0]);
}

#[test]
fn q8_0_refuses_widths_that_are_not_whole_blocks_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    model(&dir, "llama", true);
    let out = tmp.path().join("m.gguf");
    let e = format!("{:#}", export_gguf(&dir, &out, GgmlType::Q8_0, false).unwrap_err());
    assert!(e.contains("--type q8_0") && e.contains("--align 32") && e.contains("hidden size 24"), "{e}");
    assert!(e.contains("layer 1: FFN width 31"), "{e}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "no temporary file left");
}

#[test]
fn an_existing_out_is_kept_without_force_and_bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    model(&dir, "qwen2", false);
    let out = tmp.path().join("m.gguf");
    std::fs::write(&out, b"keep me").unwrap();
    let e = format!("{:#}", export_gguf(&dir, &out, GgmlType::F16, false).unwrap_err());
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    export_gguf(&dir, &out, GgmlType::F16, true).unwrap();
    assert_eq!(GgufFile::open(&out).unwrap().get_str("general.architecture").unwrap(), "qwen2");

    let not_model = tmp.path().join("empty");
    std::fs::create_dir(&not_model).unwrap();
    let e = format!("{:#}", export_gguf(&not_model, &tmp.path().join("x.gguf"), GgmlType::F16, false).unwrap_err());
    assert!(e.contains("is not a model directory") && e.contains("config.json"), "{e}");
    let e = format!("{:#}", export_gguf(&dir, tmp.path(), GgmlType::F16, true).unwrap_err());
    assert!(e.contains("is a folder"), "{e}");
    assert!(slim_gguf::export_type("q4_k").unwrap_err().to_string().contains("supported: f32, f16, bf16, q8_0"));
}
