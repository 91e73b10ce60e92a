//! Unit tests of config parsing, per-layer shapes and the save/load round trip.

use crate::config::{LayerShape, SLIMLLM_KEY};
use crate::{save_model_dir, HostTensor, ModelConfig, Weights};
use serde_json::json;

fn smol_like() -> serde_json::Value {
    json!({"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 2,
           "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
           "max_position_embeddings": 8192, "vocab_size": 49152, "tie_word_embeddings": true, "bos_token_id": 1,
           "eos_token_id": 2})
}

#[test]
fn dense_config_has_uniform_layers_and_param_count() {
    let mut v = smol_like();
    v["num_hidden_layers"] = json!(30);
    let cfg = ModelConfig::from_json_str(&v.to_string()).unwrap();
    assert_eq!(cfg.head_dim, 64);
    assert_eq!(cfg.layers.len(), 30);
    assert_eq!(cfg.layers[0].kv_head_of, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
    // SmolLM2-135M: 134,515,008 parameters (embedding counted once).
    assert_eq!(cfg.num_params(), 134_515_008);
    assert!(cfg.to_json().get(SLIMLLM_KEY).is_none());
}

#[test]
fn missing_and_bad_fields_are_named() {
    let mut v = smol_like();
    v.as_object_mut().unwrap().remove("hidden_size");
    let e = ModelConfig::from_json_str(&v.to_string()).unwrap_err();
    assert!(format!("{e:#}").contains("hidden_size"), "{e:#}");
    let mut v = smol_like();
    v["model_type"] = json!("gpt2");
    let e = ModelConfig::from_json_str(&v.to_string()).unwrap_err();
    assert!(format!("{e:#}").contains("gpt2"), "{e:#}");
    let mut v = smol_like();
    v[SLIMLLM_KEY] = json!({"format_version": 99, "layers": []});
    let e = ModelConfig::from_json_str(&v.to_string()).unwrap_err();
    assert!(format!("{e:#}").contains("format_version"), "{e:#}");
}

#[test]
fn pruned_shapes_round_trip_through_json_and_disk() {
    let mut v = smol_like();
    v["hidden_size"] = json!(8);
    v["head_dim"] = json!(4);
    v["vocab_size"] = json!(11);
    v["intermediate_size"] = json!(6);
    let mut cfg = ModelConfig::from_json_str(&v.to_string()).unwrap();
    cfg.layers[1] = LayerShape {
        num_heads: 6,
        num_kv_heads: 3,
        kv_head_of: vec![0, 0, 1, 1, 2, 2],
        intermediate_size: 5,
        o_proj_bias: true,
        down_proj_bias: true,
    };
    let back = ModelConfig::from_json_str(&cfg.to_json().to_string()).unwrap();
    assert_eq!(back.layers, cfg.layers);

    let mut w = Weights::new();
    for (name, shape) in crate::layout::expected_shapes(&cfg) {
        let n: usize = shape.iter().product();
        w.insert(name, HostTensor::new(shape, (0..n).map(|i| i as f32 * 0.5).collect()).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(dir.path(), &cfg, &w, dir.path()).unwrap();
    let cfg2 = ModelConfig::load(dir.path()).unwrap();
    assert_eq!(cfg2.layers, cfg.layers);
    let w2 = Weights::load(dir.path()).unwrap();
    w2.check_against(&cfg2).unwrap();
    let a = w.get("model.layers.1.mlp.down_proj.bias").unwrap();
    assert_eq!(w2.get("model.layers.1.mlp.down_proj.bias").unwrap(), a);
    assert_eq!(cfg2.num_params(), w2.num_values());
    for (name, text) in crate::config::SLIMLLM_CODE_FILES {
        assert_eq!(std::fs::read_to_string(dir.path().join(name)).unwrap(), text, "{name}");
    }
}

/// A pruned config names the SlimLLM transformers classes (format 2), keeps its base type, and
/// reads back; a dense one stays a plain llama config without the code files.
#[test]
fn pruned_config_names_the_slimllm_classes_and_dense_stays_plain() {
    let mut v = smol_like();
    v["architectures"] = json!(["LlamaForCausalLM"]);
    let mut cfg = ModelConfig::from_json_str(&v.to_string()).unwrap();
    assert!(!cfg.is_pruned());
    let dense = cfg.to_json();
    assert_eq!(dense["model_type"], "llama");
    assert_eq!(dense["architectures"], json!(["LlamaForCausalLM"]));
    assert!(dense.get("auto_map").is_none() && dense.get(SLIMLLM_KEY).is_none());

    cfg.layers[1] = LayerShape {
        num_heads: 5,
        num_kv_heads: 2,
        kv_head_of: vec![0, 0, 0, 0, 1],
        intermediate_size: 1000,
        o_proj_bias: true,
        down_proj_bias: false,
    };
    assert!(cfg.is_pruned());
    let j = cfg.to_json();
    assert_eq!(j["model_type"], "slimllm");
    assert_eq!(j["architectures"], json!(["SlimLlmForCausalLM"]));
    assert_eq!(j["auto_map"]["AutoConfig"], "configuration_slimllm.SlimLlmConfig");
    assert_eq!(j["auto_map"]["AutoModelForCausalLM"], "modeling_slimllm.SlimLlmForCausalLM");
    assert_eq!(j[SLIMLLM_KEY]["format_version"], 2);
    assert_eq!(j[SLIMLLM_KEY]["base_model_type"], "llama");
    // The HF fields keep the dense values.
    assert_eq!((j["num_attention_heads"].as_u64(), j["intermediate_size"].as_u64()), (Some(9), Some(1536)));
    let back = ModelConfig::from_json_str(&j.to_string()).unwrap();
    assert_eq!((back.arch, &back.layers), (crate::Arch::Llama, &cfg.layers));
    assert_eq!(back.to_json(), j);

    // Made dense again (every layer back to the HF shape), it is a plain llama config again.
    let mut again = back.clone();
    again.layers[1] = again.layers[0].clone();
    let d = again.to_json();
    assert_eq!((&d["model_type"], &d["architectures"]), (&json!("llama"), &json!(["LlamaForCausalLM"])));
    assert!(d.get("auto_map").is_none() && d.get(SLIMLLM_KEY).is_none());

    // A qwen2 base survives the round trip.
    let mut q = v.clone();
    q["model_type"] = json!("qwen2");
    let mut qc = ModelConfig::from_json_str(&q.to_string()).unwrap();
    qc.layers[0].intermediate_size = 7;
    let qj = qc.to_json();
    assert_eq!((&qj["model_type"], &qj[SLIMLLM_KEY]["base_model_type"]), (&json!("slimllm"), &json!("qwen2")));
    let qb = ModelConfig::from_json_str(&qj.to_string()).unwrap();
    assert!(qb.qkv_bias && qb.arch == crate::Arch::Qwen2);

    // A dense model writes no code files.
    let (dir, _, _) = saved_model();
    for (name, _) in crate::config::SLIMLLM_CODE_FILES {
        assert!(!dir.path().join(name).exists(), "{name}");
    }
}

/// Format 1 files (model_type llama or qwen2 with the per-layer list) are read as before;
/// a `slimllm` model without its base type, or with a base it contradicts, is an error.
#[test]
fn format_1_is_read_and_base_type_errors_are_named() {
    let mut v = smol_like();
    let mut pruned = LayerShape::dense(9, 3, 1536);
    pruned.intermediate_size = 100;
    let layers = [LayerShape::dense(9, 3, 1536), pruned];
    v[SLIMLLM_KEY] = json!({"format_version": 1, "layers": layers});
    let cfg = ModelConfig::from_json_str(&v.to_string()).unwrap();
    assert_eq!((cfg.arch, cfg.layers[1].intermediate_size), (crate::Arch::Llama, 100));
    // Written again, it is format 2.
    assert_eq!(cfg.to_json()[SLIMLLM_KEY]["format_version"], 2);

    let mut v2 = v.clone();
    v2["model_type"] = json!("slimllm");
    let e = format!("{:#}", ModelConfig::from_json_str(&v2.to_string()).unwrap_err());
    assert!(e.contains("needs `slimllm.base_model_type`"), "{e}");
    v2[SLIMLLM_KEY]["base_model_type"] = json!("gpt2");
    let e = format!("{:#}", ModelConfig::from_json_str(&v2.to_string()).unwrap_err());
    assert!(e.contains("base_model_type") && e.contains("gpt2"), "{e}");
    v2[SLIMLLM_KEY]["base_model_type"] = json!("slimllm");
    assert!(ModelConfig::from_json_str(&v2.to_string()).is_err());
    let mut v3 = v.clone();
    v3[SLIMLLM_KEY]["base_model_type"] = json!("qwen2");
    let e = format!("{:#}", ModelConfig::from_json_str(&v3.to_string()).unwrap_err());
    assert!(e.contains("model_type is `llama` but `slimllm.base_model_type` is `qwen2`"), "{e}");
}

#[test]
fn select_rows_and_cols() {
    let t = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    assert_eq!(t.select_rows(&[1]).unwrap().data, vec![4., 5., 6.]);
    assert_eq!(t.select_cols(&[2, 0]).unwrap().data, vec![3., 1., 6., 4.]);
    assert!(t.select_cols(&[3]).is_err());
}

/// The tiled transpose against the definition, for parts whose sizes end inside a tile and past several, stacked
/// and alone; a width other than the first part's and a non-2-D part are errors.
#[test]
fn stacked_transposes_equal_the_definition() {
    let part = |r: usize, c: usize, seed: f32| {
        HostTensor::new(vec![r, c], (0..r * c).map(|i| seed + i as f32).collect()).unwrap()
    };
    let (a, b, c) = (part(33, 70, 0.5), part(1, 70, 1e4), part(65, 70, 2e4));
    let t = HostTensor::stack_transposed(&[&a, &b, &c]).unwrap();
    assert_eq!(t.shape, vec![70, 99]);
    let rows: Vec<&[f32]> = [&a, &b, &c].iter().flat_map(|p| p.data.chunks(70)).collect();
    for (i, row) in rows.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            assert_eq!(t.data[j * 99 + i], *v, "({i}, {j})");
        }
    }
    let single = part(31, 97, 3.0).transpose2().unwrap();
    assert_eq!(single.shape, vec![97, 31]);
    assert_eq!(single.transpose2().unwrap(), part(31, 97, 3.0));
    assert!(HostTensor::stack_transposed(&[&a, &part(2, 3, 0.0)]).is_err());
    assert!(HostTensor::new(vec![4], vec![0.0; 4]).unwrap().transpose2().is_err());
}

/// The config_json fuzz target's timeout: 300,001 layers (a corrupt digit) made every load
/// build a shape per layer; sizes past generous limits are now errors naming the key.
#[test]
fn absurd_sizes_are_errors_naming_the_key() {
    let e = ModelConfig::from_json_str(include_str!("../tests/data/fuzz-config-300001-layers.json")).unwrap_err();
    assert!(format!("{e:#}").contains("num_hidden_layers` is 300001, above the limit of 4096"), "{e:#}");
    for (key, value) in [
        ("vocab_size", 1u64 << 40),
        ("hidden_size", 1 << 30),
        ("intermediate_size", 1 << 30),
        ("num_attention_heads", 1 << 20),
    ] {
        let mut v = smol_like();
        v[key] = json!(value);
        let e = format!("{:#}", ModelConfig::from_json_str(&v.to_string()).unwrap_err());
        assert!(e.contains(&format!("`{key}` is {value}, above the limit")), "{e}");
    }
    // A pruned layer wider than the dense shape is not a pruned layer.
    let mut v = smol_like();
    let mut wide = LayerShape::dense(9, 3, 1536);
    wide.intermediate_size = 4000;
    let layers = [LayerShape::dense(9, 3, 1536), wide];
    v[SLIMLLM_KEY] = json!({"format_version": crate::config::SLIMLLM_FORMAT_VERSION, "layers": layers});
    let e = format!("{:#}", ModelConfig::from_json_str(&v.to_string()).unwrap_err());
    assert!(e.contains("layer 1: 9 heads, 3 KV heads, 4000 channels exceed the dense 9, 3, 1536"), "{e}");
}

/// A tiny saved model (2 layers, GQA) in a fresh folder.
fn saved_model() -> (tempfile::TempDir, ModelConfig, Weights) {
    let (cfg, w) = crate::synthetic::SyntheticSpec::dense("llama", 2, 8, 2, 1, 4, 6, 11, 7).build();
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(dir.path(), &cfg, &w, dir.path()).unwrap();
    (dir, cfg, w)
}

fn load_err(dir: &std::path::Path) -> String {
    format!("{:#}", Weights::load(dir).unwrap_err())
}

/// The one safetensors writer (slim_fs) writes what `safetensors::serialize` writes for the same
/// f32 tensors, so models saved before and after the switch are byte for byte the same.
#[test]
fn saved_weights_are_byte_identical_to_the_safetensors_crate() {
    let (dir, _, w) = saved_model();
    let views: Vec<_> = w
        .names()
        .map(|n| {
            let t = w.get(n).unwrap();
            (
                n,
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    t.shape.clone(),
                    bytemuck::cast_slice(&t.data),
                )
                .unwrap(),
            )
        })
        .collect();
    let theirs = safetensors::serialize(views, None).unwrap();
    assert_eq!(std::fs::read(dir.path().join("model.safetensors")).unwrap(), theirs);
    let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    files.sort();
    assert_eq!(files, ["config.json", "model.safetensors"], "no temporary file is left");
}

