//! Unit tests of config parsing, per-layer shapes and the save/load round trip.

use crate::config::{LayerShape, SLIMLLM_KEY};
use crate::{save_model_dir, HostTensor, ModelConfig, Weights};
use serde_json::json;

fn smol_like() -> serde_json::Value {
    json!({"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 2,
           "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
           "max_position_embeddings": 8192, "vocab_size": 49152, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2})
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
    for (name, shape) in crate::weights::expected_shapes(&cfg) {
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
}

#[test]
fn select_rows_and_cols() {
    let t = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    assert_eq!(t.select_rows(&[1]).unwrap().data, vec![4., 5., 6.]);
    assert_eq!(t.select_cols(&[2, 0]).unwrap().data, vec![3., 1., 6., 4.]);
    assert!(t.select_cols(&[3]).is_err());
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
    v[SLIMLLM_KEY] = json!({"format_version": crate::config::SLIMLLM_FORMAT_VERSION, "layers": [LayerShape::dense(9, 3, 1536), wide]});
    let e = format!("{:#}", ModelConfig::from_json_str(&v.to_string()).unwrap_err());
    assert!(e.contains("layer 1: 9 heads, 3 KV heads, 4000 channels exceed the dense 9, 3, 1536"), "{e}");
}
