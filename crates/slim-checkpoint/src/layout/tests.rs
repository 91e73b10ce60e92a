//! Tests of the layout: names in both formats invert exactly, shapes agree with the config.

use super::*;
use crate::config::LayerShape;
use crate::synthetic::SyntheticSpec;
use std::collections::HashSet;

/// A pruned layer: fewer heads and channels, o_proj and down_proj biases.
fn pruned(heads: usize, kv_head_of: Vec<usize>, ffn: usize) -> LayerShape {
    let num_kv_heads = kv_head_of.iter().max().map_or(0, |&k| k + 1);
    LayerShape {
        num_heads: heads,
        num_kv_heads,
        kv_head_of,
        intermediate_size: ffn,
        o_proj_bias: true,
        down_proj_bias: true,
    }
}

/// Four configs: llama (tied, no biases) and qwen2 (untied, q/k/v biases), each dense and pruned
/// (per-layer shapes; layer 1 with o_proj/down_proj biases, layer 2 with only a down_proj bias).
fn configs() -> Vec<(&'static str, ModelConfig)> {
    let mut out = Vec::new();
    for model_type in ["llama", "qwen2"] {
        let spec = SyntheticSpec::dense(model_type, 3, 16, 4, 2, 4, 12, 10, 1);
        out.push((model_type, spec.build().0));
        let mut spec = spec;
        spec.layers[1] = pruned(2, vec![0, 0], 7);
        spec.layers[2].down_proj_bias = true;
        spec.layers[2].intermediate_size = 5;
        out.push((model_type, spec.build().0));
    }
    out
}

#[test]
fn hf_and_gguf_names_are_exact_inverses_for_every_tensor() {
    for (model_type, cfg) in configs() {
        let ts = tensors(&cfg);
        let per_layer = if model_type == "qwen2" { 12 } else { 9 };
        let biases: usize = cfg.layers.iter().map(|l| l.o_proj_bias as usize + l.down_proj_bias as usize).sum();
        let globals = if cfg.tie_word_embeddings { 2 } else { 3 };
        assert_eq!(ts.len(), globals + per_layer * cfg.num_layers() + biases, "{model_type}");
        let (mut hf, mut gguf) = (HashSet::new(), HashSet::new());
        for t in &ts {
            let (h, g) = (t.hf_name(), t.gguf_name());
            assert_eq!(TensorId::from_hf_name(&h), Some(*t), "{h}");
            assert_eq!(TensorId::from_gguf_name(&g), Some(*t), "{g}");
            assert_eq!(gguf_to_hf(&g).as_deref(), Some(h.as_str()));
            assert_eq!(hf_to_gguf(&h).as_deref(), Some(g.as_str()));
            assert!(hf.insert(h) && gguf.insert(g), "names are unique");
        }
    }
}

#[test]
fn names_are_pinned() {
    assert_eq!(Global::ALL.map(Global::hf_name), ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]);
    assert_eq!(Global::ALL.map(Global::gguf_name), ["token_embd.weight", "output_norm.weight", "output.weight"]);
    assert_eq!(Global::ALL.map(Global::module), ["model.embed_tokens", "model.norm", "lm_head"]);
    assert_eq!(
        LayerNorm::ALL.map(|n| n.weight(12)),
        ["model.layers.12.input_layernorm.weight", "model.layers.12.post_attention_layernorm.weight"]
    );
    assert_eq!(LayerNorm::ALL.map(|n| n.gguf_name(12)), ["blk.12.attn_norm.weight", "blk.12.ffn_norm.weight"]);
    assert_eq!(
        Proj::ALL.map(|p| p.module(3)),
        [
            "model.layers.3.self_attn.q_proj",
            "model.layers.3.self_attn.k_proj",
            "model.layers.3.self_attn.v_proj",
            "model.layers.3.self_attn.o_proj",
            "model.layers.3.mlp.gate_proj",
            "model.layers.3.mlp.up_proj",
            "model.layers.3.mlp.down_proj",
        ]
    );
    assert_eq!(Proj::K.weight(0), "model.layers.0.self_attn.k_proj.weight");
    assert_eq!(Proj::Down.bias(29), "model.layers.29.mlp.down_proj.bias");
    assert_eq!(
        Proj::ALL.map(|p| p.gguf_name(3, Param::Weight)),
        [
            "blk.3.attn_q.weight",
            "blk.3.attn_k.weight",
            "blk.3.attn_v.weight",
            "blk.3.attn_output.weight",
            "blk.3.ffn_gate.weight",
            "blk.3.ffn_up.weight",
            "blk.3.ffn_down.weight",
        ]
    );
    assert_eq!(Proj::V.gguf_name(7, Param::Bias), "blk.7.attn_v.bias");
}

#[test]
fn names_this_layout_does_not_spell_are_rejected() {
    for bad in [
        "blk.01.attn_q.weight",
        "blk.x.attn_q.weight",
        "blk..attn_q.weight",
        "blk.-1.attn_q.weight",
        "blk.99999999999999999999999.attn_q.weight",
        "blk.0.attn_o.weight",
        "blk.0.attn_norm.bias",
        "blk.0.attn_q",
        "blk.0.attn_q.weight.extra",
        "blk.0.attn_q.scale",
        "rope_freqs.weight",
        "token_embd.bias",
        "model.layers.0.self_attn.q_proj.weight",
    ] {
        assert_eq!(TensorId::from_gguf_name(bad), None, "{bad}");
    }
    for bad in [
        "model.layers.00.mlp.up_proj.weight",
        "model.layers.+1.mlp.up_proj.weight",
        "model.layers.1.input_layernorm.bias",
        "model.layers.1.mlp.up.weight",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.rotary_emb.inv_freq",
        "model.embed_tokens.bias",
        "model.layers.1.q_proj.weight",
        "layers.1.mlp.up_proj.weight",
        "blk.0.attn_q.weight",
    ] {
        assert_eq!(TensorId::from_hf_name(bad), None, "{bad}");
    }
}