#[test]
fn a_truncated_file_says_it_is_truncated_with_both_sizes() {
    let (dir, _, _) = saved_model();
    let path = dir.path().join("model.safetensors");
    let full = std::fs::read(&path).unwrap();
    let n = full.len();
    // Cut in the tensor data, in the header, and before the header length.
    std::fs::write(&path, &full[..n - 10]).unwrap();
    let e = load_err(dir.path());
    let want = format!("{}: truncated safetensors file: expected {n} bytes, file has {}", path.display(), n - 10);
    assert!(e.contains(&want), "{e}");
    std::fs::write(&path, &full[..40]).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("truncated safetensors file: expected at least") && e.contains("file has 40"), "{e}");
    std::fs::write(&path, &full[..5]).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("truncated safetensors file: expected at least 8 bytes") && e.contains("file has 5"), "{e}");
    // Every cut point, not only these three, is reported as a truncation naming the file.
    for cut in 0..n {
        let e = format!("{:#}", Weights::from_safetensors_bytes(&full[..cut], &path).unwrap_err());
        assert!(e.starts_with(&format!("{}: truncated safetensors file", path.display())), "cut at {cut}: {e}");
    }
    // Bytes after the last tensor are named too.
    let mut long = full.clone();
    long.extend_from_slice(&[0; 3]);
    std::fs::write(&path, &long).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains(&format!("3 bytes after the last tensor: expected {n} bytes, file has {}", n + 3)), "{e}");
}

/// A safetensors file from a header and data, as the format lays it out.
fn raw_safetensors(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string().into_bytes();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend_from_slice(data);
    out
}

#[test]
fn bad_offsets_name_the_tensor_and_the_file() {
    let p = std::path::Path::new("dir/model.safetensors");
    let err = |header: serde_json::Value, data: &[u8]| {
        format!("{:#}", Weights::from_safetensors_bytes(&raw_safetensors(&header, data), p).unwrap_err())
    };
    // 12 bytes for a [2, 2] f32 tensor, which needs 16.
    let e = err(json!({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}), &[0; 12]);
    assert!(
        e.contains("dir/model.safetensors: tensor `w` has data_offsets [0, 12] (12 bytes)") && e.contains("need 16"),
        "{e}"
    );
    // A gap between two tensors.
    let h = json!({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                   "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}});
    let e = err(h, &[0; 12]);
    assert!(
        e.contains(
            "dir/model.safetensors: tensor `b` has data_offsets [8, 12], but the tensors before it end at byte 4"
        ),
        "{e}"
    );
    let e = err(json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}), &[0; 4]);
    assert!(e.contains("tensor `w` has data_offsets [4, 0], which end before they start"), "{e}");
    let e = err(json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": "x"}}), &[0; 4]);
    assert!(e.contains("dir/model.safetensors: tensor `w` has no valid data_offsets"), "{e}");
}

#[test]
fn non_finite_weights_are_errors_naming_the_tensor_and_the_file() {
    let (dir, cfg, mut w) = saved_model();
    let name = "model.layers.1.mlp.up_proj.weight";
    let mut t = w.get(name).unwrap().clone();
    t.data[5] = f32::NAN;
    t.data[7] = f32::INFINITY;
    w.insert(name, t);
    save_model_dir(dir.path(), &cfg, &w, dir.path()).unwrap();
    let e = load_err(dir.path());
    let want = format!(
        "{}: tensor `{name}` has 2 non-finite value(s) of 48 (the first, at index 5, is NaN)",
        dir.path().join("model.safetensors").display()
    );
    assert!(e.contains(&want), "{e}");
    // In f16 and bf16 files too: -inf in f16 is 0xfc00, NaN in bf16 0x7fc0.
    let p = std::path::Path::new("h.safetensors");
    for (dtype, bits) in [("F16", 0xfc00u16), ("BF16", 0x7fc0)] {
        let data: Vec<u8> = [0x3c00u16, bits].iter().flat_map(|b| b.to_le_bytes()).collect();
        let bytes = raw_safetensors(&json!({"x": {"dtype": dtype, "shape": [2], "data_offsets": [0, 4]}}), &data);
        let e = format!("{:#}", Weights::from_safetensors_bytes(&bytes, p).unwrap_err());
        assert!(e.contains("h.safetensors: tensor `x` has 1 non-finite value(s) of 2 (the first, at index 1"), "{e}");
    }
    // The block search finds the first bad value past the first block.
    let mut v = vec![1.0f32; 10_000];
    assert_eq!(crate::weights::first_non_finite(&v), None);
    v[9_999] = f32::NEG_INFINITY;
    v[5_000] = f32::NAN;
    assert_eq!(crate::weights::first_non_finite(&v), Some(5_000));
    v[3] = f32::MAX; // large but finite
    assert_eq!(crate::weights::first_non_finite(&v), Some(5_000));
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_loop_is_reported_as_a_loop_not_as_a_missing_file() {
    let (dir, _, _) = saved_model();
    let st = dir.path().join("model.safetensors");
    std::fs::remove_file(&st).unwrap();
    std::os::unix::fs::symlink(&st, &st).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains(&format!("{}: symbolic link loop (ELOOP)", st.display())), "{e}");
    assert!(!e.contains("no model.safetensors"), "{e}");
    // The model folder itself a loop: config.json cannot be reached.
    let looped = dir.path().join("looped");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let e = format!("{:#}", ModelConfig::load(&looped).unwrap_err());
    assert!(e.contains("config.json: symbolic link loop (ELOOP)"), "{e}");
    let e = format!("{:#}", crate::load_tokenizer_json(&looped.join("tokenizer.json")).unwrap_err());
    assert!(e.contains("tokenizer.json: symbolic link loop (ELOOP)"), "{e}");
}

/// A WordLevel tokenizer.json with `n` tokens (ids 0..n).
fn word_level(n: usize) -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..n).map(|i| (format!("t{i}"), i.into())).collect();
    json!({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}}).to_string()
}

#[test]
fn a_tokenizer_with_ids_past_the_vocab_size_is_an_error_naming_both_files() {
    let (dir, cfg, _) = saved_model();
    assert_eq!(cfg.vocab_size, 11);
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, word_level(11)).unwrap();
    crate::load_model_tokenizer(dir.path()).unwrap();
    std::fs::write(&tok, word_level(13)).unwrap();
    let e = format!("{:#}", crate::load_model_tokenizer(dir.path()).unwrap_err());
    let cfg_path = dir.path().join("config.json");
    let want = format!(
        "{} has token ids up to 12 (`t12`), but {} gives vocab_size 11: the embedding has no row for ids 11..=12",
        tok.display(),
        cfg_path.display()
    );
    assert_eq!(e, want);
    // A tokenizer without a model beside it has nothing to be checked against.
    std::fs::remove_file(&cfg_path).unwrap();
    crate::load_model_tokenizer(dir.path()).unwrap();
}