/// The shapes `weights.rs` spelled out before the layout existed, kept as a reference.
fn spelled_out_shapes(cfg: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
    let (d, dh, v) = (cfg.hidden_size, cfg.head_dim, cfg.vocab_size);
    let mut m = BTreeMap::new();
    m.insert("model.embed_tokens.weight".to_string(), vec![v, d]);
    m.insert("model.norm.weight".to_string(), vec![d]);
    if !cfg.tie_word_embeddings {
        m.insert("lm_head.weight".to_string(), vec![v, d]);
    }
    for (i, l) in cfg.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let (q, kv, f) = (l.num_heads * dh, l.num_kv_heads * dh, l.intermediate_size);
        m.insert(format!("{p}.input_layernorm.weight"), vec![d]);
        m.insert(format!("{p}.post_attention_layernorm.weight"), vec![d]);
        m.insert(format!("{p}.self_attn.q_proj.weight"), vec![q, d]);
        m.insert(format!("{p}.self_attn.k_proj.weight"), vec![kv, d]);
        m.insert(format!("{p}.self_attn.v_proj.weight"), vec![kv, d]);
        m.insert(format!("{p}.self_attn.o_proj.weight"), vec![d, q]);
        if cfg.qkv_bias {
            m.insert(format!("{p}.self_attn.q_proj.bias"), vec![q]);
            m.insert(format!("{p}.self_attn.k_proj.bias"), vec![kv]);
            m.insert(format!("{p}.self_attn.v_proj.bias"), vec![kv]);
        }
        if l.o_proj_bias {
            m.insert(format!("{p}.self_attn.o_proj.bias"), vec![d]);
        }
        m.insert(format!("{p}.mlp.gate_proj.weight"), vec![f, d]);
        m.insert(format!("{p}.mlp.up_proj.weight"), vec![f, d]);
        m.insert(format!("{p}.mlp.down_proj.weight"), vec![d, f]);
        if l.down_proj_bias {
            m.insert(format!("{p}.mlp.down_proj.bias"), vec![d]);
        }
    }
    m
}

#[test]
fn shapes_agree_with_the_spelled_out_names_and_the_parameter_count() {
    for (model_type, cfg) in configs() {
        let shapes = expected_shapes(&cfg);
        assert_eq!(shapes, spelled_out_shapes(&cfg), "{model_type}");
        let n: u64 = shapes.values().map(|s| s.iter().product::<usize>() as u64).sum();
        assert_eq!(n, cfg.num_params(), "{model_type}");
    }
    let (_, cfg) = configs().pop().unwrap(); // qwen2, pruned
    let proj = |layer, proj, param| TensorId::Proj { layer, proj, param }.shape(&cfg);
    assert_eq!(proj(1, Proj::O, Param::Weight), Some(vec![16, 8]));
    assert_eq!(proj(1, Proj::K, Param::Bias), Some(vec![4]));
    assert_eq!(proj(2, Proj::Down, Param::Bias), Some(vec![16]));
    assert_eq!(proj(2, Proj::O, Param::Bias), None, "layer 2 has no o_proj bias");
    assert_eq!(proj(0, Proj::Gate, Param::Bias), None);
    assert_eq!(proj(3, Proj::Q, Param::Weight), None, "no layer 3");
    assert_eq!(TensorId::Norm { layer: 3, norm: LayerNorm::Input }.shape(&cfg), None);
    let (_, tied) = configs().remove(0);
    assert_eq!(TensorId::Global(Global::LmHead).shape(&tied), None);
    assert_eq!((Global::output(&tied), Global::output(&cfg)), (Global::Embedding, Global::LmHead));
    assert_eq!(tensors(&tied).first(), Some(&TensorId::Global(Global::Embedding)));
    assert_eq!(tensors(&tied).last(), Some(&TensorId::Global(Global::FinalNorm)));
}

#[test]
fn norm_and_activation_come_from_the_config() {
    let (_, cfg) = configs().remove(0);
    assert_eq!(NormKind::of(&cfg), NormKind::RmsNorm { eps: 1e-5 });
    assert_eq!(Activation::of(&cfg).unwrap(), Activation::SiluGlu, "absent hidden_act is silu");
    assert_eq!(Activation::from_hidden_act("silu").unwrap().hidden_act(), "silu");
    let mut v = cfg.to_json();
    v["hidden_act"] = serde_json::json!("silu");
    assert_eq!(Activation::of(&ModelConfig::from_json_str(&v.to_string()).unwrap()).unwrap(), Activation::SiluGlu);
    for (act, message) in [
        (serde_json::json!("gelu_pytorch_tanh"), "unsupported hidden_act `gelu_pytorch_tanh` (supported: silu)"),
        (serde_json::json!(3), "key `hidden_act` is not a string: 3"),
    ] {
        v["hidden_act"] = act;
        let e = format!("{:#}", ModelConfig::from_json_str(&v.to_string()).unwrap_err());
        assert!(e.contains(message), "{e}");
    }
}
